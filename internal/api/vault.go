package api

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/agentkeys/agentkeys/internal/apiv1"
	"github.com/agentkeys/agentkeys/internal/broker"
	"github.com/agentkeys/agentkeys/internal/problem"
	"github.com/agentkeys/agentkeys/internal/vault"
)

// authed wraps a handler that needs a session.
func (s *server) authed(h func(http.ResponseWriter, *http.Request, *broker.Caller) error) func(http.ResponseWriter, *http.Request) error {
	return func(w http.ResponseWriter, r *http.Request) error {
		tok, _ := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
		c, err := s.b.AuthenticateRequest(r.Context(), tok, proofOf(r))
		if err != nil {
			return err
		}
		return h(w, r, c)
	}
}

func (s *server) storeCredential(w http.ResponseWriter, r *http.Request, c *broker.Caller) error {
	var body apiv1.StoreBody
	if err := decode(r, &body); err != nil {
		return err
	}
	cr, err := s.b.Store(r.Context(), c, broker.StoreRequest{Service: body.Service, Agent: body.Agent, Ciphertext: body.Ciphertext, Approval: body.Approval})
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusCreated, credentialOut(cr))
	return nil
}

func (s *server) readCredential(w http.ResponseWriter, r *http.Request, c *broker.Caller) error {
	var body apiv1.ReadBody
	if r.ContentLength != 0 {
		if err := decode(r, &body); err != nil {
			return err
		}
	}
	res, err := s.b.Read(r.Context(), c, broker.ReadRequest{Service: r.PathValue("service"), Agent: body.Agent, Recipient: body.Recipient})
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, res)
	return nil
}

// readBatch makes the reads of a ReadBatch, each the read readCredential makes
// (checked, rate-limited and audited on its own), concurrently, so that their
// audit entries commit together; a refused read refuses only itself.
func (s *server) readBatch(w http.ResponseWriter, r *http.Request, c *broker.Caller) error {
	var body apiv1.ReadBatch
	if err := decode(r, &body); err != nil {
		return err
	}
	if n := len(body.Services); n == 0 || n > apiv1.MaxReadBatch {
		return problem.Newf(problem.BadRequest, fmt.Sprintf("send 1 to %d services in one request", apiv1.MaxReadBatch),
			"a batch of reads names %d services", n)
	}
	reqs := make([]broker.ReadRequest, len(body.Services))
	for i, service := range body.Services {
		reqs[i] = broker.ReadRequest{Service: service}
	}
	out := make([]apiv1.ReadOutcome, len(reqs))
	for i, o := range s.b.ReadMany(r.Context(), c, reqs) {
		if o.Err == nil {
			out[i].Result = o.Result
			continue
		}
		p := problem.As(o.Err)
		if p.Code == problem.Internal {
			s.log.Error("request failed", "route", "POST /v1/reads", "err", o.Err.Error())
		}
		out[i].Error, _ = json.Marshal(p)
	}
	writeJSON(w, http.StatusOK, apiv1.ReadBatchResult{Results: out})
	return nil
}

func (s *server) listCredentials(w http.ResponseWriter, r *http.Request, c *broker.Caller) error {
	list, err := s.b.List(r.Context(), c)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, apiv1.CredentialList{Credentials: each(list, func(c vault.Credential) apiv1.Credential { return apiv1.Credential(c) })})
	return nil
}

func (s *server) deleteCredential(w http.ResponseWriter, r *http.Request, c *broker.Caller) error {
	if err := s.b.Delete(r.Context(), c, r.PathValue("service"), r.URL.Query().Get("agent")); err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, map[string]bool{"deleted": true})
	return nil
}

func (s *server) listApprovals(w http.ResponseWriter, r *http.Request, c *broker.Caller) error {
	list, err := s.b.Approvals(r.Context(), c)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, apiv1.ApprovalList{Approvals: each(list, func(a vault.Approval) apiv1.Approval { return apiv1.Approval(a) })})
	return nil
}

func (s *server) approve(w http.ResponseWriter, r *http.Request, c *broker.Caller) error {
	a, err := s.b.Approve(r.Context(), c, r.PathValue("id"))
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, approvalOut(a))
	return nil
}

func (s *server) usage(w http.ResponseWriter, r *http.Request, c *broker.Caller) error {
	q := r.URL.Query()
	f := vault.UsageFilter{Agent: q.Get("agent"), Service: q.Get("service")}
	if v := q.Get("since"); v != "" {
		t, err := time.Parse(time.RFC3339Nano, v)
		if err != nil {
			return problem.New(problem.BadRequest, "since must be an RFC 3339 time", "e.g. since=2026-11-29T00:00:00Z")
		}
		f.Since = t.UnixNano()
	}
	from, err := uintParam(r, "from", 0)
	if err != nil {
		return err
	}
	limit, err := uintParam(r, "limit", apiv1.MaxUsagePage)
	if err != nil {
		return err
	}
	if limit == 0 || limit > apiv1.MaxUsagePage {
		return problem.Newf(problem.BadRequest, "ask for 1 to 1000 rows per page", "limit must be 1..%d", apiv1.MaxUsagePage)
	}
	f.From, f.Limit = from, int(limit)
	list, err := s.b.Usage(r.Context(), c, f)
	if err != nil {
		return err
	}
	out := apiv1.UsageList{Usage: each(list, func(u vault.Usage) apiv1.Usage { return apiv1.Usage(u) })}
	if len(list) == f.Limit {
		next := list[len(list)-1].Seq + 1
		out.Next = &next
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

func (s *server) createAccount(w http.ResponseWriter, r *http.Request) error {
	var l apiv1.Login
	if err := decode(r, &l); err != nil {
		return err
	}
	g, err := s.b.CreateAccount(r.Context(), l)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusCreated, g)
	return nil
}

func (s *server) openSession(w http.ResponseWriter, r *http.Request) error {
	var l apiv1.Login
	if err := decode(r, &l); err != nil {
		return err
	}
	g, err := s.b.OpenSession(r.Context(), l)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusCreated, g)
	return nil
}

func (s *server) logout(w http.ResponseWriter, r *http.Request, c *broker.Caller) error {
	if err := s.b.Logout(r.Context(), c); err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, map[string]bool{"revoked": true})
	return nil
}

func (s *server) whoami(w http.ResponseWriter, _ *http.Request, c *broker.Caller) error {
	writeJSON(w, http.StatusOK, s.b.Whoami(c))
	return nil
}
