package hostapp

// A denied read answers exactly as a read of an absent object: status,
// headers, body and the connection's fate, for every kind of object, GET
// and HEAD, with Range, conditional headers and request bodies. First
// written by an adversarial review (2026-12-05): a read with a body told
// the two apart (TestReadWithBodyAnswersAsDenied).

import (
	"io"
	"net"
	"net/http"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/flakegate/flakegate/internal/identity"
	"github.com/flakegate/flakegate/internal/identity/identitytest"
)

// deniedStart runs the single host with the shipped policies and one users'
// issuer and returns the public host:port and a token of user (org omnicorp).
func deniedStart(t *testing.T, user string) (addr, token string) {
	t.Helper()
	dir := t.TempDir()
	users := identitytest.NewIssuer(t)
	ic := users.Config("sso", identity.ClaimsOIDC)
	ic.OrgClaim = "org"
	public, _, _ := run(t, testConfig(t, dir, ic))
	c := identitytest.OIDCUserClaims(user)
	c["org"] = "omnicorp"
	return strings.TrimPrefix(public, "http://"), users.Mint(c)
}

var dateLine = regexp.MustCompile(`(?m)^Date: .*\r\n`)

// rawExchange sends raw (a whole request, "\r\n" line ends) on a new TCP
// connection and returns what came back within wait: the raw bytes of every
// response (interim 1xx ones included), with Date lines removed, and
// whether the server closed the connection within wait.
func rawExchange(t *testing.T, addr, raw string, wait time.Duration) (got string, closed bool) {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := io.WriteString(c, raw); err != nil {
		t.Fatal(err)
	}
	_ = c.SetReadDeadline(time.Now().Add(wait))
	b, err := io.ReadAll(c)
	var ne net.Error
	closed = err == nil || !(errorsAs(err, &ne) && ne.Timeout())
	return dateLine.ReplaceAllString(string(b), ""), closed
}

func errorsAs(err error, ne *net.Error) bool {
	if e, ok := err.(net.Error); ok {
		*ne = e
		return true
	}
	return false
}

const (
	deniedHash = "0a9g8mz2ck6lw5yyz3bh3nxa0cacp2v1"
	// alice may read omnicorp/*; acme is another org: denied (404).
	absentPath = "/omnicorp/app/" + deniedHash + ".narinfo"
	deniedPath = "/acme/app/" + deniedHash + ".narinfo"
)

// TestReadWithBodyAnswersAsDenied: a GET or HEAD carrying a body. The gate
// never reads a denied request's body (Connection: close, the connection
// closed), while guardBodies read an allowed one's (the connection kept, and
// "100 Continue" sent for Expect: 100-continue): a reader learned whether it
// may read a flake. Now a read's body is never read, allowed or not.
func TestReadWithBodyAnswersAsDenied(t *testing.T) {
	addr, token := deniedStart(t, "alice")
	req := func(path string) string {
		return "GET " + path + " HTTP/1.1\r\nHost: " + addr + "\r\nAuthorization: Bearer " + token +
			"\r\nContent-Length: 5\r\n\r\nhello"
	}
	absent, absentClosed := rawExchange(t, addr, req(absentPath), 1500*time.Millisecond)
	denied, deniedClosed := rawExchange(t, addr, req(deniedPath), 1500*time.Millisecond)
	t.Logf("absent (closed=%v):\n%s", absentClosed, absent)
	t.Logf("denied (closed=%v):\n%s", deniedClosed, denied)
	if absent != denied || absentClosed != deniedClosed {
		t.Errorf("a GET with a body tells a denied read from an absent object:\nabsent (closed=%v): %q\ndenied (closed=%v): %q",
			absentClosed, absent, deniedClosed, denied)
	}
}

// TestReadWithExpectContinueAnswersAsDenied: "Expect: 100-continue" and a
// body sent only after the interim answer (as curl does for large bodies).
// guardBodies read an allowed read's body, so Go sent "100 Continue" and
// waited for it; the gate answers a denied one at once: a client sending
// no body at all saw "100 Continue" only for an object it may read.
func TestReadWithExpectContinueAnswersAsDenied(t *testing.T) {
	addr, token := deniedStart(t, "alice")
	req := func(method, path string) string {
		return method + " " + path + " HTTP/1.1\r\nHost: " + addr + "\r\nAuthorization: Bearer " + token +
			"\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n"
	}
	for _, m := range []string{"GET", "HEAD"} {
		absent, _ := rawExchange(t, addr, req(m, absentPath), 700*time.Millisecond)
		denied, _ := rawExchange(t, addr, req(m, deniedPath), 700*time.Millisecond)
		if absent != denied {
			t.Errorf("%s with Expect: 100-continue tells a denied read from an absent object:\nabsent: %q\ndenied: %q", m, absent, denied)
		}
	}
}

// TestPinsOfARestrictedFlakeAnswerAsAbsent: GET /{org}/{flake}/_pins of a
// flake the reader may not read was 404, of any other name (existing or
// not) 200 {"pins":[]}: it told an org member which flake names flakes.yaml
// restricts, which every other read answers as "absent". A flake without
// pins now answers the same 404.
func TestPinsOfARestrictedFlakeAnswerAsAbsent(t *testing.T) {
	addr, token := deniedStart(t, "carol") // omnicorp, not in super-duper-secure's read list
	get := func(path string) (int, string) {
		req, _ := http.NewRequest(http.MethodGet, "http://"+addr+path, nil)
		req.Header.Set("Authorization", "Bearer "+token)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	// The narinfo: denied and absent are the same 404.
	st1, b1 := get("/omnicorp/super-duper-secure/" + deniedHash + ".narinfo")
	st2, b2 := get("/omnicorp/no-such-flake/" + deniedHash + ".narinfo")
	t.Logf("narinfo: restricted %d %q, nonexistent %d %q", st1, b1, st2, b2)
	// The pins list: not.
	st3, b3 := get("/omnicorp/super-duper-secure/_pins")
	st4, b4 := get("/omnicorp/no-such-flake/_pins")
	t.Logf("_pins: restricted %d %q, nonexistent %d %q", st3, b3, st4, b4)
	if st3 != st4 || b3 != b4 {
		t.Errorf("_pins tells a restricted flake (%d %q) from a flake that does not exist (%d %q)", st3, b3, st4, b4)
	}
}

// TestDeniedEqualsAbsent: without a request body, a denied read of a flake
// URL and a read of an absent object give the same bytes (Date aside) for
// every kind, GET and HEAD, with Range and conditional headers.
func TestDeniedEqualsAbsent(t *testing.T) {
	addr, token := deniedStart(t, "alice")
	const drv = deniedHash + "-x.drv"
	objs := []string{
		deniedHash + ".narinfo", "nar/1w1fff338fvdw53sqgamddn1b2xgds473pv6y13gizdbqjv4i5p3.nar",
		"nar/1w1fff338fvdw53sqgamddn1b2xgds473pv6y13gizdbqjv4i5p3.nar.xz",
		"nar/1w1fff338fvdw53sqgamddn1b2xgds473pv6y13gizdbqjv4i5p3.nar.zst",
		"nar/1w1fff338fvdw53sqgamddn1b2xgds473pv6y13gizdbqjv4i5p3.nar.bz2",
		deniedHash + ".ls", "log/" + drv, "debuginfo/" + strings.Repeat("ab", 20) + ".debug",
		"realisations/sha256:" + strings.Repeat("ab", 32) + "!out.doi", "build-trace-v2/" + drv + "/out.doi",
	}
	extras := []string{"", "Range: bytes=0-0\r\n", "If-None-Match: *\r\n", "If-Modified-Since: Mon, 01 Jan 2024 00:00:00 GMT\r\n",
		"Accept-Encoding: gzip\r\n"}
	n := 0
	for _, o := range objs {
		for _, m := range []string{"GET", "HEAD"} {
			for _, x := range extras {
				req := func(flake string) string {
					return m + " /" + flake + "/" + o + " HTTP/1.1\r\nHost: " + addr + "\r\nAuthorization: Bearer " + token +
						"\r\n" + x + "Connection: close\r\n\r\n"
				}
				absent, _ := rawExchange(t, addr, req("omnicorp/app"), 3*time.Second)
				denied, _ := rawExchange(t, addr, req("acme/app"), 3*time.Second)
				n++
				if absent != denied || !strings.HasPrefix(absent, "HTTP/1.1 404") {
					t.Errorf("%s %s %q:\nabsent %q\ndenied %q", m, o, x, absent, denied)
				}
			}
		}
	}
	t.Logf("%d request shapes compared", n)
}
