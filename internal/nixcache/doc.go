// Package nixcache holds the pure Nix binary-cache logic of the blob server:
//
//   - narinfo parsing and validation of uploads (ParseNarInfo), rendering of
//     the narinfo the server serves (Render) and its fingerprint;
//   - signing keys in Nix's secret-key format ("name:base64"), key sets for
//     rotation, and key generation (KeySet, GenerateKey, LoadOrCreateKey);
//   - a streaming NAR verifier that, while an upload is written through it,
//     computes the file hash and size and, decompressing on the fly, the
//     NarHash and NarSize, and checks that the NAR is well-formed (Verifier).
//
// Nothing here performs network or database I/O.
package nixcache
