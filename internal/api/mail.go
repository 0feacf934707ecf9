package api

import (
	"net/http"

	"github.com/agentkeys/agentkeys/internal/broker"
	"github.com/agentkeys/agentkeys/internal/mail"
)

// The wire bodies of the mail routes (kept together here, to move with the
// other body types).

// DomainBody is the body of POST /v1/mail/domains.
type DomainBody struct {
	Name string `json:"name"`
}

// DomainList is the body of GET /v1/mail/domains.
type DomainList struct {
	Domains []mail.Domain `json:"domains"`
}

// InboxBody is the body of POST /v1/mail/inboxes: the agent's alias and the
// domain ("" = the owner's one domain).
type InboxBody struct {
	Agent  string `json:"agent"`
	Domain string `json:"domain,omitempty"`
}

// InboxList is the body of GET /v1/mail/inboxes.
type InboxList struct {
	Inboxes []mail.Listed `json:"inboxes"`
}

// DKIMList is the body of GET /v1/mail/domains/{name}/dkim.
type DKIMList struct {
	Domain string         `json:"domain"`
	Keys   []mail.DKIMKey `json:"keys"`
}

// GrantBody is the body of POST /v1/mail/inboxes/{address}/grant and …/revoke.
type GrantBody struct {
	Agent  string   `json:"agent"`
	Rights []string `json:"rights"`
}

func (s *server) routesMail(handle func(string, func(http.ResponseWriter, *http.Request) error)) {
	handle("POST /v1/mail/domains", s.authed(s.domainAdd))
	handle("GET /v1/mail/domains", s.authed(s.domainList))
	handle("DELETE /v1/mail/domains/{name}", s.authed(s.domainRemove))
	handle("GET /v1/mail/domains/{name}/dkim", s.authed(s.domainDKIM))
	handle("POST /v1/mail/inboxes", s.authed(s.inboxCreate))
	handle("GET /v1/mail/inboxes", s.authed(s.inboxList))
	handle("DELETE /v1/mail/inboxes/{address}", s.authed(s.inboxDelete))
	handle("POST /v1/mail/inboxes/{address}/grant", s.authed(s.inboxGrant(false)))
	handle("POST /v1/mail/inboxes/{address}/revoke", s.authed(s.inboxGrant(true)))
}

func (s *server) domainAdd(w http.ResponseWriter, r *http.Request, c *broker.Caller) error {
	var body DomainBody
	if err := decode(r, &body); err != nil {
		return err
	}
	d, err := s.b.AddDomain(r.Context(), c, body.Name)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusCreated, d)
	return nil
}

func (s *server) domainList(w http.ResponseWriter, r *http.Request, c *broker.Caller) error {
	list, err := s.b.Domains(r.Context(), c)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, DomainList{Domains: list})
	return nil
}

func (s *server) domainRemove(w http.ResponseWriter, r *http.Request, c *broker.Caller) error {
	d, err := s.b.RemoveDomain(r.Context(), c, r.PathValue("name"))
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, d)
	return nil
}

func (s *server) domainDKIM(w http.ResponseWriter, r *http.Request, c *broker.Caller) error {
	keys, err := s.b.DKIMKeys(r.Context(), c, r.PathValue("name"))
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, DKIMList{Domain: mail.NormalizeDomain(r.PathValue("name")), Keys: keys})
	return nil
}

func (s *server) inboxCreate(w http.ResponseWriter, r *http.Request, c *broker.Caller) error {
	var body InboxBody
	if err := decode(r, &body); err != nil {
		return err
	}
	in, err := s.b.CreateInbox(r.Context(), c, body.Agent, body.Domain)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusCreated, in)
	return nil
}

func (s *server) inboxList(w http.ResponseWriter, r *http.Request, c *broker.Caller) error {
	list, err := s.b.Inboxes(r.Context(), c)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, InboxList{Inboxes: list})
	return nil
}

func (s *server) inboxDelete(w http.ResponseWriter, r *http.Request, c *broker.Caller) error {
	in, err := s.b.DeleteInbox(r.Context(), c, r.PathValue("address"))
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, in)
	return nil
}

func (s *server) inboxGrant(revoke bool) func(http.ResponseWriter, *http.Request, *broker.Caller) error {
	return func(w http.ResponseWriter, r *http.Request, c *broker.Caller) error {
		var body GrantBody
		if err := decode(r, &body); err != nil {
			return err
		}
		g, err := s.b.GrantInbox(r.Context(), c, r.PathValue("address"), body.Agent, body.Rights, revoke)
		if err != nil {
			return err
		}
		writeJSON(w, http.StatusOK, g)
		return nil
	}
}
