package api_test

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/agentkeys/agentkeys/internal/api"
	"github.com/agentkeys/agentkeys/internal/apiv1"
	"github.com/agentkeys/agentkeys/internal/broker"
	"github.com/agentkeys/agentkeys/internal/daemon"
)

// TestMailEdgeLookupRoute: POST /v1/mail/edge/lookup is off without an edge
// secret, refuses a caller without the right one before reading its body,
// and answers the edge that presents it (an unknown address: not live).
func TestMailEdgeLookupRoute(t *testing.T) {
	e := newEnv(t, broker.Config{})
	body := []byte(`{"address":"a0123456789ab@agents.example.com"}`)
	if rec := e.post("/v1/mail/edge/lookup", "", body); rec.Code != http.StatusNotFound {
		t.Fatalf("without --mail-edge-secret: %d %s", rec.Code, rec.Body)
	}
	h := api.New(e.b, api.Config{MailEdgeSecret: []byte("0123456789abcdef0123456789abcdef")})
	ask := func(secret string, body []byte) *httptest.ResponseRecorder {
		return askEdge(h, "/v1/mail/edge/lookup", secret, body)
	}
	for _, s := range []string{"", "0123456789abcdef0123456789abcdeX", "0123456789abcdef0123456789abcdef0"} {
		if rec := ask(s, []byte("not json")); rec.Code != http.StatusUnauthorized {
			t.Fatalf("secret %q: %d %s", s, rec.Code, rec.Body)
		}
	}
	rec := ask("0123456789abcdef0123456789abcdef", body)
	var l apiv1.MailLookup
	if rec.Code != http.StatusOK || json.Unmarshal(rec.Body.Bytes(), &l) != nil || l.Live || l.Prefix != "" || len(l.Rights) != 0 {
		t.Fatalf("edge lookup of an unknown address: %d %s", rec.Code, rec.Body)
	}
	if rec := ask("0123456789abcdef0123456789abcdef", []byte(`{"address":"x@y.z","agent":"not-an-omni"}`)); rec.Code != http.StatusBadRequest {
		t.Fatalf("malformed agent: %d %s", rec.Code, rec.Body)
	}
}

// TestMailEdgeInboxesRoute: POST /v1/mail/edge/inboxes, like lookup, is off
// without an edge secret and refuses a caller without it before reading its
// body; an unknown agent holds no inboxes; a malformed omni is a bad request.
func TestMailEdgeInboxesRoute(t *testing.T) {
	e := newEnv(t, broker.Config{})
	const path = "/v1/mail/edge/inboxes"
	body := []byte(`{"agent":"` + strings.Repeat("ab", 32) + `"}`)
	if rec := e.post(path, "", body); rec.Code != http.StatusNotFound {
		t.Fatalf("without --mail-edge-secret: %d %s", rec.Code, rec.Body)
	}
	h := api.New(e.b, api.Config{MailEdgeSecret: []byte("0123456789abcdef0123456789abcdef")})
	for _, s := range []string{"", "0123456789abcdef0123456789abcdeX"} {
		if rec := askEdge(h, path, s, []byte("not json")); rec.Code != http.StatusUnauthorized {
			t.Fatalf("secret %q: %d %s", s, rec.Code, rec.Body)
		}
	}
	rec := askEdge(h, path, "0123456789abcdef0123456789abcdef", body)
	var l apiv1.MailInboxes
	if rec.Code != http.StatusOK || json.Unmarshal(rec.Body.Bytes(), &l) != nil || l.Inboxes == nil || len(l.Inboxes) != 0 {
		t.Fatalf("inboxes of an unknown agent: %d %s", rec.Code, rec.Body)
	}
	if rec := askEdge(h, path, "0123456789abcdef0123456789abcdef", []byte(`{"agent":"not-an-omni"}`)); rec.Code != http.StatusBadRequest {
		t.Fatalf("malformed agent: %d %s", rec.Code, rec.Body)
	}
}

func askEdge(h http.Handler, path, secret string, body []byte) *httptest.ResponseRecorder {
	req := httptest.NewRequest(http.MethodPost, path, bytes.NewReader(body))
	if secret != "" {
		req.Header.Set(apiv1.MailEdgeSecretHeader, secret)
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	return rec
}

// TestMailInboxesOfAgent: the broker lists the live inboxes an agent holds
// rights on, with its rights: its own, another's it was granted, none after
// its agent is revoked, none for another owner's agent; a deleted inbox
// drops out.
func TestMailInboxesOfAgent(t *testing.T) {
	e := newEnv(t, broker.Config{})
	ctx := context.Background()
	owner, g, idKey := e.ownerKey(t)
	botDir := e.pairAgent(t, owner, idKey, g.Wallet, "bot", "openai")
	helperDir := e.pairAgent(t, owner, idKey, g.Wallet, "helper", "openai")
	other, og, oKey := e.ownerKey(t)
	strangerDir := e.pairAgent(t, other, oKey, og.Wallet, "stranger", "openai")
	omni := func(d daemon.Dir) string {
		s, err := d.LoadSession()
		if err != nil {
			t.Fatal(err)
		}
		return s.Agent
	}
	list := func(d daemon.Dir) []string {
		ls, err := e.b.MailInboxes(ctx, omni(d))
		if err != nil {
			t.Fatal(err)
		}
		var out []string
		for _, l := range ls {
			out = append(out, l.Address+":"+strings.Join(l.Rights, ",")+":"+l.Prefix)
		}
		return out
	}
	if _, err := owner.AddDomain(ctx, "agents.example.com"); err != nil {
		t.Fatal(err)
	}
	bot, err := owner.CreateInbox(ctx, "bot", "")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := owner.GrantInbox(ctx, bot.Address, "helper", []string{"read"}, false); err != nil {
		t.Fatal(err)
	}
	prefix := strings.ToLower(bot.Wallet) + "/" + bot.Address + "/"
	if got := list(botDir); len(got) != 1 || got[0] != bot.Address+":read,send,admin:"+prefix {
		t.Fatalf("bot's inboxes: %q", got)
	}
	if got := list(helperDir); len(got) != 1 || got[0] != bot.Address+":read:"+prefix {
		t.Fatalf("helper's inboxes: %q", got)
	}
	if got := list(strangerDir); len(got) != 0 {
		t.Fatalf("another owner's agent: %q", got)
	}
	if _, err := owner.RevokeAgent(ctx, "helper"); err != nil {
		t.Fatal(err)
	}
	if got := list(helperDir); len(got) != 0 {
		t.Fatalf("a revoked agent's inboxes: %q", got)
	}
	if _, err := owner.DeleteInbox(ctx, bot.Address); err != nil {
		t.Fatal(err)
	}
	if got := list(botDir); len(got) != 0 {
		t.Fatalf("after inbox delete: %q", got)
	}
}
