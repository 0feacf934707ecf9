package api

// The mail routes (§9): the owner's domains, inboxes and grants.

import (
	"net/http"

	"github.com/agentkeys/agentkeys/internal/apiv1"
	"github.com/agentkeys/agentkeys/internal/broker"
	"github.com/agentkeys/agentkeys/internal/mail"
	"github.com/agentkeys/agentkeys/internal/maildns"
)

func domainOut(d mail.Domain) apiv1.Domain { return apiv1.Domain(d) }
func inboxOut(in mail.Inbox) apiv1.Inbox   { return apiv1.Inbox(in) }
func grantOut(g mail.Grant) apiv1.Grant    { return apiv1.Grant(g) }
func listingOut(l mail.Listed) apiv1.InboxListing {
	return apiv1.InboxListing{Inbox: inboxOut(l.Inbox), Grants: each(l.Grants, grantOut)}
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
	var body apiv1.DomainBody
	if err := decode(r, &body); err != nil {
		return err
	}
	d, err := s.b.AddDomain(r.Context(), c, body.Name)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusCreated, domainOut(*d))
	return nil
}

func (s *server) domainList(w http.ResponseWriter, r *http.Request, c *broker.Caller) error {
	list, err := s.b.Domains(r.Context(), c)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, apiv1.DomainList{Domains: each(list, domainOut)})
	return nil
}

func (s *server) domainRemove(w http.ResponseWriter, r *http.Request, c *broker.Caller) error {
	d, err := s.b.RemoveDomain(r.Context(), c, r.PathValue("name"))
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, domainOut(*d))
	return nil
}

func (s *server) domainDKIM(w http.ResponseWriter, r *http.Request, c *broker.Caller) error {
	keys, err := s.b.DKIMKeys(r.Context(), c, r.PathValue("name"))
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, apiv1.DKIMList{Domain: maildns.Normalize(r.PathValue("name")), Keys: keys})
	return nil
}

func (s *server) inboxCreate(w http.ResponseWriter, r *http.Request, c *broker.Caller) error {
	var body apiv1.InboxBody
	if err := decode(r, &body); err != nil {
		return err
	}
	in, err := s.b.CreateInbox(r.Context(), c, body.Agent, body.Domain)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusCreated, inboxOut(*in))
	return nil
}

func (s *server) inboxList(w http.ResponseWriter, r *http.Request, c *broker.Caller) error {
	list, err := s.b.Inboxes(r.Context(), c)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, apiv1.InboxList{Inboxes: each(list, listingOut)})
	return nil
}

func (s *server) inboxDelete(w http.ResponseWriter, r *http.Request, c *broker.Caller) error {
	in, err := s.b.DeleteInbox(r.Context(), c, r.PathValue("address"))
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, inboxOut(*in))
	return nil
}

func (s *server) inboxGrant(revoke bool) func(http.ResponseWriter, *http.Request, *broker.Caller) error {
	return func(w http.ResponseWriter, r *http.Request, c *broker.Caller) error {
		var body apiv1.GrantBody
		if err := decode(r, &body); err != nil {
			return err
		}
		g, err := s.b.GrantInbox(r.Context(), c, r.PathValue("address"), body.Agent, body.Rights, revoke)
		if err != nil {
			return err
		}
		writeJSON(w, http.StatusOK, grantOut(*g))
		return nil
	}
}
