// Command testsummary reads `go test -json` on stdin and writes what a
// person wants to see (scripts/test.sh pipes the whole suite through it):
// each package's result line as it finishes, the output of each failed
// test or failed build, and at the end a summary — packages, tests passed,
// failed and skipped, and every skip with its reason.
//
//	go test -json ./... | go run ./scripts/testsummary [-fail-skips REGEXP]
//
// It exits 1 when a test or a package failed, when the input holds no test
// event at all, or when a skip reason matches -fail-skips (scripts/test.sh
// passes the reasons of a missing Nix, PostgreSQL or MinIO with CI=true, so
// that a dependency that failed to install or start fails the run instead
// of turning its tests into skips).
//
// Hand-written rather than gotestsum: ours groups skips by reason on one
// line each and has the -fail-skips rule, and it is a hundred lines with no
// dependency; gotestsum would be a tool dependency of the module for less.
package main

import (
	"bufio"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"regexp"
	"sort"
	"strings"
)

// event is one line of `go test -json` (cmd/test2json).
type event struct {
	Action  string
	Package string
	Test    string
	Output  string
	Elapsed float64
}

type summary struct {
	out io.Writer

	output  map[string][]string // package + "\x00" + test → its output lines so far
	passed  int
	failed  []string            // "pkg Test"
	skipped map[string][]string // "pkg\x00reason" → tests

	pkgOK, pkgFailed, pkgNoTests int
	failedPkgs                   []string
	events                       int
}

func newSummary(out io.Writer) *summary {
	return &summary{out: out, output: map[string][]string{}, skipped: map[string][]string{}}
}

func (s *summary) add(e event) {
	s.events++
	key := e.Package + "\x00" + e.Test
	switch e.Action {
	case "build-output":
		fmt.Fprint(s.out, e.Output)
	case "output":
		if e.Test == "" {
			// The package's own lines: "ok …", "FAIL …", "? … [no test files]",
			// a panic outside any test. Test progress lines ("=== RUN") are
			// only printed for failures.
			if !strings.HasPrefix(e.Output, "=== ") && !strings.HasPrefix(e.Output, "--- ") && e.Output != "PASS\n" && e.Output != "FAIL\n" {
				fmt.Fprint(s.out, e.Output)
			}
			s.output[key] = append(s.output[key], e.Output)
			return
		}
		s.output[key] = append(s.output[key], e.Output)
	case "pass":
		if e.Test == "" {
			s.pkgOK++
		} else {
			s.passed++
		}
		delete(s.output, key)
	case "fail":
		if e.Test == "" {
			s.pkgFailed++
			s.failedPkgs = append(s.failedPkgs, e.Package)
			return
		}
		s.failed = append(s.failed, e.Package+" "+e.Test)
		fmt.Fprintf(s.out, "--- FAIL: %s %s\n%s", e.Package, e.Test, strings.Join(s.output[key], ""))
		delete(s.output, key)
	case "skip":
		if e.Test == "" {
			s.pkgNoTests++
			return
		}
		r := reason(s.output[key])
		s.skipped[e.Package+"\x00"+r] = append(s.skipped[e.Package+"\x00"+r], e.Test)
		delete(s.output, key)
	}
}

var location = regexp.MustCompile(`^\s*[\w.-]+\.go:\d+: `)

// reason is what a skipped test said: its log lines without the test
// progress lines and file:line prefixes, joined.
func reason(lines []string) string {
	var rs []string
	for _, l := range lines {
		t := strings.TrimSpace(l)
		if t == "" || strings.HasPrefix(t, "=== ") || strings.HasPrefix(t, "--- SKIP") {
			continue
		}
		rs = append(rs, strings.TrimSpace(location.ReplaceAllString(l, "")))
	}
	if len(rs) == 0 {
		return "(no reason given)"
	}
	return strings.Join(rs, " / ")
}

// skips lists each package and reason with its tests, sorted.
func (s *summary) skips() []string {
	var lines []string
	for k, tests := range s.skipped {
		pkg, r, _ := strings.Cut(k, "\x00")
		sort.Strings(tests)
		names := strings.Join(tests, ", ")
		if len(tests) > 4 {
			names = strings.Join(tests[:3], ", ") + fmt.Sprintf(" and %d more", len(tests)-3)
		}
		lines = append(lines, fmt.Sprintf("  %s: %s — %s", strings.TrimPrefix(pkg, "github.com/flakegate/flakegate/"), names, r))
	}
	sort.Strings(lines)
	return lines
}

func (s *summary) nSkipped() int {
	n := 0
	for _, tests := range s.skipped {
		n += len(tests)
	}
	return n
}

// finish writes the summary and returns the exit code.
func (s *summary) finish(failSkips *regexp.Regexp) int {
	fmt.Fprintln(s.out, "\n== summary")
	fmt.Fprintf(s.out, "packages: %d ok, %d failed, %d without tests\n", s.pkgOK, s.pkgFailed, s.pkgNoTests)
	fmt.Fprintf(s.out, "tests:    %d passed, %d failed, %d skipped (subtests counted)\n", s.passed, len(s.failed), s.nSkipped())
	code := 0
	if lines := s.skips(); len(lines) > 0 {
		fmt.Fprintf(s.out, "skipped (%d):\n%s\n", s.nSkipped(), strings.Join(lines, "\n"))
		if failSkips != nil {
			for _, l := range lines {
				if failSkips.MatchString(l) {
					fmt.Fprintf(s.out, "FAIL: a test dependency is missing (-fail-skips %q):\n%s\n", failSkips, l)
					code = 1
				}
			}
		}
	}
	if len(s.failed) > 0 {
		fmt.Fprintf(s.out, "failed tests (%d):\n  %s\n", len(s.failed), strings.Join(s.failed, "\n  "))
		code = 1
	}
	if len(s.failedPkgs) > 0 {
		fmt.Fprintf(s.out, "failed packages (%d):\n  %s\n", len(s.failedPkgs), strings.Join(s.failedPkgs, "\n  "))
		code = 1
	}
	if s.events == 0 {
		fmt.Fprintln(s.out, "FAIL: no test events (go test did not run)")
		code = 1
	}
	return code
}

func run(stdin io.Reader, stdout io.Writer, args []string) int {
	fs := flag.NewFlagSet("testsummary", flag.ContinueOnError)
	failSkips := fs.String("fail-skips", "", "fail when a skip reason matches this regular expression")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	var re *regexp.Regexp
	if *failSkips != "" {
		var err error
		if re, err = regexp.Compile(*failSkips); err != nil {
			fmt.Fprintf(stdout, "testsummary: -fail-skips: %v\n", err)
			return 2
		}
	}
	s := newSummary(stdout)
	sc := bufio.NewScanner(stdin)
	sc.Buffer(make([]byte, 1<<20), 64<<20)
	for sc.Scan() {
		var e event
		if err := json.Unmarshal(sc.Bytes(), &e); err != nil {
			// Not an event (go vet output, a crash of go itself): show it.
			fmt.Fprintln(stdout, sc.Text())
			continue
		}
		s.add(e)
	}
	if err := sc.Err(); err != nil {
		fmt.Fprintf(stdout, "testsummary: reading go test output: %v\n", err)
		return 1
	}
	return s.finish(re)
}

func main() { os.Exit(run(os.Stdin, os.Stdout, os.Args[1:])) }
