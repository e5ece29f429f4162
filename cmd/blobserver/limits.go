package main

import (
	"flag"
	"fmt"
	"time"

	"github.com/flakegate/flakegate/internal/blobserverapp"
	"github.com/flakegate/flakegate/internal/cacheserver"
	"github.com/flakegate/flakegate/internal/nixcache"
)

// uploadLimitFlags are the upload limit flags; 0 disables each.
type uploadLimitFlags struct {
	minRate     rate
	maxDuration time.Duration
	expansion   int64
	perSubject  int
}

func (l *uploadLimitFlags) register(fs *flag.FlagSet) {
	l.minRate = cacheserver.DefaultUploadMinRate
	fs.Var(&l.minRate, "upload-min-rate", fmt.Sprintf("refuse (408) an upload slower than this many bytes/second, averaged over the last %v from %v into the upload on (suffixes as -max-nar-size; 0 disables)", cacheserver.DefaultUploadRateWindow, cacheserver.DefaultUploadRateWindow))
	fs.DurationVar(&l.maxDuration, "upload-max-duration", cacheserver.DefaultUploadMaxDuration, "refuse (408) an upload body that takes longer than this (0 disables)")
	fs.Int64Var(&l.expansion, "max-expansion", nixcache.DefaultMaxExpansion, "refuse (413) a compressed NAR that decompresses to more than this many times its size, plus 1 MiB (0 disables)")
	fs.IntVar(&l.perSubject, "max-uploads-per-subject", cacheserver.DefaultMaxUploadsPerSubject, "concurrent uploads allowed to one subject (the gate's x-flakegate-subject); more get 429 (0 disables)")
}

// apply checks the flags and sets cfg (where 0 means the default and a
// negative value disables a limit).
func (l *uploadLimitFlags) apply(cfg *blobserverapp.Config) error {
	switch {
	case l.maxDuration < 0:
		return fmt.Errorf("-upload-max-duration %v: want a duration, or 0 to disable", l.maxDuration)
	case l.expansion < 0:
		return fmt.Errorf("-max-expansion %d: want a ratio, or 0 to disable", l.expansion)
	case l.perSubject < 0:
		return fmt.Errorf("-max-uploads-per-subject %d: want a number, or 0 to disable", l.perSubject)
	}
	off := func(v int64) int64 {
		if v == 0 {
			return -1
		}
		return v
	}
	cfg.UploadMinRate = off(int64(l.minRate))
	cfg.UploadMaxDuration = time.Duration(off(int64(l.maxDuration)))
	cfg.MaxExpansion = off(l.expansion)
	cfg.MaxUploadsPerSubject = int(off(int64(l.perSubject)))
	return nil
}

// rate is a bytes/second flag: a size (suffixes as size) or 0.
type rate int64

func (r *rate) String() string { return (*size)(r).String() }

func (r *rate) Set(v string) error {
	if v == "0" {
		*r = 0
		return nil
	}
	return (*size)(r).Set(v)
}
