package serve

import (
	"errors"
	"flag"
	"fmt"
	"io"

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
	return 0, false
}
