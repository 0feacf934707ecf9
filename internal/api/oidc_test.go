package api_test

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"

	"github.com/agentkeys/agentkeys/internal/apiv1"
	"github.com/agentkeys/agentkeys/internal/audit"
	"github.com/agentkeys/agentkeys/internal/broker"
	"github.com/agentkeys/agentkeys/internal/client"
	"github.com/agentkeys/agentkeys/internal/daemon"
	"github.com/agentkeys/agentkeys/internal/dpop"
	"github.com/agentkeys/agentkeys/internal/ledger"
	"github.com/agentkeys/agentkeys/internal/oidc"
	"github.com/agentkeys/agentkeys/internal/problem"
)

// pairAgent pairs a new agent of the owner in process and returns its daemon dir.
func (e *env) pairAgent(t testing.TB, owner *client.Session, idKey []byte, ownerWallet, alias string, scope ...string) daemon.Dir {
	t.Helper()
	ctx := context.Background()
	r, dk := e.pairRequest(t, ownerWallet, alias, scope...)
	created, err := e.c.RequestPairing(ctx, r)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := owner.ApprovePairing(ctx, created.ID, apiv1.SignDecision(idKey, e.srv.URL, created.ID, vvcHash(t, owner, created.ID), "approve", e.now().Unix())); err != nil {
		t.Fatal(err)
	}
	st, err := e.c.PollPairing(ctx, created.ID, dk.proof)
	if err != nil || st.Status != apiv1.PairApproved {
		t.Fatalf("poll: %+v %v", st, err)
	}
	d := daemon.Dir(t.TempDir())
	dk.p.ID, dk.p.Server = created.ID, e.srv.URL
	if dk.p.Enclave, err = audit.Attest(ctx, e.c, ""); err != nil { // as daemon.SendPairRequest pins it
		t.Fatal(err)
	}
	if _, err := d.Complete(dk.p, st.Delivery); err != nil {
		t.Fatal(err)
	}
	return d
}

func verifyWith(t *testing.T, e *env, tok string) (oidc.Claims, string) {
	t.Helper()
	parsed, err := jwt.ParseSigned(tok, []jose.SignatureAlgorithm{jose.ES256})
	if err != nil {
		t.Fatal(err)
	}
	ks, err := e.c.JWKS(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	b, _ := json.Marshal(ks)
	var set jose.JSONWebKeySet
	if err := json.Unmarshal(b, &set); err != nil {
		t.Fatal(err)
	}
	kid := parsed.Headers[0].KeyID
	keys := set.Key(kid)
	if len(keys) != 1 {
		t.Fatalf("kid %s: %d keys in JWKS", kid, len(keys))
	}
	var c oidc.Claims
	if err := parsed.Claims(keys[0].Key, &c); err != nil {
		t.Fatalf("token does not verify with the JWKS: %v", err)
	}
	return c, kid
}

func TestOIDCMintAndRefusals(t *testing.T) {
	e := newEnv(t, broker.Config{OIDCAudiences: []string{"sts.amazonaws.com", "other"}, OIDCMaxTTL: 10 * time.Second, OIDCSkew: time.Second})
	ctx := context.Background()
	owner, g, idKey := e.ownerKey(t)
	a := e.source(e.pairAgent(t, owner, idKey, g.Wallet, "bot", "oidc:sts.amazonaws.com"))
	b := e.source(e.pairAgent(t, owner, idKey, g.Wallet, "plain", "openai"))

	// discovery and JWKS
	d, err := e.c.Discovery(ctx)
	if err != nil || d.Issuer != e.srv.URL || d.JWKSURI != e.srv.URL+apiv1.JWKSPath || !slices.Equal(d.SigningAlgs, []string{"ES256"}) {
		t.Fatalf("discovery: %+v %v", d, err)
	}
	rec := httptest.NewRecorder()
	e.handler.ServeHTTP(rec, httptest.NewRequest("GET", apiv1.JWKSPath, nil))
	if rec.Header().Get("Cache-Control") != "max-age=300" || !strings.Contains(rec.Body.String(), `"kty":"EC","crv":"P-256"`) {
		t.Fatalf("jwks: %s %s", rec.Header(), rec.Body)
	}

	tok, err := a.OIDCToken(ctx, "sts.amazonaws.com", 0)
	if err != nil {
		t.Fatal(err)
	}
	c, kid := verifyWith(t, e, tok.Token)
	sess, _ := a.Dir.LoadSession()
	if c.Issuer != e.srv.URL || c.Audience != "sts.amazonaws.com" || c.Expiry-c.IssuedAt != 10 || c.UserWallet != strings.ToLower(sess.Wallet) ||
		c.OwnerWallet != strings.ToLower(g.Wallet) || !strings.HasSuffix(c.Subject, ":agent:"+strings.ToLower(sess.Wallet)) || kid != tok.Kid {
		t.Fatalf("claims: %+v (ttl capped at the server max of 10 s)", c)
	}
	if _, err := a.OIDCToken(ctx, "sts.amazonaws.com", 11); code(err) != daemon.CodeBadRequest {
		t.Fatalf("ttl above max: %v", err)
	}
	// refusals, each audited
	if _, err := a.OIDCToken(ctx, "other", 0); code(err) != problem.Denied {
		t.Fatalf("audience outside scope: %v", err)
	}
	if _, err := b.OIDCToken(ctx, "sts.amazonaws.com", 0); code(err) != problem.Denied {
		t.Fatalf("agent without oidc scope: %v", err)
	}
	if _, err := owner.OIDCToken(ctx, "sts.amazonaws.com", 0, false); code(err) != problem.Denied {
		t.Fatalf("owner without flag: %v", err)
	}
	if _, err := owner.SetScope(ctx, "bot", apiv1.ScopeEdit{Add: []string{"oidc:*"}}); err != nil {
		t.Fatal(err)
	}
	if _, err := a.OIDCToken(ctx, "unknown.example", 0); code(err) != problem.Denied {
		t.Fatalf("unknown audience: %v", err)
	}
	self, err := owner.OIDCToken(ctx, "sts.amazonaws.com", 0, true)
	if err != nil {
		t.Fatal(err)
	}
	if c, _ := verifyWith(t, e, self.Token); c.UserWallet != strings.ToLower(g.Wallet) || !strings.Contains(c.Subject, ":owner:") {
		t.Fatalf("owner self claims: %+v", c)
	}
	rows, err := owner.Usage(ctx, url.Values{})
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, r := range rows {
		if r.Action != "oidc.mint" {
			continue
		}
		if strings.Contains(r.Detail, tok.Token) || strings.Contains(r.Detail, self.Token) {
			t.Fatal("a usage row carries the token")
		}
		d := r.Detail
		if r.Result == "ok" {
			d = strings.Fields(d)[1] // the kid
		}
		got = append(got, r.Alias+"/"+r.Result+"/"+d)
	}
	want := []string{"bot/ok/" + tok.Kid, "bot/denied/no_scope", "plain/denied/no_scope", "/denied/owner_without_flag",
		"bot/denied/unknown_audience", "/ok/" + self.Kid}
	if !slices.Equal(got, want) {
		t.Fatalf("usage rows %q, want %q", got, want)
	}
	if rows, _ := owner.Usage(ctx, url.Values{"agent": {"plain"}}); len(rows) == 0 || rows[len(rows)-1].Result != "denied" {
		t.Fatalf("usage --agent plain: %+v", rows)
	}
	// revoked agent mints nothing
	if _, err := owner.RevokeAgent(ctx, "bot"); err != nil {
		t.Fatal(err)
	}
	if _, err := a.OIDCToken(ctx, "sts.amazonaws.com", 0); code(err) != problem.Revoked {
		t.Fatalf("mint after revoke: %v", err)
	}
}

func TestOIDCRotation(t *testing.T) {
	e := newEnv(t, broker.Config{OIDCAudiences: []string{"aud"}, OIDCMaxTTL: 2 * time.Second, OIDCSkew: time.Second})
	ctx := context.Background()
	owner, g, idKey := e.ownerKey(t)
	a := e.source(e.pairAgent(t, owner, idKey, g.Wallet, "bot", "oidc:aud"))
	old, err := a.OIDCToken(ctx, "aud", 0)
	if err != nil {
		t.Fatal(err)
	}
	op, err := broker.LoadOperatorKey(broker.OperatorKeyPath(e.dataDir))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.c.RotateOIDC(ctx, 2, op); code(err) != problem.BadRequest {
		t.Fatalf("window shorter than max ttl + skew: %v", err)
	}
	res, err := e.c.RotateOIDC(ctx, 4, op)
	if err != nil {
		t.Fatal(err)
	}
	if res.Key.Version != 2 || res.Previous.Kid != old.Kid || res.Key.Kid == old.Kid {
		t.Fatalf("rotation: %+v", res)
	}
	ks, _ := e.c.JWKS(ctx)
	if len(ks.Keys) != 2 {
		t.Fatalf("JWKS during the window: %+v", ks)
	}
	// every published key is on the registry: the new one was registered first
	if kids := registered(t, e); !slices.Equal(kids, []string{old.Kid, res.Key.Kid}) || !slices.Equal(jwksKids(t, e), kids) {
		t.Fatalf("registered %q, JWKS %q", kids, jwksKids(t, e))
	}
	verifyWith(t, e, old.Token) // the old token still verifies from the JWKS
	nt, err := a.OIDCToken(ctx, "aud", 0)
	if err != nil || nt.Kid != res.Key.Kid {
		t.Fatalf("new token kid %s, want %s (%v)", nt.Kid, res.Key.Kid, err)
	}
	verifyWith(t, e, nt.Token)
	// The old key stays published to the last second of its 4 s window, and
	// not a second longer.
	e.clock.Advance(3 * time.Second)
	if ks, _ = e.c.JWKS(ctx); len(ks.Keys) != 2 {
		t.Fatalf("JWKS 3 s into a 4 s window: %+v", ks)
	}
	if keys, err := e.c.OIDCKeys(ctx); err != nil || len(keys) != 2 || keys[0].State != "retiring" || keys[1].State != "current" {
		t.Fatalf("keys 3 s into the window: %+v %v", keys, err)
	}
	if active := activeKids(t, e); len(active) != 2 || active[old.Kid] == "" || active[res.Key.Kid] == "" {
		t.Fatalf("GET /mock/oidc-pubkeys/active 3 s into the window: %v", active)
	}
	e.clock.Advance(time.Second)
	if ks, _ = e.c.JWKS(ctx); len(ks.Keys) != 1 || ks.Keys[0].Kid != res.Key.Kid {
		t.Fatalf("JWKS after the window: %+v", ks)
	}
	if active := activeKids(t, e); len(active) != 1 || active[res.Key.Kid] == "" {
		t.Fatalf("GET /mock/oidc-pubkeys/active after the window: %v", active)
	}
	keys, err := e.c.OIDCKeys(ctx)
	if err != nil || len(keys) != 2 || keys[0].State != "retired" || keys[1].State != "current" {
		t.Fatalf("keys: %+v %v", keys, err)
	}
	// a non-governance signature is refused and changes nothing
	if _, err := e.c.RotateOIDC(ctx, 4, idKey); code(err) != problem.Denied {
		t.Fatalf("rotation signed by an owner key: %v", err)
	}
}

// benchAgents is the number of concurrent agents of BenchmarkOIDCMint: 16, or
// $AGENTKEYS_BENCH_AGENTS.
func benchAgents() int {
	if n, err := strconv.Atoi(os.Getenv("AGENTKEYS_BENCH_AGENTS")); err == nil && n > 0 {
		return n
	}
	return 16
}

// BenchmarkOIDCMint measures the identity-token mint through the HTTP handler
// with 16 concurrent agents: session token and DPoP proof verification, scope
// and audience checks, ES256 signing in the enclave and the durable audit entry
// (group commit, fsync) before the token is returned.
// maxPresigned bounds BenchmarkOIDCMint's b.N: signing 3 proofs per mint ahead
// and then minting them must stay well within dpop.Skew (60 s).
const maxPresigned = 100_000

func BenchmarkOIDCMint(b *testing.B) {
	e := newEnv(b, broker.Config{OIDCAudiences: []string{"sts.amazonaws.com"}, Anon: unlimited(), MintLimit: 1 << 20})
	owner, g, idKey := e.ownerKey(b)
	agents := benchAgents()
	type ag struct {
		token  string
		key    *ecdsa.PrivateKey
		proofs []string
	}
	pool := make(chan ag, agents)
	for i := range agents {
		d := e.pairAgent(b, owner, idKey, g.Wallet, fmt.Sprintf("bench%d", i), "oidc:sts.amazonaws.com")
		s, err := d.LoadSession()
		if err != nil {
			b.Fatal(err)
		}
		k, err := daemon.DecodeKey(s.ProofKey)
		if err != nil {
			b.Fatal(err)
		}
		pool <- ag{token: s.Token, key: k}
	}
	body, _ := json.Marshal(apiv1.OIDCRequest{Audience: "sts.amazonaws.com"})
	target := e.srv.URL + "/v1/oidc/token"
	// The agents' DPoP proofs are signed before the timer starts: in production each
	// daemon signs on its own machine, so only the broker's work is measured here
	// (proof verification included). Requests are shared out unevenly, so each
	// agent gets three times its share; one that still runs out signs on the fly.
	perAgent := 3*b.N/agents + 64
	if b.N > maxPresigned {
		b.Fatalf("%d mints: proofs signed before the run would be more than dpop.Skew old when used; use -benchtime of at most %dx (about 20 s) and -count for more samples", b.N, maxPresigned)
	}
	// Dated a second ahead (within dpop.Skew): a broker refuses proofs dated the
	// second it started in, and this one started moments ago.
	at := e.now().Add(time.Second)
	for range agents {
		a := <-pool
		a.proofs = make([]string, 0, perAgent)
		for range perAgent {
			p, err := dpop.Sign(a.key, http.MethodPost, target, a.token, at)
			if err != nil {
				b.Fatal(err)
			}
			a.proofs = append(a.proofs, p)
		}
		pool <- a
	}
	loadRun(b, e, pool, "tokens/s", func(a ag, i int) (*http.Request, error) {
		proof := ""
		if i < len(a.proofs) {
			proof = a.proofs[i]
		} else {
			var err error
			if proof, err = dpop.Sign(a.key, http.MethodPost, target, a.token, e.now()); err != nil {
				return nil, err
			}
		}
		// http.NewRequest, not httptest's: it parses the request from text through a
		// fresh 4 KiB reader, a cost of the test and not of the broker.
		req, err := http.NewRequest(http.MethodPost, target, bytes.NewReader(body))
		if err != nil {
			return nil, err
		}
		req.RemoteAddr = "192.0.2.1:1234"
		req.Header.Set("Authorization", "Bearer "+a.token)
		req.Header.Set("DPoP", proof)
		return req, nil
	})
}

// FuzzOIDCBodies sends arbitrary bodies to the mint and rotation routes: never a
// 500, never a panic; a mint request appends at most its own audit entry, and a
// refused rotation appends nothing.
func FuzzOIDCBodies(f *testing.F) {
	e := newEnv(f, broker.Config{OIDCAudiences: []string{"sts.amazonaws.com"}, Anon: unlimited()})
	_, g := e.owner(f)
	f.Add([]byte(`{"audience":"sts.amazonaws.com","owner_self":true}`), false)
	f.Add([]byte(`{"audience":"sts.amazonaws.com","ttl":-1}`), false)
	f.Add([]byte(`{"audience":"","ttl":99999999999}`), false)
	f.Add([]byte(`{"audience":"x\u0000y"}`), false)
	f.Add([]byte(`{"kind":"oidc.rotate","origin":"governance","payload":{"window_seconds":1}}`), true)
	f.Add([]byte(`{"seq":1,"kind":"oidc.rotate","payload":"x"}`), true)
	f.Fuzz(func(t *testing.T, body []byte, rotate bool) {
		path := "/v1/oidc/token"
		if rotate {
			path = "/v1/oidc/rotate"
		}
		h1, _, _ := e.b.Storage().Head(context.Background())
		rec := e.post(path, g.Token, body)
		if rec.Code >= 500 {
			t.Fatalf("%s %q: %d %s", path, body, rec.Code, rec.Body)
		}
		es, _ := e.b.Storage().Entries(context.Background(), h1.Seq+1, 10)
		n := 0
		for _, en := range es {
			if en.Kind != ledger.KindCheckpoint { // the ledger's own periodic entries
				n++
			}
		}
		if rotate && n != 0 {
			t.Fatalf("an unsigned rotation request appended %d entries", n)
		}
		if n > 1 {
			t.Fatalf("one mint request appended %d entries", n)
		}
	})
}

// TestOIDCMintForOwnInboxDomain: an agent that holds a right on a live inbox
// of domain D mints identity tokens for audience D (the mail edge's) without a
// scope entry; an agent without an inbox on D cannot, nor one whose inbox was
// deleted or whose grant was revoked, nor for a domain the broker is not
// configured for.
func TestOIDCMintForOwnInboxDomain(t *testing.T) {
	const d, other = "agents.example.com", "other.example.com"
	e := newEnv(t, broker.Config{OIDCAudiences: []string{d, other, "unconfigured-ok.example"}})
	ctx := context.Background()
	owner, g, idKey := e.ownerKey(t)
	a := e.source(e.pairAgent(t, owner, idKey, g.Wallet, "bot", "openai"))
	b := e.source(e.pairAgent(t, owner, idKey, g.Wallet, "helper", "openai"))
	for _, dom := range []string{d, other} {
		if _, err := owner.AddDomain(ctx, dom); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := a.OIDCToken(ctx, d, 0); code(err) != problem.Denied {
		t.Fatalf("before inbox create: %v", err)
	}
	in, err := owner.CreateInbox(ctx, "bot", d)
	if err != nil {
		t.Fatal(err)
	}
	tok, err := a.OIDCToken(ctx, d, 0)
	if err != nil {
		t.Fatalf("bot with an inbox on %s: %v", d, err)
	}
	if c, _ := verifyWith(t, e, tok.Token); c.Audience != d {
		t.Fatalf("audience %q", c.Audience)
	}
	// Only the inbox's domain, only for an agent holding a right on it.
	if _, err := a.OIDCToken(ctx, other, 0); code(err) != problem.Denied {
		t.Fatalf("bot for a domain it has no inbox on: %v", err)
	}
	if _, err := b.OIDCToken(ctx, d, 0); code(err) != problem.Denied {
		t.Fatalf("helper without an inbox on %s: %v", d, err)
	}
	if _, err := owner.GrantInbox(ctx, in.Address, "helper", []string{"read"}, false); err != nil {
		t.Fatal(err)
	}
	if _, err := b.OIDCToken(ctx, d, 0); err != nil {
		t.Fatalf("helper granted read on bot's inbox: %v", err)
	}
	if _, err := owner.GrantInbox(ctx, in.Address, "helper", []string{"read"}, true); err != nil {
		t.Fatal(err)
	}
	if _, err := b.OIDCToken(ctx, d, 0); code(err) != problem.Denied {
		t.Fatalf("helper after revoke: %v", err)
	}
	if _, err := owner.DeleteInbox(ctx, in.Address); err != nil {
		t.Fatal(err)
	}
	if _, err := a.OIDCToken(ctx, d, 0); code(err) != problem.Denied {
		t.Fatalf("bot after its inbox was deleted: %v", err)
	}
}

// TestOIDCMintInboxDomainStillConfigured: an inbox on a domain the broker is
// not configured to mint for grants no token for it.
func TestOIDCMintInboxDomainStillConfigured(t *testing.T) {
	const d = "agents.example.com"
	e := newEnv(t, broker.Config{OIDCAudiences: []string{"sts.amazonaws.com"}})
	ctx := context.Background()
	owner, g, idKey := e.ownerKey(t)
	a := e.source(e.pairAgent(t, owner, idKey, g.Wallet, "bot", "openai"))
	if _, err := owner.AddDomain(ctx, d); err != nil {
		t.Fatal(err)
	}
	if _, err := owner.CreateInbox(ctx, "bot", d); err != nil {
		t.Fatal(err)
	}
	if _, err := a.OIDCToken(ctx, d, 0); code(err) != problem.Denied || !strings.Contains(err.Error(), "not configured") {
		t.Fatalf("inbox domain not configured: %v", err)
	}
}
