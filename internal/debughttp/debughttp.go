// Package debughttp mounts Go's runtime profiles (net/http/pprof) on a
// process's internal HTTP listener, for the operator's -pprof flag. The
// profiles reveal nothing secret but cost CPU while taken: mount them only on
// a listener that is not public.
package debughttp

import (
	"net/http"
	"net/http/pprof"
)

// Prefix is where the profiles are served.
const Prefix = "/debug/pprof/"

// Mount registers the pprof handlers below Prefix on mux.
func Mount(mux *http.ServeMux) {
	mux.HandleFunc("GET "+Prefix, pprof.Index) // also heap, goroutine, allocs, block, mutex
	mux.HandleFunc("GET "+Prefix+"cmdline", pprof.Cmdline)
	mux.HandleFunc("GET "+Prefix+"profile", pprof.Profile)
	mux.HandleFunc("GET "+Prefix+"symbol", pprof.Symbol)
	mux.HandleFunc("GET "+Prefix+"trace", pprof.Trace)
}
