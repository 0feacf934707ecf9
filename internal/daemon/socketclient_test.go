package daemon

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
)

// countingListener counts the connections it accepts.
type countingListener struct {
	net.Listener
	n *atomic.Int64
}

func (l countingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err == nil {
		l.n.Add(1)
	}
	return c, err
}

// serveCounted serves h on a new socket at path until stop is called (or the
// test ends) and counts its connections in conns.
func serveCounted(t *testing.T, path string, h http.Handler, conns *atomic.Int64) (stop func()) {
	t.Helper()
	ln, err := ListenSocket(path, "")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- serveHandler(ctx, countingListener{ln, conns}, h) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				t.Error(err)
			}
		})
	}
	t.Cleanup(stop)
	return stop
}

// TestSocketClientKeepsConnections: calls one after the other share one kept
// connection, calls at once use one each, and every answer is the daemon's.
func TestSocketClientKeepsConnections(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "d.sock")
	var conns atomic.Int64
	serveCounted(t, sock, Handler(Source{Dir: Dir(t.TempDir())}, quiet), &conns) // not paired: every read is DENIED
	c := NewSocketClient(sock)
	ctx := context.Background()
	for range 20 {
		if _, err := c.Get(ctx, "openai", Wait{}); codeOf(err) != CodeDenied || !strings.Contains(err.Error(), "not paired") {
			t.Fatalf("a read: %v, want the daemon's DENIED", err)
		}
	}
	if n := conns.Load(); n != 1 {
		t.Fatalf("20 calls one after the other opened %d connections, want 1", n)
	}
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			for range 10 {
				if _, err := c.List(ctx); codeOf(err) != CodeDenied {
					t.Errorf("a list: %v, want the daemon's DENIED", err)
				}
			}
		})
	}
	wg.Wait()
	if n := conns.Load(); n > 4 {
		t.Fatalf("4 callers at once opened %d connections in all, want at most 4", n)
	}
}

// TestSocketClientDaemonRestarted: the daemon closes kept connections when it
// stops; after it restarts, a GET on the closed kept connection is sent once
// more on a new one and answered, and a POST goes on a new connection (it is
// never sent twice).
func TestSocketClientDaemonRestarted(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "d.sock")
	var conns atomic.Int64
	var gets, posts atomic.Int64
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodPost {
			posts.Add(1)
		} else {
			gets.Add(1)
		}
		writeJSON(w, http.StatusOK, credentialAnswer{Service: "openai", Value: "v"})
	})
	stop := serveCounted(t, sock, h, &conns)
	c := NewSocketClient(sock)
	ctx := context.Background()
	if v, err := c.Get(ctx, "openai", Wait{}); err != nil || string(v) != "v" {
		t.Fatalf("first read: %q, %v", v, err)
	}
	stop()
	serveCounted(t, sock, h, &conns)
	if v, err := c.Get(ctx, "openai", Wait{}); err != nil || string(v) != "v" {
		t.Fatalf("a read after the daemon restarted: %q, %v; want the answer", v, err)
	}
	if g, n := gets.Load(), conns.Load(); g != 2 || n != 2 {
		t.Fatalf("%d reads served on %d connections, want 2 on 2", g, n)
	}
	stop2 := conns.Load()
	var out credentialAnswer
	if err := c.call(ctx, http.MethodPost, "/mail/send", nil, map[string]string{"to": "x"}, &out, 0); err != nil || out.Value != "v" {
		t.Fatalf("a POST: %+v, %v", out, err)
	}
	if p, n := posts.Load(), conns.Load(); p != 1 || n != stop2+1 {
		t.Fatalf("the POST was served %d times on %d new connections, want once on 1", p, n-stop2)
	}
}

// TestSocketClientDropped: a daemon that drops a new connection without an
// answer gets the request once, and the caller an UNREACHABLE naming the fix.
func TestSocketClientDropped(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "d.sock")
	var conns, calls atomic.Int64
	serveCounted(t, sock, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		calls.Add(1)
		conn, _, err := http.NewResponseController(w).Hijack()
		if err == nil {
			conn.Close()
		}
	}), &conns)
	_, err := NewSocketClient(sock).Get(context.Background(), "openai", Wait{})
	if codeOf(err) != CodeUnreachable || !strings.Contains(err.Error(), "cannot reach the daemon") {
		t.Fatalf("a dropped request: %v, want UNREACHABLE", err)
	}
	if n := calls.Load(); n != 1 {
		t.Fatalf("the dropped request was sent %d times, want once", n)
	}
}

// TestSocketClientCallEnds: a call whose context ends while the daemon works
// returns at once with an error, and its connection is not used again.
func TestSocketClientCallEnds(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "d.sock")
	var conns atomic.Int64
	entered, release := make(chan struct{}, 1), make(chan struct{})
	serveCounted(t, sock, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/credentials/slow" {
			entered <- struct{}{}
			<-release
		}
		writeJSON(w, http.StatusOK, credentialAnswer{Service: "x", Value: "v"})
	}), &conns)
	defer close(release)
	c := NewSocketClient(sock)
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() {
		_, err := c.Get(ctx, "slow", Wait{})
		errc <- err
	}()
	<-entered
	cancel()
	if err := <-errc; codeOf(err) != CodeUnreachable || !errors.Is(err, context.Canceled) {
		t.Fatalf("a call whose context ended: %v, want UNREACHABLE wrapping context.Canceled", err)
	}
	if v, err := c.Get(context.Background(), "fast", Wait{}); err != nil || string(v) != "v" {
		t.Fatalf("the next call: %q, %v", v, err)
	}
	if n := conns.Load(); n != 2 {
		t.Fatalf("%d connections, want 2 (the ended call's is not used again)", n)
	}
}

// TestSocketClientAnswerTooLong: an answer over maxSocketAnswer is refused,
// not read on.
func TestSocketClientAnswerTooLong(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "d.sock")
	var conns atomic.Int64
	serveCounted(t, sock, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, `{"value":"`+strings.Repeat("a", maxSocketAnswer)+`"}`)
	}), &conns)
	_, err := NewSocketClient(sock).Get(context.Background(), "openai", Wait{})
	if codeOf(err) != CodeUnreachable || !strings.Contains(err.Error(), "unreadable answer") {
		t.Fatalf("a %d-byte answer: %v, want UNREACHABLE unreadable answer", maxSocketAnswer+12, err)
	}
}
