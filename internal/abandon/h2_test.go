package abandon

import (
	"bytes"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// Over HTTP/2 a refused upload is one stream of a connection the client
// multiplexes (Nix's curl negotiates h2 and runs its uploads in parallel
// on it). The refusal must reach the client, must not disturb the other
// streams, and must not end the connection: "Connection: close" makes Go's
// HTTP/2 server send a GOAWAY, so one 413 or 429 made every later request
// of that client open a new TLS connection, and a stream it had just
// opened could be refused and had to be retried. The unread body needs no
// closing on h2: the server resets that stream alone (RST_STREAM NO_ERROR)
// after its answer.
func TestHTTP2RefusalKeepsTheConnection(t *testing.T) {
	release, started := make(chan struct{}), make(chan struct{})
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/slow" {
			close(started)
			<-release // a long upload still running on the same connection
			_, _ = io.Copy(io.Discard, r.Body)
			io.WriteString(w, "slow done")
			return
		}
		refuse(w, r)
	}))
	var conns atomic.Int32
	srv.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			conns.Add(1)
		}
	}
	srv.EnableHTTP2 = true
	srv.StartTLS()
	defer srv.Close()
	client := srv.Client()
	client.Transport.(*http.Transport).ForceAttemptHTTP2 = true

	slow := make(chan string, 1)
	go func() {
		resp, err := client.Post(srv.URL+"/slow", "", strings.NewReader("abc"))
		if err != nil {
			slow <- err.Error()
			return
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		slow <- string(b)
	}()
	// Wait until the slow stream is in its handler, so that the refusal
	// shares its connection.
	select {
	case <-started:
	case <-time.After(10 * time.Second):
		t.Fatal("the slow request never reached the handler")
	}

	resp, err := client.Post(srv.URL+"/up", "", bytes.NewReader(make([]byte, 4<<20)))
	if err != nil {
		t.Fatalf("refused upload: no answer: %v", err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.ProtoMajor != 2 || resp.StatusCode != 413 || string(b) != "too large\n" {
		t.Fatalf("refused upload: %s %d %q, want HTTP/2 413", resp.Proto, resp.StatusCode, b)
	}

	close(release)
	if got := <-slow; got != "slow done" {
		t.Errorf("the other stream: %q", got)
	}
	for i := 0; i < 3; i++ {
		resp, err := client.Get(srv.URL + "/after")
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
	if n := conns.Load(); n != 1 {
		t.Errorf("%d connections: a refusal over HTTP/2 ended the client's connection (GOAWAY)", n)
	}
}
