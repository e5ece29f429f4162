package nixname

import (
	"fmt"
	"strings"
)

// Flake is an {org}/{name} namespace. Both parts are lower-case.
type Flake struct {
	Org  string `json:"org"`
	Name string `json:"name"`
}

// String renders "org/name", or "" for the zero Flake.
func (f Flake) String() string {
	if f.Org == "" && f.Name == "" {
		return ""
	}
	return f.Org + "/" + f.Name
}

// IsZero reports whether f names no flake.
func (f Flake) IsZero() bool { return f.Org == "" && f.Name == "" }

// ParseFlake parses "org/name" (case-insensitively; the result is lower-case).
func ParseFlake(s string) (Flake, error) {
	org, name, ok := strings.Cut(s, "/")
	if !ok {
		return Flake{}, fmt.Errorf("flake %q: want org/name", s)
	}
	f := Flake{Org: strings.ToLower(org), Name: strings.ToLower(name)}
	if !validSegment(f.Org) || !validSegment(f.Name) {
		return Flake{}, fmt.Errorf("flake %q: org and name may hold only letters, digits, '.', '_' and '-', and must not start with '.' or '_'", s)
	}
	return f, nil
}

// validSegment accepts a lower-case flake org or name.
func validSegment(s string) bool {
	if s == "" || len(s) > 100 || s[0] == '.' || s[0] == '_' || s[0] == '-' {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == '-') {
			return false
		}
	}
	return true
}
