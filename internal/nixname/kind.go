package nixname

import "slices"

// Kind is the kind of a binary-cache object that flakes own: the one
// spelling of each, shared by the routes (internal/route: what a request is
// about), the index (internal/index: whose owners it lists) and the owners
// endpoint between authz and the blob server (/owners/{kind}/{key}).
type Kind string

const (
	// KindNarInfo is a store path (its narinfo), by store hash: owned by
	// the flakes holding a record of it.
	KindNarInfo Kind = "narinfo"
	// KindNar is a NAR file, by file name: owned by the flakes that
	// pushed it.
	KindNar Kind = "nar"
	// KindLog is a build log, by derivation file name: owned by the
	// flakes holding one.
	KindLog Kind = "log"
	// The small files Nix writes next to a path, each owned by the flakes
	// holding it and owning what it describes:
	//
	// KindListing is a NAR listing, <storehash>.ls (Nix's
	// write-nar-listing): JSON naming the files of a store path's NAR; it
	// needs the flake's narinfo of that path.
	KindListing Kind = "listing"
	// KindDebugInfo is a debug info link, debuginfo/<build-id>.debug
	// (Nix's index-debug-info): JSON naming the NAR and member holding the
	// DWARF file of an ELF build id; it needs the NAR file it names.
	KindDebugInfo Kind = "debuginfo"
	// KindRealisation is a content-addressed derivation output's
	// realisation as Nix ≤ 2.33 stores it,
	// realisations/sha256:<hex>!<output>.doi; it needs the flake's narinfo
	// of the output path.
	KindRealisation Kind = "realisation"
	// KindBuildTrace is the same as Nix ≥ 2.34 stores it,
	// build-trace-v2/<drv file name>/<output>.doi.
	KindBuildTrace Kind = "build-trace"
)

// fileKinds are the small files' kinds, in the order FileKinds gives them.
var fileKinds = [...]Kind{KindListing, KindDebugInfo, KindRealisation, KindBuildTrace}

// FileKinds returns the kinds of the small files (listing, debug info link,
// realisation, build trace entry): a new slice each call.
func FileKinds() []Kind { return slices.Clone(fileKinds[:]) }

// IsFile reports whether k is one of the small files (FileKinds).
func (k Kind) IsFile() bool { return slices.Contains(fileKinds[:], k) }

// KeepsFirst reports whether a flake's first file of kind k is kept (a
// realisation or build trace entry: what an output is, first come first
// served, as narinfos) rather than replaced by a later upload (a listing
// or debug info link, which Nix rewrites as it likes).
func (k Kind) KeepsFirst() bool { return k == KindRealisation || k == KindBuildTrace }
