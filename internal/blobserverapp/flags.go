package blobserverapp

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"strconv"
	"strings"
)

// SizeFlag is a flag.Value for a byte count in *p: a positive number with
// an optional decimal (K, M, G, T) or binary (KiB, MiB, GiB, TiB) suffix,
// or B.
func SizeFlag(p *int64) flag.Value { return (*size)(p) }

// RateFlag is a flag.Value for bytes/second in *p: a size as SizeFlag, or 0
// (off).
func RateFlag(p *int64) flag.Value { return (*rate)(p) }

// ListFlag is a flag.Value for a comma-separated list in *p (blank items
// dropped): -signing-key-file new.sec,old.sec.
func ListFlag(p *[]string) flag.Value { return (*list)(p) }

// size is a byte count flag with optional decimal or binary suffix.
type size int64

func (s *size) String() string {
	if s == nil {
		return "0"
	}
	return strconv.FormatInt(int64(*s), 10)
}

func (s *size) Set(v string) error {
	units := []struct {
		suffix string
		mult   int64
	}{
		{"KiB", 1 << 10}, {"MiB", 1 << 20}, {"GiB", 1 << 30}, {"TiB", 1 << 40},
		{"K", 1e3}, {"M", 1e6}, {"G", 1e9}, {"T", 1e12}, {"B", 1},
	}
	mult := int64(1)
	num := strings.TrimSpace(v)
	for _, u := range units {
		if n, ok := strings.CutSuffix(num, u.suffix); ok {
			num, mult = strings.TrimSpace(n), u.mult
			break
		}
	}
	n, err := strconv.ParseInt(num, 10, 64)
	if err != nil || n <= 0 || n > (1<<62)/mult {
		return fmt.Errorf("invalid size %q", v)
	}
	*s = size(n * mult)
	return nil
}

// rate is a bytes/second flag: a size or 0.
type rate int64

func (r *rate) String() string { return (*size)(r).String() }

func (r *rate) Set(v string) error {
	if v == "0" {
		*r = 0
		return nil
	}
	return (*size)(r).Set(v)
}

type list []string

func (l *list) String() string {
	if l == nil {
		return ""
	}
	return strings.Join(*l, ",")
}

func (l *list) Set(v string) error {
	*l = nil
	for _, f := range strings.Split(v, ",") {
		if f = strings.TrimSpace(f); f != "" {
			*l = append(*l, f)
		}
	}
	return nil
}

// PrintPublicKeys is `blobserver -print-public-key`: it writes the public
// keys of the configured signing keys to w, one a line, creating the data
// directory's key when no key file is configured.
func PrintPublicKeys(cfg Config, w io.Writer) error {
	if len(cfg.SigningKeyFiles) == 0 && cfg.DataDir == "" {
		return errors.New("-print-public-key needs -data-dir or -signing-key-file")
	}
	keys, err := LoadKeys(cfg, slog.New(slog.DiscardHandler))
	if err != nil {
		return err
	}
	for _, k := range keys.PublicKeys() {
		fmt.Fprintln(w, k)
	}
	return nil
}
