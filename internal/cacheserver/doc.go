// Package cacheserver is the blob server's HTTP surface: the Nix binary
// cache (public listener, behind the gate or Envoy) and the internal
// listener the authorization service calls.
//
// # Public listener (Handler)
//
// URLs are parsed by internal/route, the parser authz uses too; the names
// in them (flakes, hashes, NAR file names and compressions) are
// internal/nixname's:
//
//	GET  /nix-cache-info, /{org}/{flake}/nix-cache-info
//	GET|HEAD /{org}/{flake}/{hash}.narinfo    the flake's own narinfo of a path
//	GET|HEAD /{org}/{flake}/nar/{file}        NAR file the flake owns (Range supported)
//	GET|HEAD /{hash}.narinfo, /nar/{file}     union view, from the readable flakes (below)
//	GET|HEAD /{org}/{flake}/log/{drv}         build log (/log/{drv}: union)
//	GET|HEAD /{org}/{flake}/{hash}.ls, …/debuginfo/{id}.debug, …/realisations/{id}.doi,
//	         …/build-trace-v2/{drv}/{out}.doi  the flake's listing, debug info link,
//	                                          realisation, build trace entry (files.go;
//	                                          without /{org}/{flake}: union)
//	PUT  /{org}/{flake}/nar/{file}            upload a NAR (streamed and verified)
//	PUT  /{org}/{flake}/{hash}.narinfo        upload a narinfo (validated against the NAR)
//	PUT  /{org}/{flake}/log/{drv}             upload a build log
//	PUT  the files above                      validated JSON (files.go), stored with the
//	                                          upload's Content-Encoding
//
// Status codes: absent → 404 (body route.BodyNotFound, which authz's
// denied read repeats byte for byte); bad upload → 400 with a one-line
// plain-text reason; a narinfo for a store path the same flake already
// holds with other contents (NarHash or references) → 409; too large → 413;
// wrong method → 405; storage full (ENOSPC, EDQUOT) → 507; other storage
// failure → 500 (generic message, detail in the log).
// A new upload is 201, a flake's re-upload of what it has 200: no answer
// depends on what other flakes hold.
//
// Upload limits (see limits.go and deadline.go; each answer one line):
//   - a NAR or log upload slower than Config.UploadMinRate over the last
//     UploadRateWindow (from one window in; only time spent waiting for the
//     client counts), or longer than UploadMaxDuration → 408;
//   - a client that sends nothing for UploadIdleTimeout → 400 (as any
//     failed read); a narinfo body must arrive within UploadIdleTimeout;
//   - a compressed NAR that decompresses to more than MaxExpansion times
//     the compressed bytes received so far (+1 MiB) → 413;
//   - more than MaxUploadsPerSubject concurrent PUTs with one
//     route.SubjectHeader value → 429 with Retry-After: 1 (no header: not
//     limited).
//
// A refused upload leaves nothing behind (the temporary blob is aborted),
// and its answer goes out at once with Connection: close (over HTTP/1;
// over HTTP/2 only its stream ends): the rest of the body is not read, so
// a slow client cannot hold the connection (internal/abandon).
//
// Narinfos are served as the server rendered them at upload: client Sig
// lines dropped, one Sig line per configured signing key. After a key
// rotation a narinfo is re-signed once, when first served.
//
// NAR bytes are stored once (blob key nar/<file>, content addressed);
// ownership is per flake. A NAR PUT makes the flake own the file after its
// bytes were verified, and writes them even when another flake stored the
// same file (committed over the same key), so that neither the answer nor
// the work done reveals it. Narinfos are per flake: each flake has its own
// record of a store path, what its pushers pushed. A narinfo PUT is
// accepted only when the flake owns its NAR, every hash and size matches,
// and each reference is the path itself or owned by the flake; only the
// flake's own record is read or written.
//
// The union view serves a path from the records of the flakes named in
// route.ReadableHeader (set by authz: the owners the caller may read; every
// flake when absent, on a server without a gate), and only when they agree
// on its contents (index.Path.SameContent); otherwise it answers 404 as for
// an absent path, logs the conflict and counts it
// (flakegate_blobserver_union_conflicts_total). A union NAR is served when
// one of those flakes owns the file.
//
// # Internal listener (InternalHandler)
//
// For the authorization service and operators; never expose it publicly:
//
//	GET /owners/narinfo/{storehash}  → 200 {"flakes":["org/name",...]}
//	GET /owners/nar/{file}           → 200 {"flakes":["org/name",...]}
//	GET /owners/{kind}/{key}         → the same for listing, log, debuginfo,
//	                                   realisation, build-trace (route.OwnersPath)
//	GET /metrics                     Prometheus metrics
//	GET /healthz                     200 "ok" when index and blob store answer
//
// The owners lists are sorted and empty (never 404) when nobody owns the
// object; a malformed hash or file name is 400. The paths
// (route.OwnersPath) and the answer
// (route.OwnersResponse) are route's, shared with authz's client.
package cacheserver
