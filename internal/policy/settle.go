package policy

// The settle rule: the engine activates a snapshot of the policy directory
// only once the directory and every file of the active set (policies and
// data) have been unchanged for Options.Debounce, and only if no file and
// not the directory changed while it was being read.
//
// Why: a file that is being written (an editor saving in place, `cp`, a
// deploy script, a half-synced volume) passes through prefixes, and a prefix
// of a data file can be valid YAML that simply lacks the entries that
// restrict access. fsnotify's "quiet for Debounce" is not enough on its own:
// the periodic rescan, Reload and the catch-up at Run start read whatever is
// there at that moment. So every path asks the files themselves how long ago
// they changed. Writing a temporary file and renaming it over the old one
// (what Kubernetes ConfigMap volumes do) is still the way to deploy: it is
// atomic, and the rule then only delays the swap by Debounce.

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"os"
	"time"
)

// ErrUnsettled is returned (wrapped) by NewEngine and Engine.Reload when the
// policy directory kept changing for longer than they wait for it to settle
// (10 × Debounce + 1 s). It says nothing about the policy: the previous
// revision keeps serving and Run activates the directory once it is quiet.
var ErrUnsettled = errors.New("the policy directory is still changing")

// timestampSlack covers the kernel stamping files from a coarse clock that
// lags time.Now by up to a scheduler tick.
const timestampSlack = 10 * time.Millisecond

// fileStamp is what one stat says about a file or the directory: enough to
// tell whether it changed between two stats, and when it last changed.
type fileStamp struct {
	info  os.FileInfo // for os.SameFile: still the same inode
	size  int64
	mtime time.Time
	ctime time.Time // status change time; zero where the platform has none
}

func stampOf(fi os.FileInfo) fileStamp {
	return fileStamp{info: fi, size: fi.Size(), mtime: fi.ModTime(), ctime: changeTime(fi)}
}

// same reports whether a and b are stats of the same, unchanged file.
func (a fileStamp) same(b fileStamp) bool {
	return os.SameFile(a.info, b.info) && a.size == b.size && a.mtime.Equal(b.mtime) && a.ctime.Equal(b.ctime)
}

// changed is the latest moment the file may have changed: the later of its
// modification time and its status change time (a copy that restores the
// original mtime, as cp -p, tar and rsync -t do, still gets a new ctime).
func (a fileStamp) changed() time.Time {
	return later(coarse(a.mtime), coarse(a.ctime))
}

// coarse widens a timestamp without a sub-second part: it comes from a
// filesystem with 1 s resolution (ext3, HFS+, some network filesystems), so
// the change may have happened up to a second later than it says.
func coarse(t time.Time) time.Time {
	if !t.IsZero() && t.Nanosecond() == 0 {
		return t.Add(time.Second)
	}
	return t
}

func later(a, b time.Time) time.Time {
	if b.After(a) {
		return b
	}
	return a
}

// stampKey identifies the stat state of a set of stamps (see settleWait).
func stampKey(names []string, stamps []fileStamp) string {
	h := sha256.New()
	var n [8]byte
	for i, s := range stamps {
		binary.BigEndian.PutUint64(n[:], uint64(len(names[i])))
		h.Write(n[:])
		h.Write([]byte(names[i]))
		for _, v := range []int64{s.size, s.mtime.UnixNano(), s.ctime.UnixNano()} {
			binary.BigEndian.PutUint64(n[:], uint64(v))
			h.Write(n[:])
		}
	}
	return hex.EncodeToString(h.Sum(nil))[:16]
}

// unsettledError means the directory changed while it was read (a file
// changed between its two stats, vanished after being listed, or the
// directory gained or lost an entry). It is no fault of the policy: the read
// is retried once the directory is quiet.
type unsettledError struct{ what string }

func (e *unsettledError) Error() string { return e.what }

// settleWait is how long snap must still stay unchanged before it may be
// activated: 0 once the directory and the files of the active set have not
// changed for Debounce. Callers hold reloadMu (or are NewEngine).
//
// File times come from the clock of whoever wrote the file. A change time in
// the future (an NFS server ahead of us, our clock stepped back) would make
// the rule wait for that clock, possibly for hours; for such a snapshot the
// rule is instead that the very same stat state (sizes, mtimes, ctimes) is
// seen again at least Debounce later by our own monotonic clock. Any write
// in between changes an mtime, so this cannot activate a passing prefix.
func (e *Engine) settleWait(snap *snapshot, now time.Time) time.Duration {
	d := e.opts.Debounce
	if !snap.Modified.After(now.Add(timestampSlack)) {
		e.seenKey = ""
		return max(0, snap.Modified.Add(d+timestampSlack).Sub(now))
	}
	if snap.stampKey != e.seenKey {
		e.seenKey, e.seenAt = snap.stampKey, now
		return d
	}
	return max(0, e.seenAt.Add(d).Sub(now))
}

// settleLimit bounds how long NewEngine and Reload wait for the directory to
// settle before giving up with ErrUnsettled: enough for a write on a
// filesystem with 1 s timestamps, short enough not to hang a start or SIGHUP.
func (e *Engine) settleLimit() time.Duration { return 10*e.opts.Debounce + time.Second }

// changedWithin reports how long a directory whose stat is fi still counts
// as changing at now: a read error in such a directory (a link that dangles
// for a moment during a ConfigMap swap) is retried, not reported.
func (e *Engine) changedWithin(fi os.FileInfo, now time.Time) time.Duration {
	changed := stampOf(fi).changed()
	if changed.After(now.Add(timestampSlack)) {
		return 0 // a clock ahead of ours: judge now rather than wait for it
	}
	return max(0, changed.Add(e.opts.Debounce+timestampSlack).Sub(now))
}
