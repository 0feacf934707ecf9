package api_test

import (
	"bytes"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/agentkeys/agentkeys/internal/api"
	"github.com/agentkeys/agentkeys/internal/apiv1"
	"github.com/agentkeys/agentkeys/internal/broker"
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
