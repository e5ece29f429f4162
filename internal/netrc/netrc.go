// Package netrc reads and updates netrc files (the credentials Nix sends,
// as curl reads them) in place: one machine's entry is set, everything
// else — other machines, comments, macros, layout — is kept. flakegate
// login and devissuer mint -netrc write through it.
package netrc

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

// netrcToken is one whitespace-separated word of a netrc file and where it is.
type netrcToken struct {
	text       string
	line       int // index into lines
	start, end int // byte columns in the line
}

// tokenizeNetrc splits netrc content into words, skipping comment lines
// ('#' first) and macdef bodies (up to the next empty line, blanks not
// counting as empty), as curl does. Lines keep their exact bytes so untouched parts are rewritten as
// they were.
func tokenizeNetrc(lines []string) []netrcToken {
	var toks []netrcToken
	inMacro := false
	pendingMacro := 0 // words left before a macdef body starts (the name)
	for li, line := range lines {
		if inMacro {
			// Only a truly empty line ends the body, as in curl
			// (lib/netrc.c): a line of blanks does not (review of the
			// fixes, 2026-12-05: an entry after one was "stored" and never
			// read by curl).
			if line == "" || line == "\r" {
				inMacro = false
			}
			continue
		}
		if strings.HasPrefix(strings.TrimLeft(line, " \t"), "#") {
			continue
		}
		i := 0
		for i < len(line) {
			for i < len(line) && isNetrcSpace(line[i]) {
				i++
			}
			if i >= len(line) {
				break
			}
			start := i
			if line[i] == '"' { // quoted word (curl ≥ 7.84)
				i++
				for i < len(line) && line[i] != '"' {
					if line[i] == '\\' {
						i++
					}
					i++
				}
				i = min(i+1, len(line))
			} else {
				for i < len(line) && !isNetrcSpace(line[i]) {
					i++
				}
			}
			t := netrcToken{text: line[start:i], line: li, start: start, end: i}
			toks = append(toks, t)
			if pendingMacro > 0 {
				pendingMacro--
				if pendingMacro == 0 {
					inMacro = true
					break // the rest of the line after the name is ignored; body follows
				}
			} else if t.text == "macdef" {
				pendingMacro = 1
			}
		}
	}
	return toks
}

func isNetrcSpace(c byte) bool { return c == ' ' || c == '\t' || c == '\r' || c == '\n' }

// netrcEntry is one "machine NAME …" or "default …" entry: toks[start:end].
type netrcEntry struct {
	start, end int
	machine    string // "" for default
	isDefault  bool
	fields     map[string]string // login, password, account, macdef
}

// parseNetrc groups tokens into entries; words before the first entry are ignored.
func parseNetrc(toks []netrcToken) []netrcEntry {
	var entries []netrcEntry
	for i := 0; i < len(toks); {
		switch toks[i].text {
		case "machine", "default":
		default:
			i++
			continue
		}
		e := netrcEntry{start: i, isDefault: toks[i].text == "default", fields: map[string]string{}}
		i++
		if !e.isDefault && i < len(toks) {
			e.machine = unquote(toks[i].text)
			i++
		}
		for i < len(toks) && toks[i].text != "machine" && toks[i].text != "default" {
			key := toks[i].text
			val := ""
			if i+1 < len(toks) {
				val = unquote(toks[i+1].text)
			}
			if _, seen := e.fields[key]; !seen {
				e.fields[key] = val
			}
			i += 2
		}
		e.end = min(i, len(toks))
		entries = append(entries, e)
	}
	return entries
}

// SetEntry returns content with the entry for machine set to login and
// password: the first entry for that machine is replaced in place; without
// one, a new line is added (before a "default" entry, which must stay last).
// Everything else (other machines, comments, macros, layout) is kept.
func SetEntry(content, machine, login, password string) (string, error) {
	for _, v := range []string{machine, login, password} {
		if v == "" || strings.ContainsAny(v, " \t\r\n\"#\\") {
			return "", fmt.Errorf("netrc value %q: must be non-empty without spaces, quotes, backslashes or '#'", redactIfLong(v))
		}
	}
	entry := "machine " + machine + " login " + login + " password " + password
	out := setEntry(content, machine, entry)
	if p, ok := Password(out, machine); ok && p == password {
		return out, nil
	}
	// The entry went into a macdef body, which runs to the next blank
	// line (curl reads it so, and so does Password): a blank line ends it
	// (review r6, 2026-12-05: login said "stored", curl never used it).
	out = strings.TrimRight(content, "\n") + "\n\n" + entry + "\n"
	if p, ok := Password(out, machine); ok && p == password {
		return out, nil
	}
	return "", fmt.Errorf("netrc: the entry for %s cannot be placed where curl would read it (an earlier entry for it inside a macdef?): edit the file by hand", machine)
}

// setEntry is SetEntry's placement of entry, unchecked.
func setEntry(content, machine, entry string) string {
	lines := strings.Split(content, "\n")
	toks := tokenizeNetrc(lines)
	entries := parseNetrc(toks)

	for _, e := range entries {
		if e.isDefault || !strings.EqualFold(e.machine, machine) {
			continue
		}
		first, last := toks[e.start], toks[e.end-1]
		replaced := lines[first.line][:first.start] + entry + lines[last.line][last.end:]
		out := append([]string{}, lines[:first.line]...)
		out = append(out, replaced)
		out = append(out, lines[last.line+1:]...)
		return strings.Join(out, "\n")
	}
	for _, e := range entries {
		if !e.isDefault {
			continue
		}
		d := toks[e.start]
		if strings.TrimSpace(lines[d.line][:d.start]) == "" {
			// "default" starts its line: put our entry on a line of its own before it.
			out := append([]string{}, lines[:d.line]...)
			out = append(out, entry)
			out = append(out, lines[d.line:]...)
			return strings.Join(out, "\n")
		}
		lines[d.line] = lines[d.line][:d.start] + entry + " " + lines[d.line][d.start:]
		return strings.Join(lines, "\n")
	}
	if content != "" && !strings.HasSuffix(content, "\n") {
		content += "\n"
	}
	return content + entry + "\n"
}

func unquote(s string) string {
	if len(s) >= 2 && s[0] == '"' && s[len(s)-1] == '"' {
		return strings.ReplaceAll(s[1:len(s)-1], `\"`, `"`)
	}
	return s
}

func redactIfLong(v string) string {
	if len(v) > 24 {
		return v[:8] + "…"
	}
	return v
}

// Password returns the password of the first entry for machine, if any.
func Password(content, machine string) (string, bool) {
	for _, e := range parseNetrc(tokenizeNetrc(strings.Split(content, "\n"))) {
		if !e.isDefault && strings.EqualFold(e.machine, machine) {
			p, ok := e.fields["password"]
			return p, ok
		}
	}
	return "", false
}

// WriteEntry sets the entry for machine in the netrc file at path,
// creating the file (and its directory, 0700) when missing. The file is
// replaced atomically and is 0600 afterwards; a symlinked netrc is updated
// at its target.
func WriteEntry(path, machine, login, password string) error {
	target := path
	if resolved, err := filepath.EvalSymlinks(path); err == nil {
		target = resolved
	} else if !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("resolve netrc %s: %w", path, err)
	}
	old, err := os.ReadFile(target)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("read netrc %s: %w", target, err)
	}
	updated, err := SetEntry(string(old), machine, login, password)
	if err != nil {
		return fmt.Errorf("update netrc %s: %w", target, err)
	}
	dir := filepath.Dir(target)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("create netrc directory %s: %w", dir, err)
	}
	tmp, err := os.CreateTemp(dir, ".netrc-*")
	if err != nil {
		return fmt.Errorf("write netrc %s: %w", target, err)
	}
	defer os.Remove(tmp.Name()) // no-op after the rename
	if err := tmp.Chmod(0o600); err != nil {
		tmp.Close()
		return fmt.Errorf("write netrc %s: %w", target, err)
	}
	if _, err := tmp.WriteString(updated); err != nil {
		tmp.Close()
		return fmt.Errorf("write netrc %s: %w", target, err)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return fmt.Errorf("write netrc %s: %w", target, err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("write netrc %s: %w", target, err)
	}
	if err := os.Rename(tmp.Name(), target); err != nil {
		return fmt.Errorf("replace netrc %s: %w", target, err)
	}
	return nil
}

// ReadToken returns the cache token stored for machine in the netrc
// file at path; an error says to log in when there is none.
func ReadToken(path, machine string) (string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("read the cache token from %s (run flakegate login first): %w", path, err)
	}
	p, ok := Password(string(b), machine)
	if !ok || p == "" {
		return "", fmt.Errorf("no cache token for %s in %s: run flakegate login", machine, path)
	}
	return p, nil
}

// RemoveEntry returns content without the entries for machine (every
// other byte kept; a line left blank by the removal is dropped) and
// whether there was one.
func RemoveEntry(content, machine string) (string, bool) {
	removed := false
	for {
		lines := strings.Split(content, "\n")
		toks := tokenizeNetrc(lines)
		var found *netrcEntry
		for _, e := range parseNetrc(toks) {
			if !e.isDefault && strings.EqualFold(e.machine, machine) {
				found = &e
				break
			}
		}
		if found == nil {
			return content, removed
		}
		removed = true
		first, last := toks[found.start], toks[found.end-1]
		rest := lines[first.line][:first.start] + lines[last.line][last.end:]
		out := append([]string{}, lines[:first.line]...)
		if strings.TrimSpace(rest) != "" {
			out = append(out, rest)
		}
		out = append(out, lines[last.line+1:]...)
		content = strings.Join(out, "\n")
	}
}
