package blobserverapp

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"github.com/flakegate/flakegate/internal/gc"
	"github.com/flakegate/flakegate/internal/nixname"
)

// `blobserver gc` prints, per flake, the files by kind and the build logs
// that go, in a dry run as in a real one (the same line but the verb), and
// a flake where only files or logs go is listed too.
func TestPrintReportFilesAndLogs(t *testing.T) {
	flakes := []gc.FlakeReport{
		{Flake: nixname.Flake{Org: "omnicorp", Name: "app"}, Paths: 2, Bytes: 300, Reasons: map[string]int{gc.ReasonExpired: 2}, Kept: 1,
			Files: map[nixname.Kind]int64{nixname.KindListing: 2, nixname.KindDebugInfo: 1}, Logs: 3, LogBytes: 42},
		{Flake: nixname.Flake{Org: "omnicorp", Name: "logs-only"}, Reasons: map[string]int{}, Logs: 1, LogBytes: 7},
		{Flake: nixname.Flake{Org: "omnicorp", Name: "idle"}, Reasons: map[string]int{}, Kept: 5},
	}
	for _, c := range []struct {
		dry  bool
		want []string
	}{
		{true, []string{
			"omnicorp/app: would remove 2 paths, 300 bytes (expired 2); keeps 1; 3 files (debuginfo 1, listing 2); 3 build logs, 42 bytes\n",
			"omnicorp/logs-only: would remove 0 paths, 0 bytes (nothing); keeps 0; 0 files; 1 build logs, 7 bytes\n",
			"dry run: 2 paths, 3 files, 4 build logs (49 bytes) would go; nothing changed\n",
		}},
		{false, []string{
			"omnicorp/app: removed 2 paths, 300 bytes (expired 2); keeps 1; 3 files (debuginfo 1, listing 2); 3 build logs, 42 bytes\n",
			"omnicorp/logs-only: removed 0 paths, 0 bytes (nothing); keeps 0; 0 files; 1 build logs, 7 bytes\n",
			"removed 2 paths and 3 files; deleted 1 NAR files (300 bytes) and 4 build logs (49 bytes) from storage in 1s\n",
		}},
	} {
		var out bytes.Buffer
		rep := gc.Report{DryRun: c.dry, Flakes: flakes, Duration: time.Second}
		if !c.dry {
			rep.NarsDeleted, rep.BytesFreed, rep.LogsDeleted = 1, 300, 4
		}
		printReport(&out, rep)
		if got := out.String(); got != strings.Join(c.want, "") {
			t.Errorf("dry run %v: printed\n%s\nwant\n%s", c.dry, got, strings.Join(c.want, ""))
		}
	}
}
