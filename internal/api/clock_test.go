package api_test

import (
	"context"
	"net/http"
	"testing"
	"time"

	"github.com/agentkeys/agentkeys/internal/apiv1"
	"github.com/agentkeys/agentkeys/internal/broker"
	"github.com/agentkeys/agentkeys/internal/daemon"
	"github.com/agentkeys/agentkeys/internal/problem"
)

// TestOneClock: a broker whose clock is years from the wall clock decides
// everything by its own: it refuses a login and a DPoP proof dated by the wall,
// and dates sessions, tokens, ledger entries and quotes by its clock. The env's
// clock starts in 2031, so nothing here depends on when the test runs.
func TestOneClock(t *testing.T) {
	e := newEnv(t, broker.Config{OIDCAudiences: []string{"aud"}})
	ctx := context.Background()
	if d := time.Until(e.now()); d < 365*24*time.Hour {
		t.Fatalf("the env's clock is only %v ahead of the wall; the test proves nothing", d)
	}
	// A login dated by the wall clock is years from the broker's.
	_, key, _ := ed25519GenerateKey()
	l := loginFor(e, key)
	l.Time = time.Now().Unix()
	apiv1.SignLogin(&l, key)
	if _, err := e.c.CreateAccount(ctx, l); code(err) != problem.Unauthenticated {
		t.Fatalf("a login dated by the wall clock: %v, want UNAUTHENTICATED", err)
	}
	owner, g, idKey := e.ownerKey(t)
	if want := e.now().Add(30 * 24 * time.Hour).Unix(); g.ExpiresAt != want {
		t.Fatalf("session expires at %d, want the broker's now + 30 days = %d", g.ExpiresAt, want)
	}
	h, err := e.c.Head(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if ht, err := time.Parse(time.RFC3339Nano, h.Time); err != nil || !ht.Equal(e.now()) {
		t.Fatalf("ledger head time %s, want the broker's now %s", h.Time, e.now().Format(time.RFC3339Nano))
	}
	info, err := e.c.Enclave(ctx)
	if err != nil || info.Quote.Timestamp != e.now().Unix() {
		t.Fatalf("quote dated %d, want %d (%v)", info.Quote.Timestamp, e.now().Unix(), err)
	}
	// A daemon on the wall clock is refused; on the broker's it is served.
	e.store(t, owner, g.Omni, "svc", []byte("one-clock-secret"), "")
	dir := e.pairAgent(t, owner, idKey, g.Wallet, "bot", "svc", "oidc:aud")
	if _, err := (daemon.Source{Dir: dir}).Get(ctx, "svc", daemon.Wait{}); err == nil {
		t.Fatal("a daemon whose proofs are dated by the wall clock was served")
	}
	src := e.source(dir)
	if v, err := src.Get(ctx, "svc", daemon.Wait{}); err != nil || string(v) != "one-clock-secret" {
		t.Fatalf("a daemon on the broker's clock: %q %v", v, err)
	}
	tok, err := src.OIDCToken(ctx, "aud", 60)
	if err != nil || tok.ExpiresAt != e.now().Unix()+60 {
		t.Fatalf("identity token expires at %d, want the broker's now + 60 s (%v)", tok.ExpiresAt, err)
	}
	// The daemon judges its session by its clock too.
	st, err := src.Status(ctx)
	if err != nil || st.State != daemon.StatePaired {
		t.Fatalf("status: %+v %v", st, err)
	}
	e.clock.Advance(31 * 24 * time.Hour)
	if st, err := src.Status(ctx); err != nil || st.State != daemon.StateExpired {
		t.Fatalf("status 31 days on: %+v %v, want expired", st, err)
	}
	if rec := e.post("/v1/oidc/token", g.Token, []byte(`{"audience":"aud","owner_self":true}`)); rec.Code != http.StatusUnauthorized {
		t.Fatalf("an owner token 31 days on: %d %s, want 401", rec.Code, rec.Body)
	}
}
