package login

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestPin(t *testing.T) {
	var got []string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		got = append(got, r.Method+" "+r.URL.Path+" "+r.Header.Get("Authorization")+" "+strings.TrimSpace(string(b)))
		if strings.HasSuffix(r.URL.Path, "/missing") {
			http.Error(w, "no pin \"missing\" in omnicorp/app", http.StatusNotFound)
			return
		}
		io.WriteString(w, `{"name":"release"}`+"\n")
	}))
	defer srv.Close()
	netrc := filepath.Join(t.TempDir(), "netrc")
	host := strings.Split(strings.TrimPrefix(srv.URL, "http://"), ":")[0]
	os.WriteFile(netrc, []byte("machine "+host+" login flakegate password tok123\n"), 0o600)
	var out bytes.Buffer
	env := Env{HTTPClient: srv.Client(), Getenv: func(string) string { return "" }, Stdout: &out, Stderr: io.Discard}
	cfg := PinConfig{Cache: srv.URL, Flake: "omnicorp/app", Name: "release", StorePath: "/nix/store/0jqd0rlxzra1rs38rdxl43yh6rxchgc6-x", Netrc: netrc}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	if err := Pin(context.Background(), cfg, env); err != nil {
		t.Fatal(err)
	}
	cfg.Unpin = true
	if err := Pin(context.Background(), cfg, env); err != nil {
		t.Fatal(err)
	}
	cfg.Name = "missing"
	if err := Pin(context.Background(), cfg, env); err == nil || !strings.Contains(err.Error(), "404") || !strings.Contains(err.Error(), "no pin") {
		t.Fatalf("unpin of an absent pin: %v", err)
	}
	want := []string{
		"PUT /omnicorp/app/_pins/release Bearer tok123 /nix/store/0jqd0rlxzra1rs38rdxl43yh6rxchgc6-x",
		"DELETE /omnicorp/app/_pins/release Bearer tok123 ",
	}
	if len(got) < 2 || got[0] != want[0] || got[1] != want[1] {
		t.Fatalf("requests:\n%q\nwant\n%q", got, want)
	}
	if !strings.Contains(out.String(), "pinned release in omnicorp/app") || !strings.Contains(out.String(), "unpinned release") {
		t.Errorf("output: %s", out.String())
	}
	bad := PinConfig{Cache: "ftp://x", Flake: "Omni/App", Name: ".x", StorePath: "x"}
	err := bad.Validate()
	for _, w := range []string{"cache URL", "--flake", "pin name", "store path"} {
		if err == nil || !strings.Contains(err.Error(), w) {
			t.Errorf("Validate error lacks %q: %v", w, err)
		}
	}
	// Without a token: a clear error, no request.
	n := len(got)
	os.WriteFile(netrc, []byte("machine other login x password y\n"), 0o600)
	if err := Pin(context.Background(), PinConfig{Cache: srv.URL, Flake: "omnicorp/app", Name: "r", StorePath: "/nix/store/x", Netrc: netrc}, env); err == nil || !strings.Contains(err.Error(), "flakegate login") || len(got) != n {
		t.Errorf("pin without a token: %v (%d requests)", err, len(got)-n)
	}
}
