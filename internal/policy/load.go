package policy

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"
)

// fileKind says what a file of the policy directory is used for.
type fileKind int

const (
	kindIgnored fileKind = iota
	kindPolicy           // *.rego, part of the active set
	kindTest             // *_test.rego, only run by Check
	kindData             // *.json, *.yaml, *.yml, loaded under data.<basename>
)

// classify decides from a directory entry's name alone what it is. The
// policy directory is read non-recursively; dotfiles (including the
// Kubernetes ConfigMap "..data" machinery) and editor leftovers are ignored.
func classify(name string) fileKind {
	switch {
	case name == "" || strings.HasPrefix(name, ".") || strings.HasPrefix(name, "#") ||
		strings.HasSuffix(name, "~") || strings.HasSuffix(name, "#"):
		return kindIgnored
	case strings.HasSuffix(name, "_test.rego"):
		return kindTest
	case strings.HasSuffix(name, ".rego"):
		return kindPolicy
	case strings.HasSuffix(name, ".json"), strings.HasSuffix(name, ".yaml"), strings.HasSuffix(name, ".yml"):
		return kindData
	}
	return kindIgnored
}

// maxPostpone bounds, in debounces, how long events may keep pushing a
// reload back (Engine.Run).
const maxPostpone = 4

// eventMatters reports whether a watch event on name (a path in dir) may
// change the active set: the directory itself, a file the engine reads or
// a Kubernetes ConfigMap's "..data" machinery. Events of files classify
// ignores (editor swap files, .git) do not.
func eventMatters(dir, name string) bool {
	if name == dir || filepath.Dir(name) != dir {
		return true
	}
	base := filepath.Base(name)
	return strings.HasPrefix(base, "..") || classify(base) != kindIgnored
}

// sourceFile is one file read from the policy directory.
type sourceFile struct {
	Name    string // base name inside the directory
	Kind    fileKind
	Content []byte
}

// snapshot is the content of a policy directory at one moment.
type snapshot struct {
	Files    []sourceFile // sorted by name
	Revision string       // short content hash over the active set (policies and data)
	// ModulesRevision hashes the policy (.rego) files only: a change of
	// data files alone keeps it, and the compiled modules can be reused.
	ModulesRevision string
	// Modified is the latest change time (see fileStamp.changed) of the
	// directory and of the files of the active set: the engine activates
	// the snapshot only once that is Debounce ago (see settle.go).
	Modified time.Time
	stampKey string // the stat state it was read in (see settleWait)
}

// Names lists the files of the active set (policies and data), for logs.
func (s *snapshot) Names() []string {
	names := make([]string, 0, len(s.Files))
	for _, f := range s.Files {
		if f.Kind == kindPolicy || f.Kind == kindData {
			names = append(names, f.Name)
		}
	}
	return names
}

// readDir reads every policy, data and (with tests) test file of dir.
// Symlinks are followed. A file that cannot be read fails the whole
// snapshot: serving a partial set (say, the policy without its data file)
// could open access that the complete set denies.
//
// Each file is stat'ed before and after it is read, and the directory
// before it is listed and after every file is read: a difference means a
// writer was at work, and readDir returns an *unsettledError instead of a
// snapshot that may mix old and new content or hold a half-written file.
func readDir(dir string, withTests bool) (*snapshot, error) {
	dirBefore, err := os.Stat(dir)
	if err != nil {
		return nil, fmt.Errorf("read policy directory %s: %w", dir, err)
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("read policy directory %s: %w", dir, err)
	}
	snap := &snapshot{}
	stampNames := []string{"."}
	stamps := []fileStamp{stampOf(dirBefore)}
	for _, e := range entries {
		kind := classify(e.Name())
		if kind == kindIgnored || (kind == kindTest && !withTests) {
			continue
		}
		path := filepath.Join(dir, e.Name())
		// Stat follows symlinks: ConfigMap files are symlinks into ..data/.
		info, err := os.Stat(path)
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				if _, lerr := os.Lstat(path); errors.Is(lerr, fs.ErrNotExist) {
					return nil, &unsettledError{fmt.Sprintf("policy file %s vanished while the directory was read", path)}
				}
			}
			return nil, fmt.Errorf("stat policy file %s: %w", path, err) // a dangling symlink, a permission problem…
		}
		if !info.Mode().IsRegular() {
			continue // a directory named like a policy file, a socket…
		}
		content, err := os.ReadFile(path)
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return nil, &unsettledError{fmt.Sprintf("policy file %s vanished while it was read", path)}
			}
			return nil, fmt.Errorf("read policy file %s: %w", path, err)
		}
		after, err := os.Stat(path)
		if errors.Is(err, fs.ErrNotExist) {
			return nil, &unsettledError{fmt.Sprintf("policy file %s vanished while it was read", path)}
		} else if err != nil {
			return nil, fmt.Errorf("stat policy file %s: %w", path, err)
		}
		stamp := stampOf(info)
		if !stamp.same(stampOf(after)) || int64(len(content)) != after.Size() {
			return nil, &unsettledError{fmt.Sprintf("policy file %s changed while it was read", path)}
		}
		snap.Files = append(snap.Files, sourceFile{Name: e.Name(), Kind: kind, Content: content})
		if kind != kindTest { // tests do not decide, so they need not settle
			stampNames = append(stampNames, e.Name())
			stamps = append(stamps, stamp)
		}
	}
	dirAfter, err := os.Stat(dir)
	if err != nil {
		return nil, fmt.Errorf("read policy directory %s: %w", dir, err)
	}
	if !stamps[0].same(stampOf(dirAfter)) {
		return nil, &unsettledError{fmt.Sprintf("policy directory %s changed while it was read", dir)}
	}
	for _, st := range stamps {
		snap.Modified = later(snap.Modified, st.changed())
	}
	snap.stampKey = stampKey(stampNames, stamps)
	slices.SortFunc(snap.Files, func(a, b sourceFile) int { return strings.Compare(a.Name, b.Name) })
	snap.Revision = revisionOf(snap.Files, kindPolicy, kindData)
	snap.ModulesRevision = revisionOf(snap.Files, kindPolicy)
	return snap, nil
}

// revisionOf hashes the sorted (name, content) pairs of the active set. Test
// files are left out: they do not change a decision.
func revisionOf(files []sourceFile, kinds ...fileKind) string {
	h := sha256.New()
	var n [8]byte
	for _, f := range files {
		if !slices.Contains(kinds, f.Kind) {
			continue
		}
		// Length-prefix both parts so that no two different sets hash alike.
		binary.BigEndian.PutUint64(n[:], uint64(len(f.Name)))
		h.Write(n[:])
		h.Write([]byte(f.Name))
		binary.BigEndian.PutUint64(n[:], uint64(len(f.Content)))
		h.Write(n[:])
		h.Write(f.Content)
	}
	return hex.EncodeToString(h.Sum(nil))[:12]
}
