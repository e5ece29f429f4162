//go:build race

package policy

// raceDetector is true in a -race build: the timing-based reload tests,
// whose writers must not stall for a debounce period, run in the pass
// without it (scripts/test.sh runs both).
const raceDetector = true
