package httpconn

import (
	"context"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// server is a real net/http server on 127.0.0.1 or on a Unix socket, which
// counts the connections it accepted.
type server struct {
	*httptest.Server
	network, addr string
	conns         atomic.Int32
	entered       chan struct{} // /slow arrived
	release       chan struct{} // /slow may answer
}

func serve(t *testing.T, network string) *server {
	t.Helper()
	s := &server{network: network, entered: make(chan struct{}, 1), release: make(chan struct{})}
	s.Server = httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/close":
			w.Header().Set("Connection", "close")
			w.Write([]byte("bye"))
		case "/big": // n bytes, chunked, in pieces
			n, _ := strconv.Atoi(r.URL.Query().Get("n"))
			for n > 0 {
				k := min(n, 1000)
				w.Write([]byte(strings.Repeat("a", k)))
				w.(http.Flusher).Flush()
				n -= k
			}
		case "/slow":
			s.entered <- struct{}{}
			<-s.release
			w.Write([]byte("late"))
		default:
			w.Header().Set("Content-Length", "5")
			if r.Method != http.MethodHead {
				w.Write([]byte(r.Method[:1] + " " + r.URL.Path[1:4]))
			}
		}
	}))
	s.Config.ConnState = func(_ net.Conn, st http.ConnState) {
		if st == http.StateNew {
			s.conns.Add(1)
		}
	}
	if network == "unix" {
		ln, err := net.Listen("unix", filepath.Join(t.TempDir(), "s.sock"))
		if err != nil {
			t.Fatal(err)
		}
		s.Listener.Close()
		s.Listener = ln
	}
	s.Start()
	t.Cleanup(func() {
		select {
		case <-s.release:
		default:
			close(s.release)
		}
		s.Close()
	})
	s.addr = s.Listener.Addr().String()
	return s
}

func (s *server) dial(t *testing.T, limit int) *Conn {
	t.Helper()
	nc, err := net.Dial(s.network, s.addr)
	if err != nil {
		t.Fatal(err)
	}
	nc.SetDeadline(time.Now().Add(time.Minute)) // a bound on a broken test, not an assertion
	c := New(nc, limit)
	t.Cleanup(func() { c.Close() })
	return c
}

// raw is a GET built by hand, as bench builds its requests.
func raw(path string) Raw {
	return Raw("GET " + path + " HTTP/1.1\r\nHost: x\r\nUser-Agent: test\r\n\r\n")
}

func get(t *testing.T, method, path string) *http.Request {
	t.Helper()
	req, err := http.NewRequest(method, "http://x"+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	return req
}

var networks = []string{"tcp", "unix"}

// One connection carries round trip after round trip, of hand-built and of
// net/http requests (a HEAD's answer has no body, and the next answer is read
// right), each answer appended to the buffer passed in.
func TestKept(t *testing.T) {
	for _, network := range networks {
		t.Run(network, func(t *testing.T) {
			s := serve(t, network)
			c := s.dial(t, 1<<10)
			buf := make([]byte, 0, 64)
			for i, req := range []Request{raw("/one"), get(t, http.MethodGet, "/two"), get(t, http.MethodHead, "/hea"), raw("/thr"), get(t, http.MethodPost, "/fou")} {
				resp, b, answered, err := c.RoundTrip(t.Context(), req, buf)
				if err != nil || !answered || resp.StatusCode != http.StatusOK {
					t.Fatalf("round trip %d: %v, answered %v, %v", i, err, answered, resp)
				}
				want := map[int]string{0: "G one", 1: "G two", 2: "", 3: "G thr", 4: "P fou"}[i]
				if string(b) != want || (len(b) > 0 && &b[0] != &buf[:1][0]) {
					t.Fatalf("round trip %d: %q, want %q in the buffer passed", i, b, want)
				}
				if c.Closed() {
					t.Fatalf("round trip %d closed the connection", i)
				}
			}
			if n := s.conns.Load(); n != 1 {
				t.Fatalf("5 round trips used %d connections, want 1", n)
			}
		})
	}
}

// An answer with Connection: close is returned whole, and the connection is
// closed.
func TestConnectionClose(t *testing.T) {
	for _, network := range networks {
		t.Run(network, func(t *testing.T) {
			c := serve(t, network).dial(t, 1<<10)
			resp, b, _, err := c.RoundTrip(t.Context(), raw("/close"), nil)
			if err != nil || string(b) != "bye" || !resp.Close {
				t.Fatalf("Connection: close: %v, %q, %v", err, b, resp)
			}
			if !c.Closed() {
				t.Fatal("the connection was kept after Connection: close")
			}
		})
	}
}

// An answer of exactly the limit is read; one byte more is ErrTooLong, and
// the connection is closed (not read on).
func TestLimit(t *testing.T) {
	for _, network := range networks {
		t.Run(network, func(t *testing.T) {
			s := serve(t, network)
			const limit = 5000
			c := s.dial(t, limit)
			_, b, _, err := c.RoundTrip(t.Context(), raw("/big?n=5000"), nil)
			if err != nil || len(b) != limit || c.Closed() {
				t.Fatalf("an answer of the limit: %v, %d bytes, closed %v", err, len(b), c.Closed())
			}
			_, b, answered, err := c.RoundTrip(t.Context(), get(t, http.MethodGet, "/big?n=5001"), b)
			if !errors.Is(err, ErrTooLong) || !answered || b != nil {
				t.Fatalf("an answer one byte over the limit: %v, answered %v, %d bytes; want ErrTooLong", err, answered, len(b))
			}
			if !c.Closed() {
				t.Fatal("the connection was kept after an answer over the limit")
			}
			if _, _, _, err := c.RoundTrip(t.Context(), raw("/one"), nil); err == nil {
				t.Fatal("a closed connection carried another round trip")
			}
		})
	}
}

// A round trip whose context ends while the server works returns ctx's error
// without waiting for the answer (the server answers only after the test),
// and the connection is closed.
func TestContextEnds(t *testing.T) {
	for _, network := range networks {
		t.Run(network, func(t *testing.T) {
			s := serve(t, network)
			c := s.dial(t, 1<<10)
			ctx, cancel := context.WithCancel(t.Context())
			go func() {
				<-s.entered
				cancel()
			}()
			_, b, answered, err := c.RoundTrip(ctx, raw("/slow"), nil)
			if !errors.Is(err, context.Canceled) || answered || b != nil {
				t.Fatalf("a round trip whose context ended: %v, answered %v, %q; want context.Canceled before any answer", err, answered, b)
			}
			if !c.Closed() {
				t.Fatal("the connection was kept after its round trip's context ended")
			}
			// A context that ended before: the round trip may fail or be
			// answered, but the connection, whose deadline was moved, is
			// never kept.
			c = s.dial(t, 1<<10)
			if _, _, _, err := c.RoundTrip(ctx, raw("/one"), nil); (err != nil && !errors.Is(err, context.Canceled)) || !c.Closed() {
				t.Fatalf("a round trip whose context had ended: %v, closed %v; want context.Canceled or an answer, and closed", err, c.Closed())
			}
		})
	}
}

// A kept connection that the server closed while it was idle fails its next
// round trip before any answer: answered is false, so a caller knows the
// request was not served.
func TestServerClosedIdle(t *testing.T) {
	for _, network := range networks {
		t.Run(network, func(t *testing.T) {
			s := serve(t, network)
			c := s.dial(t, 1<<10)
			if _, _, _, err := c.RoundTrip(t.Context(), raw("/one"), nil); err != nil {
				t.Fatal(err)
			}
			s.CloseClientConnections()
			_, _, answered, err := c.RoundTrip(t.Context(), get(t, http.MethodGet, "/two"), nil)
			if err == nil || answered {
				t.Fatalf("a round trip on a connection the server closed: %v, answered %v; want an error, not answered", err, answered)
			}
			if !c.Closed() {
				t.Fatal("the connection was kept after a failed round trip")
			}
		})
	}
}
