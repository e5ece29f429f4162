package nixcache

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"strings"
)

// NAR wire format (Nix's nix-archive-1): every token is a string encoded as
// a little-endian uint64 length, the bytes, and zero padding to a multiple
// of 8:
//
//	nar       = "nix-archive-1" node
//	node      = "(" "type" ( regular | symlink | directory ) ")"
//	regular   = "regular" [ "executable" "" ] "contents" <bytes>
//	symlink   = "symlink" "target" <target>
//	directory = "directory" { "entry" "(" "name" <name> "node" node ")" }

const (
	narMaxDepth     = 256
	narMaxName      = 255
	narMaxTarget    = 4095
	narMaxTokenSize = 16
)

// checkNAR reads one NAR from r, checking its structure, and then requires
// r to end. File contents are skipped, not held.
func checkNAR(r *bufio.Reader) error { return checkNARSkipping(r, nil) }

// skipper is a reader that can pass over bytes without copying them out.
type skipper interface {
	// Skip passes over up to n bytes and says how many it passed; fewer
	// than n only with an error.
	Skip(n int64) (int64, error)
}

// checkNARSkipping is checkNAR where r reads from under: file contents
// beyond what r has buffered are skipped in under, without being copied
// through r's buffer. under may be nil.
func checkNARSkipping(r *bufio.Reader, under skipper) error {
	c := narChecker{r: r, under: under}
	if err := c.expect("nix-archive-1"); err != nil {
		var ne *narError
		if errors.As(err, &ne) {
			return narErrorf("not a NAR: it does not start with the nix-archive-1 header")
		}
		return err
	}
	if err := c.node(0); err != nil {
		return err
	}
	if _, err := r.ReadByte(); err != io.EOF {
		if err == nil {
			return narErrorf("NAR: trailing data after the archive")
		}
		return err
	}
	return nil
}

// narError is a defect in the NAR itself (as opposed to a read error).
type narError struct{ msg string }

func (e *narError) Error() string { return e.msg }

func narErrorf(format string, args ...any) error {
	return &narError{msg: fmt.Sprintf(format, args...)}
}

type narChecker struct {
	r     *bufio.Reader
	under skipper // what r reads from, when it can skip; or nil
	buf   [8]byte
}

// discard passes over n bytes of file contents.
func (c *narChecker) discard(n uint64) error {
	if c.under == nil {
		_, err := c.r.Discard(int(n))
		return err
	}
	// r's buffer first; once it is empty, under's position is r's.
	b := min(uint64(c.r.Buffered()), n)
	if _, err := c.r.Discard(int(b)); err != nil {
		return err
	}
	if n -= b; n > 0 {
		if _, err := c.under.Skip(int64(n)); err != nil {
			return err
		}
	}
	return nil
}

func (c *narChecker) u64() (uint64, error) {
	if _, err := io.ReadFull(c.r, c.buf[:]); err != nil {
		return 0, truncated(err)
	}
	return binary.LittleEndian.Uint64(c.buf[:]), nil
}

func truncated(err error) error {
	if err == io.EOF || err == io.ErrUnexpectedEOF {
		return narErrorf("NAR is truncated")
	}
	return err
}

// padding reads the zero padding after n bytes of string data.
func (c *narChecker) padding(n uint64) error {
	p := (8 - n%8) % 8
	if p == 0 {
		return nil
	}
	if _, err := io.ReadFull(c.r, c.buf[:p]); err != nil {
		return truncated(err)
	}
	for _, b := range c.buf[:p] {
		if b != 0 {
			return narErrorf("NAR: non-zero padding")
		}
	}
	return nil
}

// str reads a string token of at most max bytes.
func (c *narChecker) str(max uint64) (string, error) {
	n, err := c.u64()
	if err != nil {
		return "", err
	}
	if n > max {
		return "", narErrorf("NAR: string of %d bytes where at most %d are allowed", n, max)
	}
	b := make([]byte, n)
	if _, err := io.ReadFull(c.r, b); err != nil {
		return "", truncated(err)
	}
	if err := c.padding(n); err != nil {
		return "", err
	}
	return string(b), nil
}

func (c *narChecker) expect(want string) error {
	got, err := c.str(uint64(max(len(want), narMaxTokenSize)))
	if err != nil {
		return err
	}
	if got != want {
		return narErrorf("NAR: expected %q, got %q", want, got)
	}
	return nil
}

func (c *narChecker) node(depth int) error {
	if depth > narMaxDepth {
		return narErrorf("NAR: directories nested deeper than %d", narMaxDepth)
	}
	if err := c.expect("("); err != nil {
		return err
	}
	if err := c.expect("type"); err != nil {
		return err
	}
	typ, err := c.str(narMaxTokenSize)
	if err != nil {
		return err
	}
	switch typ {
	case "regular":
		tok, err := c.str(narMaxTokenSize)
		if err != nil {
			return err
		}
		if tok == "executable" {
			if err := c.expect(""); err != nil {
				return err
			}
			if tok, err = c.str(narMaxTokenSize); err != nil {
				return err
			}
		}
		if tok != "contents" {
			return narErrorf("NAR: expected \"contents\", got %q", tok)
		}
		n, err := c.u64()
		if err != nil {
			return err
		}
		if n > 1<<62 {
			return narErrorf("NAR: file of %d bytes", n)
		}
		if err := c.discard(n); err != nil {
			return truncated(err)
		}
		if err := c.padding(n); err != nil {
			return err
		}
	case "symlink":
		if err := c.expect("target"); err != nil {
			return err
		}
		t, err := c.str(narMaxTarget)
		if err != nil {
			return err
		}
		if t == "" || strings.IndexByte(t, 0) >= 0 {
			return narErrorf("NAR: invalid symlink target")
		}
	case "directory":
		prev := ""
		for {
			tok, err := c.str(narMaxTokenSize)
			if err != nil {
				return err
			}
			if tok == ")" {
				return nil
			}
			if tok != "entry" {
				return narErrorf("NAR: expected \"entry\" or \")\", got %q", tok)
			}
			if err := c.expect("("); err != nil {
				return err
			}
			if err := c.expect("name"); err != nil {
				return err
			}
			name, err := c.str(narMaxName)
			if err != nil {
				return err
			}
			if name == "" || name == "." || name == ".." || strings.ContainsAny(name, "/\x00") {
				return narErrorf("NAR: invalid entry name %q", name)
			}
			if prev != "" && name <= prev {
				return narErrorf("NAR: entry %q is not sorted after %q", name, prev)
			}
			prev = name
			if err := c.expect("node"); err != nil {
				return err
			}
			if err := c.node(depth + 1); err != nil {
				return err
			}
			if err := c.expect(")"); err != nil {
				return err
			}
		}
	default:
		return narErrorf("NAR: unknown node type %q", typ)
	}
	return c.expect(")")
}
