package api

import (
	"net/http"

	"github.com/agentkeys/agentkeys/internal/agent"
	"github.com/agentkeys/agentkeys/internal/apiv1"
	"github.com/agentkeys/agentkeys/internal/broker"
)

func (s *server) routesAgent(handle func(string, func(http.ResponseWriter, *http.Request) error)) {
	handle("POST /v1/pair/requests", s.anon(broker.AnonPair, s.pairRequest))
	handle("GET /v1/pair/requests", s.authed(s.pairPending))
	handle("GET /v1/pair/requests/{id}", s.anon(broker.AnonPoll, s.pairPoll))
	handle("POST /v1/pair/requests/{id}/approve", s.authed(s.pairApprove))
	handle("POST /v1/pair/requests/{id}/deny", s.authed(s.pairDeny))
	handle("GET /v1/agents", s.authed(s.agentList))
	handle("POST /v1/agents/{alias}/scope", s.authed(s.agentScope))
	handle("POST /v1/agents/{alias}/revoke", s.authed(s.agentRevoke))
	handle("POST /v1/agents/{alias}/teardown", s.authed(s.agentTeardown))
	handle("GET /v1/agent/credentials", s.authed(s.agentCredentials))
}

// proofOf collects a request's DPoP proof and what it must match.
func proofOf(r *http.Request) broker.Proof {
	return broker.Proof{JWS: r.Header.Get("DPoP"), Method: r.Method, Path: r.URL.EscapedPath()}
}

func (s *server) pairRequest(w http.ResponseWriter, r *http.Request) error {
	var body apiv1.PairRequest
	if err := decode(r, &body); err != nil {
		return err
	}
	res, err := s.b.RequestPairing(r.Context(), body, s.source(r).String())
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusCreated, res)
	return nil
}

func (s *server) pairPending(w http.ResponseWriter, r *http.Request, c *broker.Caller) error {
	list, err := s.b.PendingPairs(r.Context(), c)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, apiv1.PairList{Requests: list})
	return nil
}

func (s *server) pairPoll(w http.ResponseWriter, r *http.Request) error {
	st, err := s.b.PollPairing(r.Context(), r.PathValue("id"), proofOf(r))
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, st)
	return nil
}

func (s *server) pairApprove(w http.ResponseWriter, r *http.Request, c *broker.Caller) error {
	var d apiv1.Decision
	if err := decode(r, &d); err != nil {
		return err
	}
	a, err := s.b.ApprovePairing(r.Context(), c, r.PathValue("id"), d)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, agentOut(a))
	return nil
}

func (s *server) pairDeny(w http.ResponseWriter, r *http.Request, c *broker.Caller) error {
	var d apiv1.Decision
	if err := decode(r, &d); err != nil {
		return err
	}
	if err := s.b.DenyPairing(r.Context(), c, r.PathValue("id"), d); err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, map[string]bool{"denied": true})
	return nil
}

func (s *server) agentList(w http.ResponseWriter, r *http.Request, c *broker.Caller) error {
	list, err := s.b.Agents(r.Context(), c)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, apiv1.AgentList{Agents: each(list, func(a agent.Agent) apiv1.Agent { return apiv1.Agent(a) })})
	return nil
}

func (s *server) agentScope(w http.ResponseWriter, r *http.Request, c *broker.Caller) error {
	var e apiv1.ScopeEdit
	if err := decode(r, &e); err != nil {
		return err
	}
	a, err := s.b.SetScope(r.Context(), c, r.PathValue("alias"), e)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, agentOut(a))
	return nil
}

func (s *server) agentRevoke(w http.ResponseWriter, r *http.Request, c *broker.Caller) error {
	a, err := s.b.RevokeAgent(r.Context(), c, r.PathValue("alias"))
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, agentOut(a))
	return nil
}

func (s *server) agentTeardown(w http.ResponseWriter, r *http.Request, c *broker.Caller) error {
	n, err := s.b.Teardown(r.Context(), c, r.PathValue("alias"))
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, apiv1.TeardownResult{Alias: r.PathValue("alias"), Deleted: n})
	return nil
}

func (s *server) agentCredentials(w http.ResponseWriter, r *http.Request, c *broker.Caller) error {
	list, approval, err := s.b.AgentServices(r.Context(), c)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, apiv1.ServiceList{Services: list, ApprovalRequired: approval})
	return nil
}
