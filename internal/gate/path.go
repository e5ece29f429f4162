package gate

import (
	"errors"
	"net/http"
	"net/url"
	"strings"
	"unicode/utf8"
)

// errEscapedSlash is Envoy's path_with_escaped_slashes_action: REJECT_REQUEST.
var errEscapedSlash = errors.New("escaped slash or backslash (%2F, %5C) in path")

// canonicalPath normalizes an escaped URL path the way envoy/envoy.yaml
// configures Envoy's connection manager (normalize_path, merge_slashes,
// path_with_escaped_slashes_action: REJECT_REQUEST), so that the gate and
// Envoy authorize and serve the same path:
//   - %2F and %5C (any case) are refused;
//   - percent-encoded unreserved characters (A-Z a-z 0-9 - . _ ~) are
//     decoded, the hex digits of the other escapes upper-cased (RFC 3986
//     section 6.2.2) and a '%' that starts no escape becomes "%25";
//   - runs of slashes become one;
//   - "." and ".." segments are resolved (RFC 3986 section 5.2.4).
//
// The common case, a path with none of these, is returned as is without
// allocating.
func canonicalPath(p string) (string, error) {
	if !strings.HasPrefix(p, "/") {
		return p, nil // "*" (OPTIONS) and the like: nothing to normalize
	}
	if !strings.Contains(p, "%") && !strings.Contains(p, "//") && !strings.Contains(p, "/.") {
		return p, nil
	}
	if strings.Contains(p, "%") {
		var err error
		if p, err = normalizeEscapes(p); err != nil {
			return "", err
		}
	}
	for strings.Contains(p, "//") {
		p = strings.ReplaceAll(p, "//", "/")
	}
	return removeDotSegments(p), nil
}

func normalizeEscapes(p string) (string, error) {
	var sb strings.Builder
	sb.Grow(len(p))
	for i := 0; i < len(p); i++ {
		c := p[i]
		if c != '%' {
			sb.WriteByte(c)
			continue
		}
		if i+2 >= len(p) || !isHex(p[i+1]) || !isHex(p[i+2]) {
			sb.WriteString("%25") // a lone '%' is escaped, so decoding never happens twice
			continue
		}
		d := unhex(p[i+1])<<4 | unhex(p[i+2])
		switch {
		case d == '/' || d == '\\':
			return "", errEscapedSlash
		case isUnreserved(d):
			sb.WriteByte(d)
		default:
			sb.WriteByte('%')
			sb.WriteByte(upperHex(p[i+1]))
			sb.WriteByte(upperHex(p[i+2]))
		}
		i += 2
	}
	return sb.String(), nil
}

// removeDotSegments resolves "." and ".." in a path that starts with "/"
// and has no empty segments except possibly a trailing one.
func removeDotSegments(p string) string {
	segs := strings.Split(p[1:], "/")
	out := make([]string, 0, len(segs))
	for i, s := range segs {
		last := i == len(segs)-1
		switch s {
		case ".":
			if last {
				out = append(out, "")
			}
		case "..":
			if len(out) > 0 {
				out = out[:len(out)-1]
			}
			if last {
				out = append(out, "")
			}
		default:
			out = append(out, s)
		}
	}
	return "/" + strings.Join(out, "/")
}

// canonicalizeRequest rewrites r's path to its canonical form (see
// canonicalPath) so the Check and the handler behind the gate see the same
// path. It fails for escaped slashes, and for a URL that is not valid
// UTF-8 (Go's server accepts raw bytes ≥ 0x80; a CheckRequest, a protobuf
// message, cannot carry them as a string, so over gRPC such a request could
// not be checked at all: refused alike in every mode).
func canonicalizeRequest(r *http.Request) error {
	if r.URL == nil {
		return nil
	}
	if !utf8.ValidString(r.RequestURI) || !utf8.ValidString(r.URL.RawQuery) || !utf8.ValidString(r.URL.Path) {
		return errors.New("the URL is not valid UTF-8")
	}
	esc := r.URL.EscapedPath()
	c, err := canonicalPath(esc)
	if err != nil {
		return err
	}
	if c == esc {
		return nil
	}
	dec, err := url.PathUnescape(c)
	if err != nil {
		return err // not reachable: c holds only valid escapes
	}
	r.URL.Path = dec
	r.URL.RawPath = c
	r.RequestURI = r.URL.RequestURI()
	return nil
}

func isHex(c byte) bool {
	return c >= '0' && c <= '9' || c >= 'a' && c <= 'f' || c >= 'A' && c <= 'F'
}

func unhex(c byte) byte {
	switch {
	case c >= '0' && c <= '9':
		return c - '0'
	case c >= 'a' && c <= 'f':
		return c - 'a' + 10
	default:
		return c - 'A' + 10
	}
}

func upperHex(c byte) byte {
	if c >= 'a' && c <= 'f' {
		return c - 'a' + 'A'
	}
	return c
}

func isUnreserved(c byte) bool {
	return c >= 'A' && c <= 'Z' || c >= 'a' && c <= 'z' || c >= '0' && c <= '9' ||
		c == '-' || c == '.' || c == '_' || c == '~'
}
