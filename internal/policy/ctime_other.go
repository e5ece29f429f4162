//go:build !(linux || openbsd || darwin || freebsd || netbsd)

package policy

import (
	"os"
	"time"
)

// changeTime is the file's status change time (ctime); this platform's
// FileInfo does not carry one, so only the modification time is used.
func changeTime(os.FileInfo) time.Time { return time.Time{} }
