package audit_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/agentkeys/agentkeys/internal/api"
	"github.com/agentkeys/agentkeys/internal/apiv1"
	"github.com/agentkeys/agentkeys/internal/audit"
	"github.com/agentkeys/agentkeys/internal/broker"
	"github.com/agentkeys/agentkeys/internal/client"
	"github.com/agentkeys/agentkeys/internal/clock"
	"github.com/agentkeys/agentkeys/internal/ledger"
	"github.com/agentkeys/agentkeys/internal/problem"
	"github.com/agentkeys/agentkeys/internal/registry"
)

// env is a real broker behind the real handler, an owner session on it and one
// genuine identity token.
type env struct {
	c     *client.Client
	b     *broker.Broker
	at    *clock.Fake
	token string
	kid   string
	op    ed25519.PrivateKey
	data  string
}

func newEnv(t *testing.T) *env {
	t.Helper()
	ctx := context.Background()
	srv := httptest.NewUnstartedServer(nil)
	srv.Start()
	t.Cleanup(srv.Close)
	base := t.TempDir()
	at := clock.NewFake(time.Date(2031, 3, 4, 5, 6, 7, 0, time.UTC))
	cfg := broker.Config{DataDir: filepath.Join(base, "server"), PlatformKeyFile: filepath.Join(base, "platform.key"), Issuer: srv.URL,
		Now: at.Now, OIDCAudiences: []string{"aud"}}
	b, err := broker.Open(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(b.Close)
	if err := b.Start(ctx); err != nil {
		t.Fatal(err)
	}
	srv.Config.Handler = api.New(b, api.Config{})
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
	tok, err := c.WithToken(g.Token).OIDCToken(ctx, "aud", 60, true)
	if err != nil {
		t.Fatal(err)
	}
	op, err := broker.LoadOperatorKey(broker.OperatorKeyPath(cfg.DataDir))
	if err != nil {
		t.Fatal(err)
	}
	return &env{c: c, b: b, at: at, token: tok.Token, kid: tok.Kid, op: op, data: cfg.DataDir}
}

func (e *env) view(t *testing.T) *audit.KeyView {
	t.Helper()
	pins, err := audit.Attest(context.Background(), e.c, "")
	if err != nil {
		t.Fatal(err)
	}
	return audit.NewKeyView(e.c, pins)
}

func rejected(err error) bool {
	var r *audit.Rejection
	return errors.As(err, &r)
}

func TestGenuineTokenVerifies(t *testing.T) {
	e := newEnv(t)
	v := e.view(t)
	kid, err := v.VerifyToken(context.Background(), e.token, e.at.Now())
	if err != nil || kid != e.kid {
		t.Fatalf("genuine token: %q %v", kid, err)
	}
}

func resign(t *testing.T, tok string, kid string, key *ecdsa.PrivateKey) string {
	parts := strings.Split(tok, ".")
	hdr, _ := json.Marshal(map[string]string{"alg": "ES256", "kid": kid, "typ": "JWT"})
	in := base64.RawURLEncoding.EncodeToString(hdr) + "." + parts[1]
	d := sha256.Sum256([]byte(in))
	r, s, err := ecdsa.Sign(rand.Reader, key, d[:])
	if err != nil {
		t.Fatal(err)
	}
	sig := make([]byte, 64)
	r.FillBytes(sig[:32])
	s.FillBytes(sig[32:])
	return in + "." + base64.RawURLEncoding.EncodeToString(sig)
}

func TestForgedTokensAreRejected(t *testing.T) {
	e := newEnv(t)
	v := e.view(t)
	rogue, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	parts := strings.Split(e.token, ".")
	noneHdr := base64.RawURLEncoding.EncodeToString([]byte(`{"alg":"none","kid":"` + e.kid + `"}`))
	for name, tok := range map[string]string{
		"rogue key, rogue kid":         resign(t, e.token, "rogue", rogue),
		"rogue key under the real kid": resign(t, e.token, e.kid, rogue),
		"claims altered":               parts[0] + "." + base64.RawURLEncoding.EncodeToString([]byte(`{"sub":"x"}`)) + "." + parts[2],
		"alg none":                     noneHdr + "." + parts[1] + ".",
		"not a JWS":                    "abc",
		"short signature":              parts[0] + "." + parts[1] + "." + base64.RawURLEncoding.EncodeToString([]byte("short")),
	} {
		if _, err := v.VerifyToken(context.Background(), tok, e.at.Now()); !rejected(err) {
			t.Errorf("%s: %v, want a rejection", name, err)
		}
	}
}

func TestRevokedKidIsRejected(t *testing.T) {
	e := newEnv(t)
	v := e.view(t)
	if _, err := v.VerifyToken(context.Background(), e.token, e.at.Now()); err != nil {
		t.Fatal(err)
	}
	if _, err := e.c.SubmitGovernance(context.Background(), registry.KindOidcKeyRevoke, registry.OidcRevoke{Kid: e.kid, Reason: "test"}, e.op); err != nil {
		t.Fatal(err)
	}
	if _, err := v.VerifyToken(context.Background(), e.token, e.at.Now()); !rejected(err) {
		t.Fatalf("token of a revoked kid: %v", err)
	}
	if ok, err := v.Revoked(e.kid); err != nil || !ok {
		t.Fatalf("Revoked: %v %v", ok, err)
	}
}

// tamper serves the broker's chain with one change.
type tamper struct {
	c      *client.Client
	modify func(es []ledger.Entry)
}

func (m tamper) Entries(ctx context.Context, from uint64, limit int) (*apiv1.EntriesPage, error) {
	p, err := m.c.Entries(ctx, from, limit)
	if err == nil {
		m.modify(p.Entries)
	}
	return p, err
}

func TestForgedRegistryIsRefused(t *testing.T) {
	e := newEnv(t)
	pins, err := audit.Attest(context.Background(), e.c, "")
	if err != nil {
		t.Fatal(err)
	}
	rogue, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	rb, _ := rogue.PublicKey.Bytes()
	cases := map[string]struct {
		src  audit.EntrySource
		pins audit.Pins
	}{
		// a man in the middle puts its own key in the register entry
		"register entry altered": {tamper{e.c, func(es []ledger.Entry) {
			for i := range es {
				if es[i].Kind == registry.KindOidcKeyRegister {
					var r registry.OidcRegister
					json.Unmarshal(es[i].Payload, &r)
					r.Key.Public = hex.EncodeToString(rb)
					es[i].Payload, _ = ledger.MarshalPayload(r)
				}
			}
		}}, pins},
		// …or serves a whole chain of its own, from another enclave
		"another ledger key pinned": {e.c, audit.Pins{PlatformKey: pins.PlatformKey, LedgerKey: strings.Repeat("ab", 32)}},
	}
	for name, c := range cases {
		v := audit.NewKeyView(c.src, c.pins)
		_, err := v.VerifyToken(context.Background(), e.token, e.at.Now())
		if p := problem.As(err); err == nil || p.Code != problem.LedgerInvalid {
			t.Errorf("%s: %v, want LEDGER_INVALID", name, err)
		}
	}
	// a key whose quote names another platform key is not vouched for
	v := audit.NewKeyView(e.c, audit.Pins{PlatformKey: strings.Repeat("cd", 32), LedgerKey: pins.LedgerKey})
	if _, err := v.VerifyToken(context.Background(), e.token, e.at.Now()); !rejected(err) {
		t.Errorf("key attested under another platform key: %v", err)
	}
}

func TestAttestRefusesAnotherPlatformKey(t *testing.T) {
	e := newEnv(t)
	if _, err := audit.Attest(context.Background(), e.c, strings.Repeat("ee", 32)); problem.As(err).Code != problem.Denied {
		t.Fatalf("pinned another platform key: %v", err)
	}
}

// A view that has not reached the chain's end judges nothing: a later entry
// could revoke the key. It goes on from where it stopped.
func TestViewJudgesOnlyAtTheHead(t *testing.T) {
	e := newEnv(t)
	old := audit.SetMaxPagesPerSync(1)
	defer audit.SetMaxPagesPerSync(old)
	v := e.view(t)
	_, err := v.VerifyToken(context.Background(), e.token, e.at.Now())
	if p := problem.As(err); err == nil || p.Code != problem.Unreachable {
		t.Fatalf("before the head: %v, want UNREACHABLE", err)
	}
	if _, err := v.VerifyToken(context.Background(), e.token, e.at.Now()); err != nil {
		t.Fatalf("at the head: %v", err)
	}
}
