package cli

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"github.com/agentkeys/agentkeys/internal/client"
	"github.com/agentkeys/agentkeys/internal/problem"
)

// benchConn is the kept HTTP/1.1 connection of one bench worker to one broker.
// A worker has one request in flight at a time, so it writes the request in
// one system call and reads the answer on the same goroutine: none of
// net/http's per-connection reader and writer goroutines, header maps or
// pools, whose CPU would compete with the broker's when bench shares its
// machine. The requests are the ones the agents' client sends (the same
// method, path, headers and body), and every answer is read in full.
type benchConn struct {
	scheme, host string // of the broker's URL; host has the port
	tls          *tls.Config
	conn         net.Conn
	stop         func() bool // stops the close on the run's end
	br           *bufio.Reader
	req, body    []byte // reused
}

// benchTimeout bounds one request, as the CLI's HTTP client does.
const benchTimeout = 30 * time.Second

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
		bc.stop()
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
	bc.conn = c
	bc.stop = context.AfterFunc(ctx, func() { c.SetDeadline(time.Unix(1, 0)) }) // the run stopped (Ctrl-C): unblock
	if bc.br == nil {
		bc.br = bufio.NewReaderSize(c, 16<<10)
	} else {
		bc.br.Reset(c)
	}
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
	status, retryAfter, answer, err := bc.roundTrip()
	if err != nil {
		bc.close()
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return problem.Newf(problem.Unreachable, "retry; check the broker's log", "POST %s to %s://%s failed: %v", path, bc.scheme, bc.host, err)
	}
	if status >= 300 {
		return client.AnswerError(bc.scheme+"://"+bc.host, "POST", path, status, retryAfter, answer)
	}
	if err := json.Unmarshal(answer, out); err != nil {
		return problem.Newf("BAD_ANSWER", "report it with the broker's version", "decoding the answer of POST %s: %v", path, err)
	}
	return nil
}

// roundTrip writes bc.req and reads the whole answer into bc.body; it returns
// the answer's status and Retry-After with it.
func (bc *benchConn) roundTrip() (int, string, []byte, error) {
	if _, err := bc.conn.Write(bc.req); err != nil {
		return 0, "", nil, err
	}
	resp, err := http.ReadResponse(bc.br, nil)
	if err != nil {
		return 0, "", nil, err
	}
	defer resp.Body.Close()
	b := bc.body[:0]
	for {
		if len(b) == cap(b) {
			if len(b) >= 64<<20 {
				return 0, "", nil, problem.New(problem.TooLarge, "the answer is over 64 MiB", "check that the URL points at an AgentKeys broker")
			}
			b = append(b, 0)[:len(b)]
		}
		n, err := resp.Body.Read(b[len(b):cap(b)])
		b = b[:len(b)+n]
		if err == io.EOF {
			break
		}
		if err != nil {
			return 0, "", nil, err
		}
	}
	bc.body = b
	if resp.Close {
		bc.close()
	}
	return resp.StatusCode, resp.Header.Get("Retry-After"), b, nil
}
