package client

import (
	"context"
	"net/http"
	"net/url"

	"github.com/agentkeys/agentkeys/internal/api"
	"github.com/agentkeys/agentkeys/internal/mail"
)

// AddDomain makes a mail domain the owner's.
func (s *Session) AddDomain(ctx context.Context, name string) (*mail.Domain, error) {
	var d mail.Domain
	return &d, s.do(ctx, http.MethodPost, "/v1/mail/domains", api.DomainBody{Name: name}, &d)
}

// RemoveDomain gives up one of the owner's mail domains.
func (s *Session) RemoveDomain(ctx context.Context, name string) (*mail.Domain, error) {
	var d mail.Domain
	return &d, s.do(ctx, http.MethodDelete, "/v1/mail/domains/"+url.PathEscape(name), nil, &d)
}

// Domains lists the owner's mail domains.
func (s *Session) Domains(ctx context.Context) ([]mail.Domain, error) {
	var l api.DomainList
	err := s.do(ctx, http.MethodGet, "/v1/mail/domains", nil, &l)
	return l.Domains, err
}

// CreateInbox creates the inbox of agent alias on domain ("" = the owner's one domain).
func (s *Session) CreateInbox(ctx context.Context, alias, domain string) (*mail.Inbox, error) {
	var in mail.Inbox
	return &in, s.do(ctx, http.MethodPost, "/v1/mail/inboxes", api.InboxBody{Agent: alias, Domain: domain}, &in)
}

// Inboxes lists the owner's inboxes (deleted ones too) with their grants.
func (s *Session) Inboxes(ctx context.Context) ([]mail.Listed, error) {
	var l api.InboxList
	err := s.do(ctx, http.MethodGet, "/v1/mail/inboxes", nil, &l)
	return l.Inboxes, err
}

// DeleteInbox deletes one of the owner's inboxes.
func (s *Session) DeleteInbox(ctx context.Context, address string) (*mail.Inbox, error) {
	var in mail.Inbox
	return &in, s.do(ctx, http.MethodDelete, "/v1/mail/inboxes/"+url.PathEscape(address), nil, &in)
}

// GrantInbox gives (revoke: takes away) rights of agent alias on an inbox and
// returns the rights it holds then.
func (s *Session) GrantInbox(ctx context.Context, address, alias string, rights []string, revoke bool) (*mail.Grant, error) {
	op := "/grant"
	if revoke {
		op = "/revoke"
	}
	var g mail.Grant
	return &g, s.do(ctx, http.MethodPost, "/v1/mail/inboxes/"+url.PathEscape(address)+op, api.GrantBody{Agent: alias, Rights: rights}, &g)
}

// DKIMKeys fetches the public DKIM keys of one of the owner's domains.
func (s *Session) DKIMKeys(ctx context.Context, domain string) ([]mail.DKIMKey, error) {
	var l api.DKIMList
	err := s.do(ctx, http.MethodGet, "/v1/mail/domains/"+url.PathEscape(domain)+"/dkim", nil, &l)
	return l.Keys, err
}
