package serve

import (
	"context"
	"errors"
	"net/http"
	"os"
	"runtime/debug"
	"testing"
)

// Run sets the collector's target to DefaultGCPercent, unless GOGC is set
// in the environment: then the operator's value (which the runtime read at
// start) is left as it is.
func TestRunSetsGCTarget(t *testing.T) {
	orig := debug.SetGCPercent(100)
	env, had := os.LookupEnv("GOGC")
	t.Cleanup(func() {
		debug.SetGCPercent(orig)
		if had {
			os.Setenv("GOGC", env)
		} else {
			os.Unsetenv("GOGC")
		}
	})
	runOnce := func() {
		_ = Run(context.Background(), []Listener{
			{Name: "public", Addr: "127.0.0.1:0", Server: failingServer{errors.New("stop")}},
			{Name: "internal", Addr: "127.0.0.1:0", Server: &http.Server{Handler: http.NotFoundHandler()}},
		}, Options{Logger: discard()})
	}

	os.Unsetenv("GOGC")
	runOnce()
	if got := debug.SetGCPercent(77); got != DefaultGCPercent {
		t.Errorf("GOGC unset: collector target %d, want %d", got, DefaultGCPercent)
	}
	os.Setenv("GOGC", "77")
	runOnce()
	if got := debug.SetGCPercent(100); got != 77 {
		t.Errorf("GOGC=77: collector target changed to %d", got)
	}
}
