package push

import (
	"fmt"
	"io"
	"strings"
	"sync"
	"time"

	"github.com/flakegate/flakegate/internal/bytesize"
)

// Counts is how far a push is.
type Counts struct {
	Done, Skipped, Failed int
	Bytes                 int64
}

// Progress receives a push's progress.
type Progress interface {
	Start(total int)
	Update(Counts)
	Finish()
}

// NewProgress returns a bar redrawn in place when terminal is true (an
// interactive terminal), else a line at most every interval (CI logs).
// Hand-written: one line of text, not worth a terminal UI dependency.
func NewProgress(w io.Writer, terminal bool, interval time.Duration) Progress {
	return &textProgress{w: w, terminal: terminal, interval: interval}
}

type textProgress struct {
	w        io.Writer
	terminal bool
	interval time.Duration

	mu    sync.Mutex
	total int
	last  time.Time
	start time.Time
	c     Counts
}

func (p *textProgress) Start(total int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.total, p.start, p.last = total, time.Now(), time.Now()
	if !p.terminal {
		fmt.Fprintf(p.w, "flakegate push: %d paths in the closure\n", total)
	}
}

func (p *textProgress) Update(c Counts) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.c = c
	if p.terminal {
		p.draw()
		return
	}
	if time.Since(p.last) >= p.interval {
		p.last = time.Now()
		fmt.Fprintln(p.w, p.line())
	}
}

func (p *textProgress) Finish() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.terminal {
		p.draw()
		fmt.Fprintln(p.w)
		return
	}
	fmt.Fprintln(p.w, p.line())
}

func (p *textProgress) line() string {
	return fmt.Sprintf("flakegate push: %d/%d paths (%d already cached, %d failed), %s uploaded, %s",
		p.c.Done, p.total, p.c.Skipped, p.c.Failed, bytesize.Format(p.c.Bytes), time.Since(p.start).Round(100*time.Millisecond))
}

func (p *textProgress) draw() {
	const width = 30
	filled := 0
	if p.total > 0 {
		filled = width * p.c.Done / p.total
	}
	fmt.Fprintf(p.w, "\r[%s%s] %d/%d paths, %d cached, %d failed, %s  ",
		strings.Repeat("#", filled), strings.Repeat(" ", width-filled), p.c.Done, p.total, p.c.Skipped, p.c.Failed, bytesize.Format(p.c.Bytes))
}
