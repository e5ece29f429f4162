// Package cacheserver is the blob server's HTTP surface: the Nix binary
// cache (public listener, behind the gate or Envoy) and the internal
// listener the authorization service calls.
//
// # Public listener (Handler)
//
// URLs are parsed by internal/route, the parser authz uses too:
//
//	GET  /nix-cache-info, /{org}/{flake}/nix-cache-info
//	GET|HEAD /{org}/{flake}/{hash}.narinfo    narinfo of a path the flake owns
//	GET|HEAD /{org}/{flake}/nar/{file}        NAR file the flake owns (Range supported)
//	GET|HEAD /{hash}.narinfo, /nar/{file}     union view: served when any flake owns it
//	GET|HEAD /{org}/{flake}/log/{drv}         build log
//	PUT  /{org}/{flake}/nar/{file}            upload a NAR (streamed and verified)
//	PUT  /{org}/{flake}/{hash}.narinfo        upload a narinfo (validated against the NAR)
//	PUT  /{org}/{flake}/log/{drv}             upload a build log
//
// Status codes: absent → 404; bad upload → 400 with a one-line plain-text
// reason; a narinfo that conflicts with the same store path already cached
// with a different NarHash → 409; too large → 413; wrong method → 405;
// storage failure → 500 (generic message, detail in the log).
//
// Narinfos are served as the server rendered them at upload: client Sig
// lines dropped, one Sig line per configured signing key. After a key
// rotation a narinfo is re-signed once, when first served.
//
// Content is stored once (blob key nar/<file>); ownership is per flake. A
// NAR PUT makes the flake own the file after its bytes were verified (even
// when the blob already exists: then the bytes are dropped). A narinfo PUT
// is accepted only when the flake owns its NAR, every hash and size matches,
// and each reference is the path itself or owned by the flake.
//
// # Internal listener (InternalHandler)
//
// For the authorization service and operators; never expose it publicly:
//
//	GET /owners/narinfo/{storehash}  → 200 {"flakes":["org/name",...]}
//	GET /owners/nar/{file}           → 200 {"flakes":["org/name",...]}
//	GET /metrics                     Prometheus metrics
//	GET /healthz                     200 "ok" when index and blob store answer
//
// The owners lists are sorted and empty (never 404) when nobody owns the
// object; a malformed hash or file name is 400.
package cacheserver
