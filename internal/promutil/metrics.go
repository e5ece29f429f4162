// Package promutil holds what flakegate's packages share about Prometheus
// registration.
package promutil

import (
	"errors"

	"github.com/prometheus/client_golang/prometheus"
)

// Register registers c with reg and returns it, or returns the collector of
// the same type already registered under the same description (several
// instances of a component — verifiers, engines, gates, tests — may share one
// registry and must then share the series). A conflicting registration (same
// name, other labels or type) is a programming error elsewhere; c is then
// returned unregistered so that the caller still works, without metrics.
func Register[C prometheus.Collector](reg prometheus.Registerer, c C) C {
	if err := reg.Register(c); err != nil {
		var are prometheus.AlreadyRegisteredError
		if errors.As(err, &are) {
			if existing, ok := are.ExistingCollector.(C); ok {
				return existing
			}
		}
	}
	return c
}
