package cli

import (
	"crypto/x509"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/agentkeys/agentkeys/internal/bench"
	"github.com/agentkeys/agentkeys/internal/problem"
)

// benchConn's requests, read by a real net/http server: the agent's headers
// and body arrive as the agents' client sends them, answers are decoded, a
// refusal is the broker's problem, one connection serves the worker's
// requests, and a server that closes the connection is dialled again.
func TestBenchConn(t *testing.T) {
	var conns atomic.Int32
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		switch {
		case r.Method != http.MethodPost || r.Header.Get("Authorization") != "Bearer tok" || r.Header.Get("DPoP") == "":
			http.Error(w, "bad request", http.StatusBadRequest)
		case r.URL.Path == "/limited":
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusTooManyRequests)
			json.NewEncoder(w).Encode(map[string]*problem.Error{"error": problem.New(problem.RateLimited, "slow down", "wait")})
		case r.URL.Path == "/close":
			w.Header().Set("Connection", "close")
			w.Write([]byte(`{"n":1}`))
		case r.URL.Path == "/big": // chunked, larger than one read
			for range 100 {
				w.Write([]byte(strings.Repeat(" ", 1000)))
				w.(http.Flusher).Flush()
			}
			w.Write([]byte(`{"n":3}`))
		default:
			if string(body) != `{"a":1}` || r.Header.Get("Content-Type") != "application/json" || r.ContentLength != 7 {
				http.Error(w, "bad body", http.StatusBadRequest)
				return
			}
			w.Write([]byte(`{"n":2,"proof":"` + r.Header.Get("DPoP") + `"}`))
		}
	}))
	srv.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			conns.Add(1)
		}
	}
	srv.Start()
	defer srv.Close()
	bc, err := newBenchConn(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer bc.close()
	var out struct {
		N     int
		Proof string
	}
	for i, proof := range []string{"p1", "p2", "p3"} {
		if err := bc.post(t.Context(), "/ok", "tok", proof, []byte(`{"a":1}`), &out); err != nil || out.N != 2 || out.Proof != proof {
			t.Fatalf("request %d: %v, answer %+v; want n 2 and its own proof", i, err, out)
		}
	}
	if n := conns.Load(); n != 1 {
		t.Fatalf("3 requests opened %d connections, want 1 kept", n)
	}
	err = bc.post(t.Context(), "/limited", "tok", "p4", nil, &out)
	if pe := problem.As(err); err == nil || pe.Code != problem.RateLimited {
		t.Fatalf("a 429 with the broker's problem: %v, want RATE_LIMITED", err)
	}
	if err := bc.post(t.Context(), "/close", "tok", "p5", nil, &out); err != nil || out.N != 1 || bc.conn != nil {
		t.Fatalf("Connection: close: %v, %+v, conn kept %v; want the answer and the connection dropped", err, out, bc.conn != nil)
	}
	if err := bc.post(t.Context(), "/big", "tok", "p6", nil, &out); err != nil || out.N != 3 || conns.Load() != 2 {
		t.Fatalf("after a close, a chunked answer: %v, %+v, %d connections; want n 3 on a second connection", err, out, conns.Load())
	}
	if err := bc.post(t.Context(), "/ok", "", "p7", nil, &out); problem.As(err).Code != problem.Internal {
		t.Fatalf("a 400 without the broker's problem: %v, want INTERNAL naming the status", err)
	}
	srv.Close()
	if err := bc.post(t.Context(), "/ok", "tok", "p8", []byte(`{"a":1}`), &out); problem.As(err).Code != problem.Unreachable {
		t.Fatalf("a closed server: %v, want UNREACHABLE", err)
	}
}

// Over https the connection verifies the broker's certificate.
func TestBenchConnTLS(t *testing.T) {
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.TLS != nil {
			w.Write([]byte(`{"n":4}`))
		}
	}))
	defer srv.Close()
	bc, err := newBenchConn(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer bc.close()
	var out struct{ N int }
	if err := bc.post(t.Context(), "/", "tok", "p", nil, &out); problem.As(err).Code != problem.Unreachable {
		t.Fatalf("a certificate the system does not trust: %v, want UNREACHABLE", err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(srv.Certificate())
	bc.tls.RootCAs = pool
	if err := bc.post(t.Context(), "/", "tok", "p", nil, &out); err != nil || out.N != 4 {
		t.Fatalf("with the server's certificate trusted: %v, %+v", err, out)
	}
	for _, bad := range []string{"ftp://x", "127.0.0.1:8090", "http://"} {
		if _, err := newBenchConn(bad); problem.As(err).Code != problem.BadRequest {
			t.Errorf("newBenchConn(%q): %v, want BAD_REQUEST", bad, err)
		}
	}
}

// A proof refused as made before the broker started (UNAUTHENTICATED with a
// pause to wait) is retried once, after the pause, with a proof made later:
// the stock's proofs of the refused second are dropped, later ones kept.
func TestBenchPostersRetryProofBeforeStart(t *testing.T) {
	var got []string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p := r.Header.Get("DPoP")
		got = append(got, p)
		if strings.HasSuffix(p, "@early") {
			w.WriteHeader(http.StatusUnauthorized)
			e := problem.New(problem.Unauthenticated, "made before the broker started", "make a new proof")
			e.RetryAfter = 1
			json.NewEncoder(w).Encode(map[string]*problem.Error{"error": e})
			return
		}
		w.Write([]byte(`{}`))
	}))
	defer srv.Close()
	// p1 and p2 are made in one second, p3 and p4 in the next.
	start := time.Now().Truncate(time.Second).Add(-2 * time.Second)
	vals := []string{"p1@early", "p2@early", "p3@late", "p4@late"}
	i, ticks := 0, 0
	clock := func() time.Time {
		ticks++
		if ticks <= 2 {
			return start
		}
		return start.Add(time.Second)
	}
	stock, err := bench.NewStock(len(vals), time.Minute, clock, func(time.Time) (string, error) {
		i++
		return vals[i-1], nil
	})
	if err != nil {
		t.Fatal(err)
	}
	agents := []benchAgent{{server: srv.URL, token: "tok", proofs: stock}}
	post, done, err := benchPosters(agents, 1, "/v1/oidc/token", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer done()
	var out struct{}
	if err := post(t.Context(), 0, &out); err != nil {
		t.Fatalf("post: %v; want the retry with a later proof to succeed", err)
	}
	if strings.Join(got, ",") != "p1@early,p3@late" || stock.Left() != 1 {
		t.Fatalf("sent %v, %d left; want p1 refused, p2 (same second) dropped, p3 sent, p4 kept", got, stock.Left())
	}
	// A second refusal of the retry is the answer, not a loop.
	vals, i = []string{"p5@early", "p6@early"}, 0
	stock2, _ := bench.NewStock(0, time.Minute, nil, func(time.Time) (string, error) { i++; return vals[i-1], nil })
	agents[0].proofs = stock2
	if err := post(t.Context(), 0, &out); problem.As(err).Code != problem.Unauthenticated || i != 2 {
		t.Fatalf("refused twice: %v after %d proofs; want UNAUTHENTICATED after 2", err, i)
	}
}
