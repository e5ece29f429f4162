// Package nixname is the vocabulary both flakegate processes (the blob
// server and the authorization service) and every package between them
// share: the names of things in a Nix binary cache and the rules that say
// which names are valid. Each rule is written here once; the URL grammar
// (internal/route), the narinfo and NAR logic (internal/nixcache), the
// index and the blob stores use these definitions instead of their own.
//
// Contract:
//
//   - Flake is an {org}/{name} namespace. ParseFlake accepts "org/name"
//     case-insensitively and returns it lower-case; each part is 1 to 100
//     of [a-z0-9._-] and does not start with '.', '_' or '-' (so a name
//     starting with '_', such as the reserved "_flakegate", is never a
//     flake). The zero Flake names no flake and renders as "".
//   - A store path hash is 32 nixbase32 characters (IsStoreHash); a NAR
//     file hash is 52 (the SHA-256 of the file, as Nix names NAR files).
//     nixbase32 is Nix's alphabet: 0-9 and a-z without e, o, u, t.
//   - The name character class, [A-Za-z0-9+-._?=], is the set of
//     characters Nix allows in a store path name (IsNameChar). Store path
//     names, derivation file names in log URLs and blob key segments are
//     made of it; the length and first-character rules of each stay with
//     its user.
//   - A store path is "/nix/store/<hash>-<name>" (StorePathBase); its
//     name is 1 to 211 name characters, not starting with '.'
//     (ValidStorePathBase).
//   - Compression is a NAR file's compression as Nix names it in a
//     narinfo. The cache supports exactly Compressions(): none, xz, zstd
//     and bzip2, whose NAR files end in ".nar", ".nar.xz", ".nar.zst" and
//     ".nar.bz2". That one list decides which compressions a narinfo may
//     name, which a NAR upload may be verified with, and which NAR file
//     names a URL may hold.
//   - A NAR file name is "<filehash>" + the compression's extension
//     (NarFileName); ParseNarFile is its inverse and accepts nothing else.
//   - Kind names the objects flakes own (narinfo, nar, log and the small
//     files: listing, debuginfo, realisation, build-trace), spelt once for
//     the routes, the index and the owners endpoint.
//
// The package is pure (no I/O) and imports only the standard library and
// go-nix's nixbase32.
package nixname
