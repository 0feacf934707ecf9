package client

import (
	"context"
	"crypto/ecdsa"
	"encoding/json"
	"errors"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/agentkeys/agentkeys/internal/apiv1"
	"github.com/agentkeys/agentkeys/internal/coalesce"
	"github.com/agentkeys/agentkeys/internal/dpop"
	"github.com/agentkeys/agentkeys/internal/problem"
)

// RequestPairing files a daemon's signed pair request.
func (c *Client) RequestPairing(ctx context.Context, r apiv1.PairRequest) (*apiv1.PairCreated, error) {
	var out apiv1.PairCreated
	return &out, c.Do(ctx, http.MethodPost, "/v1/pair/requests", r, &out)
}

// proven sends a request with a fresh DPoP proof made by s (and the bearer
// token, if any). A broker that has just restarted refuses a proof dated
// before it started (its memory of used proofs is new) with a pause to wait;
// then one new proof is made after that pause. The refusal comes before the
// broker does anything, so the retry repeats nothing.
func (c *Client) proven(ctx context.Context, s *dpop.Signer, method, path, token string, body, out any) error {
	htu, _, _ := strings.Cut(path, "?")
	htu = c.base + htu
	for retried := false; ; retried = true {
		p, err := s.Sign(method, htu, c.now())
		if err != nil {
			return err
		}
		h := []string{"DPoP", p}
		if token != "" {
			h = append(h, "Authorization", "Bearer "+token)
		}
		err = c.Do(ctx, method, path, body, out, h...)
		wait, early := ProofBeforeStart(err)
		if retried || !early {
			return err
		}
		if c.sleep(ctx, wait) != nil {
			return err
		}
	}
}

// ProofBeforeStart reports whether err is a broker's refusal of a proof dated
// before it started, and how long it asks to wait before a new proof: an
// UNAUTHENTICATED with a pause of 1–2 s, which no other refusal carries.
func ProofBeforeStart(err error) (time.Duration, bool) {
	var pe *problem.Error
	if !errors.As(err, &pe) || pe.Code != problem.Unauthenticated || pe.RetryAfter < 1 || pe.RetryAfter > 2 {
		return 0, false
	}
	return time.Duration(pe.RetryAfter) * time.Second, true
}

// PollPairing asks for the state of pair request id, proven with its proof key.
func (c *Client) PollPairing(ctx context.Context, id string, key *ecdsa.PrivateKey) (*apiv1.PairStatus, error) {
	var out apiv1.PairStatus
	s, err := dpop.NewSigner(key, "")
	if err != nil {
		return nil, err
	}
	return &out, c.proven(ctx, s, http.MethodGet, "/v1/pair/requests/"+url.PathEscape(id), "", nil, &out)
}

// PendingPairs lists the owner's pending pair requests.
func (s *Session) PendingPairs(ctx context.Context) ([]apiv1.PendingPair, error) {
	var l apiv1.PairList
	err := s.do(ctx, http.MethodGet, "/v1/pair/requests", nil, &l)
	return l.Requests, err
}

// ApprovePairing approves a pair request with a signed decision.
func (s *Session) ApprovePairing(ctx context.Context, id string, d apiv1.Decision) (*apiv1.Agent, error) {
	var a apiv1.Agent
	return &a, s.do(ctx, http.MethodPost, "/v1/pair/requests/"+url.PathEscape(id)+"/approve", d, &a)
}

// DenyPairing denies a pair request with a signed decision.
func (s *Session) DenyPairing(ctx context.Context, id string, d apiv1.Decision) error {
	return s.do(ctx, http.MethodPost, "/v1/pair/requests/"+url.PathEscape(id)+"/deny", d, nil)
}

// Agents lists the owner's agents.
func (s *Session) Agents(ctx context.Context) ([]apiv1.Agent, error) {
	var l apiv1.AgentList
	err := s.do(ctx, http.MethodGet, "/v1/agents", nil, &l)
	return l.Agents, err
}

// SetScope edits an agent's scope.
func (s *Session) SetScope(ctx context.Context, alias string, e apiv1.ScopeEdit) (*apiv1.Agent, error) {
	var a apiv1.Agent
	return &a, s.do(ctx, http.MethodPost, "/v1/agents/"+url.PathEscape(alias)+"/scope", e, &a)
}

// RevokeAgent revokes an agent's sessions.
func (s *Session) RevokeAgent(ctx context.Context, alias string) (*apiv1.Agent, error) {
	var a apiv1.Agent
	return &a, s.do(ctx, http.MethodPost, "/v1/agents/"+url.PathEscape(alias)+"/revoke", nil, &a)
}

// Teardown deletes an agent's credentials and revokes it.
func (s *Session) Teardown(ctx context.Context, alias string) (*apiv1.TeardownResult, error) {
	var r apiv1.TeardownResult
	return &r, s.do(ctx, http.MethodPost, "/v1/agents/"+url.PathEscape(alias)+"/teardown", nil, &r)
}

// AgentSession is a client of an agent session: every request carries the
// bearer token and a fresh DPoP proof signed by the daemon's proof key. Keep
// one for the session: it encodes what every proof shares once.
type AgentSession struct {
	*Client
	token  string
	signer *dpop.Signer
	bad    error                                           // the key is not a P-256 key: every request fails with it
	reads  *coalesce.Coalescer[coalescedRead, ReadOutcome] // ReadCoalesced's, shared by the copies WithClock makes
}

// WithAgent returns a client of the agent session token bound to key.
func (c *Client) WithAgent(token string, key *ecdsa.PrivateKey) *AgentSession {
	s, err := dpop.NewSigner(key, token)
	return &AgentSession{Client: c, token: token, signer: s, bad: err,
		reads: &coalesce.Coalescer[coalescedRead, ReadOutcome]{Run: readCoalesced, Max: apiv1.MaxReadBatch, Flights: 2, Timeout: c.hc.Timeout}}
}

// WithClock returns a copy of a whose clock is now (see Client.WithClock).
func (a *AgentSession) WithClock(now func() time.Time) *AgentSession {
	cc := *a
	cc.Client = a.Client.WithClock(now)
	return &cc
}

func (a *AgentSession) do(ctx context.Context, method, path string, body, out any) error {
	if a.bad != nil {
		return a.bad
	}
	return a.proven(ctx, a.signer, method, path, a.token, body, out)
}

// Read asks for a credential boxed for the session channel: a POST without a
// body (the broker reads it as an empty apiv1.ReadBody, with nothing to decode).
func (a *AgentSession) Read(ctx context.Context, service string) (*apiv1.ReadResult, error) {
	var r apiv1.ReadResult
	return &r, a.do(ctx, http.MethodPost, "/v1/credentials/"+url.PathEscape(service)+"/read", nil, &r)
}

// ReadOutcome is one read of ReadMany: its Result, or Err, the broker's
// refusal of that read.
type ReadOutcome struct {
	Result *apiv1.ReadResult
	Err    error
}

// ReadMany asks for several credentials boxed for the session channel in one
// request (POST /v1/reads, at most apiv1.MaxReadBatch): one outcome per
// service, in order. An error is the request's own (nothing was read).
func (a *AgentSession) ReadMany(ctx context.Context, services []string) ([]ReadOutcome, error) {
	var res apiv1.ReadBatchResult
	if err := a.do(ctx, http.MethodPost, "/v1/reads", apiv1.ReadBatch{Services: services}, &res); err != nil {
		return nil, err
	}
	if len(res.Results) != len(services) {
		return nil, problem.Newf(problem.Internal, "check that the URL points at an AgentKeys broker",
			"the broker answered %d reads for %d services", len(res.Results), len(services))
	}
	out := make([]ReadOutcome, len(services))
	for i, o := range res.Results {
		var p problem.Error
		switch {
		case o.Result != nil:
			out[i].Result = o.Result
		case json.Unmarshal(o.Error, &p) == nil && p.Code != "":
			out[i].Err = &p
		default:
			out[i].Err = problem.Newf(problem.Internal, "check that the URL points at an AgentKeys broker",
				"the broker answered read %d of %d with neither a credential nor an error", i+1, len(services))
		}
	}
	return out, nil
}

// ReadCoalesced is Read, sent together with the session's other reads,
// group-commit style: a read asked while two are on their way to the broker
// waits for one of them to land, and the reads that waited together go as one
// ReadMany, with one proof. A read on an idle session goes at once, alone. If
// ctx ends first, it returns at once; a read already sent is still made (and
// audited) by the broker, as when a caller gives up on a single read in
// flight.
func (a *AgentSession) ReadCoalesced(ctx context.Context, service string) (*apiv1.ReadResult, error) {
	o, err := a.reads.Do(ctx, coalescedRead{a, service})
	if err != nil {
		return nil, err
	}
	return o.Result, o.Err
}

// coalescedRead is one read of ReadCoalesced: of service, through a (the
// caller's copy of the session, for its clock).
type coalescedRead struct {
	a       *AgentSession
	service string
}

// readCoalesced sends one batch of ReadCoalesced: a single read alone, else
// one ReadMany through the first caller's copy (they are all of one session).
func readCoalesced(ctx context.Context, in []coalescedRead) ([]ReadOutcome, error) {
	a := in[0].a
	if len(in) == 1 {
		res, err := a.Read(ctx, in[0].service)
		return []ReadOutcome{{Result: res, Err: err}}, nil
	}
	services := make([]string, len(in))
	for i, r := range in {
		services[i] = r.service
	}
	return a.ReadMany(ctx, services)
}

// Services lists the services the agent may read, and which of them need the
// owner's approval for each read.
func (a *AgentSession) Services(ctx context.Context) (*apiv1.ServiceList, error) {
	var l apiv1.ServiceList
	return &l, a.do(ctx, http.MethodGet, "/v1/agent/credentials", nil, &l)
}

// Whoami fetches the agent session's identity.
func (a *AgentSession) Whoami(ctx context.Context) (*apiv1.Whoami, error) {
	var w apiv1.Whoami
	return &w, a.do(ctx, http.MethodGet, "/v1/whoami", nil, &w)
}
