package cli

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"net"
	"net/url"
	"strconv"
	"time"

	"github.com/agentkeys/agentkeys/internal/client"
	"github.com/agentkeys/agentkeys/internal/httpconn"
	"github.com/agentkeys/agentkeys/internal/problem"
)

// benchConn is the kept HTTP/1.1 connection of one bench worker to one broker.
// A worker has one request in flight at a time, so it builds the request's
// bytes itself, writes them in one system call and reads the answer on the
// same goroutine (package httpconn): none of net/http's per-connection reader
// and writer goroutines, header maps or pools, whose CPU would compete with
// the broker's when bench shares its machine. The requests are the ones the
// agents' client sends (the same method, path, headers and body), and every
// answer is read in full.
type benchConn struct {
	scheme, host string // of the broker's URL; host has the port
	tls          *tls.Config
	conn         *httpconn.Conn
	req, body    []byte // reused
}

// benchTimeout bounds one request, as the CLI's HTTP client does.
const benchTimeout = 30 * time.Second

// maxBenchAnswer bounds the body of one answer.
const maxBenchAnswer = 64 << 20

func newBenchConn(server string) (*benchConn, error) {
	u, err := url.Parse(server)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, problem.Newf(problem.BadRequest, "pass the broker's URL, e.g. http://127.0.0.1:8090", "%q is not an http(s) URL", server)
	}
	bc := &benchConn{scheme: u.Scheme, host: u.Host}
	if u.Port() == "" {
		bc.host = net.JoinHostPort(u.Hostname(), map[string]string{"http": "80", "https": "443"}[u.Scheme])
	}
	if u.Scheme == "https" {
		bc.tls = &tls.Config{ServerName: u.Hostname(), NextProtos: []string{"http/1.1"}, MinVersion: tls.VersionTLS12}
	}
	return bc, nil
}

// close drops the connection; the next request opens a new one.
func (bc *benchConn) close() {
	if bc.conn != nil {
		bc.conn.Close()
		bc.conn = nil
	}
}

func (bc *benchConn) dial(ctx context.Context) error {
	d := net.Dialer{Timeout: benchTimeout}
	c, err := d.DialContext(ctx, "tcp", bc.host)
	if err == nil && bc.tls != nil {
		tc := tls.Client(c, bc.tls)
		if err = tc.HandshakeContext(ctx); err != nil {
			c.Close()
		}
		c = tc
	}
	if err != nil {
		return problem.Newf(problem.Unreachable, "check that `agentkeys server` is running there and the URL is right",
			"cannot reach the broker at %s://%s", bc.scheme, bc.host)
	}
	bc.conn = httpconn.New(c, maxBenchAnswer)
	return nil
}

// post sends POST path with the agent's token and proof (and body, JSON, if
// any) and decodes a 200 answer into out; another answer is the broker's
// problem, as the CLI's client reads it.
func (bc *benchConn) post(ctx context.Context, path, token, proof string, body []byte, out any) error {
	if bc.conn == nil {
		if err := bc.dial(ctx); err != nil {
			return err
		}
	}
	r := append(bc.req[:0], "POST "...)
	r = append(r, path...)
	r = append(r, " HTTP/1.1\r\nHost: "...)
	r = append(r, bc.host...)
	r = append(r, "\r\nUser-Agent: agentkeys-bench\r\nAuthorization: Bearer "...)
	r = append(r, token...)
	r = append(r, "\r\nDPoP: "...)
	r = append(r, proof...)
	if len(body) > 0 {
		r = append(r, "\r\nContent-Type: application/json"...)
	}
	r = append(r, "\r\nContent-Length: "...)
	r = strconv.AppendInt(r, int64(len(body)), 10)
	r = append(r, "\r\n\r\n"...)
	r = append(r, body...)
	bc.req = r
	bc.conn.SetDeadline(time.Now().Add(benchTimeout))
	resp, answer, _, err := bc.conn.RoundTrip(ctx, httpconn.Raw(r), bc.body)
	if bc.conn.Closed() { // after an error, Connection: close or the run's end
		bc.conn = nil
	}
	if err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if errors.Is(err, httpconn.ErrTooLong) {
			err = problem.New(problem.TooLarge, "the answer is over 64 MiB", "check that the URL points at an AgentKeys broker")
		}
		return problem.Newf(problem.Unreachable, "retry; check the broker's log", "POST %s to %s://%s failed: %v", path, bc.scheme, bc.host, err)
	}
	bc.body = answer
	if resp.StatusCode >= 300 {
		return client.AnswerError(bc.scheme+"://"+bc.host, "POST", path, resp.StatusCode, resp.Header.Get("Retry-After"), answer)
	}
	if err := json.Unmarshal(answer, out); err != nil {
		return problem.Newf("BAD_ANSWER", "report it with the broker's version", "decoding the answer of POST %s: %v", path, err)
	}
	return nil
}
