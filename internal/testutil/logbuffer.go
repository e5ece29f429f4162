// Package testutil holds small helpers shared by flakegate's tests.
package testutil

import (
	"bytes"
	"sync"
)

// LogBuffer is a goroutine-safe io.Writer that keeps everything written, for
// capturing the logs of servers under test. The zero value is ready to use.
type LogBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

// Write appends p.
func (b *LogBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

// String returns everything written so far.
func (b *LogBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
