package client

import (
	"context"
	"net/http"
	"net/url"

	"github.com/agentkeys/agentkeys/internal/apiv1"
)

// Session is a client bound to a session token.
type Session struct {
	*Client
	token string
}

// WithToken returns a client that sends token as its bearer credential.
func (c *Client) WithToken(token string) *Session { return &Session{Client: c, token: token} }

func (s *Session) do(ctx context.Context, method, path string, body, out any) error {
	return s.Do(ctx, method, path, body, out, "Authorization", "Bearer "+s.token)
}

// Entries fetches one page of GET /v1/ledger/entries with the owner's session:
// the owner's own private entries come in full, everyone else's redacted.
func (s *Session) Entries(ctx context.Context, from uint64, limit int) (*apiv1.EntriesPage, error) {
	var p apiv1.EntriesPage
	return &p, s.do(ctx, http.MethodGet, entriesPath(from, limit), nil, &p)
}

// CreateAccount registers a new owner (POST /v1/accounts).
func (c *Client) CreateAccount(ctx context.Context, l apiv1.Login) (*apiv1.SessionGrant, error) {
	var g apiv1.SessionGrant
	return &g, c.Do(ctx, http.MethodPost, "/v1/accounts", l, &g)
}

// OpenSession logs an existing owner in (POST /v1/sessions).
func (c *Client) OpenSession(ctx context.Context, l apiv1.Login) (*apiv1.SessionGrant, error) {
	var g apiv1.SessionGrant
	return &g, c.Do(ctx, http.MethodPost, "/v1/sessions", l, &g)
}

// Whoami fetches the session's identity.
func (s *Session) Whoami(ctx context.Context) (*apiv1.Whoami, error) {
	var w apiv1.Whoami
	return &w, s.do(ctx, http.MethodGet, "/v1/whoami", nil, &w)
}

// Logout revokes the session.
func (s *Session) Logout(ctx context.Context) error {
	return s.do(ctx, http.MethodDelete, "/v1/sessions/current", nil, nil)
}

// Store stores an encrypted credential.
func (s *Session) Store(ctx context.Context, b apiv1.StoreBody) (*apiv1.Credential, error) {
	var c apiv1.Credential
	return &c, s.do(ctx, http.MethodPost, "/v1/credentials", b, &c)
}

// Read asks for a credential re-encrypted to the caller.
func (s *Session) Read(ctx context.Context, service string, b apiv1.ReadBody) (*apiv1.ReadResult, error) {
	var r apiv1.ReadResult
	return &r, s.do(ctx, http.MethodPost, "/v1/credentials/"+url.PathEscape(service)+"/read", b, &r)
}

// List lists credential records.
func (s *Session) List(ctx context.Context) ([]apiv1.Credential, error) {
	var l apiv1.CredentialList
	err := s.do(ctx, http.MethodGet, "/v1/credentials", nil, &l)
	return l.Credentials, err
}

// Delete removes a credential.
func (s *Session) Delete(ctx context.Context, service, agent string) error {
	q := ""
	if agent != "" {
		q = "?agent=" + url.QueryEscape(agent)
	}
	return s.do(ctx, http.MethodDelete, "/v1/credentials/"+url.PathEscape(service)+q, nil, nil)
}

// Approvals lists approval requests.
func (s *Session) Approvals(ctx context.Context) ([]apiv1.Approval, error) {
	var l apiv1.ApprovalList
	err := s.do(ctx, http.MethodGet, "/v1/approvals", nil, &l)
	return l.Approvals, err
}

// Approve grants an approval request.
func (s *Session) Approve(ctx context.Context, id string) (*apiv1.Approval, error) {
	var a apiv1.Approval
	return &a, s.do(ctx, http.MethodPost, "/v1/approvals/"+url.PathEscape(id)+"/approve", nil, &a)
}

// UsagePage fetches a page of the audit trail; query holds agent, service,
// since, from and limit.
func (s *Session) UsagePage(ctx context.Context, query url.Values) (*apiv1.UsageList, error) {
	var l apiv1.UsageList
	return &l, s.do(ctx, http.MethodGet, "/v1/usage?"+query.Encode(), nil, &l)
}

// Usage fetches the rows of a page of the audit trail (see UsagePage).
func (s *Session) Usage(ctx context.Context, query url.Values) ([]apiv1.Usage, error) {
	l, err := s.UsagePage(ctx, query)
	return l.Usage, err
}
