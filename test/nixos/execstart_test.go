package nixos

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
)

// splitExec splits an ExecStart line the way the module writes it: the
// program, then words that are either bare (-check) or double-quoted with
// JSON escapes (which systemd's quoting also reads: \" \\ \n \t). Each word
// is returned as systemd would pass it, with %d expanded to creds (the
// credentials directory) and %% and $$ undoubled; any other specifier or a
// lone $ fails the test, since the module must double those.
func splitExec(t *testing.T, line, creds string) []string {
	t.Helper()
	var words []string
	rest := line
	for {
		rest = strings.TrimLeft(rest, " ")
		if rest == "" {
			break
		}
		var w string
		if rest[0] == '"' {
			dec := json.NewDecoder(strings.NewReader(rest))
			if err := dec.Decode(&w); err != nil {
				t.Fatalf("ExecStart %q: quoted word: %v", line, err)
			}
			rest = rest[dec.InputOffset():]
			if rest != "" && rest[0] != ' ' {
				t.Fatalf("ExecStart %q: no space after a quoted word", line)
			}
		} else {
			w, rest, _ = strings.Cut(rest, " ")
		}
		exp, err := systemdExpand(w, creds)
		if err != nil {
			t.Fatalf("ExecStart %q: %v", line, err)
		}
		words = append(words, exp)
	}
	return words
}

// systemdExpand applies the specifiers and variable escapes systemd applies
// to an ExecStart word; only those the module may produce are allowed.
func systemdExpand(w, creds string) (string, error) {
	var b strings.Builder
	for i := 0; i < len(w); i++ {
		c := w[i]
		if c != '%' && c != '$' {
			b.WriteByte(c)
			continue
		}
		if i+1 == len(w) {
			return "", fmt.Errorf("word %q ends with a lone %c", w, c)
		}
		next := w[i+1]
		switch {
		case c == '%' && next == '%', c == '$' && next == '$':
			b.WriteByte(c)
		case c == '%' && next == 'd':
			b.WriteString(creds)
		default:
			return "", fmt.Errorf("word %q: unexpected %c%c (the module must double %% and $ in values)", w, c, next)
		}
		i++
	}
	return b.String(), nil
}

// flags parses "-name=value" words into a map; a bare word (such as
// -check) maps to "".
func flags(t *testing.T, words []string) map[string]string {
	t.Helper()
	m := map[string]string{}
	for _, w := range words {
		name, value, _ := strings.Cut(strings.TrimPrefix(w, "-"), "=")
		if !strings.HasPrefix(w, "-") {
			t.Fatalf("argument %q is not a flag", w)
		}
		if _, dup := m[name]; dup {
			t.Fatalf("flag -%s given twice", name)
		}
		m[name] = value
	}
	return m
}

func TestSplitExecRejectsUnescaped(t *testing.T) {
	for _, bad := range []string{`/bin/x "-a=50%"`, `/bin/x "-a=$HOME"`, `/bin/x "-a=%h"`} {
		t.Run(bad, func(t *testing.T) {
			w := strings.Fields(bad)[1]
			var s string
			if err := json.Unmarshal([]byte(w), &s); err != nil {
				t.Fatal(err)
			}
			if _, err := systemdExpand(s, "/creds"); err == nil {
				t.Errorf("%s accepted", bad)
			}
		})
	}
	got := splitExec(t, `/bin/x -check "-a=50%% of $$HOME \"q\"" "-k=%d/key-0,%d/key-1"`, "/run/creds")
	want := []string{"/bin/x", "-check", `-a=50% of $HOME "q"`, "-k=/run/creds/key-0,/run/creds/key-1"}
	if strings.Join(got, "|") != strings.Join(want, "|") {
		t.Errorf("splitExec = %q, want %q", got, want)
	}
}
