// Package gc is the garbage collector: retention per flake (keep_for by last
// push or read, max_size least recently used first, a store-wide max_size),
// pins, and closure safety, over any index.Collectable and blob.Store.
//
// # What a collection keeps
//
// Per flake, the roots are its pinned paths and the paths used (pushed,
// pushed again, referenced by a push, pinned, read) within keep_for. The
// flake keeps the closures of its pins, then the closures of its other
// roots, most recently used first, while they fit its max_size (once one
// does not fit, it and every less recently used root go). The store-wide
// max_size is a last-use cutoff computed first (newest paths of every flake
// summed until the size is exceeded, each NAR file once however many
// flakes hold it: the bytes stored): roots used at or before it are not
// roots. Everything else in the flake goes. References are within a flake
// (a push is accepted only when the flake holds every reference), so what
// stays is closed under references. A NAR file leaves storage when no
// flake owns it any more: a flake stops owning a file when none of its
// paths names it (after the grace period, see below).
//
// # Closure safety with concurrent pushes, reads and pins
//
// A collection reads a flake, decides, then deletes; pushes, reads and pins
// go on meanwhile, also on other servers sharing the index. The rules that
// make this safe (the index enforces each in one transaction; see
// index.Collectable):
//
//  1. Everything records when it was last used, and every removal is
//     conditional on it, checked in the statement that does it: a path is
//     doomed only if last used before the cutoff (collection start −
//     grace) and not pinned, a flake's NAR ownership released only if no
//     path of the flake names the file and no push touched it since the
//     cutoff, a NAR record doomed only if no flake owns it and no push
//     touched it since the cutoff. A use that commits first wins.
//  2. A doomed path can no longer be used: a push referencing it fails
//     (AddPath: ErrNotHeld), a pin naming it fails, a read does not mark
//     it used. It is still served until deleted.
//  3. A push's narinfo is recorded by index.Collectable.AddPath, which in
//     its transaction requires that the flake owns the NAR file and holds
//     every reference (not doomed), and marks them used now. So a push
//     racing a collection either commits first — its NAR and references
//     are then recent and not doomed — or comes second and finds something
//     doomed or gone: it fails cleanly (400, "push it again"; Nix pushes
//     references first, so the retried push uploads them again), and
//     nothing is recorded.
//  4. Order: a collection decides (what stays is closed under
//     references), dooms what goes (in any order, in batches), then keeps
//     the whole closure of every path it could not doom (used since the
//     scan) by sparing the doomed paths in it, and only then deletes what
//     is still doomed. A path that stays therefore never loses a
//     reference: its references were either not doomed, or doomed and
//     spared before any deletion; and nothing new can come to reference a
//     doomed path (rule 2). (A push touches only its direct references;
//     rule 4 keeps the rest of their closure.)
//  5. NAR blobs: an upload records the file with index.Collectable.ClaimNar
//     (marked used now) before committing the blob and PutNar after. A
//     collection first marks unowned, untouched NAR records as doomed
//     (DoomNars), then deletes their blobs, then their records. ClaimNar
//     and PutNar refuse a doomed file (index.ErrBusy: 503, Nix retries).
//     So an upload's claim either comes before the doom (the file is
//     recent: not doomed) or after it; if after, it is refused until the
//     record is forgotten, which happens only after the blob was deleted —
//     the upload's own commit then comes later and its blob stays.
//  6. Cached answers: servers cache narinfo and NAR lookups. A collection
//     bumps the index's generation after deleting records and waits
//     Config.InvalidateDelay (servers poll the generation every second and
//     drop their caches on a change; a lookup that started before the drop
//     does not refill it) before deleting blobs, so no server keeps serving
//     a narinfo whose NAR is gone. A NAR whose blob is gone is a 404.
//  7. One collection at a time (LockCollector: a PostgreSQL advisory lock,
//     a file lock beside a SQLite index); an interrupted collection's
//     doomed paths are spared by the next one before it decides.
//
// The grace period (retention file `grace`, default 1 h) covers the clock
// skew between servers (times are each server's clock) and the time a push
// takes between a NAR and its narinfo: an owned NAR without a narinfo yet
// is not released within it.
//
// # Memory
//
// A collection holds one flake's paths at a time (hash, size, last use,
// references as small integers: about 200 bytes a path) and the list of
// NAR files to delete; the store-wide cutoff streams the index. See
// docs/benchmarks.md for a 1M-path measurement. A dry run also holds each
// path's NAR file name and the set of those that stay (to predict which
// debug info links go: roughly 150 bytes more a path) and streams the
// flake's files (ScanFiles reads pages along an index: 300,000 files in
// about a second on either backend, measured on the 2-core machine).
//
// Last use and the doomed mark live in a side table of (flake, hash,
// last_used, doomed), not in the row holding the narinfo text, so that
// dooming and marking used write a few bytes.
//
// # Other objects
//
// Files (listings, debug info links, realisations, build trace entries)
// describe a path or a NAR file of their flake: after a flake's paths are
// deleted and its NAR files released, index.Collectable.DropFiles deletes
// the flake's files it no longer serves, uploaded before the cutoff (a
// file uploaded since may precede its narinfo in a push). Their data is in
// the index; no blob.
//
// Build logs are kept keep_for (or -older-than) after their last upload,
// whatever the paths (a log is looked up by derivation, which no path
// record names reliably); pins do not keep them, max_size does not count
// them, no keep_for keeps them. Their blobs (log/<org>/<name>/<drv>, one
// per flake and derivation) go as NAR files do: DoomLogs hides the record
// and makes uploads of it busy, the blob is deleted after the caches'
// invalidation delay, then ForgetLogs removes the record. An upload
// claims the record (ClaimLog, marking it uploaded now) before committing
// the blob: a claim before the doom makes the log recent (not doomed), one
// after it is refused (503) until the record is forgotten, which comes
// after the blob's deletion.
//
// # Dry runs
//
// Options.DryRun reads and decides as a collection does, and writes
// nothing: no doomed mark, no last use, no lock, no generation bump, no
// blob. Its Report says per flake what a collection at that moment would
// delete: the paths (the DoomPaths condition evaluated on the scan), the
// files by kind (index.Collectable.ScanFiles: a file uploaded before the
// cutoff goes when the flake does not serve it now, when its path goes,
// or — a debug info link — when the flake releases its NAR file: an
// ownership untouched since the cutoff that no remaining path names;
// the rules of DropFiles and ReleaseNars, mirrored in wouldDrop), and
// the build logs that expired (index.Collectable.ExpiredLogs: what
// DoomLogs would return), with their blobs' sizes (Stat). A real
// collection's Report carries the same fields (FlakeReport.Files by
// kind, Logs, LogBytes), so a dry run and the run after it can be
// compared; the tests do, on both indexes. Not predicted: which NAR files
// leave storage (NarsReleased, NarsDeleted, BytesFreed depend on every
// flake's releases), and what pushes and reads do between the two runs.
package gc
