package api_test

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/agentkeys/agentkeys/internal/api"
	"github.com/agentkeys/agentkeys/internal/apiv1"
	"github.com/agentkeys/agentkeys/internal/broker"
	"github.com/agentkeys/agentkeys/internal/ledger"
	"github.com/agentkeys/agentkeys/internal/oidc"
	"github.com/agentkeys/agentkeys/internal/problem"
)

// fakeBroker is a hand-written api.Broker for handler tests that need no
// enclave and no store. Only the methods a test sets up are implemented; any
// other call panics through the nil embedded interface, so a handler that asks
// the broker for more than the test expects fails the test.
type fakeBroker struct {
	api.Broker
	head     ledger.Head
	headOK   bool
	entries  []ledger.Entry
	jwksErr  error
	authErr  error
	calls    map[string]int
	entriesC *broker.Caller // the caller Entries was asked for
}

func (f *fakeBroker) called(m string) {
	if f.calls == nil {
		f.calls = map[string]int{}
	}
	f.calls[m]++
}

func (f *fakeBroker) Discovery() apiv1.Discovery {
	f.called("Discovery")
	return oidc.NewDiscovery("https://issuer.example")
}

func (f *fakeBroker) JWKS(context.Context) (apiv1.JWKS, error) {
	f.called("JWKS")
	if f.jwksErr != nil {
		return apiv1.JWKS{}, f.jwksErr
	}
	return apiv1.JWKS{Keys: []apiv1.JWK{{Kty: "EC", Crv: "P-256", X: "x", Y: "y", Kid: "kid-1", Alg: "ES256"}}}, nil
}

func (f *fakeBroker) Head(context.Context) (ledger.Head, bool, error) {
	f.called("Head")
	return f.head, f.headOK, nil
}

func (f *fakeBroker) Entries(_ context.Context, c *broker.Caller, from uint64, limit int) ([]ledger.Entry, error) {
	f.called("Entries")
	f.entriesC = c
	var out []ledger.Entry
	for _, e := range f.entries {
		if e.Seq >= from && len(out) < limit {
			out = append(out, e)
		}
	}
	return out, nil
}

func (f *fakeBroker) AuthenticateRequest(context.Context, string, broker.Proof) (*broker.Caller, error) {
	f.called("AuthenticateRequest")
	return nil, f.authErr
}

// serve sends one request to the handler over f and decodes a JSON answer into out.
func serve(t *testing.T, f *fakeBroker, method, path string, hdr map[string]string, out any) *httptest.ResponseRecorder {
	t.Helper()
	req := httptest.NewRequest(method, path, nil)
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	rec := httptest.NewRecorder()
	api.New(f, api.Config{}).ServeHTTP(rec, req)
	if out != nil {
		if err := json.Unmarshal(rec.Body.Bytes(), out); err != nil {
			t.Fatalf("%s %s: answer is not JSON: %v: %s", method, path, err, rec.Body)
		}
	}
	return rec
}

type errBody struct {
	Error struct{ Code, Message, Fix string }
}

// TestHandlersOverFakeBroker runs the handlers over a fake broker: the HTTP
// layer's own work (routing, parameters, status codes, error bodies, caching
// headers) is tested without an enclave or a ledger, in milliseconds.
func TestHandlersOverFakeBroker(t *testing.T) {
	t.Run("discovery", func(t *testing.T) {
		f := &fakeBroker{}
		var d apiv1.Discovery
		rec := serve(t, f, "GET", apiv1.DiscoveryPath, nil, &d)
		if rec.Code != 200 || d.Issuer != "https://issuer.example" || d.JWKSURI != "https://issuer.example"+apiv1.JWKSPath {
			t.Fatalf("discovery: %d %+v", rec.Code, d)
		}
		if cc := rec.Header().Get("Cache-Control"); cc != "max-age=300" {
			t.Fatalf("discovery Cache-Control %q, want max-age=300", cc)
		}
	})
	t.Run("jwks", func(t *testing.T) {
		f := &fakeBroker{}
		var k apiv1.JWKS
		if rec := serve(t, f, "GET", apiv1.JWKSPath, nil, &k); rec.Code != 200 || len(k.Keys) != 1 || k.Keys[0].Kid != "kid-1" {
			t.Fatalf("jwks: %d %+v", rec.Code, k)
		}
	})
	t.Run("jwks error is a problem body, not cached", func(t *testing.T) {
		f := &fakeBroker{jwksErr: problem.New(problem.NotReady, "the broker is not ready", "wait for /readyz")}
		var e errBody
		rec := serve(t, f, "GET", apiv1.JWKSPath, nil, &e)
		if rec.Code != http.StatusServiceUnavailable || e.Error.Code != string(problem.NotReady) || e.Error.Fix == "" {
			t.Fatalf("jwks error: %d %+v", rec.Code, e)
		}
		if cc := rec.Header().Get("Cache-Control"); cc != "no-store" {
			t.Fatalf("an error was served with Cache-Control %q, want no-store", cc)
		}
	})
	t.Run("head", func(t *testing.T) {
		f := &fakeBroker{head: ledger.Head{Seq: 41, Hash: ledger.Hash{1, 2, 3}, Time: 1_700_000_000_000_000_000}, headOK: true}
		var h apiv1.HeadInfo
		rec := serve(t, f, "GET", "/v1/ledger/head", nil, &h)
		if rec.Code != 200 || h.Seq != 41 || h.Hash != f.head.Hash || h.Time != "2023-11-14T22:13:20Z" {
			t.Fatalf("head: %d %+v", rec.Code, h)
		}
	})
	t.Run("head of an empty store", func(t *testing.T) {
		var e errBody
		if rec := serve(t, &fakeBroker{}, "GET", "/v1/ledger/head", nil, &e); rec.Code != http.StatusServiceUnavailable || e.Error.Code != string(problem.NotReady) {
			t.Fatalf("empty head: %d %+v", rec.Code, e)
		}
	})
	t.Run("entries", func(t *testing.T) {
		f := &fakeBroker{entries: []ledger.Entry{{Seq: 0, Kind: "a", Payload: []byte(`{}`)}, {Seq: 1, Kind: "b", Payload: []byte(`{"n":1}`)}, {Seq: 2, Kind: "c", Payload: []byte(`{}`)}}}
		var p apiv1.EntriesPage
		rec := serve(t, f, "GET", "/v1/ledger/entries?from=1&limit=1", nil, &p)
		if rec.Code != 200 || len(p.Entries) != 1 || p.Entries[0].Seq != 1 || string(p.Entries[0].Payload) != `{"n":1}` || p.Next != 2 {
			t.Fatalf("entries: %d %+v", rec.Code, p)
		}
		if f.entriesC != nil || f.calls["AuthenticateRequest"] != 0 {
			t.Fatal("an anonymous page was asked for as a caller")
		}
		// past the end: an empty list (not null) and next unchanged
		rec = serve(t, f, "GET", "/v1/ledger/entries?from=9", nil, nil)
		if rec.Code != 200 || rec.Body.String() != "{\"entries\":[],\"next\":9}\n" {
			t.Fatalf("past the end: %d %s", rec.Code, rec.Body)
		}
	})
	for name, q := range map[string]string{"limit 0": "limit=0", "limit too big": "limit=1001",
		"from not a number": "from=x", "from past int64": "from=9223372036854775808"} {
		t.Run("entries refused: "+name, func(t *testing.T) {
			f := &fakeBroker{}
			var e errBody
			if rec := serve(t, f, "GET", "/v1/ledger/entries?"+q, nil, &e); rec.Code != 400 || e.Error.Code != string(problem.BadRequest) || e.Error.Fix == "" {
				t.Fatalf("%s: %d %+v", q, rec.Code, e)
			}
			if f.calls["Entries"] != 0 {
				t.Fatalf("%s reached the broker", q)
			}
		})
	}
	t.Run("entries with a token that does not verify", func(t *testing.T) {
		f := &fakeBroker{authErr: problem.New(problem.Unauthenticated, "the session token is not valid", "log in again")}
		var e errBody
		rec := serve(t, f, "GET", "/v1/ledger/entries", map[string]string{"Authorization": "Bearer forged"}, &e)
		if rec.Code != 401 || e.Error.Code != string(problem.Unauthenticated) {
			t.Fatalf("bad token: %d %+v", rec.Code, e)
		}
		if f.calls["AuthenticateRequest"] != 1 || f.calls["Entries"] != 0 {
			t.Fatalf("a token that does not verify was served the anonymous view: calls %v", f.calls)
		}
	})
	t.Run("unknown route", func(t *testing.T) {
		var e errBody
		if rec := serve(t, &fakeBroker{}, "GET", "/v1/nope", nil, &e); rec.Code != 404 || e.Error.Code != string(problem.NotFound) {
			t.Fatalf("unknown route: %d %+v", rec.Code, e)
		}
	})
}
