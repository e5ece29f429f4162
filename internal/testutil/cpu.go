package testutil

import (
	"syscall"
	"testing"
	"time"
)

// ProcessCPU is the user+system CPU time this process has used.
func ProcessCPU(t testing.TB) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		t.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// ReportCPU starts counting this process's CPU time; the function it
// returns, called after the benchmark loop, reports it per operation as
// cpu-ns/op. CPU time is steadier than wall time on a shared, loaded
// machine (it includes every goroutine of the process: both sides of a
// call served in the same process, the garbage collector).
func ReportCPU(b *testing.B) (stop func()) {
	cpu0 := ProcessCPU(b)
	return func() {
		b.ReportMetric(float64((ProcessCPU(b)-cpu0).Nanoseconds())/float64(b.N), "cpu-ns/op")
	}
}
