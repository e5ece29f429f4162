package cacheserver

import (
	"fmt"
	"io"
	"net/http"
	"sync"
	"time"

	"github.com/flakegate/flakegate/internal/abandon"
	"github.com/flakegate/flakegate/internal/nixcache"
	"github.com/flakegate/flakegate/internal/nixname"
	"github.com/flakegate/flakegate/internal/route"
)

// UploadRateWindow is the window Config.UploadMinRate is averaged over
// (Config.UploadRateWindow, when not set); the first window of an upload is
// its grace period.
const UploadRateWindow = 30 * time.Second

// uploadLimits are the resolved limits (0: disabled).
type uploadLimits struct {
	minRate      int64
	rateWindow   time.Duration
	maxDuration  time.Duration
	maxExpansion int64
	perSubject   *subjectLimiter // nil: no limit
}

func newUploadLimits(cfg Config) uploadLimits {
	l := uploadLimits{
		minRate:      cfg.UploadMinRate,
		rateWindow:   cfg.UploadRateWindow,
		maxDuration:  cfg.UploadMaxDuration,
		maxExpansion: cfg.MaxExpansion,
	}
	if l.rateWindow <= 0 {
		l.rateWindow = UploadRateWindow
	}
	if n := cfg.MaxUploadsPerSubject; n > 0 {
		l.perSubject = &subjectLimiter{max: n, running: map[string]int{}}
	}
	return l
}

// verifierOptions are the Verifier options of a NAR upload.
func (s *Server) verifierOptions(r *http.Request, flake nixname.Flake) []nixcache.VerifierOption {
	return []nixcache.VerifierOption{nixcache.MaxExpansion(s.limits.maxExpansion), nixcache.VerifierDecoderOwner(decoderOwner(r, flake))}
}

// decoderOwner is the tenant a decoder of r, for a file of flake, counts
// against (nixcache.DecoderOwner: each holds at most a quarter of the
// decoder memory): an upload, the org of the flake it goes to (not its
// subject, which names a ref, and a pusher runs jobs on as many refs as it
// likes); a decoded read, the readers of that org (the readers of the
// union view, when no flake is named), apart from its pushes, so that no
// reader starves the pushes of the org it reads, nor the readers of other
// orgs (reviews of the fixes, 2026-12-05).
func decoderOwner(r *http.Request, flake nixname.Flake) string {
	if r.Method == http.MethodGet || r.Method == http.MethodHead {
		return "read:" + flake.Org
	}
	return "org:" + flake.Org
}

// subjectLimiter counts the running uploads of each subject.
type subjectLimiter struct {
	max     int
	mu      sync.Mutex
	running map[string]int
}

func (l *subjectLimiter) acquire(subject string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.running[subject] >= l.max {
		return false
	}
	l.running[subject]++
	return true
}

func (l *subjectLimiter) release(subject string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.running[subject]--; l.running[subject] <= 0 {
		delete(l.running, subject)
	}
}

// admitUpload runs before every upload handler. It refuses (429) an upload
// by a subject that already has the maximum running, and bounds the time
// the body may take to arrive: NAR and log uploads push that deadline
// forward as they stream (idleDeadline); a narinfo must arrive whole
// within the idle timeout (or the total bound, if shorter). Requests
// without route.SubjectHeader (an ungated server) are not limited: there is no
// subject to tell apart. It returns the request to serve and a release
// func, or ok false when it has answered.
func (s *Server) admitUpload(w http.ResponseWriter, r *http.Request, req route.Request) (_ *http.Request, release func(), ok bool) {
	release = func() {}
	if l := s.limits.perSubject; l != nil {
		if subject := r.Header.Get(route.SubjectHeader); subject != "" {
			if !l.acquire(subject) {
				s.log.InfoContext(r.Context(), "upload refused: too many concurrent uploads", "path", route.LogPath(r.URL.Path), "subject", subject, "limit", l.max)
				abandon.Body(w, r)
				w.Header().Set("Retry-After", "1")
				s.fail(w, http.StatusTooManyRequests, fmt.Sprintf(
					"too many concurrent uploads by %s (the limit is %d): retry when one has finished", subject, l.max))
				return r, release, false
			}
			release = func() { l.release(subject) }
		}
	}
	if !abandon.HasBody(r) {
		return r, release, true
	}
	bound := s.uploadIdle
	if d := s.limits.maxDuration; d > 0 && d < bound {
		bound = d
	}
	rc := http.NewResponseController(w)
	if rc.SetReadDeadline(time.Now().Add(bound)) == nil && req.Kind != route.KindNar && req.Kind != route.KindLog {
		// Clear the deadline once the body is read: net/http then starts a
		// background read that would otherwise cancel the request's context
		// when the deadline passes.
		r2 := *r
		r2.Body = &deadlineBody{ReadCloser: r.Body, rc: rc}
		r = &r2
	}
	return r, release, true
}

// deadlineBody clears the connection's read deadline when the body has
// been read to its end.
type deadlineBody struct {
	io.ReadCloser
	rc   *http.ResponseController
	done bool
}

func (b *deadlineBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	if err == io.EOF && !b.done {
		b.done = true
		_ = b.rc.SetReadDeadline(time.Time{})
	}
	return n, err
}
