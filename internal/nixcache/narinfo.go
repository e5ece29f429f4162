package nixcache

import (
	"bytes"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/nix-community/go-nix/pkg/narinfo"
	"github.com/nix-community/go-nix/pkg/nixbase32"
	"github.com/nix-community/go-nix/pkg/nixhash"

	"github.com/flakegate/flakegate/internal/nixname"
)

// NarInfo is a validated narinfo: every field the cache relies on is
// present and well-formed. Hashes are SHA-256 digests: FileHash and NarHash
// must decode to exactly 32 bytes in any encoding Nix writes (nixbase32,
// base16, base64, or SRI "sha256-<base64>").
//
// CA (the content address, which Nix's signature fingerprint does not cover
// and which lets a client accept a path without any signature) is checked
// against what the server knows before it is kept:
//
//   - "fixed:r:sha256:<hash>" (a NAR-hashed path, hash in nixbase32, base16
//     or base64) of a path that does not reference itself is kept, rendered
//     as "fixed:r:sha256:<nixbase32>", only when its digest equals NarHash and
//     StorePath is the path Nix computes for it (makeFixedOutputPath: type
//     "source" plus the references); either mismatch is an error naming CA;
//   - every other well-formed content address is dropped (CA is ""): "text:…",
//     flat "fixed:<algo>:…", "fixed:git:…" and other algorithms hash file
//     contents the server does not see here, and a self-referencing
//     fixed:r:sha256 path's hash is taken modulo its own hash part (Nix's
//     HashModuloSink), so it differs from NarHash and needs the NAR to check.
//     Nix then trusts the path by the server's signature, as for any
//     input-addressed path;
//   - a CA that Nix's ContentAddress parser would refuse is an error naming CA.
type NarInfo struct {
	StorePath   string // "/nix/store/<hash>-<name>"
	Hash        string // the 32-character store path hash
	File        string // NAR file name below nar/, e.g. "<filehash>.nar.xz"
	Compression nixname.Compression
	FileHash    []byte
	FileSize    int64
	NarHash     []byte
	NarSize     int64
	// References are store path base names, sorted and without duplicates.
	References []string
	Deriver    string // base name of the .drv, or ""
	System     string
	// CA is "" or a checked "fixed:r:sha256:<nixbase32>" (see above).
	CA string
	// Sigs are the signature lines of the parsed text ("name:base64").
	// The server never serves them: it renders its own signatures.
	Sigs []string
}

// Base returns the store path base name "<hash>-<name>".
func (n *NarInfo) Base() string { return strings.TrimPrefix(n.StorePath, StoreDir+"/") }

// URL is the narinfo URL field: "nar/<file>", relative to the cache URL, so
// it resolves both in a flake namespace and in the union view.
func (n *NarInfo) URL() string { return "nar/" + n.File }

// narinfo fields and whether they may appear more than once.
var narInfoFields = map[string]bool{
	"StorePath": false, "URL": false, "Compression": false,
	"FileHash": false, "FileSize": false, "NarHash": false, "NarSize": false,
	"References": false, "Deriver": false, "System": false, "CA": false,
	"Sig": true,
}

// ParseNarInfo parses and validates a narinfo as a client uploads it. The
// error says what is wrong in words fit for the client.
func ParseNarInfo(data []byte) (*NarInfo, error) {
	kept, sigs, err := checkLines(data)
	if err != nil {
		return nil, err
	}
	raw, err := parsedFields(kept)
	if err != nil {
		return nil, fmt.Errorf("parse narinfo: %w", err)
	}
	n, err := fromParsed(raw)
	if err != nil {
		return nil, err
	}
	n.Sigs = sigs
	return n, nil
}

// checkLines checks each line of an uploaded narinfo and returns the
// lines other than signatures, and the signatures.
func checkLines(data []byte) (kept, sigs []string, err error) {
	if len(data) == 0 {
		return nil, nil, errors.New("narinfo is empty")
	}
	if !utf8.Valid(data) {
		return nil, nil, errors.New("narinfo is not valid UTF-8")
	}
	seen := map[string]bool{}
	lines := strings.Split(string(data), "\n")
	kept = make([]string, 0, len(lines))
	for i, line := range lines {
		if line == "" {
			continue
		}
		if strings.ContainsFunc(line, func(r rune) bool { return r < 0x20 || r == 0x7f }) {
			return nil, nil, fmt.Errorf("narinfo line %d: control character", i+1)
		}
		k, v, ok := strings.Cut(line, ": ")
		if !ok {
			return nil, nil, fmt.Errorf("narinfo line %d: want \"Key: value\"", i+1)
		}
		multi, known := narInfoFields[k]
		if !known {
			return nil, nil, fmt.Errorf("narinfo line %d: unknown field %q", i+1, k)
		}
		if seen[k] && !multi {
			return nil, nil, fmt.Errorf("narinfo line %d: duplicate field %s", i+1, k)
		}
		if strings.Contains(v, ": ") {
			return nil, nil, fmt.Errorf("narinfo line %d: value of %s contains \": \"", i+1, k)
		}
		seen[k] = true
		if err := checkValue(k, v); err != nil {
			return nil, nil, fmt.Errorf("narinfo line %d: %w", i+1, err)
		}
		if k == "Sig" {
			sigs = append(sigs, v)
			continue
		}
		kept = append(kept, line)
	}
	for _, k := range []string{"StorePath", "URL", "NarHash", "NarSize", "FileHash", "FileSize"} {
		if !seen[k] {
			return nil, nil, fmt.Errorf("narinfo has no %s field", k)
		}
	}

	return kept, sigs, nil
}

// maxLine is the longest narinfo line go-nix's narinfo.Parse reads (its
// line scanner's buffer is 1 MiB, newline included).
const maxLine = 1<<20 - 1

// parsedFields fills go-nix's NarInfo from lines ParseNarInfo checked
// (known keys, each once, values of the syntax checkValue wants, no Sig),
// as narinfo.Parse would from the same lines joined by newlines. Written
// here for a measured reason: narinfo.Parse allocates a 1 MiB line buffer
// per call, 25 % of the bytes the server allocated per pushed path and
// more than everything else a narinfo upload allocates (BenchmarkPush;
// docs/benchmarks.md). FuzzParsedFields holds it to narinfo.Parse.
func parsedFields(lines []string) (*narinfo.NarInfo, error) {
	raw := &narinfo.NarInfo{}
	for _, line := range lines {
		if len(line) > maxLine {
			return nil, fmt.Errorf("a line is longer than %d bytes", maxLine)
		}
		k, v, _ := strings.Cut(line, ": ")
		var err error
		switch k {
		case "StorePath":
			raw.StorePath = v
		case "URL":
			raw.URL = v
		case "Compression":
			raw.Compression = v
		case "FileHash":
			raw.FileHash, err = nixhash.ParseAny(v, nil)
		case "FileSize":
			raw.FileSize, err = strconv.ParseUint(v, 10, 0)
		case "NarHash":
			raw.NarHash, err = nixhash.ParseAny(v, nil)
		case "NarSize":
			raw.NarSize, err = strconv.ParseUint(v, 10, 0)
		case "References":
			if v != "" {
				raw.References = append(raw.References, strings.Split(v, " ")...)
			}
		case "Deriver":
			if v != "unknown-deriver" {
				raw.Deriver = v
			}
		case "System":
			raw.System = v
		case "CA":
			raw.CA = v
		default:
			err = fmt.Errorf("unknown key %v", k)
		}
		if err != nil {
			return nil, err
		}
	}
	if raw.Compression == "" {
		raw.Compression = "bzip2" // as narinfo.Parse: absent means bzip2
	}
	return raw, nil
}

// checkValue checks the syntax of the values go-nix would refuse with a
// message that does not name the field.
func checkValue(k, v string) error {
	switch k {
	case "FileSize", "NarSize":
		if _, err := strconv.ParseUint(v, 10, 63); err != nil {
			return fmt.Errorf("%s %q is not a size in bytes", k, v)
		}
	case "FileHash", "NarHash":
		h, err := nixhash.ParseAny(v, nil)
		if err != nil {
			return fmt.Errorf("%s %q is not a hash (want sha256:<nixbase32>)", k, v)
		}
		// go-nix picks the encoding by length but does not check the
		// decoded length: 44 base64 characters without padding decode to
		// 33 bytes, with "==" to 31.
		if h.Algo() == nixhash.SHA256 && len(h.Digest()) != sha256.Size {
			return fmt.Errorf("%s %q decodes to %d bytes, not the 32 of a sha256 digest", k, v, len(h.Digest()))
		}
	case "Sig":
		// Upload signatures are dropped, so only their shape is checked.
		if name, data, ok := strings.Cut(v, ":"); !ok || name == "" || data == "" {
			return fmt.Errorf("Sig %q is not a signature (want name:base64)", v)
		}
	}
	return nil
}

// CheckUpload is what an uploaded narinfo must meet beyond parsing: rules
// added after narinfos were stored, which a stored one need not meet to be
// served and re-signed after a key rotation (ParseNarInfo stays as
// lenient as it was for them). Today: System is a Nix system name.
func (n *NarInfo) CheckUpload() error {
	if !validSystem(n.System) {
		return fmt.Errorf("System %q is not a Nix system name (up to %d letters, digits, '_', '.' or '-', as x86_64-linux)", cut(n.System, 80), maxSystemLen)
	}
	return nil
}

// maxSystemLen bounds a narinfo's System: Nix's system names are short
// (x86_64-linux, aarch64-darwin, riscv64-none-elf); the field was taken as
// any text up to the narinfo's 1 MiB, stored, signed, served and kept in the
// blob server's hit cache, whose size is counted in entries (adversarial
// review, 2026-12-05).
const maxSystemLen = 64

// validSystem reports whether s is empty or a plausible Nix system name.
func validSystem(s string) bool {
	if len(s) > maxSystemLen {
		return false
	}
	for _, c := range []byte(s) {
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '_' || c == '.' || c == '-') {
			return false
		}
	}
	return true
}

// cut is s, shortened to n bytes with "…" when longer (error messages).
func cut(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return strings.ToValidUTF8(s[:n], "") + "…"
}

func fromParsed(raw *narinfo.NarInfo) (*NarInfo, error) {
	n := &NarInfo{StorePath: raw.StorePath, System: raw.System}

	base, ok := StorePathBase(raw.StorePath)
	if !ok {
		return nil, fmt.Errorf("StorePath %q is not a valid path in %s", raw.StorePath, StoreDir)
	}
	n.Hash = base[:32]

	if c := nixname.Compression(raw.Compression); c.Supported() {
		n.Compression = c
	} else {
		return nil, fmt.Errorf("Compression %q is not supported (%s)", raw.Compression, compressionNames)
	}

	file, ok := strings.CutPrefix(raw.URL, "nar/")
	if !ok {
		return nil, fmt.Errorf("URL %q: want nar/<filehash>%s", raw.URL, nixname.NarExtSyntax())
	}
	fileHash, c, ok := nixname.ParseNarFile(file)
	if !ok {
		return nil, fmt.Errorf("URL %q: want nar/<filehash>%s", raw.URL, nixname.NarExtSyntax())
	}
	if c != n.Compression {
		return nil, fmt.Errorf("URL %q does not match Compression %s (want %s)", raw.URL, n.Compression, nixname.NarFileName("<filehash>", n.Compression))
	}
	n.File = file

	var err error
	if n.FileHash, err = sha256Digest("FileHash", raw.FileHash); err != nil {
		return nil, err
	}
	if n.NarHash, err = sha256Digest("NarHash", raw.NarHash); err != nil {
		return nil, err
	}
	if got := nixbase32.EncodeToString(n.FileHash); got != fileHash {
		return nil, fmt.Errorf("URL %q does not match FileHash sha256:%s", raw.URL, got)
	}
	if raw.FileSize == 0 || raw.FileSize > 1<<62 {
		return nil, fmt.Errorf("FileSize %d is out of range", raw.FileSize)
	}
	if raw.NarSize == 0 || raw.NarSize > 1<<62 {
		return nil, fmt.Errorf("NarSize %d is out of range", raw.NarSize)
	}
	n.FileSize, n.NarSize = int64(raw.FileSize), int64(raw.NarSize)
	if n.Compression == nixname.CompressionNone && (n.FileSize != n.NarSize || !bytes.Equal(n.FileHash, n.NarHash)) {
		return nil, errors.New("Compression is none but FileHash/FileSize differ from NarHash/NarSize")
	}

	refs := slices.Clone(raw.References)
	slices.Sort(refs)
	for i, r := range refs {
		if !ValidStorePathBase(r) {
			return nil, fmt.Errorf("reference %q is not a store path base name", r)
		}
		if i > 0 && refs[i-1] == r {
			return nil, fmt.Errorf("reference %q is listed twice", r)
		}
	}
	n.References = refs

	if raw.Deriver != "" {
		if !ValidStorePathBase(raw.Deriver) || !strings.HasSuffix(raw.Deriver, ".drv") {
			return nil, fmt.Errorf("Deriver %q is not a derivation base name", raw.Deriver)
		}
		n.Deriver = raw.Deriver
	}

	if n.CA, err = checkCA(n, raw.CA); err != nil {
		return nil, err
	}
	return n, nil
}

// compressionNames lists the supported compressions for messages:
// "none, xz, zstd, bzip2".
var compressionNames = func() string {
	var names []string
	for _, c := range nixname.Compressions() {
		names = append(names, string(c))
	}
	return strings.Join(names, ", ")
}()

func sha256Digest(field string, h *nixhash.HashWithEncoding) ([]byte, error) {
	if h == nil {
		return nil, fmt.Errorf("narinfo has no %s field", field)
	}
	if h.Algo() != nixhash.SHA256 {
		return nil, fmt.Errorf("%s uses %s; only sha256 is accepted", field, h.Algo())
	}
	if len(h.Digest()) != sha256.Size {
		return nil, fmt.Errorf("%s decodes to %d bytes, not the 32 of a sha256 digest", field, len(h.Digest()))
	}
	return h.Digest(), nil
}

// FormatHash renders a SHA-256 digest as Nix does in narinfos: "sha256:<nixbase32>".
func FormatHash(digest []byte) string { return "sha256:" + nixbase32.EncodeToString(digest) }

// ParseHash parses "sha256:<nixbase32|hex|base64>" into a digest.
func ParseHash(s string) ([]byte, error) {
	algo := nixhash.SHA256
	h, err := nixhash.ParseAny(s, &algo)
	if err != nil {
		return nil, fmt.Errorf("parse hash %q: %w", s, err)
	}
	if len(h.Digest()) != sha256.Size {
		return nil, fmt.Errorf("parse hash %q: decodes to %d bytes, not the 32 of a sha256 digest", s, len(h.Digest()))
	}
	return h.Digest(), nil
}

// Fingerprint is the string Nix signs for a path:
// "1;<store path>;sha256:<nar hash>;<nar size>;<comma-separated store paths of references>".
func (n *NarInfo) Fingerprint() string {
	var b strings.Builder
	b.WriteString("1;")
	b.WriteString(n.StorePath)
	b.WriteString(";")
	b.WriteString(FormatHash(n.NarHash))
	b.WriteString(";")
	b.WriteString(strconv.FormatInt(n.NarSize, 10))
	b.WriteString(";")
	for i, r := range n.References {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(StoreDir + "/")
		b.WriteString(r)
	}
	return b.String()
}

// Render writes the narinfo text the server serves, with sigs as its Sig
// lines (the uploaded signatures in n.Sigs are not included).
func (n *NarInfo) Render(sigs []string) []byte {
	var b bytes.Buffer
	b.Grow(512 + 80*len(n.References))
	fmt.Fprintf(&b, "StorePath: %s\n", n.StorePath)
	fmt.Fprintf(&b, "URL: %s\n", n.URL())
	fmt.Fprintf(&b, "Compression: %s\n", n.Compression)
	fmt.Fprintf(&b, "FileHash: %s\n", FormatHash(n.FileHash))
	fmt.Fprintf(&b, "FileSize: %d\n", n.FileSize)
	fmt.Fprintf(&b, "NarHash: %s\n", FormatHash(n.NarHash))
	fmt.Fprintf(&b, "NarSize: %d\n", n.NarSize)
	// Nix writes "References: " even when empty; its parser needs the space.
	b.WriteString("References: ")
	b.WriteString(strings.Join(n.References, " "))
	b.WriteByte('\n')
	if n.Deriver != "" {
		fmt.Fprintf(&b, "Deriver: %s\n", n.Deriver)
	}
	if n.System != "" {
		fmt.Fprintf(&b, "System: %s\n", n.System)
	}
	for _, s := range sigs {
		fmt.Fprintf(&b, "Sig: %s\n", s)
	}
	if n.CA != "" {
		fmt.Fprintf(&b, "CA: %s\n", n.CA)
	}
	return b.Bytes()
}

// caDigestSizes are the digest sizes of the hash algorithms Nix's
// content-address parser knows (blake3 behind an experimental feature).
var caDigestSizes = map[string]int{"md5": 16, "sha1": 20, "sha256": 32, "sha512": 64, "blake3": 32}

// checkCA checks a narinfo's CA field against n (StorePath, NarHash and
// References already validated) and returns the CA to keep: the canonical
// form of a verified "fixed:r:sha256:…", or "" for a content address that
// cannot be checked here (see NarInfo).
func checkCA(n *NarInfo, ca string) (string, error) {
	if ca == "" {
		return "", nil
	}
	method, algo, digest, err := parseCA(ca)
	if err != nil {
		return "", fmt.Errorf("CA %q is not a content address: %v (want fixed:r:sha256:<hash>, fixed:<algo>:<hash> or text:sha256:<hash>)", ca, err)
	}
	if method != "fixed:r" || algo != "sha256" || slices.Contains(n.References, n.Base()) {
		return "", nil
	}
	if !bytes.Equal(digest, n.NarHash) {
		return "", fmt.Errorf("CA %q does not match NarHash %s: the hash of fixed:r:sha256 is the NAR hash", ca, FormatHash(n.NarHash))
	}
	if want := fixedOutputPathNAR(n.Base()[33:], digest, n.References); want != n.StorePath {
		return "", fmt.Errorf("CA %q does not match StorePath %s: Nix computes %s for it", ca, n.StorePath, want)
	}
	return "fixed:r:sha256:" + nixbase32.EncodeToString(digest), nil
}

// parseCA parses a content address as Nix's ContentAddress::parse does:
// "text:<algo>:<hash>" or "fixed:[r:|git:]<algo>:<hash>", the hash without
// algorithm prefix in base16, nixbase32 or base64 (no SRI). method is
// "text", "fixed", "fixed:r" or "fixed:git".
func parseCA(ca string) (method, algo string, digest []byte, err error) {
	prefix, rest, ok := strings.Cut(ca, ":")
	if !ok {
		return "", "", nil, errors.New("no method prefix")
	}
	switch prefix {
	case "text":
		method = "text"
	case "fixed":
		method = "fixed"
		for _, m := range []string{"r", "git"} {
			if r, ok := strings.CutPrefix(rest, m+":"); ok {
				method, rest = "fixed:"+m, r
				break
			}
		}
	default:
		return "", "", nil, fmt.Errorf("unknown method %q", prefix)
	}
	algo, hash, ok := strings.Cut(rest, ":")
	if !ok {
		return "", "", nil, errors.New("no <algo>:<hash>")
	}
	size, ok := caDigestSizes[algo]
	if !ok {
		return "", "", nil, fmt.Errorf("unknown hash algorithm %q", algo)
	}
	if digest, err = decodeUnprefixed(hash, size); err != nil {
		return "", "", nil, fmt.Errorf("%s hash: %v", algo, err)
	}
	return method, algo, digest, nil
}

// decodeUnprefixed decodes a digest of size bytes as Nix's
// Hash::parseNonSRIUnprefixed does: the length of s picks base16, nixbase32
// or base64, and the decoded digest must have exactly size bytes.
func decodeUnprefixed(s string, size int) ([]byte, error) {
	var d []byte
	var err error
	switch len(s) {
	case hex.EncodedLen(size):
		d, err = hex.DecodeString(s)
	case nixbase32.EncodedLen(size):
		d, err = nixbase32.DecodeString(s)
	case base64.StdEncoding.EncodedLen(size):
		d, err = base64.StdEncoding.DecodeString(s)
	default:
		return nil, fmt.Errorf("%d characters is no encoding of a %d-byte digest", len(s), size)
	}
	if err != nil {
		return nil, errors.New("invalid encoding")
	}
	if len(d) != size {
		return nil, fmt.Errorf("decodes to %d bytes, not %d", len(d), size)
	}
	return d, nil
}

// fixedOutputPathNAR is the store path Nix's makeFixedOutputPath computes
// for a NAR-hashed sha256 content address (fixed:r:sha256) of a path
// without a self-reference: makeStorePath over
// "<type>:sha256:<base16 hash>:/nix/store:<name>", where type is "source"
// followed by ":/nix/store/<ref>" for each reference (sorted); the SHA-256 of
// that string, XOR-folded to 20 bytes, in nixbase32 is the path's hash. (A
// self-reference would add ":self" to the type.)
func fixedOutputPathNAR(name string, narHash []byte, refs []string) string {
	var b strings.Builder
	b.WriteString("source")
	for _, r := range refs {
		b.WriteString(":" + StoreDir + "/" + r)
	}
	b.WriteString(":sha256:" + hex.EncodeToString(narHash) + ":" + StoreDir + ":" + name)
	sum := sha256.Sum256([]byte(b.String()))
	return StoreDir + "/" + nixbase32.EncodeToString(nixhash.CompressHash(sum[:], 20)) + "-" + name
}

// DeriverOf returns the Deriver (the .drv's base name) of a narinfo the
// server rendered, or "" when it has none or it is not a valid one. It
// scans the lines instead of parsing the whole narinfo: the closure
// endpoint reads it from thousands of stored records at once.
func DeriverOf(narInfo []byte) string {
	for len(narInfo) > 0 {
		line := narInfo
		if i := bytes.IndexByte(narInfo, '\n'); i >= 0 {
			line, narInfo = narInfo[:i], narInfo[i+1:]
		} else {
			narInfo = nil
		}
		if v, ok := bytes.CutPrefix(line, []byte("Deriver: ")); ok {
			d := string(v)
			if ValidStorePathBase(d) && strings.HasSuffix(d, ".drv") {
				return d
			}
			return ""
		}
	}
	return ""
}
