package gc

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"sigs.k8s.io/yaml"

	"github.com/flakegate/flakegate/internal/bytesize"
	"github.com/flakegate/flakegate/internal/nixname"
)

// Retention is the retention file, as admins write it (YAML):
//
//	default:             # every flake without an entry below
//	  keep_for: 30d      # keep a path this long after its last push or read
//	  max_size: 0        # optional: the flake's NARs above this go, least recently used first
//	max_size: 2TB        # optional: the whole store (LRU across flakes)
//	grace: 1h            # optional: nothing used within this long before a collection starts goes
//	flakes:
//	  omnicorp/app:
//	    keep_for: 90d
//	    max_size: 50GB
//
// Durations are Go durations (12h, 90m) or whole days (30d); sizes are
// internal/bytesize's (50GB = 50×10⁹ bytes, 50GiB = 50×2³⁰). A flake entry
// inherits what it leaves out from default. Unknown keys are errors.
type Retention struct {
	Default Policy
	MaxSize int64 // whole store; 0: no limit
	Grace   time.Duration
	Flakes  map[nixname.Flake]Policy
}

// Policy is one flake's retention.
type Policy struct {
	KeepFor time.Duration // 0: keep forever (nothing expires by age)
	MaxSize int64         // 0: no limit
}

// DefaultGrace is the grace period when the file names none: longer than
// the clock skew between servers and than a push takes from a NAR to its
// narinfo.
const DefaultGrace = time.Hour

// DefaultRetention keeps everything (no file): nothing expires, no limit.
func DefaultRetention() Retention { return Retention{Grace: DefaultGrace} }

// For returns the policy of a flake.
func (r Retention) For(f nixname.Flake) Policy {
	if p, ok := r.Flakes[f]; ok {
		return p
	}
	return r.Default
}

// text is a YAML scalar read as text: "30d", 50GB, or a bare number (0).
type text string

func (t *text) UnmarshalJSON(b []byte) error {
	var v any
	if err := json.Unmarshal(b, &v); err != nil {
		return err
	}
	switch v := v.(type) {
	case string:
		*t = text(v)
	case float64:
		*t = text(strconv.FormatFloat(v, 'f', -1, 64))
	default:
		return fmt.Errorf("want a string or a number, got %s", b)
	}
	return nil
}

type filePolicy struct {
	KeepFor *text `json:"keep_for"`
	MaxSize *text `json:"max_size"`
}

type file struct {
	Default filePolicy            `json:"default"`
	MaxSize *text                 `json:"max_size"`
	Grace   *text                 `json:"grace"`
	Flakes  map[string]filePolicy `json:"flakes"`
}

// LoadRetention reads and checks a retention file.
func LoadRetention(path string) (Retention, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return Retention{}, fmt.Errorf("retention file: %w", err)
	}
	r, err := ParseRetention(b)
	if err != nil {
		return Retention{}, fmt.Errorf("retention file %s: %w", path, err)
	}
	return r, nil
}

// ParseRetention parses a retention file's contents, reporting every error.
func ParseRetention(b []byte) (Retention, error) {
	var f file
	if err := yaml.UnmarshalStrict(b, &f); err != nil {
		return Retention{}, err
	}
	var errs []error
	r := DefaultRetention()
	r.Default = policy("default", f.Default, Policy{}, &errs)
	if f.MaxSize != nil {
		r.MaxSize = size("max_size", string(*f.MaxSize), &errs)
	}
	if f.Grace != nil {
		r.Grace = duration("grace", string(*f.Grace), &errs)
	}
	names := make([]string, 0, len(f.Flakes))
	for name := range f.Flakes {
		names = append(names, name)
	}
	slices.Sort(names)
	for _, name := range names {
		fl, err := nixname.ParseFlake(name)
		if err != nil {
			errs = append(errs, fmt.Errorf("flakes: %q: %w", name, err))
			continue
		}
		if fl.String() != name {
			errs = append(errs, fmt.Errorf("flakes: %q: write it as %q", name, fl.String()))
			continue
		}
		if r.Flakes == nil {
			r.Flakes = map[nixname.Flake]Policy{}
		}
		r.Flakes[fl] = policy("flakes: "+name, f.Flakes[name], r.Default, &errs)
	}
	if err := errors.Join(errs...); err != nil {
		return Retention{}, err
	}
	return r, nil
}

func policy(where string, fp filePolicy, base Policy, errs *[]error) Policy {
	p := base
	if fp.KeepFor != nil {
		p.KeepFor = duration(where+": keep_for", string(*fp.KeepFor), errs)
	}
	if fp.MaxSize != nil {
		p.MaxSize = size(where+": max_size", string(*fp.MaxSize), errs)
	}
	return p
}

func duration(where, s string, errs *[]error) time.Duration {
	d, err := ParseDuration(s)
	if err != nil {
		*errs = append(*errs, fmt.Errorf("%s: %w", where, err))
	}
	return d
}

func size(where, s string, errs *[]error) int64 {
	n, err := bytesize.Parse(s)
	if err == nil && n < 0 {
		err = errors.New("negative")
	}
	if err != nil {
		*errs = append(*errs, fmt.Errorf("%s: %q: %w", where, s, err))
	}
	return n
}

// ParseDuration reads a Go duration or a whole number of days ("30d").
// Negative durations are refused.
func ParseDuration(s string) (time.Duration, error) {
	s = strings.TrimSpace(s)
	var d time.Duration
	if days, ok := strings.CutSuffix(s, "d"); ok {
		n, err := strconv.ParseInt(days, 10, 64)
		if err != nil || n < 0 || n > 100*365 {
			return 0, fmt.Errorf("%q: want whole days (30d) or a Go duration (12h)", s)
		}
		d = time.Duration(n) * 24 * time.Hour
	} else {
		var err error
		if d, err = time.ParseDuration(s); err != nil {
			return 0, fmt.Errorf("%q: want whole days (30d) or a Go duration (12h)", s)
		}
	}
	if d < 0 {
		return 0, fmt.Errorf("%q: negative", s)
	}
	return d, nil
}
