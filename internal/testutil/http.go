package testutil

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"testing"
	"time"
)

// Get fetches url within timeout and returns the status code and the whole
// body; any transport error fails the test.
func Get(t testing.TB, url string, timeout time.Duration) (status int, body string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, body := Do(t, req)
	return resp.StatusCode, body
}

// Do sends req (whose context bounds it) and returns the response with its
// whole body read and closed; any transport error fails the test.
func Do(t testing.TB, req *http.Request) (resp *http.Response, body string) {
	t.Helper()
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", req.Method, req.URL, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: read body: %v", req.Method, req.URL, err)
	}
	return resp, string(b)
}

// RawRequest opens a TCP connection to addr (host:port), sends head (a
// request head, e.g. one announcing a body) and first (the first bytes of
// that body, or ""), then sends nothing more: a client whose body stalls.
// It returns the response with its body, how long the response took to
// come, and whether the server then closed the connection within
// closeWithin (EOF, or a reset when the server closed with unread bytes of
// ours; a deadline is not a close). No response within 10 s fails the test.
func RawRequest(t testing.TB, addr, head, first string, closeWithin time.Duration) (resp *http.Response, body string, took time.Duration, closed bool) {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	start := time.Now()
	if _, err := io.WriteString(c, head+first); err != nil {
		t.Fatal(err)
	}
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	br := bufio.NewReader(c)
	resp, err = http.ReadResponse(br, nil)
	if err != nil {
		t.Fatalf("no response %v after sending %q: %v", time.Since(start), head, err)
	}
	took = time.Since(start)
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	_ = c.SetReadDeadline(time.Now().Add(closeWithin))
	_, err = br.ReadByte()
	var ne net.Error
	return resp, string(b), took, err != nil && !(errors.As(err, &ne) && ne.Timeout())
}

// Upload opens a TCP connection to addr and sends head and then body in
// 16 KiB pieces a millisecond apart (a client still sending when the
// server answers), while it reads the response, as curl and Go's transport
// do. It returns the response and its body (err: none came within 10 s,
// or the connection broke first) and writeErr, the first failed write of
// the body: a server that closes with bytes of ours unread makes the
// kernel reset the connection, and the client's next write fails with
// "connection reset by peer" (curl's "Send failure"; Go's transport may
// report it instead of the response).
func Upload(t testing.TB, addr, head, body string) (resp *http.Response, respBody string, err, writeErr error) {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	wrote := make(chan error, 1)
	go func() {
		_, err := io.WriteString(c, head)
		for len(body) > 0 && err == nil {
			n := min(len(body), 16<<10)
			_, err = io.WriteString(c, body[:n])
			body = body[n:]
			time.Sleep(time.Millisecond)
		}
		wrote <- err
	}()
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	resp, err = http.ReadResponse(bufio.NewReader(c), nil)
	if err == nil {
		var b []byte
		b, err = io.ReadAll(resp.Body)
		resp.Body.Close()
		respBody = string(b)
	}
	select {
	case writeErr = <-wrote:
	case <-time.After(10 * time.Second):
		writeErr = errors.New("the body was still being written after 10 s")
	}
	return resp, respBody, err, writeErr
}
