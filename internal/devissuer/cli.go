package devissuer

import (
	"github.com/flakegate/flakegate/internal/version"

	"errors"
	"flag"
	"fmt"
	"io"
	"net/url"
	"strings"
	"time"

	"github.com/flakegate/flakegate/internal/identity/claimshape"
	"github.com/flakegate/flakegate/internal/netrc"
)

const usage = `devissuer: a LOCAL DEVELOPMENT token issuer for trying flakegate (NOT FOR PRODUCTION).

  devissuer init -dir DIR
      create the signing key and DIR/` + JWKSFile + ` (point an issuers-file entry's jwks_file at it)
  devissuer mint -dir DIR -issuer ISS -aud AUD (-github OWNER/REPO | -gitlab GROUP/PROJECT | -user NAME) [flags]
      print a signed token, or with -netrc FILE write it into FILE as the password of the
      cache's machine entry (the host of -aud), other entries kept
`

// Main runs the command line; it returns the process exit code.
func Main(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	var err error
	switch args[0] {
	case "init":
		err = runInit(args[1:], stdout, stderr)
	case "mint":
		err = runMint(args[1:], stdout, stderr)
	case "-h", "-help", "--help", "help":
		fmt.Fprint(stdout, usage)
		fs, _ := mintFlags(stdout)
		fmt.Fprintln(stdout, "\nmint flags:")
		fs.PrintDefaults()
		return 0
	case "-version", "--version", "version":
		fmt.Fprintln(stdout, version.String())
		return 0
	default:
		err = fmt.Errorf("unknown command %q (want init or mint)", args[0])
	}
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		fmt.Fprintln(stderr, "devissuer:", err)
		return 1
	}
	return 0
}

func runInit(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("init", flag.ContinueOnError)
	fs.SetOutput(stderr)
	dir := fs.String("dir", ".data/dev-issuer", "directory for the key and the JWKS file")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if _, err := LoadOrCreate(*dir); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "%s/%s\n", *dir, JWKSFile)
	return nil
}

// mintOptions are mint's flags.
type mintOptions struct {
	dir, issuer, aud, github, gitlab, user, org, ref, actor, netrc, machine string
	protected                                                               bool
	lifetime                                                                time.Duration
}

// mintFlags defines mint's flags (also printed by the top-level help).
func mintFlags(out io.Writer) (*flag.FlagSet, *mintOptions) {
	o := &mintOptions{}
	fs := flag.NewFlagSet("mint", flag.ContinueOnError)
	fs.SetOutput(out)
	fs.StringVar(&o.dir, "dir", ".data/dev-issuer", "directory holding the key (see init)")
	fs.StringVar(&o.issuer, "issuer", "", "iss claim: must equal an issuers-file entry's issuer")
	fs.StringVar(&o.aud, "aud", "", "aud claim: one of that entry's audience values")
	fs.StringVar(&o.github, "github", "", "mint a GitHub-Actions-shaped token for this repository (owner/repo)")
	fs.StringVar(&o.gitlab, "gitlab", "", "mint a GitLab-CI-shaped token for this project (group/project)")
	fs.StringVar(&o.user, "user", "", "mint a user's OIDC token for this username")
	fs.StringVar(&o.org, "org", "", "with -user: the user's org (the \"org\" claim)")
	fs.StringVar(&o.ref, "ref", "refs/heads/main", "with -github: the git ref; with -gitlab: the branch name is taken from it")
	fs.BoolVar(&o.protected, "protected", true, "with -github/-gitlab: ref_protected")
	fs.StringVar(&o.actor, "actor", "dev", "with -github/-gitlab: the user who triggered the job")
	fs.DurationVar(&o.lifetime, "lifetime", time.Hour, "token lifetime")
	fs.StringVar(&o.netrc, "netrc", "", "write the token into this netrc `file` (created 0600 if missing; replaced atomically) instead of printing it")
	fs.StringVar(&o.machine, "machine", "", "with -netrc: the netrc machine (default: the host of -aud, the cache URL)")
	return fs, o
}

func runMint(args []string, stdout, stderr io.Writer) error {
	fs, o := mintFlags(stderr)
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("mint: unexpected arguments %q", fs.Args())
	}
	if o.issuer == "" || o.aud == "" {
		return errors.New("mint needs -issuer and -aud")
	}
	machine := o.machine
	if o.netrc != "" && machine == "" {
		u, err := url.Parse(o.aud)
		if err != nil || u.Hostname() == "" {
			return fmt.Errorf("-netrc: -aud %q is not a URL, so the netrc machine is unknown: set -machine", o.aud)
		}
		machine = u.Hostname()
	}
	var claims map[string]any
	switch {
	case o.github != "" && o.gitlab == "" && o.user == "":
		claims = claimshape.GitHubActions(o.github, o.ref, o.protected, o.actor)
	case o.gitlab != "" && o.github == "" && o.user == "":
		claims = claimshape.GitLabCI(o.gitlab, strings.TrimPrefix(o.ref, "refs/heads/"), o.protected, o.actor)
	case o.user != "" && o.github == "" && o.gitlab == "":
		claims = claimshape.User(o.user, o.org)
	default:
		return errors.New("mint needs exactly one of -github, -gitlab, -user")
	}
	iss, err := LoadOrCreate(o.dir)
	if err != nil {
		return err
	}
	tok, err := iss.Mint(o.issuer, o.aud, o.lifetime, claims)
	if err != nil {
		return err
	}
	if o.netrc == "" {
		fmt.Fprintln(stdout, tok)
		return nil
	}
	// Nix sends the password; flakegate ignores the login.
	if err := netrc.WriteEntry(o.netrc, machine, "flakegate", tok); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "token for machine %s written into %s\n", machine, o.netrc)
	return nil
}
