// Package client is the Go client of the broker's HTTP API, used by the CLI, the
// daemon and the end-to-end tests. It turns error bodies back into *problem.Error
// and network failures into UNREACHABLE; it never logs a request or response body.
package client

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/agentkeys/agentkeys/internal/apiv1"
	"github.com/agentkeys/agentkeys/internal/backoff"
	"github.com/agentkeys/agentkeys/internal/entry"
	"github.com/agentkeys/agentkeys/internal/problem"
)

// Client talks to one broker.
type Client struct {
	base string
	hc   *http.Client
	now  func() time.Time // dates DPoP proofs and governance entries (WithClock)
	// sleep is the pause before a proof is made again (backoff.Sleep; a test
	// moves its clock instead).
	sleep func(ctx context.Context, d time.Duration) error
}

// New returns a client for the broker at server (http or https URL).
func New(server string) (*Client, error) {
	return NewWith(server, &http.Client{Timeout: 30 * time.Second})
}

// NewWith is New with the HTTP client hc, e.g. a load generator's, which keeps
// as many idle connections as it has workers.
func NewWith(server string, hc *http.Client) (*Client, error) {
	u, err := url.Parse(server)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, problem.Newf(problem.BadRequest, "pass the broker URL, e.g. --server http://127.0.0.1:8090 (or set AGENTKEYS_SERVER to it)",
			"%q is not an http(s) URL", server)
	}
	return &Client{base: strings.TrimRight(u.String(), "/"), hc: hc, now: time.Now, sleep: backoff.Sleep}, nil
}

// WithClock returns a copy of c whose clock is now (nil = time.Now): it dates
// DPoP proofs, governance entries and pair requests. A daemon passes its own
// clock, a test a clock.Fake.
func (c *Client) WithClock(now func() time.Time) *Client {
	cc := *c
	cc.now = now
	if now == nil {
		cc.now = time.Now
	}
	return &cc
}

// Now returns the time by c's clock.
func (c *Client) Now() time.Time { return c.now() }

// Server returns the broker URL.
func (c *Client) Server() string { return c.base }

// Do sends a request with an optional JSON body and decodes a JSON answer into out.
func (c *Client) Do(ctx context.Context, method, path string, body, out any, headers ...string) error {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, rd)
	if err != nil {
		return err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Set(headers[i], headers[i+1])
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return problem.Newf(problem.Unreachable, "check that `agentkeys server` is running there and the URL is right",
			"cannot reach the broker at %s", c.base)
	}
	defer resp.Body.Close()
	data, err := readAnswer(resp)
	if err != nil {
		return problem.Newf(problem.Unreachable, "retry", "reading the answer from %s failed", c.base)
	}
	if resp.StatusCode >= 300 {
		return AnswerError(c.base, method, path, resp.StatusCode, resp.Header.Get("Retry-After"), data)
	}
	if out == nil {
		return nil
	}
	if err := json.Unmarshal(data, out); err != nil {
		return fmt.Errorf("decoding answer of %s %s: %w", method, path, err)
	}
	return nil
}

// AnswerError is the error a broker's answer with status >= 300 stands for:
// the broker's own problem from its body, else a rate limit in front of the
// broker (a proxy's 429, with its Retry-After), else an error naming the URL.
func AnswerError(base, method, path string, status int, retryAfter string, body []byte) error {
	var eb struct {
		Error *problem.Error `json:"error"`
	}
	if json.Unmarshal(body, &eb) == nil && eb.Error != nil && eb.Error.Code != "" {
		return eb.Error
	}
	if status == http.StatusTooManyRequests {
		p := problem.Newf(problem.RateLimited, "wait and retry; the operator of "+base+" sets the limit",
			"%s %s was refused for a rate limit (HTTP 429)", method, path)
		if n, err := strconv.Atoi(retryAfter); err == nil && n > 0 {
			p.RetryAfter = min(n, 3600)
		}
		return p
	}
	return problem.Newf(problem.Internal, "check that the URL points at an AgentKeys broker",
		"%s %s answered HTTP %d", method, path, status)
}

// maxAnswer bounds an answer the client reads.
const maxAnswer = 64 << 20

// readAnswer reads resp's body, at most maxAnswer bytes, into a buffer of the
// length the broker announced (io.ReadAll grows one from 512 bytes).
func readAnswer(resp *http.Response) ([]byte, error) {
	var b bytes.Buffer
	if n := resp.ContentLength; n > 0 && n <= maxAnswer {
		b.Grow(int(n) + 1) // +1: ReadFrom sees the end without growing
	}
	_, err := b.ReadFrom(io.LimitReader(resp.Body, maxAnswer))
	return b.Bytes(), err
}

// Enclave fetches GET /v1/enclave.
func (c *Client) Enclave(ctx context.Context) (*apiv1.EnclaveInfo, error) {
	var info apiv1.EnclaveInfo
	return &info, c.Do(ctx, http.MethodGet, "/v1/enclave", nil, &info)
}

// Handoff asks the broker for its seed, sealed to a successor enclave's key
// (POST /v1/enclave/handoff, §10.3).
func (c *Client) Handoff(ctx context.Context, req apiv1.HandoffRequest) (*apiv1.HandoffResponse, error) {
	var out apiv1.HandoffResponse
	return &out, c.Do(ctx, http.MethodPost, "/v1/enclave/handoff", req, &out)
}

// Head fetches GET /v1/ledger/head.
func (c *Client) Head(ctx context.Context) (*apiv1.HeadInfo, error) {
	var h apiv1.HeadInfo
	return &h, c.Do(ctx, http.MethodGet, "/v1/ledger/head", nil, &h)
}

// Entries fetches one page of GET /v1/ledger/entries as anyone sees it: entries of
// owner-private kinds come redacted to their payload commitment.
func (c *Client) Entries(ctx context.Context, from uint64, limit int) (*apiv1.EntriesPage, error) {
	var p apiv1.EntriesPage
	return &p, c.Do(ctx, http.MethodGet, entriesPath(from, limit), nil, &p)
}

func entriesPath(from uint64, limit int) string {
	return fmt.Sprintf("/v1/ledger/entries?from=%d&limit=%d", from, limit)
}

// Submit posts a governance-signed entry.
func (c *Client) Submit(ctx context.Context, e entry.Entry) (entry.Entry, error) {
	var out entry.Entry
	err := c.Do(ctx, http.MethodPost, "/v1/ledger/entries", e, &out)
	return out, err
}
