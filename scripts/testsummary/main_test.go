package main

import (
	"encoding/json"
	"strings"
	"testing"
)

// stream is `go test -json` output of two packages: one with a pass, two
// skips for one reason, one with a reason on two lines, a failure; one
// without tests.
func stream(t *testing.T) string {
	t.Helper()
	var b strings.Builder
	emit := func(action, pkg, test, output string) {
		line, err := json.Marshal(event{Action: action, Package: pkg, Test: test, Output: output})
		if err != nil {
			t.Fatal(err)
		}
		b.Write(line)
		b.WriteByte('\n')
	}
	const a, n = "github.com/flakegate/flakegate/internal/a", "github.com/flakegate/flakegate/internal/none"
	emit("start", a, "", "")
	emit("run", a, "TestOK", "")
	emit("output", a, "TestOK", "=== RUN   TestOK\n")
	emit("output", a, "TestOK", "--- PASS: TestOK (0.00s)\n")
	emit("pass", a, "TestOK", "")
	for _, name := range []string{"TestNix1", "TestNix2"} {
		emit("output", a, name, "=== RUN   "+name+"\n")
		emit("output", a, name, "    nixtest.go:32: nix not found: install nix-bin\n")
		emit("output", a, name, "--- SKIP: "+name+" (0.00s)\n")
		emit("skip", a, name, "")
	}
	emit("output", a, "TestTwoLines", "    x_test.go:1: first\n")
	emit("output", a, "TestTwoLines", "    x_test.go:2: second\n")
	emit("skip", a, "TestTwoLines", "")
	emit("output", a, "TestBad", "=== RUN   TestBad\n")
	emit("output", a, "TestBad", "    bad_test.go:9: got 1, want 2\n")
	emit("output", a, "TestBad", "--- FAIL: TestBad (0.00s)\n")
	emit("fail", a, "TestBad", "")
	emit("output", a, "", "FAIL\n")
	emit("output", a, "", "FAIL\tgithub.com/flakegate/flakegate/internal/a\t0.01s\n")
	emit("fail", a, "", "")
	emit("output", n, "", "?   \tgithub.com/flakegate/flakegate/internal/none\t[no test files]\n")
	emit("skip", n, "", "")
	return b.String()
}

func TestSummary(t *testing.T) {
	var out strings.Builder
	code := run(strings.NewReader(stream(t)), &out, nil)
	got := out.String()
	if code != 1 {
		t.Errorf("exit %d with a failed test, want 1", code)
	}
	for _, want := range []string{
		"packages: 0 ok, 1 failed, 1 without tests\n",
		"tests:    1 passed, 1 failed, 3 skipped",
		"  internal/a: TestNix1, TestNix2 — nix not found: install nix-bin\n",
		"  internal/a: TestTwoLines — first / second\n",
		"--- FAIL: github.com/flakegate/flakegate/internal/a TestBad\n=== RUN   TestBad\n    bad_test.go:9: got 1, want 2\n",
		"FAIL\tgithub.com/flakegate/flakegate/internal/a\t0.01s\n",
		"[no test files]",
		"failed tests (1):\n  github.com/flakegate/flakegate/internal/a TestBad\n",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("output lacks %q:\n%s", want, got)
		}
	}
	if strings.Contains(got, "=== RUN   TestOK") {
		t.Errorf("a passing test's progress lines are printed:\n%s", got)
	}
}

// -fail-skips turns a skip for a missing dependency into a failure.
func TestFailSkips(t *testing.T) {
	passing := strings.ReplaceAll(stream(t), `"Action":"fail"`, `"Action":"pass"`)
	var out strings.Builder
	if code := run(strings.NewReader(passing), &out, nil); code != 0 {
		t.Fatalf("exit %d without failures:\n%s", code, out.String())
	}
	out.Reset()
	if code := run(strings.NewReader(passing), &out, []string{"-fail-skips", "nix not found"}); code != 1 || !strings.Contains(out.String(), "a test dependency is missing") {
		t.Fatalf("exit %d with -fail-skips matching:\n%s", code, out.String())
	}
	out.Reset()
	if code := run(strings.NewReader(passing), &out, []string{"-fail-skips", "PostgreSQL"}); code != 0 {
		t.Fatalf("exit %d with -fail-skips not matching:\n%s", code, out.String())
	}
	out.Reset()
	if code := run(strings.NewReader(""), &out, nil); code != 1 {
		t.Fatalf("exit %d without any event", code)
	}
}
