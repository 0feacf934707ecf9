package client

import (
	"context"
	"net/http"
	"net/url"

	"github.com/agentkeys/agentkeys/internal/apiv1"
)

// AddDomain makes a mail domain the owner's.
func (s *Session) AddDomain(ctx context.Context, name string) (*apiv1.Domain, error) {
	var d apiv1.Domain
	return &d, s.do(ctx, http.MethodPost, "/v1/mail/domains", apiv1.DomainBody{Name: name}, &d)
}

// RemoveDomain gives up one of the owner's mail domains.
func (s *Session) RemoveDomain(ctx context.Context, name string) (*apiv1.Domain, error) {
	var d apiv1.Domain
	return &d, s.do(ctx, http.MethodDelete, "/v1/mail/domains/"+url.PathEscape(name), nil, &d)
}

// Domains lists the owner's mail domains.
func (s *Session) Domains(ctx context.Context) ([]apiv1.Domain, error) {
	var l apiv1.DomainList
	err := s.do(ctx, http.MethodGet, "/v1/mail/domains", nil, &l)
	return l.Domains, err
}

// DKIMKeys fetches the public DKIM keys of one of the owner's domains.
func (s *Session) DKIMKeys(ctx context.Context, domain string) ([]apiv1.DKIMKey, error) {
	var l apiv1.DKIMList
	err := s.do(ctx, http.MethodGet, "/v1/mail/domains/"+url.PathEscape(domain)+"/dkim", nil, &l)
	return l.Keys, err
}

// CreateInbox creates the inbox of agent alias on domain ("" = the owner's one domain).
func (s *Session) CreateInbox(ctx context.Context, alias, domain string) (*apiv1.Inbox, error) {
	var in apiv1.Inbox
	return &in, s.do(ctx, http.MethodPost, "/v1/mail/inboxes", apiv1.InboxBody{Agent: alias, Domain: domain}, &in)
}

// Inboxes lists the owner's inboxes (deleted ones too) with their grants.
func (s *Session) Inboxes(ctx context.Context) ([]apiv1.InboxListing, error) {
	var l apiv1.InboxList
	err := s.do(ctx, http.MethodGet, "/v1/mail/inboxes", nil, &l)
	return l.Inboxes, err
}

// DeleteInbox deletes one of the owner's inboxes.
func (s *Session) DeleteInbox(ctx context.Context, address string) (*apiv1.Inbox, error) {
	var in apiv1.Inbox
	return &in, s.do(ctx, http.MethodDelete, "/v1/mail/inboxes/"+url.PathEscape(address), nil, &in)
}

// GrantInbox gives (revoke: takes away) rights of agent alias on an inbox and
// returns the rights it holds then.
func (s *Session) GrantInbox(ctx context.Context, address, alias string, rights []string, revoke bool) (*apiv1.Grant, error) {
	op := "/grant"
	if revoke {
		op = "/revoke"
	}
	var g apiv1.Grant
	return &g, s.do(ctx, http.MethodPost, "/v1/mail/inboxes/"+url.PathEscape(address)+op, apiv1.GrantBody{Agent: alias, Rights: rights}, &g)
}
