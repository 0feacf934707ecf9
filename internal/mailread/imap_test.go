package mailread_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/agentkeys/agentkeys/internal/mailread"
	"github.com/agentkeys/agentkeys/internal/mailread/dovecottest"
	"github.com/agentkeys/agentkeys/internal/mailread/mailreadtest"
	"github.com/agentkeys/agentkeys/internal/problem"
)

func password(p string) func(context.Context) (string, error) {
	return func(context.Context) (string, error) { return p, nil }
}

// TestIMAPSourceConformance: the IMAP source on a real Dovecot, logging in
// with an app password, passes the suite the store source passes.
func TestIMAPSourceConformance(t *testing.T) {
	dc := dovecottest.Start(t)
	mailreadtest.Run(t, func(t *testing.T) mailreadtest.Inbox {
		name, pw := dc.AddUser(t)
		return mailreadtest.Inbox{
			Open: func(t testing.TB) mailread.Source {
				s, err := mailread.NewIMAPSource(mailread.IMAPConfig{Addr: dc.Addr, TLS: mailread.TLSNone, Username: name, Password: password(pw)})
				if err != nil {
					t.Fatal(err)
				}
				return s
			},
			Deliver: func(t testing.TB, raw []byte, at time.Time) { dc.Deliver(t, name, raw, at) },
		}
	})
}

// TestIMAPOAuthBearer: the same client logs in with SASL OAUTHBEARER and a
// token (what the mail edge's IMAP server takes); a wrong token or password
// is DENIED, and neither appears in the error.
func TestIMAPOAuthBearer(t *testing.T) {
	dc := dovecottest.Start(t)
	name, pw := dc.AddUser(t)
	const token = "eyJ0b2tlbi1zdGFuZC1pbiJ9.for-the-test"
	dc.AddToken(name, token)
	dc.Deliver(t, name, mailreadtest.Message("noreply@service.test", "Your code", "Your code is 604219"), time.Now())
	ctx := context.Background()
	open := func(cfg mailread.IMAPConfig) mailread.Source {
		cfg.Addr, cfg.TLS, cfg.Username = dc.Addr, mailread.TLSNone, name
		s, err := mailread.NewIMAPSource(cfg)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		return s
	}
	src := open(mailread.IMAPConfig{Token: password(token)})
	r, err := mailread.WaitForCode(ctx, src, time.Now(), mailread.Query{Timeout: 10 * time.Second})
	if err != nil || r.Code != "604219" {
		t.Fatalf("with a token: %+v %v", r, err)
	}
	for what, cfg := range map[string]mailread.IMAPConfig{
		"wrong token":    {Token: password("not-" + token)},
		"wrong password": {Password: password("not-" + pw)},
	} {
		_, _, err := open(cfg).List(ctx, time.Time{}, 0)
		if p := problem.As(err); p.Code != problem.Denied || strings.Contains(p.Error()+p.Fix, token) || strings.Contains(p.Error()+p.Fix, pw) {
			t.Errorf("%s: %v (fix %q), want DENIED naming no secret", what, err, p.Fix)
		}
	}
	// a password source that fails is that failure
	boom := errors.New("vault unreachable")
	if _, _, err := open(mailread.IMAPConfig{Password: func(context.Context) (string, error) { return "", boom }}).List(ctx, time.Time{}, 0); !errors.Is(err, boom) {
		t.Errorf("failing password source: %v", err)
	}
}

// TestIMAPConfig: plain IMAP only to loopback; exactly one way to log in.
func TestIMAPConfig(t *testing.T) {
	for _, c := range []mailread.IMAPConfig{
		{Addr: "imap.example.test:143", TLS: mailread.TLSNone, Password: password("x")},
		{Addr: "10.0.0.1:143", TLS: mailread.TLSNone, Password: password("x")},
		{Addr: "imap.example.test", Password: password("x")},
		{Addr: "imap.example.test:993"},
		{Addr: "imap.example.test:993", Password: password("x"), Token: password("y")},
		{Addr: "imap.example.test:993", TLS: "maybe", Password: password("x")},
	} {
		if _, err := mailread.NewIMAPSource(c); problem.As(err).Code != problem.BadRequest {
			t.Errorf("%+v: %v, want BAD_REQUEST", c.Addr+" "+c.TLS, err)
		}
	}
	for _, a := range []string{"127.0.0.1:143", "[::1]:143", "localhost:143"} {
		if _, err := mailread.NewIMAPSource(mailread.IMAPConfig{Addr: a, TLS: mailread.TLSNone, Password: password("x")}); err != nil {
			t.Errorf("%s: %v", a, err)
		}
	}
}
