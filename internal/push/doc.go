// Package push is `flakegate push`: it uploads the closures of store paths
// to one flake of a flakegate cache, as `nix copy --to
// <cache>/<org>/<flake>?compression=zstd` would, but with parallel uploads.
//
// The contract:
//
//   - The closure and each path's metadata (NarHash, NarSize, references,
//     deriver, content address) come from `nix path-info --json -r`, so the
//     pushed narinfo says what Nix says about the path.
//   - A path whose narinfo the flake already serves (HEAD answers 200) is
//     skipped; 404 (absent, or not readable by the pusher: the cache does
//     not tell the two apart) means upload, pushing is idempotent.
//   - Each missing path's NAR is serialized (read from the store
//     directory; for a store that is not a local directory, by
//     `nix store dump-path`), its NarHash checked against Nix's before
//     anything is sent, compressed (zstd by default), and PUT to
//     nar/<filehash>.nar.zst; then its narinfo (StorePath, URL,
//     Compression, FileHash, FileSize, NarHash, NarSize, References,
//     Deriver, CA) is PUT. The cache verifies both and signs the narinfo.
//   - A narinfo is PUT only after the narinfos of all its references are
//     in the flake (the cache refuses it otherwise): uploads run in
//     parallel in dependency order.
//   - Transient failures (network errors, 408, 429, 5xx) are retried with
//     exponential backoff; other 4xx answers fail the path at once, and the
//     paths that depend on it are not pushed.
//   - The token is asked for before every request, so a caller can refresh
//     it during a long push.
package push
