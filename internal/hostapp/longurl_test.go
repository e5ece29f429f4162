package hostapp

import (
	"strings"
	"testing"
	"time"

	"github.com/flakegate/flakegate/internal/identity"
	"github.com/flakegate/flakegate/internal/identity/identitytest"
)

// A very long URL from anyone (no token needed) was checked, quoted back
// whole in the 400 and written to the log three times: 900 KiB of URL, a
// 900 KiB answer and 2.7 MB of log (adversarial review, 2026-12-05). The
// gate counts the request target in its header limit (431, as Envoy), and
// route errors quote at most 200 bytes of it.
func TestLongURLIsRefusedBeforeTheCheck(t *testing.T) {
	dir := t.TempDir()
	users := identitytest.NewIssuer(t)
	ic := users.Config("sso", identity.ClaimsOIDC)
	ic.OrgClaim = "org"
	cfg := testConfig(t, dir, ic)
	cfg.Blob.AccessLog = true
	public, _, logs := run(t, cfg)
	addr := strings.TrimPrefix(public, "http://")
	for _, c := range []struct {
		path   string
		status string
	}{
		{"/" + strings.Repeat("a", 900<<10) + ".narinfo", "HTTP/1.1 431"},
		{"/" + strings.Repeat("a", 50<<10) + ".narinfo", "HTTP/1.1 400"}, // under the limit: route's error, quoted short
	} {
		before := len(logs.String())
		got, _ := rawExchange(t, addr, "GET "+c.path+" HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", 5*time.Second)
		time.Sleep(200 * time.Millisecond) // the access line follows the answer
		logged := len(logs.String()) - before
		status, _, _ := strings.Cut(got, "\r\n")
		if !strings.HasPrefix(status, c.status) {
			t.Errorf("a %d-byte URL: %q, want %s", len(c.path), status, c.status)
		}
		if len(got) > 4<<10 || logged > 16<<10 {
			t.Errorf("a %d-byte URL made a %d-byte answer and %d bytes of log", len(c.path), len(got), logged)
		}
	}
}
