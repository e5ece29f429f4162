package cacheserver

import (
	"bytes"
	"io"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/flakegate/flakegate/internal/nixcache"
	"github.com/flakegate/flakegate/internal/nixname"
	"github.com/flakegate/flakegate/internal/route"
)

// answer is everything a client sees of a response but its Date.
type answer struct {
	Status int
	Header string
	Body   string
}

func exchange(t *testing.T, method, url string, body []byte, header http.Header) answer {
	t.Helper()
	return exchangeWith(t, http.DefaultClient, method, url, body, header)
}

// exchangeWith sends one request with client and returns the whole answer
// (status, every header but Date, body).
func exchangeWith(t *testing.T, client *http.Client, method, url string, body []byte, header http.Header) answer {
	t.Helper()
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequest(method, url, rd)
	if err != nil {
		t.Fatal(err)
	}
	for k, vs := range header {
		req.Header[k] = vs
	}
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	resp.Header.Del("Date")
	var hb strings.Builder
	if err := resp.Header.Write(&hb); err != nil {
		t.Fatal(err)
	}
	return answer{resp.StatusCode, hb.String(), string(b)}
}

// pushAnswers pushes p into flake as Nix does (HEAD narinfo, HEAD NAR, PUT
// NAR, PUT narinfo, GET narinfo) and returns every answer, with p's hashes
// replaced by placeholders (and its file's size) so that two pushes of
// different paths compare.
func pushAnswers(t *testing.T, ts *testServer, flake string, p testPath) []answer {
	t.Helper()
	base := ts.URL + "/" + flake
	steps := []struct {
		method, path string
		body         []byte
	}{
		{"HEAD", "/" + p.Hash + ".narinfo", nil},
		{"GET", "/" + p.Hash + ".narinfo", nil},
		{"HEAD", "/nar/" + p.FileName, nil},
		{"PUT", "/nar/" + p.FileName, p.File},
		{"PUT", "/" + p.Hash + ".narinfo", []byte(p.NarInfo())},
		{"PUT", "/nar/" + p.FileName, p.File},
		{"PUT", "/" + p.Hash + ".narinfo", []byte(p.NarInfo())},
		{"HEAD", "/nar/" + p.FileName, nil},
	}
	var out []answer
	for _, s := range steps {
		a := exchange(t, s.method, base+s.path, s.body, nil)
		for _, r := range []struct{ old, new string }{
			{p.Hash, "<hash>"}, {strings.TrimSuffix(p.FileName, ".nar.xz"), "<file>"},
			{p.Base, "<base>"}, {"Content-Length: " + strconv.Itoa(len(p.File)) + "\r\n", "Content-Length: <size of the file>\r\n"},
		} {
			a.Header = strings.ReplaceAll(a.Header, r.old, r.new)
			a.Body = strings.ReplaceAll(a.Body, r.old, r.new)
		}
		out = append(out, a)
	}
	return out
}

// A pusher of another org's flake learns nothing about a path only a
// secret flake holds: every answer of pushing it (the secret flake's
// contents, other contents for the same store path, the same NAR bytes)
// is identical to pushing a path nobody holds.
func TestPushAnswersIndependentOfOtherFlakes(t *testing.T) {
	ts := newTestServer(t, "", nil, nil)
	secret := makePath(t, "secret-tool", nixname.CompressionXZ)
	ts.push(t, "omnicorp/super-duper-secure", secret)

	// The attacker predicted the store path and pushes bogus contents for it.
	bogus := makePath(t, "bogus", nixname.CompressionXZ)
	bogus.Hash, bogus.Base = secret.Hash, secret.Hash+"-secret-tool"
	fresh := makePath(t, "fresh", nixname.CompressionXZ)
	fresh.Hash, fresh.Base = storeHash("fresh-path"), storeHash("fresh-path")+"-secret-tool"
	freshSameName := makePath(t, "fresh2", nixname.CompressionXZ)
	freshSameName.Hash, freshSameName.Base = storeHash("fresh-path-2"), storeHash("fresh-path-2")+"-secret-tool"

	// The secret flake's exact bytes (dedup) against bytes nobody has.
	same := secret
	sameFresh := makePath(t, "secret-tool-twin", nixname.CompressionXZ)
	sameFresh.Hash, sameFresh.Base = storeHash("twin"), storeHash("twin")+"-secret-tool"

	cases := []struct {
		name          string
		probe, absent testPath
	}{
		{"other contents for the secret path", bogus, fresh},
		{"the secret NAR bytes", same, sameFresh},
	}
	for i, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			flake := []string{"evilcorp/probe", "evilcorp/probe2"}[i]
			got := pushAnswers(t, ts, flake, c.probe)
			want := pushAnswers(t, ts, flake, c.absent)
			if !slices.Equal(got, want) {
				for k := range got {
					if got[k] != want[k] {
						t.Errorf("step %d: pushing the held path answered\n%+v\nthe fresh path\n%+v", k, got[k], want[k])
					}
				}
			}
			if got[4].Status != http.StatusCreated {
				t.Errorf("narinfo PUT answered %d, want 201", got[4].Status)
			}
		})
	}
	// And the secret flake still serves its own contents.
	st, body, _ := do(t, "GET", ts.URL+"/omnicorp/super-duper-secure/"+secret.Hash+".narinfo", nil)
	if st != 200 || !strings.Contains(body, "NarHash: "+nixcache.FormatHash(sha256Of(secret.NAR))) {
		t.Fatalf("secret flake's narinfo after the probes: %d\n%s", st, body)
	}
}

// The union view serves a path only from flakes the caller may read (the
// gate's x-flakegate-readable), and never picks one of two disagreeing
// contents: it answers as absent, logs and counts the conflict.
func TestUnionViewRule(t *testing.T) {
	ts := newTestServer(t, "", nil, nil)
	genuine := makePath(t, "app", nixname.CompressionXZ)
	ts.push(t, "omnicorp/app", genuine)
	bogus := makePath(t, "bogus-app", nixname.CompressionXZ)
	bogus.Hash, bogus.Base = genuine.Hash, genuine.Base
	ts.push(t, "omnicorp/evil", bogus)
	zstdTwin := genuine.compressedAs(t, nixname.CompressionZstd)
	ts.push(t, "omnicorp/mirror", zstdTwin)
	// The same hash and NAR under another store path name, in a flake whose
	// name sorts first: agreeing on the NAR is not agreeing on the path.
	renamed := genuine
	renamed.Base = genuine.Hash + "-evil"
	ts.push(t, "omnicorp/aaa", renamed)

	narHash := func(p testPath) string { return "NarHash: " + nixcache.FormatHash(sha256Of(p.NAR)) }
	readable := func(flakes ...string) http.Header {
		return http.Header{http.CanonicalHeaderKey(route.ReadableHeader): {strings.Join(flakes, " ")}}
	}
	cases := []struct {
		name   string
		header http.Header
		status int
		want   string // in the body
	}{
		{"reader of the genuine flake only", readable("omnicorp/app"), 200, narHash(genuine)},
		{"reader of the evil flake only", readable("omnicorp/evil"), 200, narHash(bogus)},
		{"reader of both agreeing flakes", readable("omnicorp/app", "omnicorp/mirror"), 200, narHash(genuine)},
		{"reader of disagreeing flakes", readable("omnicorp/app", "omnicorp/evil"), 404, "not found"},
		{"reader of all three", readable("omnicorp/app", "omnicorp/evil", "omnicorp/mirror"), 404, "not found"},
		{"reader of a flake with the same NAR under another name", readable("omnicorp/aaa", "omnicorp/app"), 404, "not found"},
		{"reader of flakes without the path", readable("omnicorp/other"), 404, "not found"},
		{"empty list", readable(), 404, "not found"},
		{"no gate: every owner, and they disagree", nil, 404, "not found"},
	}
	for pass := range 2 { // the second pass is answered from the hit cache
		for _, c := range cases {
			for _, method := range []string{"GET", "HEAD"} {
				a := exchange(t, method, ts.URL+"/"+genuine.Hash+".narinfo", nil, c.header)
				if a.Status != c.status || (method == "GET" && !strings.Contains(a.Body, c.want)) {
					t.Errorf("pass %d, %s, %s: %d\n%s", pass, c.name, method, a.Status, a.Body)
				}
			}
		}
	}
	if !strings.Contains(ts.Log.String(), "union view: flakes the caller may read hold different contents") {
		t.Errorf("conflict not logged:\n%s", ts.Log.String())
	}
	_, metrics, _ := do(t, "GET", ts.InternalURL+"/metrics", nil)
	if !strings.Contains(metrics, "flakegate_blobserver_union_conflicts_total 16") {
		t.Errorf("conflicts not counted (want 16: 4 cases × GET+HEAD × 2 passes):\n%s", grepLines(metrics, "union_conflicts"))
	}
	// Through a flake's own URL each reader gets that flake's contents.
	for f, p := range map[string]testPath{"omnicorp/app": genuine, "omnicorp/evil": bogus} {
		if st, body, _ := do(t, "GET", ts.URL+"/"+f+"/"+genuine.Hash+".narinfo", nil); st != 200 || !strings.Contains(body, narHash(p)) {
			t.Errorf("%s's own narinfo: %d\n%s", f, st, body)
		}
	}
	// NARs in the union view: served when a readable flake owns the file.
	narCases := []struct {
		file   string
		header http.Header
		status int
	}{
		{genuine.FileName, readable("omnicorp/app"), 200},
		{genuine.FileName, readable("omnicorp/evil", "omnicorp/app"), 200},
		{genuine.FileName, readable("omnicorp/evil"), 404},
		{bogus.FileName, readable("omnicorp/app", "omnicorp/mirror"), 404},
		{zstdTwin.FileName, readable("omnicorp/app"), 404},
		{zstdTwin.FileName, nil, 200},
	}
	for pass := range 2 {
		for _, c := range narCases {
			if a := exchange(t, "GET", ts.URL+"/nar/"+c.file, nil, c.header); a.Status != c.status {
				t.Errorf("pass %d: union NAR %s with %v: %d, want %d", pass, c.file, c.header, a.Status, c.status)
			}
		}
	}
	// A malformed list (only a misconfigured proxy could send one) fails
	// closed.
	if a := exchange(t, "GET", ts.URL+"/"+genuine.Hash+".narinfo", nil, readable("Not A Flake")); a.Status == 200 {
		t.Errorf("malformed %s served the path", route.ReadableHeader)
	}
}

func grepLines(s, sub string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

// TestGatedUnionReadNeedsReadableHeader: with a gate in the process
// (Config.Gated), a union read the authorizer allowed without naming the
// readable flakes fails closed — an error, logged — instead of being
// served from every flake, as an ungated server (behind Envoy) serves it.
// Our authz always names them; this guards against one that does not.
func TestGatedUnionReadNeedsReadableHeader(t *testing.T) {
	p := makePath(t, "gated-union", nixname.CompressionXZ)
	readable := http.Header{http.CanonicalHeaderKey(route.ReadableHeader): {"omnicorp/app"}}
	for _, gated := range []bool{true, false} {
		ts := newTestServer(t, "", nil, func(c *Config) { c.Gated = gated })
		ts.push(t, "omnicorp/app", p)
		for _, url := range []string{ts.URL + "/" + p.Hash + ".narinfo", ts.URL + "/nar/" + p.FileName} {
			for _, method := range []string{"GET", "HEAD"} {
				if a := exchange(t, method, url, nil, readable); a.Status != 200 {
					t.Errorf("gated=%v, %s %s naming the readable flake: %d", gated, method, url, a.Status)
				}
				a := exchange(t, method, url, nil, nil)
				switch {
				case gated && a.Status != http.StatusInternalServerError:
					t.Errorf("gated, %s %s without the readable header: %d, want 500 (fail closed)", method, url, a.Status)
				case !gated && a.Status != 200:
					t.Errorf("ungated, %s %s without the header: %d, want 200 (every flake)", method, url, a.Status)
				}
			}
		}
		if got := strings.Contains(ts.Log.String(), "authorizer names no readable flake"); got != gated {
			t.Errorf("gated=%v: refusal logged %v", gated, got)
		}
	}
}
