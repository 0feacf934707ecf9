package daemon

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/agentkeys/agentkeys/internal/httpconn"
	"github.com/agentkeys/agentkeys/internal/problem"
)

// maxSocketAnswer bounds what the client reads from the daemon: a credential is
// at most 64 KiB, JSON-escaped at most six times that.
const maxSocketAnswer = 1 << 20

// SocketClient is the Backend of a thin front (daemon mcp --socket, run
// --socket): it forwards every call to the socket of a daemon that runs as
// another user (daemon serve --socket-group). It holds no key, no token and no
// session, and writes nothing. It is safe for concurrent use.
type SocketClient struct {
	path string
	mu   sync.Mutex
	idle []*httpconn.Conn // kept connections, at most maxIdleSocketConns
}

// maxIdleSocketConns bounds the connections a SocketClient keeps open between
// calls (one per call running at once, up to this many).
const maxIdleSocketConns = 16

// NewSocketClient returns a client of the daemon socket at path.
func NewSocketClient(path string) *SocketClient {
	return &SocketClient{path: path}
}

// socketTimeout bounds one call to the daemon, beyond the time it is asked to
// wait for an approval.
const socketTimeout = 2 * time.Minute

// Get returns a credential's value through the daemon, which waits for the
// owner's approval as long as w.For says (w.Progress is not called: the
// daemon waits). The caller must not log it.
func (c *SocketClient) Get(ctx context.Context, service string, w Wait) ([]byte, error) {
	var q url.Values
	if w.For != 0 {
		q = url.Values{"wait": {strconv.Itoa(int(w.For / time.Second))}}
	}
	var out struct{ Value string }
	if err := c.get(ctx, "/credentials/"+url.PathEscape(service), q, &out, w.For); err != nil {
		return nil, err
	}
	return []byte(out.Value), nil
}

// List returns the services the agent may read now.
func (c *SocketClient) List(ctx context.Context) (*ServiceList, error) {
	var out ServiceList
	if err := c.get(ctx, "/credentials", nil, &out, 0); err != nil {
		return nil, err
	}
	return &out, nil
}

// AWSCredentials asks the daemon for AWS credentials; the cloud defaults
// (STS endpoint, region, audience) are the daemon's.
func (c *SocketClient) AWSCredentials(ctx context.Context, r AWSRequest) (*AWSCredentials, error) {
	q := url.Values{"role_arn": {r.RoleARN}}
	if r.SessionName != "" {
		q.Set("session_name", r.SessionName)
	}
	if r.Duration != 0 {
		q.Set("duration", strconv.Itoa(int(r.Duration)))
	}
	var out AWSCredentials
	if err := c.get(ctx, "/cloud/aws", q, &out, 0); err != nil {
		return nil, err
	}
	return &out, nil
}

// CloudToken asks the daemon for a GCP, Azure or Alibaba Cloud credential;
// the endpoints are the daemon's.
func (c *SocketClient) CloudToken(ctx context.Context, r CloudRequest) (*CloudToken, error) {
	q := url.Values{}
	for k, v := range map[string]string{"audience": r.Audience, "service_account": r.ServiceAccount, "client_id": r.ClientID,
		"tenant_id": r.TenantID, "scope": r.Scope, "role_arn": r.RoleARN, "oidc_provider_arn": r.OIDCProviderARN, "session_name": r.SessionName} {
		if v != "" {
			q.Set(k, v)
		}
	}
	if r.Duration != 0 {
		q.Set("duration", strconv.Itoa(int(r.Duration)))
	}
	var out CloudToken
	if err := c.get(ctx, "/cloud/"+url.PathEscape(r.Provider), q, &out, 0); err != nil {
		return nil, err
	}
	return &out, nil
}

// get checks the socket, sends one request and decodes the answer into out,
// or the daemon's error into a *problem.Error with its code. The daemon has
// socketTimeout to answer, plus wait.
func (c *SocketClient) get(ctx context.Context, path string, q url.Values, out any, wait time.Duration) error {
	return c.call(ctx, http.MethodGet, path, q, nil, out, wait)
}

// call is get with any method and, unless nil, a JSON body.
func (c *SocketClient) call(ctx context.Context, method, path string, q url.Values, body, out any, wait time.Duration) error {
	if err := c.check(); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, socketTimeout+wait)
	defer cancel()
	u := "http://agentkeys" + path
	if q != nil {
		u += "?" + q.Encode()
	}
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, u, rd)
	if err != nil {
		return problem.Newf(CodeNotFound, "check the name", "cannot ask the daemon for %q", path)
	}
	resp, b, err := c.exchange(ctx, req)
	if err != nil {
		return err
	}
	if resp.StatusCode == http.StatusOK {
		if json.Unmarshal(b, out) != nil {
			return problem.Newf(CodeUnreachable, "check that --socket names an agentkeys daemon serve socket", "the daemon at %s sent an answer that is not JSON", c.path)
		}
		return nil
	}
	var eb struct{ Error *problem.Error }
	if json.Unmarshal(b, &eb) != nil || eb.Error == nil || eb.Error.Code == "" {
		return problem.Newf(CodeUnreachable, "check that --socket names an agentkeys daemon serve socket", "the daemon at %s answered %d without an error", c.path, resp.StatusCode)
	}
	if eb.Error.RetryAfter == 0 {
		eb.Error.RetryAfter, _ = strconv.Atoi(resp.Header.Get("Retry-After"))
	}
	return eb.Error
}

// exchange sends req to the daemon and reads its whole answer, on the calling
// goroutine and on a kept connection when there is one (package httpconn). A
// GET that fails on a kept connection before any answer — the daemon closed
// it while it was idle, e.g. a restart — is sent once more on a new one, as
// net/http does; any other request goes on a new connection, so it is never
// sent twice.
func (c *SocketClient) exchange(ctx context.Context, req *http.Request) (*http.Response, []byte, error) {
	get := req.Method == http.MethodGet && req.Body == nil
	for {
		var sc *httpconn.Conn
		if get {
			sc = c.kept()
		}
		reused := sc != nil
		if sc == nil {
			conn, err := (&net.Dialer{}).DialContext(ctx, "unix", c.path)
			if err != nil {
				if errors.Is(err, syscall.EACCES) {
					return nil, nil, c.noAccess()
				}
				return nil, nil, problem.Wrap(err, CodeUnreachable, c.startIt(), "cannot reach the daemon at %s: %v", c.path, err)
			}
			sc = httpconn.New(conn, maxSocketAnswer)
		}
		// The answer is the caller's (dst nil): once kept, sc may serve another call at once.
		resp, b, answered, err := sc.RoundTrip(ctx, req, nil)
		if err == nil {
			if !sc.Closed() {
				c.keep(sc)
			}
			return resp, b, nil
		}
		if reused && !answered && ctx.Err() == nil {
			continue
		}
		if answered {
			return nil, nil, problem.Newf(CodeUnreachable, "retry; if it persists, check the daemon's log", "the daemon at %s sent an unreadable answer", c.path)
		}
		return nil, nil, problem.Wrap(err, CodeUnreachable, c.startIt(), "cannot reach the daemon at %s: %v", c.path, err)
	}
}

// kept returns a kept connection, or nil.
func (c *SocketClient) kept() *httpconn.Conn {
	c.mu.Lock()
	defer c.mu.Unlock()
	if n := len(c.idle); n > 0 {
		sc := c.idle[n-1]
		c.idle = c.idle[:n-1]
		return sc
	}
	return nil
}

// keep keeps sc for a later call, or closes it if enough are kept.
func (c *SocketClient) keep(sc *httpconn.Conn) {
	c.mu.Lock()
	if len(c.idle) < maxIdleSocketConns {
		c.idle = append(c.idle, sc)
		sc = nil
	}
	c.mu.Unlock()
	if sc != nil {
		sc.Close()
	}
}

// check refuses a path that is not a socket and a socket every user may use:
// the daemon never makes one, so it was loosened by hand and serves the
// agent's credentials to the whole machine.
func (c *SocketClient) check() error {
	fi, err := os.Stat(c.path)
	switch {
	case errors.Is(err, fs.ErrPermission):
		return c.noAccess()
	case err != nil:
		return problem.Newf(CodeUnreachable, c.startIt(), "no daemon socket at %s", c.path)
	case fi.Mode()&os.ModeSocket == 0:
		return problem.Newf(CodeUnreachable, "pass the path of the daemon's socket (its --socket)", "%s is not a socket", c.path)
	case fi.Mode().Perm()&0o007 != 0:
		return problem.Newf(CodeDenied, "restart agentkeys daemon serve (it makes the socket 0660 with --socket-group) and do not chmod it",
			"the daemon socket %s is %v: every user of this machine may take the agent's credentials from it", c.path, fi.Mode().Perm())
	}
	return nil
}

func (c *SocketClient) noAccess() error {
	return problem.Newf(CodeDenied, "run the agent as a member of the socket's group (the daemon's --socket-group), with access to its directory",
		"this user may not use the daemon socket %s", c.path)
}

func (c *SocketClient) startIt() string {
	return fmt.Sprintf("start the daemon as its own user: agentkeys daemon serve --socket %s --socket-group AGENT_GROUP", c.path)
}
