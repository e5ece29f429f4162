package blobserverapp

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"strings"

	"github.com/flakegate/flakegate/internal/bytesize"
)

// SizeFlag is a flag.Value for a positive byte count in *p, in the one
// byte-size syntax (internal/bytesize: K = 1000, KiB = 1024, …).
func SizeFlag(p *int64) flag.Value { return (*size)(p) }

// RateFlag is a flag.Value for bytes/second in *p: a size as SizeFlag, or 0
// (off).
func RateFlag(p *int64) flag.Value { return (*rate)(p) }

// ListFlag is a flag.Value for a comma-separated list in *p (blank items
// dropped): -signing-key-file new.sec,old.sec.
func ListFlag(p *[]string) flag.Value { return (*list)(p) }

// size is a positive byte count.
type size int64

func (s *size) String() string {
	if s == nil {
		return "0"
	}
	return bytesize.Format(int64(*s))
}

func (s *size) Set(v string) error {
	n, err := bytesize.Parse(v)
	if err != nil {
		return err
	}
	if n <= 0 {
		return fmt.Errorf("size %q: must be positive", v)
	}
	*s = size(n)
	return nil
}

// rate is a bytes/second flag: a size or 0 (off).
type rate int64

func (r *rate) String() string { return (*size)(r).String() }

func (r *rate) Set(v string) error {
	n, err := bytesize.Parse(v)
	if err != nil {
		return err
	}
	*r = rate(n)
	return nil
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
