// Package bytesize is flakegate's one byte-size syntax, for flags and URL
// parameters alike: a decimal integer and an optional unit.
//
//	unit             bytes
//	(none), B        1
//	K, KB            1000         KiB   1024
//	M, MB            1000²        MiB   1024²
//	G, GB            1000³        GiB   1024³
//	T, TB            1000⁴        TiB   1024⁴
//
// So "16M" and "16MB" are 16,000,000 bytes and "16MiB" is 16,777,216: the
// letter says the power, an "i" says 1024 instead of 1000 (SI and IEC, as
// in the units of disks and of `ls -h --si` versus `ls -h`).
//
// Case: units are case-insensitive ("16mb" = "16MB" = "16Mb", "16mib" =
// "16MiB"); there are no bit units, so "b" is bytes too.
//
// Also: spaces around the input and between number and unit are allowed
// ("16 MiB"); no sign, fraction, exponent, digit separator or space inside
// the number; the value must fit an int64 (up to 8 EiB - 1). Zero is a
// valid size: callers that need a positive one check it. Errors name the
// input.
package bytesize

import (
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
)

// Units in bytes (untyped constants: usable as int, int64 and uint64).
const (
	KB = 1000
	MB = 1000 * KB
	GB = 1000 * MB
	TB = 1000 * GB

	KiB = 1 << 10
	MiB = 1 << 20
	GiB = 1 << 30
	TiB = 1 << 40
)

// units maps a lower-case unit to its size.
var units = map[string]int64{
	"": 1, "b": 1,
	"k": KB, "kb": KB, "kib": KiB,
	"m": MB, "mb": MB, "mib": MiB,
	"g": GB, "gb": GB, "gib": GiB,
	"t": TB, "tb": TB, "tib": TiB,
}

const unitList = "B, K/KB, KiB, M/MB, MiB, G/GB, GiB, T/TB, TiB"

// Parse parses a byte size (see the package doc).
func Parse(s string) (int64, error) {
	bad := func(why string) (int64, error) {
		return 0, fmt.Errorf("invalid size %q: %s", s, why)
	}
	t := strings.TrimSpace(s)
	i := 0
	for i < len(t) && t[i] >= '0' && t[i] <= '9' {
		i++
	}
	num, unit := t[:i], strings.TrimSpace(t[i:])
	switch {
	case t == "":
		return bad("empty")
	case t[0] == '-':
		return bad("negative")
	case num == "":
		return bad("want a whole number of bytes, with an optional unit (" + unitList + ")")
	case unit != "" && (unit[0] == '.' || unit[0] == ',' || unit[0] == '_' || unit[0] >= '0' && unit[0] <= '9'):
		return bad("want a whole number (no fraction, separator or space in it)")
	}
	mult, ok := units[strings.ToLower(unit)]
	if !ok {
		return bad(fmt.Sprintf("unknown unit %q (want %s)", unit, unitList))
	}
	n, err := strconv.ParseUint(num, 10, 64)
	if errors.Is(err, strconv.ErrRange) || err == nil && n > uint64(math.MaxInt64/mult) {
		return bad(fmt.Sprintf("more than %d bytes", int64(math.MaxInt64)))
	}
	if err != nil {
		return bad(err.Error())
	}
	return int64(n) * mult, nil
}

// Format writes n with the largest unit that divides it exactly, binary
// units first at each power ("16MiB", "16MB", "1000KiB", "1500"), so Parse
// gives n back.
func Format(n int64) string {
	if n != 0 {
		for _, u := range []struct {
			name string
			size int64
		}{{"TiB", TiB}, {"TB", TB}, {"GiB", GiB}, {"GB", GB}, {"MiB", MiB}, {"MB", MB}, {"KiB", KiB}, {"KB", KB}} {
			if n%u.size == 0 {
				return strconv.FormatInt(n/u.size, 10) + u.name
			}
		}
	}
	return strconv.FormatInt(n, 10)
}

// Size is a byte size that is a flag.Value:
//
//	maxNar := bytesize.Size(64 * bytesize.GiB)
//	fs.Var(&maxNar, "max-nar-size", "largest NAR accepted (bytes, or with a unit: 16M = 16,000,000, 16MiB = 16,777,216)")
type Size int64

// Set parses v with Parse.
func (s *Size) Set(v string) error {
	n, err := Parse(v)
	if err != nil {
		return err
	}
	*s = Size(n)
	return nil
}

// String formats the size with Format.
func (s Size) String() string { return Format(int64(s)) }

// Int64 is the size in bytes.
func (s Size) Int64() int64 { return int64(s) }
