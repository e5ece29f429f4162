//go:build darwin || freebsd || netbsd

package policy

import (
	"os"
	"syscall"
	"time"
)

// changeTime is the file's status change time (ctime), zero if unknown.
func changeTime(fi os.FileInfo) time.Time {
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		return time.Unix(int64(st.Ctimespec.Sec), int64(st.Ctimespec.Nsec))
	}
	return time.Time{}
}
