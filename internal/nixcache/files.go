package nixcache

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/flakegate/flakegate/internal/nixname"
)

// The small JSON files Nix keeps in a binary cache besides narinfos and
// NARs, as Nix 2.8 to 2.35 write them (src/libstore/binary-cache-store.cc).
// Each Check* function validates one file's decoded bytes as far as its
// format allows and returns what it names, so that the blob server can
// require the pushing flake to own it.

// Limits on the files, compressed as uploaded and decoded.
const (
	// MaxListingSize bounds a .ls listing: a NAR of 100 000 files lists in
	// about 8 MB of JSON.
	MaxListingSize = 64 << 20
	// MaxSmallFileSize bounds a debug info link, a realisation or a build
	// trace entry (a few hundred bytes; signatures make them grow).
	MaxSmallFileSize = 64 << 10
	// maxSignatures bounds the signatures of a realisation.
	maxSignatures = 64
	// maxListingDepth bounds how deep a listing's directories nest.
	maxListingDepth = 256
)

// strictJSON decodes data, a single JSON value, into v refusing unknown
// fields and trailing data.
func strictJSON(data []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return err
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return errors.New("data after the JSON value")
	}
	return nil
}

// listingNode is one entry of a NAR listing (Nix's NarListing JSON:
// nar-accessor.cc, memory-source-accessor/json.cc).
type listingNode struct {
	Type       string                  `json:"type"`
	Size       *uint64                 `json:"size"`
	Executable *bool                   `json:"executable"`
	NarOffset  *uint64                 `json:"narOffset"`
	Target     *string                 `json:"target"`
	Entries    map[string]*listingNode `json:"entries"`
}

// CheckListing validates a NAR listing, <storehash>.ls
// (BinaryCacheStore::uploadData with write-nar-listing):
// {"version":1,"root":<node>}, where a node is {"type":"regular",
// "size":N,"executable":B,"narOffset":N} (size, executable and narOffset
// optional), {"type":"symlink","target":S} or {"type":"directory",
// "entries":{name:<node>,…}}; names are not empty, ".", ".." and hold no
// "/" or NUL; no other fields.
func CheckListing(data []byte) error {
	var l struct {
		Version *int         `json:"version"`
		Root    *listingNode `json:"root"`
	}
	if err := strictJSON(data, &l); err != nil {
		return fmt.Errorf("not a NAR listing: %v", err)
	}
	if l.Version == nil || *l.Version != 1 {
		return errors.New(`not a NAR listing: want "version": 1`)
	}
	if l.Root == nil {
		return errors.New(`not a NAR listing: no "root"`)
	}
	return checkNode(l.Root, "", 0)
}

func checkNode(n *listingNode, at string, depth int) error {
	if n == nil {
		return fmt.Errorf("NAR listing: %s/ is null", at)
	}
	if depth > maxListingDepth {
		return fmt.Errorf("NAR listing: directories nest deeper than %d", maxListingDepth)
	}
	where := at
	if where == "" {
		where = "the root"
	}
	switch n.Type {
	case "regular":
		if n.Target != nil || n.Entries != nil {
			return fmt.Errorf("NAR listing: regular file %s has a target or entries", where)
		}
	case "symlink":
		if n.Target == nil || n.Size != nil || n.Executable != nil || n.NarOffset != nil || n.Entries != nil {
			return fmt.Errorf(`NAR listing: symlink %s must have only a "target"`, where)
		}
	case "directory":
		if n.Entries == nil || n.Size != nil || n.Executable != nil || n.NarOffset != nil || n.Target != nil {
			return fmt.Errorf(`NAR listing: directory %s must have only "entries"`, where)
		}
		for name, child := range n.Entries {
			if name == "" || name == "." || name == ".." || strings.ContainsAny(name, "/\x00") {
				return fmt.Errorf("NAR listing: invalid entry name %q in %s", name, where)
			}
			if err := checkNode(child, at+"/"+name, depth+1); err != nil {
				return err
			}
		}
	default:
		return fmt.Errorf("NAR listing: %s has unknown type %q", where, n.Type)
	}
	return nil
}

// DebugInfoMember is the NAR member a debug info link of buildID (40 hex
// digits, possibly followed by ".debug") names:
// lib/debug/.build-id/<2 hex digits>/<38 hex digits>.debug.
func DebugInfoMember(buildID string) string {
	return "lib/debug/.build-id/" + buildID[:2] + "/" + buildID[2:40] + ".debug"
}

// CheckDebugInfo validates a debug info link, debuginfo/<build-id>.debug
// (BinaryCacheStore::uploadData with index-debug-info):
// {"archive":"../nar/<NAR file>","member":"lib/debug/.build-id/xx/….debug"},
// the member being the one of buildID, and returns the NAR file it names.
func CheckDebugInfo(data []byte, buildID string) (narFile string, err error) {
	var d struct {
		Archive *string `json:"archive"`
		Member  *string `json:"member"`
	}
	if err := strictJSON(data, &d); err != nil {
		return "", fmt.Errorf("not a debug info link: %v", err)
	}
	if d.Archive == nil || d.Member == nil {
		return "", errors.New(`not a debug info link: want "archive" and "member"`)
	}
	file, ok := strings.CutPrefix(*d.Archive, "../nar/")
	if _, _, valid := nixname.ParseNarFile(file); !ok || !valid {
		return "", fmt.Errorf("debug info link: archive %q is not ../nar/<NAR file>", *d.Archive)
	}
	if want := DebugInfoMember(buildID); *d.Member != want {
		return "", fmt.Errorf("debug info link: member %q is not %q (the build id's)", *d.Member, want)
	}
	return file, nil
}

// signatures holds a realisation's signatures: strings "name:base64" (Nix
// ≤ 2.33) or objects {"keyName","sig"} (Nix 2.35, signature format 2).
type signatures []json.RawMessage

func (s signatures) check() error {
	if len(s) > maxSignatures {
		return fmt.Errorf("more than %d signatures", maxSignatures)
	}
	for _, raw := range s {
		var str string
		if json.Unmarshal(raw, &str) == nil {
			if name, sig, ok := strings.Cut(str, ":"); !ok || name == "" || sig == "" {
				return fmt.Errorf("signature %q is not name:base64", str)
			}
			continue
		}
		var obj struct {
			KeyName *string `json:"keyName"`
			Sig     *string `json:"sig"`
		}
		if err := strictJSON(raw, &obj); err != nil || obj.KeyName == nil || obj.Sig == nil || *obj.KeyName == "" || *obj.Sig == "" {
			return errors.New(`a signature is neither "name:base64" nor {"keyName", "sig"}`)
		}
	}
	return nil
}

// CheckRealisation validates a realisation as Nix ≤ 2.33 writes it,
// realisations/<id>.doi (Realisation::toJSON): {"id":<id>,"outPath":
// "<hash>-<name>","signatures":[…],"dependentRealisations":{<id>:
// "<hash>-<name>",…}}, the id being the URL's. It returns the output
// path's base name.
func CheckRealisation(data []byte, id string) (outPath string, err error) {
	var r struct {
		ID         *string           `json:"id"`
		OutPath    *string           `json:"outPath"`
		Signatures signatures        `json:"signatures"`
		Dependent  map[string]string `json:"dependentRealisations"`
	}
	if err := strictJSON(data, &r); err != nil {
		return "", fmt.Errorf("not a realisation: %v", err)
	}
	if r.ID == nil || r.OutPath == nil {
		return "", errors.New(`not a realisation: want "id" and "outPath"`)
	}
	if *r.ID != id {
		return "", fmt.Errorf("realisation id %q does not match the URL's %q", *r.ID, id)
	}
	if !ValidStorePathBase(*r.OutPath) {
		return "", fmt.Errorf("realisation outPath %q is not a store path base name", *r.OutPath)
	}
	if err := r.Signatures.check(); err != nil {
		return "", fmt.Errorf("realisation: %v", err)
	}
	for dep, p := range r.Dependent {
		if !nixname.IsDrvOutputID(dep) || !ValidStorePathBase(p) {
			return "", fmt.Errorf("realisation: dependent realisation %q → %q is not <id> → <hash>-<name>", dep, p)
		}
	}
	return *r.OutPath, nil
}

// CheckBuildTrace validates a build trace entry as Nix ≥ 2.34 writes it,
// build-trace-v2/<drv>/<output>.doi (the UnkeyedRealisation JSON,
// realisation.cc): {"outPath":"<hash>-<name>","signatures":[…]}. It
// returns the output path's base name.
func CheckBuildTrace(data []byte) (outPath string, err error) {
	var r struct {
		OutPath    *string    `json:"outPath"`
		Signatures signatures `json:"signatures"`
	}
	if err := strictJSON(data, &r); err != nil {
		return "", fmt.Errorf("not a build trace entry: %v", err)
	}
	if r.OutPath == nil {
		return "", errors.New(`not a build trace entry: want "outPath"`)
	}
	if !ValidStorePathBase(*r.OutPath) {
		return "", fmt.Errorf("build trace entry outPath %q is not a store path base name", *r.OutPath)
	}
	if err := r.Signatures.check(); err != nil {
		return "", fmt.Errorf("build trace entry: %v", err)
	}
	return *r.OutPath, nil
}
