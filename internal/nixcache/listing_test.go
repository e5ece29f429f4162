package nixcache

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"runtime"
	"strings"
	"testing"
)

// refListingNode and refCheckListing are the listing check as it was
// before ReadListing (a decoded tree of structs and maps), kept as the
// reference ReadListing must not be weaker than.
type refListingNode struct {
	Type       string                     `json:"type"`
	Size       *uint64                    `json:"size"`
	Executable *bool                      `json:"executable"`
	NarOffset  *uint64                    `json:"narOffset"`
	Target     *string                    `json:"target"`
	Entries    map[string]*refListingNode `json:"entries"`
}

func refCheckListing(data []byte) error {
	var l struct {
		Version *int            `json:"version"`
		Root    *refListingNode `json:"root"`
	}
	if err := strictJSON(data, &l); err != nil {
		return err
	}
	if l.Version == nil || *l.Version != 1 || l.Root == nil {
		return errors.New("version or root")
	}
	return refCheckNode(l.Root, 0)
}

func refCheckNode(n *refListingNode, depth int) error {
	if n == nil || depth > maxListingDepth {
		return errors.New("null or deep")
	}
	switch n.Type {
	case "regular":
		if n.Target != nil || n.Entries != nil {
			return errors.New("regular")
		}
	case "symlink":
		if n.Target == nil || n.Size != nil || n.Executable != nil || n.NarOffset != nil || n.Entries != nil {
			return errors.New("symlink")
		}
	case "directory":
		if n.Entries == nil || n.Size != nil || n.Executable != nil || n.NarOffset != nil || n.Target != nil {
			return errors.New("directory")
		}
		for name, child := range n.Entries {
			if name == "" || name == "." || name == ".." || strings.ContainsAny(name, "/\x00") {
				return errors.New("name")
			}
			if err := refCheckNode(child, depth+1); err != nil {
				return err
			}
		}
	default:
		return errors.New("type")
	}
	return nil
}

// nested is a listing whose root is a chain of n directories.
func nested(n int) string {
	return `{"version":1,"root":` + strings.Repeat(`{"type":"directory","entries":{"d":`, n) + `{"type":"regular"}` + strings.Repeat(`}}`, n) + `}`
}

var listingCases = []struct {
	name, listing string
	ok            bool
	msg           string // in the error
}{
	{"Nix's listing", `{"root":{"entries":{"bin":{"entries":{"hello":{"executable":true,"narOffset":400,"size":5,"type":"regular"}},"type":"directory"},"lib":{"target":"bin","type":"symlink"}},"type":"directory"},"version":1}`, true, ""},
	{"root before version", `{"root":{"type":"regular"},"version":1}`, true, ""},
	{"empty directory", `{"version":1,"root":{"type":"directory","entries":{}}}`, true, ""},
	{"null optional fields", `{"version":1,"root":{"type":"regular","size":null,"executable":null,"narOffset":null,"target":null,"entries":null}}`, true, ""},
	{"largest size", `{"version":1,"root":{"type":"regular","size":18446744073709551615}}`, true, ""},
	{"nesting at the limit", nested(maxListingDepth), true, ""},
	{"space around", " \n" + `{"version":1,"root":{"type":"regular"}}` + "\n ", true, ""},

	{"nesting beyond the limit", nested(maxListingDepth + 1), false, "nest deeper than 256"},
	{"not JSON", `outPath: x`, false, "not a NAR listing"},
	{"truncated", `{"version":1,"root":`, false, "not a NAR listing"},
	{"truncated in a directory", `{"version":1,"root":{"type":"directory","entries":{"a":{"type":"regular"}`, false, "not a NAR listing"},
	{"empty", ``, false, "not a NAR listing"},
	{"array", `[1]`, false, "not a JSON object"},
	{"trailing data", `{"version":1,"root":{"type":"regular"}} {}`, false, "data after the JSON value"},
	{"trailing garbage", `{"version":1,"root":{"type":"regular"}}x`, false, "data after the JSON value"},
	{"no version", `{"root":{"type":"regular"}}`, false, `"version": 1`},
	{"version 2", `{"version":2,"root":{"type":"regular"}}`, false, `"version": 1`},
	{"version 1.0", `{"version":1.0,"root":{"type":"regular"}}`, false, `"version": 1`},
	{"version as a string", `{"version":"1","root":{"type":"regular"}}`, false, `"version": 1`},
	{"no root", `{"version":1}`, false, `no "root"`},
	{"null root", `{"version":1,"root":null}`, false, `no "root"`},
	{"root not an object", `{"version":1,"root":"x"}`, false, "not a JSON object"},
	{"unknown top field", `{"version":1,"root":{"type":"regular"},"x":1}`, false, "unknown field"},
	{"unknown node field", `{"version":1,"root":{"type":"regular","contents":"x"}}`, false, "unknown field"},
	{"unknown type", `{"version":1,"root":{"type":"fifo"}}`, false, `unknown type "fifo"`},
	{"no type", `{"version":1,"root":{}}`, false, `unknown type ""`},
	{"type not a string", `{"version":1,"root":{"type":1}}`, false, "not a string"},
	{"regular with target", `{"version":1,"root":{"type":"regular","target":"x"}}`, false, "has a target or entries"},
	{"regular with entries", `{"version":1,"root":{"entries":{},"type":"regular"}}`, false, "has a target or entries"},
	{"symlink without target", `{"version":1,"root":{"type":"symlink"}}`, false, `must have only a "target"`},
	{"symlink with size", `{"version":1,"root":{"type":"symlink","target":"x","size":1}}`, false, `must have only a "target"`},
	{"directory without entries", `{"version":1,"root":{"type":"directory"}}`, false, `must have only "entries"`},
	{"directory with executable", `{"version":1,"root":{"type":"directory","entries":{},"executable":false}}`, false, `must have only "entries"`},
	{"entries not an object", `{"version":1,"root":{"type":"directory","entries":[]}}`, false, "not a JSON object"},
	{"negative size", `{"version":1,"root":{"type":"regular","size":-1}}`, false, "not an integer"},
	{"fractional offset", `{"version":1,"root":{"type":"regular","narOffset":1.5}}`, false, "not an integer"},
	{"exponent size", `{"version":1,"root":{"type":"regular","size":1e3}}`, false, "not an integer"},
	{"size beyond 2^64", `{"version":1,"root":{"type":"regular","size":18446744073709551616}}`, false, "not an integer"},
	{"size as a string", `{"version":1,"root":{"type":"regular","size":"5"}}`, false, "not an integer"},
	{"executable as a string", `{"version":1,"root":{"type":"regular","executable":"true"}}`, false, "not a boolean"},
	{"target not a string", `{"version":1,"root":{"type":"symlink","target":1}}`, false, "not a string"},
	{"name ..", `{"version":1,"root":{"type":"directory","entries":{"..":{"type":"regular"}}}}`, false, "invalid entry name"},
	{"name .", `{"version":1,"root":{"type":"directory","entries":{".":{"type":"regular"}}}}`, false, "invalid entry name"},
	{"empty name", `{"version":1,"root":{"type":"directory","entries":{"":{"type":"regular"}}}}`, false, "invalid entry name"},
	{"name with a slash", `{"version":1,"root":{"type":"directory","entries":{"a/b":{"type":"regular"}}}}`, false, "invalid entry name"},
	{"name with NUL", `{"version":1,"root":{"type":"directory","entries":{"a\u0000":{"type":"regular"}}}}`, false, "invalid entry name"},
	{"null entry", `{"version":1,"root":{"type":"directory","entries":{"a":null}}}`, false, "/a/ is null"},
	{"bad node deep down", `{"version":1,"root":{"type":"directory","entries":{"a":{"type":"directory","entries":{"b":{"type":"fifo"}}}}}}`, false, `/a/b has unknown type "fifo"`},
	// The walk checks every node: a repeated entry name's first node was
	// decoded, then replaced, by the decoder of a map.
	{"repeated name, first node bad", `{"version":1,"root":{"type":"directory","entries":{"a":{"type":"symlink"},"a":{"type":"regular"}}}}`, false, `symlink /a must have only a "target"`},
	// Stricter than a struct decoder, which matched names in any case and
	// let a repeated field's last value win: Nix writes neither.
	{"field name in another case", `{"version":1,"root":{"Type":"regular"}}`, false, "unknown field"},
	{"repeated field", `{"version":1,"root":{"type":"directory","type":"regular"}}`, false, `"type" twice`},
	{"repeated version", `{"version":1,"version":1,"root":{"type":"regular"}}`, false, `"version": 1, once`},
}

func TestReadListing(t *testing.T) {
	for _, c := range listingCases {
		t.Run(c.name, func(t *testing.T) {
			err := CheckListing([]byte(c.listing))
			if c.ok != (err == nil) || (err != nil && !strings.Contains(err.Error(), c.msg)) {
				t.Fatalf("CheckListing: %v; want ok=%v with %q", err, c.ok, c.msg)
			}
			// Never weaker than the decoded tree's check.
			if refCheckListing([]byte(c.listing)) != nil && err == nil {
				t.Fatalf("accepted a listing the former check refused")
			}
		})
	}
}

// A read error (the decoder's: too large, does not decode) comes back
// wrapped, not as a syntax error.
func TestReadListingReadError(t *testing.T) {
	boom := fmt.Errorf("%w: decodes to more than 5 bytes", ErrTooLarge)
	for _, at := range []int{0, 10, 30, 39} {
		listing := `{"version":1,"root":{"type":"regular"}}`
		r := io.MultiReader(strings.NewReader(listing[:at]), &failingReader{boom})
		if err := ReadListing(r); !errors.Is(err, ErrTooLarge) {
			t.Errorf("read error after %d bytes: %v; want it wrapped", at, err)
		}
	}
}

type failingReader struct{ err error }

func (f *failingReader) Read([]byte) (int, error) { return 0, f.err }

// FuzzReadListing: ReadListing never accepts what the former check (a
// decoded tree) refused, apart from what it refuses on purpose (fields
// matched in any case and repeated fields, accepted by the struct
// decoder), and never panics.
func FuzzReadListing(f *testing.F) {
	for _, c := range listingCases {
		f.Add([]byte(c.listing))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		err := ReadListing(bytes.NewReader(data))
		if err == nil && refCheckListing(data) != nil {
			t.Fatalf("accepted %q, which the former check refused", data)
		}
	})
}

// ReadListing holds a listing's names, not the listing: checking one of
// 40 MiB (a directory of 700 000 files) keeps the heap in use (sampled
// while it runs) far below the listing's size; a decoded tree held
// several times it.
func TestReadListingMemory(t *testing.T) {
	if testing.Short() {
		t.Skip("builds a 40 MiB listing")
	}
	var l bytes.Buffer
	l.WriteString(`{"version":1,"root":{"type":"directory","entries":{`)
	for i := 0; l.Len() < 40<<20; i++ {
		if i > 0 {
			l.WriteByte(',')
		}
		fmt.Fprintf(&l, `"f%07d":{"type":"regular","size":0,"narOffset":0}`, i)
	}
	l.WriteString(`}}}`)
	data := l.Bytes()
	runtime.GC()
	var base runtime.MemStats
	runtime.ReadMemStats(&base)
	// The reader samples the heap as the walk reads, every 4 MiB.
	peak := base.HeapAlloc
	r := &samplingReader{r: bytes.NewReader(data), every: 4 << 20, sample: func() {
		runtime.GC()
		var m runtime.MemStats
		runtime.ReadMemStats(&m)
		peak = max(peak, m.HeapAlloc)
	}}
	if err := ReadListing(r); err != nil {
		t.Fatal(err)
	}
	grew := int64(peak) - int64(base.HeapAlloc)
	t.Logf("listing of %d MiB: heap grew by at most %d KiB while it was checked", len(data)>>20, grew>>10)
	if grew > 4<<20 {
		t.Errorf("checking a %d MiB listing held %d MiB more heap; want under 4 MiB", len(data)>>20, grew>>20)
	}
}

type samplingReader struct {
	r      io.Reader
	every  int
	n      int
	sample func()
}

func (s *samplingReader) Read(p []byte) (int, error) {
	n, err := s.r.Read(p)
	s.n += n
	if s.n >= s.every {
		s.n = 0
		s.sample()
	}
	return n, err
}
