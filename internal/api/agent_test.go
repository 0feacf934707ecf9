package api_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/agentkeys/agentkeys/internal/apiv1"
	"github.com/agentkeys/agentkeys/internal/broker"
	"github.com/agentkeys/agentkeys/internal/client"
	"github.com/agentkeys/agentkeys/internal/daemon"
	"github.com/agentkeys/agentkeys/internal/dpop"
	"github.com/agentkeys/agentkeys/internal/ledger"
	"github.com/agentkeys/agentkeys/internal/problem"
)

// ownerKey registers an owner and returns its session and identity key.
func (e *env) ownerKey(t testing.TB) (*client.Session, *apiv1.SessionGrant, ed25519.PrivateKey) {
	t.Helper()
	_, key, _ := ed25519.GenerateKey(rand.Reader)
	l := loginFor(e, key)
	apiv1.SignLogin(&l, key)
	g, err := e.c.CreateAccount(context.Background(), l)
	if err != nil {
		t.Fatal(err)
	}
	return e.c.WithToken(g.Token), g, key
}

type daemonKeys struct {
	proof *ecdsa.PrivateKey
	hpke  []byte // public
	p     *daemon.Pending
}

func (e *env) pairRequest(t testing.TB, owner, alias string, scope ...string) (apiv1.PairRequest, daemonKeys) {
	t.Helper()
	k, _ := dpop.NewKey()
	hk, _ := daemon.NewHPKEKey()
	jwk, _ := dpop.PublicJWK(k)
	r := apiv1.PairRequest{Owner: owner, Alias: alias, Scope: scope, ProofJWK: string(jwk),
		HPKEPublic: base64.StdEncoding.EncodeToString(hk.PublicKey().Bytes()), ValidUntil: e.now().Add(time.Minute).Unix()}
	if err := apiv1.SignPairRequest(&r, k); err != nil {
		t.Fatal(err)
	}
	pk, _ := daemon.EncodeKey(k)
	hb, _ := hk.Bytes()
	return r, daemonKeys{proof: k, hpke: hk.PublicKey().Bytes(),
		p: &daemon.Pending{Owner: owner, Alias: alias, Scope: scope, ProofKey: pk, HPKEPrivate: base64.StdEncoding.EncodeToString(hb)}}
}

// Pair requests are limited per source address, never per owner: ten signed
// requests a minute for a victim's wallet from one address exhaust that
// address's share only, and the victim's real daemon, from another address,
// still files its request (on the old per-owner limit it got 429).
func TestPairRateLimits(t *testing.T) {
	e := newEnv(t, broker.Config{})
	_, g, _ := e.ownerKey(t)
	spam := clientFrom("127.0.0.2")
	for i := range 10 {
		r, _ := e.pairRequest(t, g.Wallet, "spam"+strconv.Itoa(i), "openai")
		if resp := postFrom(t, spam, e.srv.URL+"/v1/pair/requests", jsonBytes(t, r)); resp.StatusCode != http.StatusCreated {
			t.Fatalf("request %d from one address: %d", i, resp.StatusCode)
		}
	}
	r, _ := e.pairRequest(t, g.Wallet, "spam-more", "openai")
	resp := postFrom(t, spam, e.srv.URL+"/v1/pair/requests", jsonBytes(t, r))
	wantLimited(t, resp, "--pair-rate")
	// The same owner, from the daemon's own address: admitted.
	r, _ = e.pairRequest(t, g.Wallet, "real", "openai")
	if resp := postFrom(t, clientFrom("127.0.0.3"), e.srv.URL+"/v1/pair/requests", jsonBytes(t, r)); resp.StatusCode != http.StatusCreated {
		t.Fatalf("the real daemon's request from another address: %d", resp.StatusCode)
	}
	// Refused requests spend their address's share too (their cost is bounded),
	// and nothing they name: ten invalid ones exhaust 127.0.0.4 only.
	bad := clientFrom("127.0.0.4")
	for range 10 {
		if resp := postFrom(t, bad, e.srv.URL+"/v1/pair/requests", []byte(`{"owner":"`+strings.Repeat("x", 4096)+`"}`)); resp.StatusCode != http.StatusBadRequest {
			t.Fatalf("invalid request: %d", resp.StatusCode)
		}
	}
	r, _ = e.pairRequest(t, g.Wallet, "after-bad", "openai")
	wantLimited(t, postFrom(t, bad, e.srv.URL+"/v1/pair/requests", jsonBytes(t, r)), "--pair-rate")
}

func TestPairRequestRefusals(t *testing.T) {
	e := newEnv(t, broker.Config{})
	ctx := context.Background()
	_, g, _ := e.ownerKey(t)
	r, _ := e.pairRequest(t, g.Omni, "bot", "openai")
	for name, mut := range map[string]func(*apiv1.PairRequest){
		"unknown owner": func(r *apiv1.PairRequest) { r.Owner = fmt.Sprintf("%064x", 1) },
		"bad alias":     func(r *apiv1.PairRequest) { r.Alias = "Bad Alias" },
		"bad scope":     func(r *apiv1.PairRequest) { r.Scope = []string{"no spaces"} },
		"altered scope": func(r *apiv1.PairRequest) { r.Scope = []string{"openai", "stripe"} },
		"past":          func(r *apiv1.PairRequest) { r.ValidUntil = e.now().Add(-time.Minute).Unix() },
		"bad hpke":      func(r *apiv1.PairRequest) { r.HPKEPublic = base64.StdEncoding.EncodeToString([]byte("short")) },
	} {
		c := r
		mut(&c)
		if name != "altered scope" {
			// re-sign so that only the field itself is wrong
			k, _ := dpop.NewKey()
			jwk, _ := dpop.PublicJWK(k)
			c.ProofJWK = string(jwk)
			apiv1.SignPairRequest(&c, k)
		}
		if _, err := e.b.RequestPairing(ctx, c, "198.51.100."+strconv.Itoa(len(name))); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

func TestPairPollAndSession(t *testing.T) {
	e := newEnv(t, broker.Config{})
	ctx := context.Background()
	owner, g, idKey := e.ownerKey(t)
	e.store(t, owner, g.Omni, "openai", []byte("sk-in-process-secret"), "")
	r, dk := e.pairRequest(t, g.Wallet, "bot", "openai")
	created, err := e.c.RequestPairing(ctx, r)
	if err != nil {
		t.Fatal(err)
	}
	nonce, _ := hex.DecodeString(created.Nonce)
	if len(nonce) != apiv1.VVCNonceSize || created.VVC != apiv1.VVC(nonce, r.Sig) {
		t.Fatalf("VVC %s, daemon computes %s", created.VVC, apiv1.VVC(nonce, r.Sig))
	}
	vh := vvcHash(t, owner, created.ID)
	// The poll needs a proof by the request's own key.
	if err := e.c.Do(ctx, "GET", "/v1/pair/requests/"+created.ID, nil, nil); code(err) != problem.Unauthenticated {
		t.Fatalf("poll without proof: %v", err)
	}
	other, _ := dpop.NewKey()
	if _, err := e.c.PollPairing(ctx, created.ID, other); code(err) != problem.Unauthenticated {
		t.Fatalf("poll with another key: %v", err)
	}
	st, err := e.c.PollPairing(ctx, created.ID, dk.proof)
	if err != nil || st.Status != apiv1.PairPending || st.Delivery != nil {
		t.Fatalf("poll: %+v %v", st, err)
	}
	// A decision over another VVC, or by another key, is refused.
	_, _, otherKey := e.ownerKey(t)
	for _, d := range []apiv1.Decision{
		apiv1.SignDecision(idKey, e.srv.URL, created.ID, strings.Repeat("0", 64), "approve", e.now().Unix()),
		apiv1.SignDecision(idKey, e.srv.URL, created.ID, created.VVC, "approve", e.now().Unix()), // the digits, not the hash
		apiv1.SignDecision(otherKey, e.srv.URL, created.ID, vh, "approve", e.now().Unix()),
		apiv1.SignDecision(idKey, "http://elsewhere", created.ID, vh, "approve", e.now().Unix()),
		apiv1.SignDecision(idKey, e.srv.URL, created.ID, vh, "deny", e.now().Unix()),
	} {
		if _, err := owner.ApprovePairing(ctx, created.ID, d); code(err) != problem.Denied {
			t.Errorf("bad decision: %v", err)
		}
	}
	a, err := owner.ApprovePairing(ctx, created.ID, apiv1.SignDecision(idKey, e.srv.URL, created.ID, vh, "approve", e.now().Unix()))
	if err != nil {
		t.Fatal(err)
	}
	if a.Generation != 1 || a.Status != apiv1.AgentActive {
		t.Fatalf("approved agent: %+v", a)
	}
	st, err = e.c.PollPairing(ctx, created.ID, dk.proof)
	if err != nil || st.Status != apiv1.PairApproved || st.Delivery == nil {
		t.Fatalf("poll after approval: %+v %v", st, err)
	}
	// the sealed token and channel key are a blob beside the ledger, never in an entry
	entries, _ := e.b.Storage().Entries(ctx, 0, 1000)
	for _, en := range entries {
		if strings.Contains(string(en.Payload), st.Delivery.SealedToken) || strings.Contains(string(en.Payload), st.Delivery.SealedChannelKey) {
			t.Fatalf("entry %d (%s) carries sealed delivery material", en.Seq, en.Kind)
		}
	}
	if _, err := ledger.VerifyDriver(ctx, broker.Schema(), e.b.Storage(), true); err != nil {
		t.Fatalf("verify with delivery blobs: %v", err)
	}
	d := daemon.Dir(t.TempDir())
	dk.p.ID, dk.p.Server = created.ID, e.srv.URL
	if _, err := d.Complete(dk.p, st.Delivery); err != nil {
		t.Fatal(err)
	}
	src := e.source(d)
	v, err := src.Get(ctx, "openai", daemon.Wait{})
	if err != nil || string(v) != "sk-in-process-secret" {
		t.Fatalf("agent read: %q %v", v, err)
	}
	// The daemon's status comes from the broker: the agent's whoami names its
	// alias, generation and current scope.
	if ds, err := src.Status(ctx); err != nil || ds.State != daemon.StatePaired || ds.Whoami.Alias != "bot" ||
		ds.Whoami.Generation != 1 || strings.Join(ds.Whoami.Scope, ",") != "openai" || ds.Whoami.Role != "agent" {
		t.Fatalf("daemon status: %+v %v", ds, err)
	}
	// Approving twice fails; the agent's own token cannot approve or deny.
	if _, err := owner.ApprovePairing(ctx, created.ID, apiv1.SignDecision(idKey, e.srv.URL, created.ID, vh, "approve", e.now().Unix())); code(err) != problem.Conflict {
		t.Errorf("second approval: %v", err)
	}
	if _, err := owner.RevokeAgent(ctx, "bot"); err != nil {
		t.Fatal(err)
	}
	if _, err := src.Get(ctx, "openai", daemon.Wait{}); code(err) != problem.Revoked {
		t.Fatalf("read after revoke: %v", err)
	}
	if ds, err := src.Status(ctx); err != nil || ds.State != daemon.StateRevoked || ds.Problem.Code != problem.Revoked {
		t.Fatalf("daemon status after revoke: %+v %v", ds, err)
	}
}

// vvcHash is the VVC hash of pending request id in the owner's view: what a
// decision signs.
func vvcHash(t testing.TB, owner *client.Session, id string) string {
	t.Helper()
	list, err := owner.PendingPairs(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range list {
		if p.ID == id {
			return p.VVCHash
		}
	}
	t.Fatalf("request %s is not in the owner's pending view", id)
	return ""
}
