package daemon

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/agentkeys/agentkeys/internal/api"
	"github.com/agentkeys/agentkeys/internal/apiv1"
	"github.com/agentkeys/agentkeys/internal/broker"
	"github.com/agentkeys/agentkeys/internal/client"
	"github.com/agentkeys/agentkeys/internal/clock"
	"github.com/agentkeys/agentkeys/internal/problem"
)

const testGCPAudience = "//iam.googleapis.com/projects/123456789012/locations/global/workloadIdentityPools/agentkeys/providers/agentkeys-oidc"

// cacheEnv is a real broker and its handler on loopback, an owner, and a
// daemon directory paired with an agent whose scope allows every audience;
// the broker and the daemon share one fake clock.
type cacheEnv struct {
	at    *clock.Fake
	owner *client.Session
	src   Source
}

func newCacheEnv(t *testing.T) *cacheEnv {
	t.Helper()
	ctx := context.Background()
	var h http.Handler
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { h.ServeHTTP(w, r) }))
	t.Cleanup(srv.Close)
	base := t.TempDir()
	at := clock.NewFake(time.Now().Truncate(time.Second))
	b, err := broker.Open(broker.Config{DataDir: filepath.Join(base, "server"), PlatformKeyFile: filepath.Join(base, "platform.key"),
		Issuer: srv.URL, Now: at.Now, OIDCAudiences: []string{testGCPAudience}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(b.Close)
	if err := b.Start(ctx); err != nil {
		t.Fatal(err)
	}
	h = api.New(b, api.Config{})
	c, err := client.New(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	c = c.WithClock(at.Now)
	_, id, _ := ed25519.GenerateKey(rand.Reader)
	l := apiv1.Login{PublicKey: hex.EncodeToString(id.Public().(ed25519.PublicKey)), Server: srv.URL, Time: at.Now().Unix(), Nonce: hex.EncodeToString(id[:16])}
	apiv1.SignLogin(&l, id)
	g, err := c.CreateAccount(ctx, l)
	if err != nil {
		t.Fatal(err)
	}
	owner := c.WithToken(g.Token)
	p, err := SendPairRequest(ctx, c, g.Wallet, "bot", []string{"oidc:*"}, 0, 10*time.Minute, "")
	if err != nil {
		t.Fatal(err)
	}
	list, err := owner.PendingPairs(ctx)
	if err != nil || len(list) != 1 {
		t.Fatalf("pending pairs: %v %v", list, err)
	}
	if _, err := owner.ApprovePairing(ctx, p.ID, apiv1.SignDecision(id, srv.URL, p.ID, list[0].VVCHash, "approve", at.Now().Unix())); err != nil {
		t.Fatal(err)
	}
	key, err := DecodeKey(p.ProofKey)
	if err != nil {
		t.Fatal(err)
	}
	st, err := c.PollPairing(ctx, p.ID, key)
	if err != nil || st.Delivery == nil {
		t.Fatalf("poll: %+v %v", st, err)
	}
	sess, err := p.Open(st.Delivery)
	if err != nil {
		t.Fatal(err)
	}
	d := Dir(filepath.Join(base, "daemon"))
	if err := d.SaveSession(sess); err != nil {
		t.Fatal(err)
	}
	return &cacheEnv{at: at, owner: owner, src: Source{Dir: d, Now: at.Now, Checks: NewChecks(DefaultCheckTTL, at.Now), Keys: NewKeyViews()}}
}

// recordingSTS is GCP's STS token endpoint on loopback: it records each
// exchange and answers an access token valid for an hour, numbered.
type recordingSTS struct {
	*httptest.Server
	mu     sync.Mutex
	scopes []string
}

func newRecordingSTS(t *testing.T) *recordingSTS {
	r := &recordingSTS{}
	r.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, q *http.Request) {
		if q.ParseForm() != nil || q.Form.Get("grant_type") != "urn:ietf:params:oauth:grant-type:token-exchange" || q.Form.Get("subject_token") == "" {
			http.Error(w, `{"error":"invalid_request"}`, http.StatusBadRequest)
			return
		}
		r.mu.Lock()
		r.scopes = append(r.scopes, q.Form.Get("scope"))
		n := len(r.scopes)
		r.mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(map[string]any{"access_token": fmt.Sprintf("access-%d", n), "issued_token_type": "urn:ietf:params:oauth:token-type:access_token",
			"token_type": "Bearer", "expires_in": 3600})
	}))
	t.Cleanup(r.Close)
	return r
}

func (r *recordingSTS) exchanges() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.scopes)
}

// One exchange serves repeated calls while the credential is fresh; another
// request (scope) is its own entry; close to expiry, and after the agent is
// revoked, the cache is not served.
func TestCloudTokenCache(t *testing.T) {
	e := newCacheEnv(t)
	sts := newRecordingSTS(t)
	src := e.src
	src.GCPTokenURL = sts.URL
	src.Tokens = NewCloudTokens(DefaultCloudTokens)
	ctx := context.Background()
	req := CloudRequest{Provider: ProviderGCP, Audience: testGCPAudience}

	first, err := src.CloudToken(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	for range 3 {
		again, err := src.CloudToken(ctx, req)
		if err != nil || again.AccessToken != first.AccessToken {
			t.Fatalf("a repeated call: %+v %v, want the cached %q", again, err, first.AccessToken)
		}
		e.at.Advance(10 * time.Minute)
	}
	if n := sts.exchanges(); n != 1 {
		t.Fatalf("%d exchanges for four calls within the credential's life, want 1", n)
	}
	other := req
	other.Scope = "https://www.googleapis.com/auth/devstorage.read_only"
	if o, err := src.CloudToken(ctx, other); err != nil || o.AccessToken == first.AccessToken || sts.exchanges() != 2 {
		t.Fatalf("another scope: %+v %v after %d exchanges, want its own exchange", o, err, sts.exchanges())
	}
	// 30 minutes after the exchange: 30 left, fresh. At 56 minutes (4 left,
	// under the 5-minute margin) it is replaced.
	e.at.Advance(26 * time.Minute)
	fresh, err := src.CloudToken(ctx, req)
	if err != nil || fresh.AccessToken == first.AccessToken || sts.exchanges() != 3 {
		t.Fatalf("close to expiry: %+v %v after %d exchanges, want a new exchange", fresh, err, sts.exchanges())
	}
	if again, err := src.CloudToken(ctx, req); err != nil || again.AccessToken != fresh.AccessToken || sts.exchanges() != 3 {
		t.Fatalf("after the refresh: %+v %v, want the new credential cached", again, err)
	}

	// Revoked: the cached credential is not served, and is forgotten.
	if _, err := e.owner.RevokeAgent(ctx, "bot"); err != nil {
		t.Fatal(err)
	}
	e.at.Advance(DefaultCheckTTL) // the daemon trusts the broker's last answer this long
	if _, err := src.CloudToken(ctx, req); problem.As(err).Code != CodeRevoked {
		t.Fatalf("a revoked agent's cached credential: %v, want REVOKED", err)
	}
	if n := src.Tokens.size(); n != 1 { // the other scope's, never asked again
		t.Fatalf("%d credentials cached after the revocation, want the revoked one dropped (1 left)", n)
	}
	if n := sts.exchanges(); n != 3 {
		t.Fatalf("%d exchanges after the revocation, want none", n)
	}

	// Without a cache, every call is an exchange.
	e2 := newCacheEnv(t)
	plain := e2.src
	plain.GCPTokenURL = sts.URL
	for range 2 {
		if _, err := plain.CloudToken(ctx, req); err != nil {
			t.Fatal(err)
		}
	}
	if n := sts.exchanges(); n != 5 {
		t.Fatalf("without a cache: %d exchanges, want 5", n)
	}
}

// The cache holds at most max credentials: a full cache drops the expired
// ones, then the one expiring soonest; a credential without an expiry, or
// already stale, is not kept.
func TestCloudTokensBounded(t *testing.T) {
	now := time.Date(2031, 1, 2, 3, 4, 5, 0, time.UTC)
	c := NewCloudTokens(3)
	tok := func(exp time.Duration) CloudToken { return CloudToken{Provider: ProviderGCP, Expiration: now.Add(exp)} }
	c.put("a", tok(time.Hour), now, now)
	c.put("b", tok(30*time.Minute), now, now)
	c.put("c", tok(2*time.Hour), now, now)
	c.put("d", tok(90*time.Minute), now, now) // full: b, expiring soonest, goes
	if _, ok := c.get("b", now); ok || c.size() != 3 {
		t.Fatalf("after a fourth: b kept or %d entries, want b dropped and 3", c.size())
	}
	for _, k := range []string{"a", "c", "d"} {
		if _, ok := c.get(k, now); !ok {
			t.Fatalf("%s dropped", k)
		}
	}
	later := now.Add(58 * time.Minute) // a is now stale (2 minutes left of an hour, under its 5-minute margin)
	c.put("e", tok(3*time.Hour), later, later)
	if _, ok := c.get("a", later); ok || c.size() != 3 {
		t.Fatalf("the stale entry was not the one dropped: %d entries", c.size())
	}
	c.put("f", CloudToken{Provider: ProviderAlicloud}, now, now) // no expiry
	c.put("g", tok(time.Minute), now.Add(-time.Hour), now)       // already inside its margin
	if _, ok := c.get("f", now); ok {
		t.Fatal("a credential without an expiry was cached")
	}
	if _, ok := c.get("g", now); ok {
		t.Fatal("a stale credential was cached")
	}
	var nilCache *CloudTokens
	nilCache.put("x", tok(time.Hour), now, now)
	if _, ok := nilCache.get("x", now); ok {
		t.Fatal("a nil cache served")
	}
}
