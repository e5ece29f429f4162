// Package version says which flakegate a binary is: every command's
// -version flag and `flakegate version` print String().
//
// The version is, in order: what the build set with
// -ldflags "-X github.com/flakegate/flakegate/internal/version.Version=v1.2.3"
// (release builds); the module version Go recorded (`go install
// github.com/flakegate/flakegate/cmd/flakegate@v1.2.3`); else "devel".
// The VCS revision Go recorded (a build from a checkout) is appended, with
// "+dirty" for uncommitted changes.
package version

import (
	"runtime"
	"runtime/debug"
)

// Version is set at link time by release builds.
var Version = ""

// String is the one-line version of the running binary, e.g.
// "flakegate v1.2.3 (go1.26.8, linux/amd64)" or
// "flakegate devel rev 0123abcd4567+dirty (go1.26.8, linux/amd64)".
func String() string {
	return "flakegate " + Number() + " (" + runtime.Version() + ", " + runtime.GOOS + "/" + runtime.GOARCH + ")"
}

// Number is the version without the Go and platform suffix.
func Number() string {
	info, ok := debug.ReadBuildInfo()
	return number(Version, info, ok)
}

func number(set string, info *debug.BuildInfo, ok bool) string {
	v := set
	if v == "" && ok && info.Main.Version != "" && info.Main.Version != "(devel)" {
		v = info.Main.Version
	}
	if v == "" {
		v = "devel"
	}
	if !ok {
		return v
	}
	var rev, dirty string
	for _, s := range info.Settings {
		switch s.Key {
		case "vcs.revision":
			rev = s.Value
		case "vcs.modified":
			if s.Value == "true" {
				dirty = "+dirty"
			}
		}
	}
	if rev != "" && set == "" {
		if len(rev) > 12 {
			rev = rev[:12]
		}
		v += " rev " + rev + dirty
	}
	return v
}
