package cacheserver

import (
	"fmt"
	"net/http"
	"time"

	"github.com/flakegate/flakegate/internal/abandon"
)

// idleDeadline enforces the time limits of one upload body (NAR or build
// log) while stream reads it:
//
//   - idle: the connection's read deadline is pushed forward while bytes
//     arrive, so a client that sends nothing for idle is dropped (a read
//     error: 400, as before);
//   - total: the read deadline never goes past start+maxDuration, and the
//     upload is refused (408) once that time has passed;
//   - rate: after the first rate window, the bytes received over the last
//     window (at least) must average minRate bytes/second, or the upload is
//     refused (408). Time counts only while the server waits in a read of
//     the body (the client's time): a slow storage write or verification
//     never counts against the client. The rate is checked whenever a read
//     returns; a client that sends nothing at all is caught by the idle
//     deadline.
//
// On any failure abandon makes the server answer at once and close the
// connection instead of draining the rest of the body from a slow client.
type idleDeadline struct {
	rc   *http.ResponseController
	w    http.ResponseWriter
	r    *http.Request
	idle time.Duration
	next time.Time // when to push the deadline again
	end  time.Time // start + max duration; zero: no bound
	rate rateMeter
	what string // "NAR", "build log"
	// waited is the time spent in reads of the body so far (the rate's
	// clock); readStart is when the current read began.
	waited    time.Duration
	readStart time.Time
}

// check is called before each read with the bytes received so far: it
// refuses an upload over its time bound or below the minimum rate, and
// pushes the read deadline forward.
func (d *idleDeadline) check(total int64) error {
	if d == nil {
		return nil
	}
	now := time.Now()
	if !d.end.IsZero() && !now.Before(d.end) {
		return d.tooLong(total)
	}
	if err := d.rate.check(d.waited, total, d.what); err != nil {
		return err
	}
	d.readStart = now
	if now.Before(d.next) {
		return nil
	}
	dl := now.Add(d.idle)
	if !d.end.IsZero() && d.end.Before(dl) {
		dl = d.end
	}
	// Not every writer supports deadlines (then the server's own timeouts apply).
	_ = d.rc.SetReadDeadline(dl)
	d.next = now.Add(d.idle / 10)
	return nil
}

// readDone is called after each read of the body.
func (d *idleDeadline) readDone() {
	if d != nil && !d.readStart.IsZero() {
		d.waited += time.Since(d.readStart)
	}
}

// readError maps a failed read: past the total bound it is that bound's
// 408, otherwise nil (the caller reports the read error).
func (d *idleDeadline) readError(total int64) error {
	if d != nil && !d.end.IsZero() && !time.Now().Before(d.end) {
		return d.tooLong(total)
	}
	return nil
}

func (d *idleDeadline) tooLong(total int64) error {
	return &uploadError{status: http.StatusRequestTimeout, msg: fmt.Sprintf(
		"%s upload not finished after %d bytes within the limit of %v per upload", d.what, total, d.rate.maxDuration)}
}

// clear removes the deadline after a complete body.
func (d *idleDeadline) clear() {
	if d != nil {
		_ = d.rc.SetReadDeadline(time.Time{})
	}
}

// abandon is called when the upload failed: the answer goes out at once
// (over HTTP/1 with Connection: close), without net/http reading the rest
// of the body first (internal/abandon).
func (d *idleDeadline) abandon() {
	if d != nil && d.w != nil {
		abandon.Body(d.w, d.r)
	}
}

func (s *Server) idleDeadline(w http.ResponseWriter, r *http.Request) *idleDeadline {
	d := &idleDeadline{rc: http.NewResponseController(w), w: w, r: r, idle: s.uploadIdle}
	d.rate = rateMeter{min: s.limits.minRate, window: s.limits.rateWindow, maxDuration: s.limits.maxDuration}
	if s.limits.maxDuration > 0 {
		d.end = time.Now().Add(s.limits.maxDuration)
	}
	return d
}

// rateMeter measures an upload's rate over a sliding window of its clock
// (the time spent waiting for the client).
type rateMeter struct {
	min         int64 // bytes per second; 0: no minimum
	window      time.Duration
	maxDuration time.Duration // for messages
	marks       []rateMark    // oldest first, at least window/rateMarks apart
}

type rateMark struct {
	at    time.Duration
	total int64
}

// rateMarks is how many marks a window holds: the measured span is
// between window and window·(1+1/rateMarks) while bytes flow.
const rateMarks = 8

// check records total at clock now and refuses the upload when, a whole
// window after its start, the bytes received since the newest mark at
// least a window old average less than min per second.
func (m *rateMeter) check(now time.Duration, total int64, what string) error {
	if m.min <= 0 || m.window <= 0 {
		return nil
	}
	if n := len(m.marks); n == 0 || now-m.marks[n-1].at >= m.window/rateMarks {
		m.marks = append(m.marks, rateMark{now, total})
	}
	// Keep one mark at or before now-window as the base.
	cut := now - m.window
	drop := 0
	for drop+1 < len(m.marks) && m.marks[drop+1].at <= cut {
		drop++
	}
	if drop > 0 {
		m.marks = append(m.marks[:0], m.marks[drop:]...)
	}
	base := m.marks[0]
	span := now - base.at
	if span < m.window {
		return nil // the first window: grace
	}
	got := total - base.total
	if float64(got) >= float64(m.min)*span.Seconds() {
		return nil
	}
	return &uploadError{status: http.StatusRequestTimeout, msg: fmt.Sprintf(
		"%s upload too slow: %d bytes in the last %v (%.0f bytes/s), below the minimum of %d bytes/s",
		what, got, span.Round(time.Millisecond), float64(got)/span.Seconds(), m.min)}
}
