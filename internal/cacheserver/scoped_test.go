package cacheserver

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/flakegate/flakegate/internal/blob"
	"github.com/flakegate/flakegate/internal/nixname"
	"github.com/flakegate/flakegate/internal/route"
)

// The closure endpoint walks one flake's own records: the closure of a root
// with its NAR files and derivers; another flake's path of the same name,
// an unrelated path of the flake and absent roots stay out.
func TestClosureEndpoint(t *testing.T) {
	ts := newTestServer(t, "", nil, nil)
	leaf := makePath(t, "leaf", nixname.CompressionXZ)
	mid := makePath(t, "mid", nixname.CompressionZstd, leaf)
	root := makePath(t, "root", nixname.CompressionNone, mid, leaf)
	unrelated := makePath(t, "unrelated", nixname.CompressionXZ)
	for _, p := range []testPath{leaf, mid, root, unrelated} {
		ts.push(t, "omnicorp/app", p)
	}
	ts.push(t, "omnicorp/other", makePath(t, "elsewhere", nixname.CompressionXZ))

	get := func(path string) (int, route.ClosureResponse) {
		t.Helper()
		status, body, _ := do(t, "GET", ts.InternalURL+path, nil)
		var cr route.ClosureResponse
		if status == http.StatusOK {
			if err := json.Unmarshal([]byte(body), &cr); err != nil {
				t.Fatalf("%s: %v: %q", path, err, body)
			}
		}
		return status, cr
	}
	status, cr := get(route.ClosurePath + "omnicorp/app?root=" + root.Hash + "&root=" + storeHash("absent"))
	if status != 200 {
		t.Fatalf("closure: %d", status)
	}
	wantPaths := []string{leaf.Hash, mid.Hash, root.Hash}
	slices.Sort(wantPaths)
	wantNars := []string{leaf.FileName, mid.FileName, root.FileName}
	slices.Sort(wantNars)
	wantDrv := wantPaths // makePath's narinfo has Deriver <hash>-x.drv
	if !slices.Equal(cr.Paths, wantPaths) || !slices.Equal(cr.Nars, wantNars) || !slices.Equal(cr.Derivers, wantDrv) {
		t.Errorf("closure = %+v\nwant paths %v nars %v derivers %v", cr, wantPaths, wantNars, wantDrv)
	}
	// The same root in a flake that does not hold it: empty lists, not 404.
	if status, cr := get(route.ClosurePath + "omnicorp/other?root=" + root.Hash); status != 200 || len(cr.Paths) != 0 || cr.Nars == nil || cr.Derivers == nil {
		t.Errorf("root in another flake: %d %+v, want 200 with empty lists", status, cr)
	}
	for _, bad := range []string{
		route.ClosurePath + "omnicorp/app",
		route.ClosurePath + "omnicorp/app?root=nothash",
		route.ClosurePath + "_x/app?root=" + root.Hash,
		route.ClosurePath + "omnicorp/app?" + strings.Repeat("root="+root.Hash+"&", maxClosureRoots+1),
	} {
		if status, _ := get(bad); status != http.StatusBadRequest {
			t.Errorf("%s: %d, want 400", bad, status)
		}
	}
}

// presigning wraps a store with a Presigner that hands out a recognizable
// URL and counts its calls.
type presigning struct {
	blob.Store
	calls []string
}

func (p *presigning) Presign(_ context.Context, method, key string, expiry time.Duration) (*url.URL, error) {
	p.calls = append(p.calls, method+" "+key)
	return url.Parse(fmt.Sprintf("https://bucket.example/%s?X-Amz-Expires=%d&m=%s", key, int(expiry.Seconds()), method))
}

// With NarRedirect an allowed NAR GET or HEAD answers 307 to the presigned
// URL of the same method, not cacheable; a NAR the flake (or the union
// reader) does not own, and an absent one, answer the same 404 as without
// redirects, without presigning; narinfos and uploads are unchanged.
func TestNarRedirect(t *testing.T) {
	var ps *presigning
	ts := newTestServer(t, "", nil, func(c *Config) {
		ps = &presigning{Store: c.Blob}
		c.Blob, c.NarRedirect = ps, 60*time.Second
	})
	p := makePath(t, "redirected", nixname.CompressionXZ)
	ts.push(t, "omnicorp/app", p)
	other := makePath(t, "not-theirs", nixname.CompressionXZ)
	ts.push(t, "omnicorp/other", other)

	for _, m := range []string{"GET", "HEAD"} {
		req, _ := http.NewRequest(m, ts.URL+"/omnicorp/app/nar/"+p.FileName, nil)
		resp, err := (&http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}).Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		want := "https://bucket.example/nar/" + p.FileName + "?X-Amz-Expires=60&m=" + m
		if resp.StatusCode != http.StatusTemporaryRedirect || resp.Header.Get("Location") != want || resp.Header.Get("Cache-Control") != "private, no-store" {
			t.Errorf("%s NAR: %d Location %q Cache-Control %q, want 307 to %s, private, no-store", m, resp.StatusCode, resp.Header.Get("Location"), resp.Header.Get("Cache-Control"), want)
		}
	}
	// Union read with the readable header naming the owner: 307 too.
	req, _ := http.NewRequest("GET", ts.URL+"/nar/"+p.FileName, nil)
	req.Header.Set(route.ReadableHeader, "omnicorp/app")
	resp, err := (&http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusTemporaryRedirect {
		t.Errorf("union NAR read: %d, want 307", resp.StatusCode)
	}
	calls := len(ps.calls)

	absentStatus, absentBody, absentHdr := do(t, "GET", ts.URL+"/omnicorp/app/nar/"+strings.Repeat("0", 52)+".nar.xz", nil)
	for _, path := range []string{
		"/omnicorp/app/nar/" + other.FileName, // another flake's file, by this flake's URL
	} {
		status, body, hdr := do(t, "GET", ts.URL+path, nil)
		hdr.Del("Date")
		absentHdr.Del("Date")
		if status != absentStatus || body != absentBody || fmt.Sprint(hdr) != fmt.Sprint(absentHdr) {
			t.Errorf("%s: %d %v %q, want the absent NAR's %d %v %q", path, status, hdr, body, absentStatus, absentHdr, absentBody)
		}
	}
	if absentStatus != http.StatusNotFound {
		t.Errorf("absent NAR: %d", absentStatus)
	}
	// A union read whose readable flakes do not own the file: 404 as well.
	req, _ = http.NewRequest("GET", ts.URL+"/nar/"+other.FileName, nil)
	req.Header.Set(route.ReadableHeader, "omnicorp/app")
	resp, err = http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNotFound {
		t.Errorf("union NAR read of a file no readable flake owns: %d, want 404", resp.StatusCode)
	}
	if len(ps.calls) != calls {
		t.Errorf("presigned for refused reads: %v", ps.calls[calls:])
	}
	// The narinfo is served as before.
	if status, body, _ := do(t, "GET", ts.URL+"/omnicorp/app/"+p.Hash+".narinfo", nil); status != 200 || !strings.Contains(body, "URL: nar/"+p.FileName) {
		t.Errorf("narinfo with redirects on: %d %q", status, body)
	}
	if !strings.Contains(ts.Log.String(), `"status":307`) {
		t.Errorf("access log has no 307:\n%s", ts.Log.String())
	}
}

// NarRedirect needs a store that presigns.
func TestNarRedirectNeedsPresigner(t *testing.T) {
	cfg := testConfig()
	ts := newTestServer(t, "", nil, nil)
	cfg.Blob, cfg.Index, cfg.Keys, cfg.NarRedirect = ts.blob, ts.idx, ts.Keys, time.Minute
	if _, err := New(cfg); err == nil || !strings.Contains(err.Error(), "presign") {
		t.Errorf("New with NarRedirect on the filesystem store: %v, want an error about presigning", err)
	}
}
