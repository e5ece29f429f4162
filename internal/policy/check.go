package policy

import (
	"bytes"
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/tester"
)

// testTimeout bounds one Rego test (a parameterized test runs all its cases
// in one evaluation, traced); generous for small, busy CI machines.
const testTimeout = 30 * time.Second

// Check validates a policy directory the way the engine loads it, then runs
// its *_test.rego files with OPA's test runner against the same policies and
// data files. It writes a line per problem (file:line) and per test to w and
// returns an error if the set does not load or any test fails or errors.
// A directory without tests passes (with a note).
func Check(ctx context.Context, dir string, w io.Writer) error {
	snap, err := readDir(dir, true)
	if err != nil {
		fmt.Fprintf(w, "ERROR %v\n", err)
		return fmt.Errorf("policy check: %w", err)
	}
	parsed, problems := parse(snap)
	var c *ast.Compiler
	if len(problems) == 0 {
		c, problems = compileModules(parsed.Modules, false)
	}
	if len(problems) > 0 {
		sortProblems(problems)
		for _, p := range problems {
			fmt.Fprintf(w, "ERROR %s\n", p)
		}
		return fmt.Errorf("policy check: %w", &LoadError{Dir: dir, Problems: problems})
	}
	fmt.Fprintf(w, "policy set %s compiles: %s\n", snap.Revision, strings.Join(snap.Names(), ", "))
	// Data errors are reported, and the tests still run: both help fix them.
	dataProblems := configErrors(ctx, c, newStore(parsed.Data))
	for _, p := range dataProblems {
		fmt.Fprintf(w, "ERROR %s\n", p)
	}
	var dataErr error
	if len(dataProblems) > 0 {
		dataErr = fmt.Errorf("policy check: the engine would refuse this set: %w", &LoadError{Dir: dir, Problems: dataProblems})
	}

	if len(parsed.Tests) == 0 {
		fmt.Fprintf(w, "no *_test.rego files in %s: nothing to test\n", dir)
		return dataErr
	}
	modules := maps.Clone(parsed.Modules)
	maps.Copy(modules, parsed.Tests)
	ch, err := tester.NewRunner().
		SetCompiler(newCompiler(true)).
		SetStore(newStore(parsed.Data)).
		SetModules(modules).
		CapturePrintOutput(true).
		RaiseBuiltinErrors(true). // as the engine evaluates (compile.go)
		SetTimeout(testTimeout).
		RunTests(ctx, nil)
	if err != nil {
		problems := problemsFromAST(err)
		sortProblems(problems)
		for _, p := range problems {
			fmt.Fprintf(w, "ERROR %s\n", p)
		}
		return errors.Join(dataErr, fmt.Errorf("policy check: compile tests: %w", &LoadError{Dir: dir, Problems: problems}))
	}
	var results []*tester.Result
	for r := range ch {
		results = append(results, r)
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("policy check: %w", err)
	}
	slices.SortFunc(results, func(a, b *tester.Result) int {
		return cmp.Or(strings.Compare(locFile(a.Location), locFile(b.Location)),
			cmp.Compare(locRow(a.Location), locRow(b.Location)),
			strings.Compare(a.Name, b.Name))
	})

	var passed, skipped int
	var failed []string
	for _, r := range results {
		where := fmt.Sprintf("%s:%d", locFile(r.Location), locRow(r.Location))
		name := r.Package + "." + r.Name
		switch {
		case r.Skip:
			skipped++
			fmt.Fprintf(w, "SKIP  %s %s\n", where, name)
			continue
		case r.Error != nil:
			failed = append(failed, name)
			fmt.Fprintf(w, "ERROR %s %s: %v\n", where, name, r.Error)
		case r.Fail:
			failed = append(failed, name)
			fmt.Fprintf(w, "FAIL  %s %s\n", where, name)
			for path, sr := range r.SubResults.Iter {
				if sr.Fail && len(sr.SubResults) == 0 {
					fmt.Fprintf(w, "      case %q failed\n", strings.Join(path, "/"))
				}
			}
		default:
			passed++
			fmt.Fprintf(w, "PASS  %s %s\n", where, name)
			continue
		}
		if out := bytes.TrimSpace(r.Output); len(out) > 0 {
			for _, line := range strings.Split(string(out), "\n") {
				fmt.Fprintf(w, "      | %s\n", line)
			}
		}
	}
	fmt.Fprintf(w, "%d tests: %d passed, %d failed, %d skipped\n", len(results), passed, len(failed), skipped)
	if len(failed) > 0 {
		return errors.Join(dataErr, fmt.Errorf("policy check %s: %d of %d tests failed: %s", dir, len(failed), len(results), strings.Join(failed, ", ")))
	}
	if len(results) == 0 {
		return errors.Join(dataErr, errors.New("policy check: test files hold no test_ rules"))
	}
	return dataErr
}

func sortProblems(ps []Problem) {
	slices.SortStableFunc(ps, func(a, b Problem) int {
		return cmp.Or(strings.Compare(a.File, b.File), cmp.Compare(a.Line, b.Line))
	})
}

func locFile(l *ast.Location) string {
	if l == nil {
		return "?"
	}
	return l.File
}

func locRow(l *ast.Location) int {
	if l == nil {
		return 0
	}
	return l.Row
}
