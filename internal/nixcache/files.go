package nixcache

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"
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

// CheckListing validates a NAR listing, <storehash>.ls
// (BinaryCacheStore::uploadData with write-nar-listing):
// {"version":1,"root":<node>}, where a node is {"type":"regular",
// "size":N,"executable":B,"narOffset":N} (size, executable and narOffset
// optional), {"type":"symlink","target":S} or {"type":"directory",
// "entries":{name:<node>,…}}; names are not empty, ".", ".." and hold no
// "/" or NUL; no other fields. See ReadListing.
func CheckListing(data []byte) error {
	return ReadListing(bytes.NewReader(data))
}

// ReadListing validates the NAR listing read from r (CheckListing)
// without holding it: it walks the JSON's tokens (json.Decoder.Token),
// keeping only the names of the directories it is in, so a listing of
// tens of megabytes costs the decoder's buffer (about the largest name or
// target) instead of the several times its size that a decoded tree of
// maps costs. Field names are matched exactly and a node's field may
// appear once; null stands for an absent optional field (as it did when
// listings were decoded into structs). Entry names repeated within a
// directory are not refused (telling them apart would hold every name);
// each of their nodes is checked. An error reading r is returned wrapped.
func ReadListing(r io.Reader) error {
	dec := json.NewDecoder(r)
	dec.UseNumber()
	w := listingWalker{dec: dec}
	if tok, err := w.token(); err != nil {
		return err
	} else if tok != json.Delim('{') {
		return errors.New("not a NAR listing: not a JSON object")
	}
	var version, root bool
	for dec.More() {
		key, err := w.key()
		if err != nil {
			return err
		}
		switch key {
		case "version":
			tok, err := w.token()
			if err != nil {
				return err
			}
			if n, ok := tok.(json.Number); version || !ok || n != "1" {
				return errors.New(`not a NAR listing: want "version": 1, once`)
			}
			version = true
		case "root":
			if root {
				return errors.New(`not a NAR listing: "root" appears twice`)
			}
			if err := w.node(0); err != nil {
				return err
			}
			root = true
		default:
			return fmt.Errorf("not a NAR listing: unknown field %q", key)
		}
	}
	if err := w.end(); err != nil {
		return err
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		if err != nil && !isSyntaxError(err) {
			return fmt.Errorf("not a NAR listing: %w", err)
		}
		return errors.New("not a NAR listing: data after the JSON value")
	}
	if !version {
		return errors.New(`not a NAR listing: want "version": 1`)
	}
	if !root {
		return errors.New(`not a NAR listing: no "root"`)
	}
	return nil
}

// listingWalker reads one listing's tokens (ReadListing).
type listingWalker struct {
	dec *json.Decoder
	// names are the entry names from the root to the node being read,
	// joined only for a message.
	names []string
}

// where names the node being read, for messages.
func (w *listingWalker) where() string {
	if len(w.names) == 0 {
		return "the root"
	}
	return "/" + strings.Join(w.names, "/")
}

func (w *listingWalker) token() (json.Token, error) {
	tok, err := w.dec.Token()
	if err != nil {
		if errors.Is(err, io.EOF) {
			err = io.ErrUnexpectedEOF
		}
		return nil, fmt.Errorf("not a NAR listing: %w", err)
	}
	return tok, nil
}

// end reads the '}' that ends an object whose last member was read: the
// decoder refuses anything else there.
func (w *listingWalker) end() error {
	_, err := w.token()
	return err
}

// key reads an object's key (the decoder refuses anything else there).
func (w *listingWalker) key() (string, error) {
	tok, err := w.token()
	if err != nil {
		return "", err
	}
	s, _ := tok.(string)
	return s, nil
}

// node reads and checks one node at depth (the root's is 0): its fields,
// then (its type may come last: Nix writes the fields sorted, "entries"
// before "type") whether they fit its type.
func (w *listingWalker) node(depth int) error {
	tok, err := w.token()
	if err != nil {
		return err
	}
	if tok == nil {
		if depth == 0 {
			return errors.New(`not a NAR listing: no "root"`)
		}
		return fmt.Errorf("NAR listing: %s/ is null", w.where())
	}
	if tok != json.Delim('{') {
		return fmt.Errorf("NAR listing: %s is not a JSON object", w.where())
	}
	if depth > maxListingDepth {
		return fmt.Errorf("NAR listing: directories nest deeper than %d", maxListingDepth)
	}
	// Which fields the node has (null counts as absent), and which it named.
	var typ string
	var size, executable, narOffset, target, entries bool
	var seen uint8 // nodeFields met so far
	for w.dec.More() {
		key, err := w.key()
		if err != nil {
			return err
		}
		bit := nodeFields[key]
		if seen&bit != 0 {
			return fmt.Errorf("NAR listing: %s has %q twice", w.where(), key)
		}
		seen |= bit
		switch key {
		case "type":
			tok, err := w.token()
			if err != nil {
				return err
			}
			s, ok := tok.(string)
			if !ok && tok != nil {
				return fmt.Errorf("NAR listing: the type of %s is not a string", w.where())
			}
			typ = s
		case "size", "narOffset":
			tok, err := w.token()
			if err != nil {
				return err
			}
			if tok != nil {
				n, ok := tok.(json.Number)
				if _, perr := strconv.ParseUint(string(n), 10, 64); !ok || perr != nil {
					return fmt.Errorf("NAR listing: %s of %s is not an integer from 0 to 2^64-1", key, w.where())
				}
			}
			if key == "size" {
				size = tok != nil
			} else {
				narOffset = tok != nil
			}
		case "executable":
			tok, err := w.token()
			if err != nil {
				return err
			}
			if _, ok := tok.(bool); !ok && tok != nil {
				return fmt.Errorf("NAR listing: executable of %s is not a boolean", w.where())
			}
			executable = tok != nil
		case "target":
			tok, err := w.token()
			if err != nil {
				return err
			}
			if _, ok := tok.(string); !ok && tok != nil {
				return fmt.Errorf("NAR listing: target of %s is not a string", w.where())
			}
			target = tok != nil
		case "entries":
			if entries, err = w.entries(depth); err != nil {
				return err
			}
		default:
			return fmt.Errorf("NAR listing: %s has unknown field %q", w.where(), key)
		}
	}
	if err := w.end(); err != nil {
		return err
	}
	switch typ {
	case "regular":
		if target || entries {
			return fmt.Errorf("NAR listing: regular file %s has a target or entries", w.where())
		}
	case "symlink":
		if !target || size || executable || narOffset || entries {
			return fmt.Errorf(`NAR listing: symlink %s must have only a "target"`, w.where())
		}
	case "directory":
		if !entries || size || executable || narOffset || target {
			return fmt.Errorf(`NAR listing: directory %s must have only "entries"`, w.where())
		}
	default:
		return fmt.Errorf("NAR listing: %s has unknown type %q", w.where(), typ)
	}
	return nil
}

// entries reads a node's entries (null: none, reported false) and checks
// each entry's name and node.
func (w *listingWalker) entries(depth int) (bool, error) {
	tok, err := w.token()
	if err != nil {
		return false, err
	}
	if tok == nil {
		return false, nil
	}
	if tok != json.Delim('{') {
		return false, fmt.Errorf("NAR listing: the entries of %s are not a JSON object", w.where())
	}
	for w.dec.More() {
		name, err := w.key()
		if err != nil {
			return false, err
		}
		if name == "" || name == "." || name == ".." || strings.ContainsAny(name, "/\x00") {
			return false, fmt.Errorf("NAR listing: invalid entry name %q in %s", name, w.where())
		}
		w.names = append(w.names, name)
		if err := w.node(depth + 1); err != nil {
			return false, err
		}
		w.names = w.names[:len(w.names)-1]
	}
	return true, w.end()
}

// nodeFields are a node's fields, each a bit (to refuse one named twice
// without a map per node).
var nodeFields = map[string]uint8{"type": 1, "size": 2, "narOffset": 4, "executable": 8, "target": 16, "entries": 32}

// isSyntaxError reports a JSON syntax error (as opposed to one reading
// the input).
func isSyntaxError(err error) bool {
	var se *json.SyntaxError
	return errors.As(err, &se)
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

// Realisation is what a realisation or a build trace entry says of an
// output, its signatures aside.
type Realisation struct {
	// OutPath is the output path's base name, "<hash>-<name>".
	OutPath string
	// Dependent are a realisation's dependentRealisations, id → base
	// name (none for a build trace entry).
	Dependent map[string]string
}

// Agreement returns a key of what r says: two realisations (or two build
// trace entries) of one output agree when their keys are equal, that is
// when they name the same output path, hash and name, and the same
// dependent realisations; their signatures do not count (each flake's
// pusher signs its own). It is "sha256:<hex>" of r as canonical JSON
// (encoding/json sorts a map's keys).
func (r Realisation) Agreement() string {
	dep := r.Dependent
	if len(dep) == 0 {
		dep = nil // {} and an absent field say the same
	}
	b, err := json.Marshal(struct {
		OutPath   string            `json:"outPath"`
		Dependent map[string]string `json:"dependentRealisations"`
	}{r.OutPath, dep})
	if err != nil {
		panic(err) // strings only: cannot fail
	}
	sum := sha256.Sum256(b)
	return "sha256:" + hex.EncodeToString(sum[:])
}

// CheckRealisation validates a realisation as Nix ≤ 2.33 writes it,
// realisations/<id>.doi (Realisation::toJSON): {"id":<id>,"outPath":
// "<hash>-<name>","signatures":[…],"dependentRealisations":{<id>:
// "<hash>-<name>",…}}, the id being the URL's. It returns the output
// path's base name.
func CheckRealisation(data []byte, id string) (outPath string, err error) {
	r, err := ParseRealisation(data, id)
	return r.OutPath, err
}

// ParseRealisation validates a realisation (CheckRealisation) and returns
// what it says.
func ParseRealisation(data []byte, id string) (Realisation, error) {
	var r struct {
		ID         *string           `json:"id"`
		OutPath    *string           `json:"outPath"`
		Signatures signatures        `json:"signatures"`
		Dependent  map[string]string `json:"dependentRealisations"`
	}
	if err := strictJSON(data, &r); err != nil {
		return Realisation{}, fmt.Errorf("not a realisation: %v", err)
	}
	if r.ID == nil || r.OutPath == nil {
		return Realisation{}, errors.New(`not a realisation: want "id" and "outPath"`)
	}
	if *r.ID != id {
		return Realisation{}, fmt.Errorf("realisation id %q does not match the URL's %q", *r.ID, id)
	}
	if !ValidStorePathBase(*r.OutPath) {
		return Realisation{}, fmt.Errorf("realisation outPath %q is not a store path base name", *r.OutPath)
	}
	if err := r.Signatures.check(); err != nil {
		return Realisation{}, fmt.Errorf("realisation: %v", err)
	}
	for dep, p := range r.Dependent {
		if !nixname.IsDrvOutputID(dep) || !ValidStorePathBase(p) {
			return Realisation{}, fmt.Errorf("realisation: dependent realisation %q → %q is not <id> → <hash>-<name>", dep, p)
		}
	}
	return Realisation{OutPath: *r.OutPath, Dependent: r.Dependent}, nil
}

// CheckBuildTrace validates a build trace entry as Nix ≥ 2.34 writes it,
// build-trace-v2/<drv>/<output>.doi (the UnkeyedRealisation JSON,
// realisation.cc): {"outPath":"<hash>-<name>","signatures":[…]}. It
// returns the output path's base name.
func CheckBuildTrace(data []byte) (outPath string, err error) {
	r, err := ParseBuildTrace(data)
	return r.OutPath, err
}

// ParseBuildTrace validates a build trace entry (CheckBuildTrace) and
// returns what it says.
func ParseBuildTrace(data []byte) (Realisation, error) {
	var r struct {
		OutPath    *string    `json:"outPath"`
		Signatures signatures `json:"signatures"`
	}
	if err := strictJSON(data, &r); err != nil {
		return Realisation{}, fmt.Errorf("not a build trace entry: %v", err)
	}
	if r.OutPath == nil {
		return Realisation{}, errors.New(`not a build trace entry: want "outPath"`)
	}
	if !ValidStorePathBase(*r.OutPath) {
		return Realisation{}, fmt.Errorf("build trace entry outPath %q is not a store path base name", *r.OutPath)
	}
	if err := r.Signatures.check(); err != nil {
		return Realisation{}, fmt.Errorf("build trace entry: %v", err)
	}
	return Realisation{OutPath: *r.OutPath}, nil
}
