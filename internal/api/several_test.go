package api_test

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/agentkeys/agentkeys/internal/api"
	"github.com/agentkeys/agentkeys/internal/broker"
	"github.com/agentkeys/agentkeys/internal/client"
	"github.com/agentkeys/agentkeys/internal/daemon"
	"github.com/agentkeys/agentkeys/internal/dpop"
	"github.com/agentkeys/agentkeys/internal/ledger"
	"github.com/agentkeys/agentkeys/internal/ledger/sqlite"
	"github.com/agentkeys/agentkeys/internal/problem"
	"github.com/agentkeys/agentkeys/internal/ratelimit"
)

// peer is a second broker on e's data dir and ledger file: the same sealed seed
// and issuer, served at a loopback URL of its own (one of its public URLs), as
// a second process behind one load balancer would be.
type peer struct {
	b   *broker.Broker
	url string
	c   *client.Client
}

func (e *env) peer(t *testing.T) *peer {
	t.Helper()
	var h atomic.Pointer[http.Handler]
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { (*h.Load()).ServeHTTP(w, r) }))
	t.Cleanup(srv.Close)
	open := e.openStore
	if open == nil {
		open = func() (ledger.Driver, error) { return sqlite.Open(broker.LedgerPath(e.dataDir)) }
	}
	d, err := open()
	if err != nil {
		t.Fatal(err)
	}
	cfg := e.cfg
	cfg.PublicURLs, cfg.Store = []string{srv.URL}, d
	b, err := broker.Open(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(b.Close)
	if err := b.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	handler := api.New(b, api.Config{})
	h.Store(&handler)
	c, err := client.New(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	return &peer{b: b, url: srv.URL, c: c}
}

// follow makes the peer follow the store now, and returns its head.
func (p *peer) follow(t *testing.T) ledger.Head {
	t.Helper()
	lg, err := p.b.Ledger()
	if err != nil {
		t.Fatal(err)
	}
	h, err := lg.Follow(context.Background())
	if err != nil {
		t.Fatalf("follow: %v", err)
	}
	return h
}

func (p *peer) head(t *testing.T) ledger.Head {
	t.Helper()
	lg, err := p.b.Ledger()
	if err != nil {
		t.Fatal(err)
	}
	return lg.Head()
}

// agentOf is a paired agent's token, proof key and channel key.
type agentOf struct {
	token   string
	key     *ecdsa.PrivateKey
	now     func() time.Time // the env's clock, which dates its proofs
	channel string           // base64, as in the session file
}

func (e *env) loadAgent(t *testing.T, d daemon.Dir) agentOf {
	t.Helper()
	sess, err := d.LoadSession()
	if err != nil {
		t.Fatal(err)
	}
	key, err := daemon.DecodeKey(sess.ProofKey)
	if err != nil {
		t.Fatal(err)
	}
	return agentOf{sess.Token, key, e.now, sess.ChannelKey}
}

// proof signs a proof for htu, dated two seconds ahead: after the second any
// broker of the test started in (a proof dated then is refused as made before
// the start), well inside the accepted skew.
func (a agentOf) proof(t *testing.T, htu string) string {
	t.Helper()
	p, err := dpop.Sign(a.key, http.MethodPost, htu, a.token, a.now().Add(2*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// read asks base to read service as the agent, with proof; it returns the status.
func (a agentOf) read(t *testing.T, base, service, proof string) int {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, base+"/v1/credentials/"+service+"/read", nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+a.token)
	req.Header.Set("DPoP", proof)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

// TestTwoBrokersOneStore: two brokers on one ledger file. What is written
// through A — a pairing, an agent's read, a revocation, a logout — reaches B's
// state, usage index and revocation set once B follows the store; so a
// revocation committed through A makes B refuse the agent and the session.
func TestTwoBrokersOneStore(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t, broker.Config{})
	b := e.peer(t)
	owner, g, idKey := e.ownerKey(t)
	e.store(t, owner, g.Omni, "openai", []byte("sk-two-brokers"), "")
	ag := e.loadAgent(t, e.pairAgent(t, owner, idKey, g.Wallet, "bot", "openai"))
	if code := ag.read(t, e.srv.URL, "openai", ag.proof(t, e.srv.URL+"/v1/credentials/openai/read")); code != http.StatusOK {
		t.Fatalf("agent read through A: %d", code)
	}
	if b.head(t).Seq >= e.ledgerHead(t).Seq {
		t.Fatal("B is not behind A before following: the test shows nothing")
	}
	if h := b.follow(t); h != e.ledgerHead(t) {
		t.Fatalf("B followed to %+v, A's head is %+v", h, e.ledgerHead(t))
	}

	// B serves the agent A paired, and its usage index has A's entries.
	if code := ag.read(t, b.url, "openai", ag.proof(t, b.url+"/v1/credentials/openai/read")); code != http.StatusOK {
		t.Fatalf("agent read through B: %d", code)
	}
	usage, err := b.c.WithToken(g.Token).Usage(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	reads := 0
	for _, u := range usage {
		if u.Action == "read" && u.Alias == "bot" && u.Service == "openai" && u.Result == "ok" {
			reads++
		}
	}
	if reads != 2 {
		t.Fatalf("B's usage index shows %d reads by the agent, want 2 (one through A, one through B): %+v", reads, usage)
	}

	// A revocation committed through A: B refuses the agent once it followed.
	if _, err := owner.RevokeAgent(ctx, "bot"); err != nil {
		t.Fatal(err)
	}
	b.follow(t)
	if code := ag.read(t, b.url, "openai", ag.proof(t, b.url+"/v1/credentials/openai/read")); code != http.StatusUnauthorized {
		t.Fatalf("the agent revoked through A read through B: %d, want 401", code)
	}

	// A logout through A: B refuses the session once it followed.
	if _, err := b.c.WithToken(g.Token).Whoami(ctx); err != nil {
		t.Fatalf("the owner's session on B before the logout: %v", err)
	}
	if err := owner.Logout(ctx); err != nil {
		t.Fatal(err)
	}
	b.follow(t)
	var p *problem.Error
	if _, err := b.c.WithToken(g.Token).Whoami(ctx); !errors.As(err, &p) || p.Code != problem.Revoked {
		t.Fatalf("the session logged out through A, used on B: %v, want REVOKED", err)
	}

	// B appends on top of A's entries, and A follows B's.
	owner2, g2, _ := e.ownerKey(t)
	if _, err := b.c.WithToken(g2.Token).Whoami(ctx); err != nil {
		t.Fatalf("an account created through A, used on B: %v", err)
	}
	e.store(t, owner2, g2.Omni, "github", []byte("ghp-through-a"), "")
	body, _ := json.Marshal(map[string]any{"service": "anthropic", "ciphertext": e.sealFor(t, g2.Omni, "anthropic", []byte("sk-through-b"))})
	req, _ := http.NewRequest(http.MethodPost, b.url+"/v1/credentials", bytes.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+g2.Token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK && resp.StatusCode != http.StatusCreated {
		t.Fatalf("a store through B after A's entries: %d", resp.StatusCode)
	}
	lgA, _ := e.b.Ledger()
	if _, err := lgA.Follow(ctx); err != nil {
		t.Fatal(err)
	}
	if e.ledgerHead(t) != b.head(t) {
		t.Fatalf("heads differ: A %+v, B %+v", e.ledgerHead(t), b.head(t))
	}
	list, err := owner2.List(ctx)
	if err != nil || len(list) != 2 {
		t.Fatalf("A lists %d credentials (%v), want the one stored through A and the one through B", len(list), err)
	}
	if _, err := ledger.VerifyDriver(ctx, broker.Schema(), e.b.Storage(), true); err != nil {
		t.Fatalf("the chain both wrote: %v", err)
	}
}

// ledgerHead is A's local head (e.head reads the store's).
func (e *env) ledgerHead(t *testing.T) ledger.Head {
	t.Helper()
	lg, err := e.b.Ledger()
	if err != nil {
		t.Fatal(err)
	}
	return lg.Head()
}

// sharedLimiters is one process's limiters by rule, handed to several brokers:
// what a shared implementation gives brokers in several processes.
func sharedLimiters() ratelimit.New {
	var mu sync.Mutex
	byRule := map[string]ratelimit.Limiter{}
	return func(r ratelimit.Rule) ratelimit.Limiter {
		mu.Lock()
		defer mu.Unlock()
		if byRule[r.Name] == nil {
			byRule[r.Name] = broker.NewMemoryLimiter(r)
		}
		return byRule[r.Name]
	}
}

// TestSharedSeamsHoldAcrossBrokers: with a shared replay store, a proof accepted
// by A is refused by B; with shared limiters, a session's read limit counts its
// reads on both brokers.
func TestSharedSeamsHoldAcrossBrokers(t *testing.T) {
	e := newEnv(t, broker.Config{Replays: dpop.NewMemoryReplays(0), Limiters: sharedLimiters(), ReadLimit: 3})
	b := e.peer(t)
	owner, g, idKey := e.ownerKey(t)
	e.store(t, owner, g.Omni, "openai", []byte("sk-shared"), "")
	ag := e.loadAgent(t, e.pairAgent(t, owner, idKey, g.Wallet, "bot", "openai"))
	b.follow(t)

	// Behind one load balancer both brokers answer at the issuer's URL: a proof
	// for it is good at either, once.
	htu := e.srv.URL + "/v1/credentials/openai/read"
	proof := ag.proof(t, htu)
	if code := ag.read(t, e.srv.URL, "openai", proof); code != http.StatusOK {
		t.Fatalf("read through A: %d", code)
	}
	if code := ag.read(t, b.url, "openai", proof); code != http.StatusUnauthorized {
		t.Fatalf("the proof A accepted, replayed to B: %d, want 401", code)
	}

	// Read limit 3 per session: one read through A so far, two more through B,
	// then the fourth is refused on either broker.
	for i := range 2 {
		if code := ag.read(t, b.url, "openai", ag.proof(t, htu)); code != http.StatusOK {
			t.Fatalf("read %d through B: %d", i+2, code)
		}
	}
	if code := ag.read(t, e.srv.URL, "openai", ag.proof(t, htu)); code != http.StatusTooManyRequests {
		t.Fatalf("the 4th read in the window, through A: %d, want 429", code)
	}
	if code := ag.read(t, b.url, "openai", ag.proof(t, htu)); code != http.StatusTooManyRequests {
		t.Fatalf("the 5th read in the window, through B: %d, want 429", code)
	}
}

// failing stands for a shared limiter or replay store that cannot answer (its
// database is down): it fails every call when down is set.
type failing struct {
	down *atomic.Bool
	ratelimit.Limiter
	replays dpop.ReplayStore
}

var errDown = errors.New("dial tcp 10.0.0.5:5432: connection refused")

func (f failing) Allow(ctx context.Context, key string, now time.Time) (bool, time.Duration, error) {
	if f.down.Load() {
		return false, 0, errDown
	}
	return f.Limiter.Allow(ctx, key, now)
}

func (f failing) First(ctx context.Context, id dpop.ProofID, now, exp time.Time) (bool, error) {
	if f.down.Load() {
		return false, errDown
	}
	return f.replays.First(ctx, id, now, exp)
}

// TestSharedSeamsFailClosed: when the shared read limiter or replay store
// cannot answer, the agent's read is refused and nothing is released.
func TestSharedSeamsFailClosed(t *testing.T) {
	limiterDown, replaysDown := new(atomic.Bool), new(atomic.Bool)
	mem := broker.NewMemoryLimiter
	e := newEnv(t, broker.Config{
		Replays: failing{down: replaysDown, replays: dpop.NewMemoryReplays(0)},
		Limiters: func(r ratelimit.Rule) ratelimit.Limiter {
			return failing{down: limiterDown, Limiter: mem(r)}
		}})
	owner, g, idKey := e.ownerKey(t)
	e.store(t, owner, g.Omni, "openai", []byte("sk-fail-closed"), "")
	ag := e.loadAgent(t, e.pairAgent(t, owner, idKey, g.Wallet, "bot", "openai"))
	htu := e.srv.URL + "/v1/credentials/openai/read"
	before := e.head(t)
	replaysDown.Store(true)
	if code := ag.read(t, e.srv.URL, "openai", ag.proof(t, htu)); code != http.StatusUnauthorized {
		t.Fatalf("read with the replay store down: %d, want 401", code)
	}
	replaysDown.Store(false)
	limiterDown.Store(true)
	if code := ag.read(t, e.srv.URL, "openai", ag.proof(t, htu)); code != http.StatusInternalServerError {
		t.Fatalf("read with the limiter down: %d, want 500", code)
	}
	if e.head(t) != before {
		t.Fatal("a refused read wrote to the ledger")
	}
	limiterDown.Store(false)
	if code := ag.read(t, e.srv.URL, "openai", ag.proof(t, htu)); code != http.StatusOK {
		t.Fatalf("read once both answer again: %d", code)
	}
}

// TestOIDCKeysFollowAcrossBrokers: a rotation through A reaches B's issuer-key
// cache when B follows: B's JWKS then publishes the new key as well.
func TestOIDCKeysFollowAcrossBrokers(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t, broker.Config{OIDCAudiences: []string{"aud"}, OIDCMaxTTL: 2 * time.Second, OIDCSkew: time.Second})
	b := e.peer(t)
	op, err := broker.LoadOperatorKey(broker.OperatorKeyPath(e.dataDir))
	if err != nil {
		t.Fatal(err)
	}
	kids := func(c *client.Client) []string {
		t.Helper()
		ks, err := c.JWKS(ctx)
		if err != nil {
			t.Fatal(err)
		}
		var out []string
		for _, k := range ks.Keys {
			out = append(out, k.Kid)
		}
		return out
	}
	before := kids(b.c) // B has loaded its key cache
	if len(before) != 1 {
		t.Fatalf("B's JWKS before the rotation: %q", before)
	}
	res, err := e.c.RotateOIDC(ctx, 4, op)
	if err != nil {
		t.Fatal(err)
	}
	b.follow(t)
	if got := kids(b.c); !slices.Contains(got, res.Key.Kid) || !slices.Contains(got, before[0]) {
		t.Fatalf("B's JWKS after following A's rotation: %q, want the new key %s beside the retiring %s", got, res.Key.Kid, before[0])
	}
}
