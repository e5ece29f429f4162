package nixcache

import "math"

// ExpansionFloor is how many decompressed bytes a NAR may always have,
// whatever its compression ratio: MaxExpansion refuses a NAR only beyond
// ratio × compressed bytes + ExpansionFloor, so that small, very
// compressible files (a few KiB of zeros) are not refused.
const ExpansionFloor = 1 << 20

// DefaultMaxExpansion is a generous bound on a NAR's compression ratio:
// store paths compress a few times, rarely beyond a hundred times; ratios
// in the thousands take long runs of identical bytes, the stuff of
// decompression bombs (64 MiB of zeros is about 2 KiB of zstd).
const DefaultMaxExpansion = 1000

// Expands reports whether decoded bytes from encoded bytes break the
// expansion rule of ratio: more than ratio × encoded + ExpansionFloor.
// ratio ≤ 0 means no bound. It is the one rule for compressed NARs
// (MaxExpansion) and for encoded uploads decoded as they stream (build
// logs), so that both refuse the same bombs.
func Expands(decoded, encoded, ratio int64) bool {
	if ratio <= 0 || decoded <= ExpansionFloor {
		return false
	}
	// Beyond this the bound does not fit an int64: no int64 count exceeds it.
	if encoded > (math.MaxInt64-ExpansionFloor)/ratio {
		return false
	}
	return decoded > ratio*encoded+ExpansionFloor
}

// VerifierOption configures a Verifier.
type VerifierOption func(*verifierOptions)

type verifierOptions struct {
	maxExpansion int64
	owner        string
}

// VerifierDecoderOwner is DecoderOwner for the verifier's decoder.
func VerifierDecoderOwner(owner string) VerifierOption {
	return func(o *verifierOptions) { o.owner = owner }
}

// MaxExpansion refuses a compressed NAR (with an error wrapping
// ErrTooLarge) as soon as it has decompressed to more than ratio times the
// compressed bytes received so far, plus ExpansionFloor: a decompression
// bomb (a few hundred KiB of zstd or xz expanding to GiBs) is stopped
// after a bounded amount of CPU instead of being decompressed to the size
// limit. ratio ≤ 0 means no bound; it has no effect on uncompressed NARs.
func MaxExpansion(ratio int64) VerifierOption {
	return func(o *verifierOptions) { o.maxExpansion = ratio }
}
