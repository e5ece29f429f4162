// Command benchdata generates the inputs of bench/run.sh: an RS256 token
// issuer with its JWKS and tokens, ghz request files, NAR files, a SQLite
// index with many paths, and the protobuf descriptor set ghz needs for the
// ext_authz API. Every subcommand writes into a directory it is given and
// prints what it made; nothing here talks to the network.
//
//	benchdata authz    -dir D -iss ISS -aud AUD -repo org/name -tokens N -requests M
//	benchdata nar      -size BYTES -out FILE           # prints "<hash>.nar <size>"
//	benchdata index    -data-dir D -flake org/name -paths N [-nginx-root R -nginx-paths K]
//	benchdata hashes   -n N                          # N random store hashes, one a line
//	benchdata protoset -out FILE
//	benchdata check    -addr HOST:PORT -method GET -path P -authorization A
//	benchdata nullcache -listen HOST:PORT            # a cache that keeps nothing
//	benchdata nullauthz -listen unix:/PATH|HOST:PORT # an ext_authz that allows all
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprintln(stderr, "usage: benchdata authz|nar|index|hashes|protoset|check|nullcache|nullauthz|gc [flags]")
		return 2
	}
	var err error
	switch args[0] {
	case "authz":
		err = runAuthz(args[1:], stdout)
	case "nar":
		err = runNar(args[1:], stdout)
	case "index":
		err = runIndex(args[1:], stdout)
	case "hashes":
		err = runHashes(args[1:], stdout)
	case "protoset":
		err = runProtoset(args[1:], stdout)
	case "check":
		err = runCheck(args[1:], stdout)
	case "nullcache":
		err = runNullCache(args[1:], stdout)
	case "nullauthz":
		err = runNullAuthz(args[1:], stdout)
	case "gc":
		err = runGC(args[1:], stdout)
	default:
		err = fmt.Errorf("unknown command %q (want authz, nar, index, hashes, protoset, check, nullcache, nullauthz or gc)", args[0])
	}
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		fmt.Fprintln(stderr, "benchdata:", err)
		return 1
	}
	return 0
}
