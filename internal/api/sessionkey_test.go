package api_test

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/agentkeys/agentkeys/internal/broker"
	"github.com/agentkeys/agentkeys/internal/problem"
	"github.com/agentkeys/agentkeys/internal/registry"
	"github.com/agentkeys/agentkeys/internal/token"
)

// jwtPart decodes one base64url JSON part of a compact JWT (0 header, 1 claims).
func jwtPart(t *testing.T, tok string, i int, v any) {
	t.Helper()
	b, err := base64.RawURLEncoding.DecodeString(strings.Split(tok, ".")[i])
	if err != nil || json.Unmarshal(b, v) != nil {
		t.Fatalf("not a JWT: %v", err)
	}
}

// TestSessionKeyRotation (§10.4): governance rotates the session-token key; a
// session from before keeps working, new sessions carry the new kid, and once
// the window (the session lifetime plus a minute) has passed the old kid is
// refused — even on a token it signed with a later expiry (a leaked old key) —
// also after a restart. A window shorter than the session lifetime is refused.
func TestSessionKeyRotation(t *testing.T) {
	e := newEnv(t, broker.Config{SessionTTL: time.Hour})
	now := e.now
	ctx := context.Background()
	op, err := broker.LoadOperatorKey(broker.OperatorKeyPath(e.dataDir))
	if err != nil {
		t.Fatal(err)
	}
	kid := func(tok string) string {
		var h struct{ Kid string }
		jwtPart(t, tok, 0, &h)
		return h.Kid
	}
	v1, _ := e.enclave(t).PublicKey("issuer/jwt/v1")
	v2, _ := e.enclave(t).PublicKey("issuer/jwt/v2")
	// GET /v1/enclave shows the keys and their states: what an operator reads.
	enclaveKeys := func(want ...string) {
		t.Helper()
		info, err := e.c.Enclave(ctx)
		if err != nil {
			t.Fatal(err)
		}
		var got []string
		for _, k := range info.SessionKeys {
			got = append(got, fmt.Sprintf("v%d %s %s", k.Version, k.Kid, k.State))
			if k.Path != fmt.Sprintf("issuer/jwt/v%d", k.Version) || (k.State == "current") != (k.RetireAt == 0) {
				t.Errorf("session key %+v", k)
			}
		}
		if !slices.Equal(got, want) {
			t.Fatalf("GET /v1/enclave session keys %q, want %q", got, want)
		}
	}
	enclaveKeys("v1 " + v1.Kid + " current")
	old, g1 := e.owner(t)
	if kid(g1.Token) != v1.Kid {
		t.Fatalf("a session before any rotation has kid %s, want v1's %s", kid(g1.Token), v1.Kid)
	}
	var c1 token.Claims
	jwtPart(t, g1.Token, 1, &c1)
	leaked, err := token.NewIssuer(e.enclave(t), token.Options{Issuer: e.srv.URL, Current: "issuer/jwt/v1", Now: e.now})
	if err != nil {
		t.Fatal(err)
	}
	forged, _, err := leaked.Mint(token.Claims{Subject: c1.Subject, SessionID: c1.SessionID, Role: token.RoleOwner, Expiry: e.now().Add(3 * time.Hour).Unix()})
	if err != nil {
		t.Fatal(err)
	}

	head, _, _ := e.b.Storage().Head(ctx)
	short := registry.SessionKeyRotate{WindowSeconds: int64((59 * time.Minute).Seconds())}
	if _, err := e.c.SubmitGovernance(ctx, registry.KindSessionKeyRotate, short, op); code(err) != problem.BadRequest || !strings.Contains(problem.As(err).Fix, "--window 1h1m0s") {
		t.Fatalf("a window shorter than the session lifetime: %v", err)
	}
	if h, _, _ := e.b.Storage().Head(ctx); h.Seq != head.Seq {
		t.Fatal("a refused rotation wrote to the ledger")
	}
	window := registry.SessionKeyRotate{WindowSeconds: int64((time.Hour + time.Minute).Seconds())}
	if _, err := e.c.SubmitGovernance(ctx, registry.KindSessionKeyRotate, window, op); err != nil {
		t.Fatalf("rotate: %v", err)
	}
	if _, err := old.Whoami(ctx); err != nil {
		t.Fatalf("the session from before the rotation: %v", err)
	}
	_, g2 := e.owner(t)
	if kid(g2.Token) != v2.Kid {
		t.Fatalf("a session after the rotation has kid %s, want v2's %s", kid(g2.Token), v2.Kid)
	}
	if _, err := e.c.WithToken(forged).Whoami(ctx); err != nil {
		t.Fatalf("inside the window a v1 token still verifies: %v", err)
	}
	enclaveKeys("v1 "+v1.Kid+" retiring", "v2 "+v2.Kid+" current")
	ks, err := e.b.SessionKeys(ctx)
	if err != nil || len(ks) != 2 || ks[0].RetireAt != now().Unix()+window.WindowSeconds || ks[1].RetireAt != 0 {
		t.Fatalf("session keys: %+v %v", ks, err)
	}

	e.clock.Advance(time.Hour + time.Minute + time.Second) // every v1 session has expired
	fresh, _ := e.owner(t)                                 // a v2 session (the one from before expired with v1's: same TTL)
	enclaveKeys("v1 "+v1.Kid+" retired", "v2 "+v2.Kid+" current")
	for _, restart := range []bool{false, true} {
		if restart {
			e.restart(t)
		}
		for name, tok := range map[string]string{"the old session": g1.Token, "a v1 token with a later expiry": forged} {
			if _, err := e.c.WithToken(tok).Whoami(ctx); code(err) != problem.Unauthenticated {
				t.Errorf("restart %v: %s after v1 retired: %v", restart, name, err)
			}
		}
		if _, err := fresh.Whoami(ctx); err != nil {
			t.Fatalf("restart %v: the v2 session: %v", restart, err)
		}
	}
}
