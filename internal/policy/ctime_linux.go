//go:build linux || openbsd

package policy

import (
	"os"
	"syscall"
	"time"
)

// changeTime is the file's status change time (ctime), zero if unknown.
func changeTime(fi os.FileInfo) time.Time {
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		return time.Unix(int64(st.Ctim.Sec), int64(st.Ctim.Nsec))
	}
	return time.Time{}
}
