package index

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/flakegate/flakegate/internal/nixname"
)

// What follows is shared by the implementations (sqlite, postgres), so that
// both accept the same flakes, query the same owners and compute the same
// missing set.

// CheckFlake accepts a flake an implementation may record as an owner: not
// zero, and in nixname.ParseFlake's canonical form.
func CheckFlake(f nixname.Flake) error {
	if f.IsZero() {
		return errors.New("no flake given")
	}
	if g, err := nixname.ParseFlake(f.String()); err != nil || g != f {
		return fmt.Errorf("invalid flake %q", f.String())
	}
	return nil
}

// CheckNar accepts the arguments of a PutNar call: a valid flake and a
// named file.
func CheckNar(flake nixname.Flake, n Nar) error {
	if err := CheckFlake(flake); err != nil {
		return fmt.Errorf("put nar %s: %w", n.File, err)
	}
	if n.File == "" {
		return errors.New("put nar: empty file name")
	}
	return nil
}

// CheckPath accepts the arguments of a PutPath call: a valid flake and a
// store hash.
func CheckPath(flake nixname.Flake, p Path) error {
	if err := CheckFlake(flake); err != nil {
		return fmt.Errorf("put path %s: %w", p.Hash, err)
	}
	if !nixname.IsStoreHash(p.Hash) {
		return fmt.Errorf("put path: %q is not a store hash", p.Hash)
	}
	return nil
}

// CheckGetPath accepts the arguments of a GetPath call: a flake (the
// union view asks PathsOf) and nothing else.
func CheckGetPath(flake nixname.Flake, hash string) error {
	if flake.IsZero() {
		return fmt.Errorf("get path %s: no flake given (each flake has its own record; use PathsOf)", hash)
	}
	return nil
}

// FlakeNames returns the flakes as "org/name" strings, for a query
// parameter.
func FlakeNames(flakes []nixname.Flake) []string {
	out := make([]string, len(flakes))
	for i, f := range flakes {
		out[i] = f.String()
	}
	return out
}

// CreatedAt is the creation time to record for a Nar or Path whose
// CreatedAt is t: t itself, or now when t is zero.
func CreatedAt(t time.Time) time.Time {
	if t.IsZero() {
		return time.Now()
	}
	return t
}

// OwnersQuery is the query listing the owners of an object of kind, sorted,
// with placeholder ("?", "$1") standing for the object's key: the store hash
// for nixname.KindNarInfo, the NAR file name for nixname.KindNar. Other kinds have no
// owners.
func OwnersQuery(kind Kind, placeholder string) (string, error) {
	switch {
	case kind == nixname.KindNarInfo:
		return `SELECT flake FROM flake_paths WHERE hash = ` + placeholder + ` ORDER BY flake`, nil
	case kind == nixname.KindNar:
		return `SELECT flake FROM nar_owners WHERE file = ` + placeholder + ` ORDER BY flake`, nil
	case kind == nixname.KindLog:
		return `SELECT flake FROM logs WHERE drv = ` + placeholder + ` AND NOT deleting ORDER BY flake`, nil
	case kind.IsFile():
		return `SELECT f.flake FROM flake_files f WHERE f.kind = '` + string(kind) + `' AND f.key = ` + placeholder +
			` AND ` + FileServable + ` ORDER BY f.flake`, nil
	default:
		return "", fmt.Errorf("owners: kind %q has no owners", kind)
	}
}

// FileServable is the SQL condition, on a row f of flake_files, that f's
// flake owns what the file needs (File.Needs): the NAR file for a debug
// info link, the store path's narinfo for the other kinds. GetFile and
// Owners of both implementations use it, so a file is served exactly when
// it is listed as owned.
const FileServable = `(CASE WHEN f.kind = '` + string(nixname.KindDebugInfo) + `'
	THEN EXISTS (SELECT 1 FROM nar_owners o WHERE o.file = f.needs AND o.flake = f.flake)
	ELSE EXISTS (SELECT 1 FROM flake_paths p WHERE p.hash = f.needs AND p.flake = f.flake) END)`

// ScanFilesQuery is ScanFiles' query in both backends: a page of a flake's
// files uploaded before a time, after a position in (needs, kind, key)
// order, each with whether the flake serves it (FileServable) and, for a
// debug info link, when a push last touched the flake's ownership of the
// NAR file it needs (NULL when not owned). Parameters, numbered after
// prefix ("?" for SQLite, "$" for PostgreSQL): 1 flake, 2 before, 3–5 the
// previous page's last needs, kind and key ("" for the first page), 6 the
// page size.
func ScanFilesQuery(prefix string) string {
	p := func(i int) string { return prefix + strconv.Itoa(i) }
	return `SELECT f.kind, f.key, f.needs, f.created_at, ` + FileServable + `, o.touched_at
		FROM flake_files f LEFT JOIN nar_owners o ON f.kind = '` + string(nixname.KindDebugInfo) + `' AND o.file = f.needs AND o.flake = f.flake
		WHERE f.flake = ` + p(1) + ` AND f.created_at < ` + p(2) + ` AND (f.needs, f.kind, f.key) > (` + p(3) + `, ` + p(4) + `, ` + p(5) + `)
		ORDER BY f.needs, f.kind, f.key LIMIT ` + p(6)
}

// ScanFilesPaged is ScanFiles in both backends: it reads pages with page
// (the rows after the given one, in ScanFilesQuery's order; the zero
// FileUse for the first page) until one comes back shorter than ScanPage,
// and calls fn for each row.
func ScanFilesPaged(ctx context.Context, flake nixname.Flake, page func(ctx context.Context, after FileUse) ([]FileUse, error), fn func(FileUse) error) error {
	var after FileUse
	for {
		rows, err := page(ctx, after)
		if err != nil {
			return fmt.Errorf("scan files of %s: %w", flake, err)
		}
		for _, u := range rows {
			if err := fn(u); err != nil {
				return err
			}
		}
		if len(rows) < ScanPage {
			return nil
		}
		after = rows[len(rows)-1]
	}
}

// FileConflict is the ON CONFLICT action of both backends' insert of a
// flake_files row (same SQL in SQLite and PostgreSQL): a later upload
// replaces the flake's file, except for kinds that keep the first
// (Kind.KeepsFirst).
func FileConflict(kind Kind) string {
	if kind.KeepsFirst() {
		return `DO NOTHING`
	}
	return `DO UPDATE SET needs = excluded.needs, encoding = excluded.encoding, data = excluded.data,
		digest = excluded.digest, plain_size = excluded.plain_size, digest_of = excluded.digest_of, created_at = excluded.created_at`
}

// FileDigestCols selects a file's digest and decoded size (f: the
// flake_files row) as index.File has them: "" and -1 unless they describe
// the upload in the row (digest_of = created_at). A replica of an older
// version replacing a file keeps the replaced upload's digest and size,
// and they must not be served for the new one (a stale size cut the
// listing short).
const FileDigestCols = `CASE WHEN f.digest_of = f.created_at THEN f.digest ELSE '' END,
	CASE WHEN f.digest_of = f.created_at THEN f.plain_size ELSE -1 END`

// CheckFile accepts the arguments of a PutFile call: a valid flake, a File
// kind, a key and what the file needs.
func CheckFile(flake nixname.Flake, f File) error {
	if err := CheckFlake(flake); err != nil {
		return fmt.Errorf("put %s %s: %w", f.Kind, f.Key, err)
	}
	if !f.Kind.IsFile() {
		return fmt.Errorf("put file: %q is not a file kind", f.Kind)
	}
	if f.Key == "" || f.Needs == "" {
		return fmt.Errorf("put %s: empty key or needs", f.Kind)
	}
	return nil
}

// CheckGetFile accepts the arguments of a GetFile call.
func CheckGetFile(flake nixname.Flake, kind Kind) error {
	if flake.IsZero() {
		return fmt.Errorf("get %s: no flake given (each flake has its own)", kind)
	}
	if !kind.IsFile() {
		return fmt.Errorf("get file: %q is not a file kind", kind)
	}
	return nil
}

// CheckLog accepts the arguments of a PutLog call.
func CheckLog(flake nixname.Flake, l Log) error {
	if err := CheckFlake(flake); err != nil {
		return fmt.Errorf("put log %s: %w", l.Drv, err)
	}
	if l.Drv == "" || l.BlobKey == "" {
		return errors.New("put log: empty derivation or blob key")
	}
	return nil
}

// ParseOwners turns the flake names an owners query returned into flakes,
// keeping their order. The result is never nil.
func ParseOwners(names []string) ([]nixname.Flake, error) {
	out := make([]nixname.Flake, 0, len(names))
	for _, s := range names {
		f, err := nixname.ParseFlake(s)
		if err != nil {
			return nil, fmt.Errorf("stored flake: %w", err)
		}
		out = append(out, f)
	}
	return out, nil
}

// Missing returns those of hashes not in owned, in the order given, each
// once. owned is not modified.
func Missing(hashes []string, owned map[string]bool) []string {
	var missing []string
	seen := make(map[string]bool, len(hashes))
	for _, h := range hashes {
		if !owned[h] && !seen[h] {
			missing = append(missing, h)
			seen[h] = true
		}
	}
	return missing
}

// ErrClosureTooLarge is returned (wrapped) by Closure when the closure holds
// more paths than the limit.
var ErrClosureTooLarge = errors.New("closure too large")

// Closure returns flake's records of the closure of roots (store hashes):
// the roots and, recursively, their references, each through the flake's
// own record. A root or reference the flake holds no record of is left out
// (a flake holds every reference of a path it holds, since a narinfo upload
// is refused while one is missing). More than max paths is
// ErrClosureTooLarge (max ≤ 0: no limit). It works on any Index with one
// query per level of the closure on an index that implements PathsGetter
// (sqlite, postgres), else one GetPath per path; authz caches the answer
// per (flake, roots), so it runs once per token and cache lifetime, never
// per request.
func Closure(ctx context.Context, idx Index, flake nixname.Flake, roots []string, max int) ([]Path, error) {
	if err := CheckFlake(flake); err != nil {
		return nil, fmt.Errorf("closure: %w", err)
	}
	seen := make(map[string]bool, len(roots))
	level := make([]string, 0, len(roots))
	for _, r := range roots {
		if !nixname.IsStoreHash(r) {
			return nil, fmt.Errorf("closure: %q is not a store hash", r)
		}
		if !seen[r] {
			seen[r] = true
			level = append(level, r)
		}
	}
	var out []Path
	for len(level) > 0 {
		got, err := getPaths(ctx, idx, flake, level)
		if err != nil {
			return nil, fmt.Errorf("closure in %s: %w", flake, err)
		}
		out = append(out, got...)
		if max > 0 && len(out) > max {
			return nil, fmt.Errorf("closure in %s: %w: more than %d paths", flake, ErrClosureTooLarge, max)
		}
		level = level[:0:0]
		for _, p := range got {
			for _, ref := range p.References {
				if len(ref) < nixname.StoreHashLen {
					continue
				}
				rh := ref[:nixname.StoreHashLen]
				if nixname.IsStoreHash(rh) && !seen[rh] {
					seen[rh] = true
					level = append(level, rh)
				}
			}
		}
	}
	slices.SortFunc(out, func(a, b Path) int { return strings.Compare(a.Hash, b.Hash) })
	return out, nil
}

// getPaths is PathsGetter.GetPaths, or one GetPath per hash for an index
// without it.
func getPaths(ctx context.Context, idx Index, flake nixname.Flake, hashes []string) ([]Path, error) {
	if pg, ok := idx.(PathsGetter); ok {
		return pg.GetPaths(ctx, flake, hashes)
	}
	out := make([]Path, 0, len(hashes))
	for _, h := range hashes {
		p, err := idx.GetPath(ctx, flake, h)
		if errors.Is(err, ErrNotFound) {
			continue
		}
		if err != nil {
			return nil, err
		}
		out = append(out, p)
	}
	return out, nil
}
