package client

import (
	"context"
	"crypto/ed25519"
	"crypto/hpke"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/agentkeys/agentkeys/internal/api"
	"github.com/agentkeys/agentkeys/internal/apiv1"
	"github.com/agentkeys/agentkeys/internal/broker"
	"github.com/agentkeys/agentkeys/internal/clock"
	"github.com/agentkeys/agentkeys/internal/dpop"
	"github.com/agentkeys/agentkeys/internal/problem"
)

// TestProofRemadeAfterRestart: a broker that restarted refuses a proof dated
// before it started; the client makes one new proof after the pause the broker
// asks for, and stops there. A real broker behind the real handler, restarted
// on the same data dir and URL.
func TestProofRemadeAfterRestart(t *testing.T) {
	var h atomic.Pointer[http.Handler]
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { (*h.Load()).ServeHTTP(w, r) }))
	t.Cleanup(srv.Close)
	base := t.TempDir()
	// One clock for the broker and the client, on a whole second; the client's
	// pause moves it instead of waiting.
	at := clock.NewFake(time.Date(2031, 3, 4, 5, 6, 7, 0, time.UTC))
	cfg := broker.Config{DataDir: filepath.Join(base, "server"), PlatformKeyFile: filepath.Join(base, "platform.key"), Issuer: srv.URL, Now: at.Now}
	var b *broker.Broker
	open := func() { // a restart when one runs
		if b != nil {
			b.Close()
		}
		var err error
		b, err = broker.Open(cfg)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(b.Close)
		if err := b.Start(context.Background()); err != nil {
			t.Fatal(err)
		}
		handler := api.New(b, api.Config{})
		h.Store(&handler)
	}
	open()
	c, err := New(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	c = c.WithClock(at.Now)
	var paused []time.Duration
	c.sleep = func(_ context.Context, d time.Duration) error { paused = append(paused, d); at.Advance(d); return nil }
	ctx := context.Background()
	// An owner, and a daemon's pair request for it.
	_, id, _ := ed25519.GenerateKey(rand.Reader)
	l := apiv1.Login{PublicKey: hex.EncodeToString(id.Public().(ed25519.PublicKey)), Server: srv.URL, Time: at.Now().Unix(), Nonce: hex.EncodeToString(id[:16])}
	apiv1.SignLogin(&l, id)
	g, err := c.CreateAccount(ctx, l)
	if err != nil {
		t.Fatal(err)
	}
	key, _ := dpop.NewKey()
	jwk, _ := dpop.PublicJWK(key)
	hk, _ := hpke.MLKEM768X25519().GenerateKey()
	r := apiv1.PairRequest{Owner: g.Wallet, Alias: "bot", Scope: []string{"openai"}, ProofJWK: string(jwk),
		HPKEPublic: base64.StdEncoding.EncodeToString(hk.PublicKey().Bytes()), ValidUntil: at.Now().Add(time.Minute).Unix()}
	if err := apiv1.SignPairRequest(&r, key); err != nil {
		t.Fatal(err)
	}
	created, err := c.RequestPairing(ctx, r)
	if err != nil {
		t.Fatal(err)
	}
	before := at.Now() // a proof dated now predates the restart below
	at.Advance(300 * time.Millisecond)
	open()
	// The first proof is dated before the restart, the next ones now.
	var signed atomic.Int32
	c.now = func() time.Time {
		if signed.Add(1) == 1 {
			return before
		}
		return at.Now()
	}
	if st, err := c.PollPairing(ctx, created.ID, key); err != nil || st.Status != apiv1.PairPending {
		t.Fatalf("poll after the restart: %+v %v", st, err)
	}
	if n := signed.Load(); n != 2 || len(paused) != 1 || paused[0] != time.Second {
		t.Fatalf("%d proofs made after pauses %v, want 2 (the refused one and one new) after one pause of 1s", n, paused)
	}
	// A clock that stays behind the broker's start gets the refusal after one retry.
	signed.Store(0)
	c.now = func() time.Time { signed.Add(1); return before }
	if _, err := c.PollPairing(ctx, created.ID, key); problem.As(err).Code != problem.Unauthenticated || signed.Load() != 2 {
		t.Fatalf("a daemon whose clock is behind: %v after %d proofs, want UNAUTHENTICATED after 2", err, signed.Load())
	}
}
