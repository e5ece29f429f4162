package testutil

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// BuildCommands builds the given main packages (import paths, e.g.
// "github.com/flakegate/flakegate/cmd/authz") into one temporary directory
// with a single `go build` and returns that directory.
func BuildCommands(t testing.TB, pkgs ...string) string {
	t.Helper()
	goTool, err := exec.LookPath("go")
	if err != nil {
		t.Skip("go tool not found: cannot build the binaries under test")
	}
	dir := t.TempDir()
	if err := GoBuild(goTool, dir, pkgs...); err != nil {
		t.Fatal(err)
	}
	return dir
}

// GoBuild builds the given main packages into dir with one `go build`
// (goTool is the go binary). TestMain functions use it to build the
// binaries under test once for a whole package.
func GoBuild(goTool, dir string, pkgs ...string) error {
	cmd := exec.Command(goTool, append([]string{"build", "-o", dir + string(filepath.Separator)}, pkgs...)...)
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("go build %s: %w\n%s", strings.Join(pkgs, " "), err, out)
	}
	return nil
}

// FreeAddr returns a loopback address with a port that was free a moment ago.
func FreeAddr(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// Process is a server binary run by a test. Its stdout and stderr are kept
// in Log; it is stopped with SIGTERM (then SIGKILL) when the test ends, and
// the test fails if it did not exit cleanly then.
type Process struct {
	Name string
	Log  *LogBuffer
	cmd  *exec.Cmd
	done chan struct{}
	err  error
}

// StartProcess runs bin with args. env entries are added to the environment.
func StartProcess(t testing.TB, name, bin string, env []string, args ...string) *Process {
	t.Helper()
	p := &Process{Name: name, Log: &LogBuffer{}, done: make(chan struct{})}
	p.cmd = exec.Command(bin, args...)
	p.cmd.Env = append(os.Environ(), env...)
	pr, pw := io.Pipe()
	p.cmd.Stdout, p.cmd.Stderr = pw, pw
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	go func() {
		sc := bufio.NewScanner(pr)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			_, _ = p.Log.Write(append(sc.Bytes(), '\n'))
		}
	}()
	go func() {
		p.err = p.cmd.Wait()
		pw.Close()
		close(p.done)
	}()
	t.Cleanup(func() {
		if err := p.Stop(10 * time.Second); err != nil {
			t.Errorf("%s: %v", name, err)
		}
		if t.Failed() {
			t.Logf("%s log:\n%s", name, p.Log.String())
		}
	})
	return p
}

// Pid is the process id.
func (p *Process) Pid() int { return p.cmd.Process.Pid }

// Running reports whether the process has not exited.
func (p *Process) Running() bool {
	select {
	case <-p.done:
		return false
	default:
		return true
	}
}

// Stop sends SIGTERM and waits up to grace for the exit (then kills). It
// returns an error unless the process exited by itself with status 0.
func (p *Process) Stop(grace time.Duration) error {
	select {
	case <-p.done:
		if p.err != nil {
			return fmt.Errorf("exited early: %w", p.err)
		}
		return nil
	default:
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
		if p.err != nil {
			return fmt.Errorf("exit after SIGTERM: %w", p.err)
		}
		return nil
	case <-time.After(grace):
		_ = p.cmd.Process.Kill()
		<-p.done
		return fmt.Errorf("did not stop within %s of SIGTERM", grace)
	}
}

// WaitHealthy polls url until it answers 200, the process exits, or timeout.
func (p *Process) WaitHealthy(t testing.TB, url string, timeout time.Duration) {
	t.Helper()
	client := &http.Client{Timeout: time.Second}
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		if !p.Running() {
			t.Fatalf("%s exited before becoming healthy: %v\n%s", p.Name, p.err, p.Log.String())
		}
		if resp, err := client.Get(url); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("%s not healthy at %s within %s\n%s", p.Name, url, timeout, p.Log.String())
}
