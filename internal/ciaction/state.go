package ciaction

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/flakegate/flakegate/internal/fsutil"
)

// Files of the state directory.
const (
	stateFile   = "state.json"
	netrcFile   = "netrc"
	nixConfFile = "nix.conf"
	hookFile    = "post-build-hook"
	queueDir    = "queue"
	pushedLog   = "pushed.log"
	warningsLog = "warnings.log"
	pusherLog   = "pusher.log"
	flushMarker = "flush"
	pusherDone  = "pusher.done"
	// jobOver: flush removed the job's cache token; a pusher still running
	// stops, and never writes the token again.
	jobOver      = "job.over"
	refreshedLog = "refreshed.log"
)

// State is what setup leaves for the hook, the pusher and flush.
type State struct {
	Cache    string `json:"cache"`     // base URL
	Flake    string `json:"flake"`     // org/name pushed to
	Store    string `json:"store"`     // nix --store of the built paths ("" default)
	TokenEnv string `json:"token_env"` // --token-env of the CI login ("" auto)
	// Lifetime asked of each cache token (0: the cache's default).
	Lifetime  time.Duration `json:"lifetime"`
	IssuedAt  time.Time     `json:"issued_at"`
	ExpiresAt time.Time     `json:"expires_at"`
	// Retries of one request by the pusher.
	Retries int `json:"retries"`
	// PusherPID is the background pusher's process id (0: none).
	PusherPID int `json:"pusher_pid"`
	// Job names the CI job that set up (jobID; "" when unknown).
	Job string `json:"job,omitempty"`
}

// jobID names the running CI job: GitLab's CI_JOB_ID, or GitHub's run,
// attempt and job; "" elsewhere.
func jobID(getenv func(string) string) string {
	if id := getenv("CI_JOB_ID"); id != "" {
		return "gitlab:" + id
	}
	if run := getenv("GITHUB_RUN_ID"); run != "" {
		return "github:" + run + "/" + getenv("GITHUB_RUN_ATTEMPT") + "/" + getenv("GITHUB_JOB")
	}
	return ""
}

// Dir is a state directory.
type Dir string

func (d Dir) path(name string) string { return filepath.Join(string(d), name) }

// Load reads state.json, from a directory this user owns and no one else
// may write to (checkStateDir): flush and the pusher send the job's IdP
// token to the cache it names.
func (d Dir) Load() (*State, error) {
	if err := checkStateDir(string(d)); err != nil {
		return nil, err
	}
	b, err := os.ReadFile(d.path(stateFile))
	if err != nil {
		return nil, fmt.Errorf("read flakegate ci state (did `flakegate ci setup` run?): %w", err)
	}
	var st State
	if err := json.Unmarshal(b, &st); err != nil {
		return nil, fmt.Errorf("parse %s: %w", d.path(stateFile), err)
	}
	return &st, nil
}

// Save writes state.json atomically.
func (d Dir) Save(st *State) error {
	b, err := json.MarshalIndent(st, "", "  ")
	if err != nil {
		return err
	}
	return fsutil.WriteFileAtomic(d.path(stateFile), b, 0o644)
}

// appendLine adds one line to a log of the state directory.
func (d Dir) appendLine(name, line string) error {
	f, err := os.OpenFile(d.path(name), os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o644)
	if err != nil {
		return err
	}
	_, err = io.WriteString(f, strings.ReplaceAll(line, "\n", " ")+"\n")
	return errors.Join(err, f.Close())
}

// lines reads a log of the state directory (none when absent).
func (d Dir) lines(name string) []string {
	b, err := os.ReadFile(d.path(name))
	if err != nil {
		return nil
	}
	var out []string
	for _, l := range strings.Split(string(b), "\n") {
		if l != "" {
			out = append(out, l)
		}
	}
	return out
}

func (d Dir) exists(name string) bool {
	_, err := os.Stat(d.path(name))
	return err == nil
}
