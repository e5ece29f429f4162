package serve

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"slices"
	"strings"

	"github.com/peterbourgon/ff/v3"

	"github.com/flakegate/flakegate/internal/version"
)

// EnvPrefix is the prefix of the environment variable of every flag:
// -data-dir is also FLAKEGATE_DATA_DIR.
const EnvPrefix = "FLAKEGATE"

// ParseFlags is how every flakegate service command reads its settings:
// it defines -config on fs, then parses args, the FLAKEGATE_<FLAG>
// environment variables and the -config file (lines "flag value"), in
// that order of precedence (peterbourgon/ff). Positional arguments are
// refused. done reports that the command must exit now with code: 0 after
// -h or -version (the version written to stdout), 2 for bad usage (the
// reason written to stderr as "<name>: …").
func ParseFlags(fs *flag.FlagSet, args []string, stdout, stderr io.Writer) (code int, done bool) {
	fs.String("config", "", "config `file`: one \"flag value\" per line")
	showVersion := fs.Bool("version", false, "print the version and exit")
	err := ff.Parse(fs, args,
		ff.WithEnvVarPrefix(EnvPrefix),
		ff.WithConfigFileFlag("config"),
		ff.WithConfigFileParser(ff.PlainParser),
	)
	switch {
	case errors.Is(err, flag.ErrHelp):
		return 0, true
	case err != nil:
		fmt.Fprintf(stderr, "%s: %v\n", fs.Name(), err)
		return 2, true
	case *showVersion:
		fmt.Fprintln(stdout, version.String())
		return 0, true
	case fs.NArg() > 0:
		fmt.Fprintf(stderr, "%s: unexpected arguments %q\n", fs.Name(), fs.Args())
		return 2, true
	}
	reportUnknownEnv(fs, os.Environ(), stderr)
	return 0, false
}

// UnknownEnv lists the FLAKEGATE_* variables of environ that name no flag
// of fs (a misspelt setting), each with the flag it probably meant ("" if
// none is close), sorted by name.
func UnknownEnv(fs *flag.FlagSet, environ []string) []UnknownVar {
	var out []UnknownVar
	for _, kv := range environ {
		name, _, _ := strings.Cut(kv, "=")
		rest, ok := strings.CutPrefix(name, EnvPrefix+"_")
		if !ok {
			continue
		}
		flagName := strings.ToLower(strings.ReplaceAll(rest, "_", "-"))
		if fs.Lookup(flagName) != nil {
			continue
		}
		out = append(out, UnknownVar{Name: name, Suggest: closestFlag(fs, flagName)})
	}
	slices.SortFunc(out, func(a, b UnknownVar) int { return strings.Compare(a.Name, b.Name) })
	return out
}

// UnknownVar is a FLAKEGATE_* variable that names no flag.
type UnknownVar struct {
	Name    string
	Suggest string // the environment variable of the closest flag, or ""
}

// reportUnknownEnv logs (as the processes log: a JSON line on stderr) each
// FLAKEGATE_* variable that names no flag: it is ignored, and a misspelt
// setting must not be silently so. Not an error: the same environment may
// hold other tools' FLAKEGATE_* variables (flakegate login's, the scripts').
func reportUnknownEnv(fs *flag.FlagSet, environ []string, stderr io.Writer) {
	unknown := UnknownEnv(fs, environ)
	if len(unknown) == 0 {
		return
	}
	log := slog.New(slog.NewJSONHandler(stderr, nil))
	for _, u := range unknown {
		attrs := []any{"variable", u.Name}
		if u.Suggest != "" {
			attrs = append(attrs, "did_you_mean", u.Suggest)
		}
		log.Warn(fs.Name()+": environment variable names no flag: ignored", attrs...)
	}
}

// closestFlag is the environment name of the flag of fs closest to name:
// the same letters without separators, or at most two edits away.
func closestFlag(fs *flag.FlagSet, name string) string {
	squash := func(s string) string { return strings.ReplaceAll(s, "-", "") }
	best, bestD := "", 3
	fs.VisitAll(func(f *flag.Flag) {
		d := editDistance(squash(name), squash(f.Name))
		if d < bestD {
			best, bestD = f.Name, d
		}
	})
	if best == "" {
		return ""
	}
	return EnvPrefix + "_" + strings.ToUpper(strings.ReplaceAll(best, "-", "_"))
}

// editDistance is the Levenshtein distance of a and b (short flag names:
// a library would be more code than this).
func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur := make([]int, len(b)+1)
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev = cur
	}
	return prev[len(b)]
}
