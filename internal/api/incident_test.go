package api_test

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/agentkeys/agentkeys/internal/apiv1"
	"github.com/agentkeys/agentkeys/internal/broker"
	"github.com/agentkeys/agentkeys/internal/ledger"
	"github.com/agentkeys/agentkeys/internal/problem"
	"github.com/agentkeys/agentkeys/internal/registry"
)

func hexPub(k ed25519.PrivateKey) string { return hex.EncodeToString(k.Public().(ed25519.PublicKey)) }

// TestIncidentKeyOnlyRevokes: an incident key of the governance set (the
// watchdog's) revokes an OIDC key on its own signature, through the revoke
// route and as a proposal, once each; every other governance kind signed by
// it is refused, in entry and proposal form, and so is an invite; its
// signature added to an M-of-N proposal counts for nothing. Nothing refused is
// written.
func TestIncidentKeyOnlyRevokes(t *testing.T) {
	e := newEnv(t, broker.Config{SignupInvite: true, Anon: unlimited()})
	ctx := context.Background()
	op, err := broker.LoadOperatorKey(broker.OperatorKeyPath(e.dataDir))
	if err != nil {
		t.Fatal(err)
	}
	_, inc, _ := ed25519.GenerateKey(rand.Reader)
	set := ledger.Governance{Threshold: 1, Keys: []string{hexPub(op)}, Incident: []string{hexPub(inc)}}
	if _, err := e.c.SubmitProposal(ctx, proposalFor(t, e, ledger.KindGovernanceSet, set, op)); err != nil {
		t.Fatal(err)
	}
	if g, err := e.c.Governance(ctx); err != nil || len(g.Members) != 1 || len(g.Incident) != 1 || g.Incident[0] != hexPub(inc) {
		t.Fatalf("GET /v1/governance: %+v %v", g, err)
	}
	head := func() uint64 { h, _, _ := e.b.Storage().Head(ctx); return h.Seq }

	// The incident key revokes a kid alone (the watchdog's entry form, on the
	// revoke route); the same entry sent again is refused.
	revoke := governanceEntry(t, e, registry.KindOidcKeyRevoke, ledger.OriginGovernance, registry.OidcRevoke{Kid: "rogue-kid-1", Reason: "drift"}, inc)
	if rec := e.post("/mock/oidc-pubkeys/revoke", "", revoke); rec.Code != http.StatusCreated {
		t.Fatalf("incident revoke: %d %s", rec.Code, rec.Body)
	}
	l, err := e.b.Ledger()
	if err != nil {
		t.Fatal(err)
	}
	if r, err := registry.OidcRevoked(l.State(ctx), "rogue-kid-1"); err != nil || !r {
		t.Fatalf("the kid is not revoked: %v %v", r, err)
	}
	before := head()
	if rec := e.post("/mock/oidc-pubkeys/revoke", "", revoke); rec.Code == http.StatusCreated || head() != before {
		t.Fatalf("replayed incident revoke: %d %s", rec.Code, rec.Body)
	}
	// A proposal signed by the incident key alone: carried out once.
	p := proposalFor(t, e, registry.KindOidcKeyRevoke, registry.OidcRevoke{Kid: "rogue-kid-2", Reason: "drift"}, inc)
	if _, err := e.c.SubmitProposal(ctx, p); err != nil {
		t.Fatalf("incident revoke proposal: %v", err)
	}
	before = head()
	if _, err := e.c.SubmitProposal(ctx, p); code(err) != problem.Conflict || head() != before {
		t.Fatalf("replayed incident proposal: %v", err)
	}

	// Every other governance kind, in both forms, is refused.
	other := map[string]any{
		ledger.KindGovernanceSet:          ledger.Governance{Threshold: 1, Keys: []string{hexPub(inc)}},
		registry.KindSuccessorAuthorize:   registry.Successor{MrSigner: strings.Repeat("ab", 32), EffectiveFrom: 1, PlatformKey: strings.Repeat("cd", 32)},
		registry.KindSuccessorDeauthorize: registry.Deauthorize{MrSigner: strings.Repeat("ab", 32)},
		registry.KindSessionKeyRotate:     registry.SessionKeyRotate{WindowSeconds: int64((800 * time.Hour).Seconds())},
		registry.KindOidcRotate:           apiv1.OIDCRotate{WindowSeconds: int64((48 * time.Hour).Seconds()), Nonce: strings.Repeat("0", 32)},
	}
	before = head()
	denied := func(what string, err error) {
		t.Helper()
		if p := problem.As(err); p.Code != problem.Denied || !strings.Contains(p.Message, "incident key") || !strings.Contains(p.Fix, "incident keys revoke OIDC keys only") {
			t.Errorf("%s signed by the incident key: want DENIED naming the incident key, got %v (fix %q)", what, err, p.Fix)
		}
	}
	for kind, payload := range other {
		denied(kind+" proposal", func() error { _, err := e.c.SubmitProposal(ctx, proposalFor(t, e, kind, payload, inc)); return err }())
		if kind == registry.KindOidcRotate {
			_, err := e.c.RotateOIDC(ctx, int64((48 * time.Hour).Seconds()), inc)
			denied("oidc rotate", err)
			continue
		}
		_, err := e.c.SubmitGovernance(ctx, kind, payload, inc)
		denied(kind+" entry", err)
	}
	// An invite signed by the incident key creates no account.
	_, k, _ := ed25519.GenerateKey(rand.Reader)
	login := loginFor(e, k)
	apiv1.SignLogin(&login, k)
	login.Invite = broker.NewInvite(inc, e.srv.URL, e.now().Add(time.Hour))
	if _, err := e.c.CreateAccount(ctx, login); code(err) != problem.Denied {
		t.Errorf("an invite signed by the incident key: %v", err)
	}
	if head() != before {
		t.Fatalf("refused incident-key changes wrote %d entries", head()-before)
	}

	// M-of-N: with a 2-of-2 set, one member plus the incident key is refused;
	// the two members carry the change out.
	_, m2, _ := ed25519.GenerateKey(rand.Reader)
	two := ledger.Governance{Threshold: 2, Keys: []string{hexPub(op), hexPub(m2)}, Incident: []string{hexPub(inc)}}
	if _, err := e.c.SubmitProposal(ctx, proposalFor(t, e, ledger.KindGovernanceSet, two, op)); err != nil {
		t.Fatal(err)
	}
	authorize := registry.Successor{MrSigner: strings.Repeat("ef", 32), EffectiveFrom: 1, PlatformKey: strings.Repeat("cd", 32)}
	before = head()
	mixed := proposalFor(t, e, registry.KindSuccessorAuthorize, authorize, op, inc)
	denied("a 2-of-2 proposal with one member and the incident key", func() error { _, err := e.c.SubmitProposal(ctx, mixed); return err }())
	if _, err := e.c.SubmitProposal(ctx, proposalFor(t, e, registry.KindSuccessorAuthorize, authorize, op)); code(err) != problem.Denied {
		t.Fatalf("one of two members: %v", err)
	}
	if head() != before {
		t.Fatal("a refused M-of-N proposal was written")
	}
	if _, err := e.c.SubmitProposal(ctx, proposalFor(t, e, registry.KindSuccessorAuthorize, authorize, op, m2)); err != nil {
		t.Fatalf("two of two members: %v", err)
	}
	// ... and the incident key still revokes alone, below the threshold.
	if _, err := e.c.SubmitGovernance(ctx, registry.KindOidcKeyRevoke, registry.OidcRevoke{Kid: "rogue-kid-3", Reason: "drift"}, inc); err != nil {
		t.Fatalf("incident revoke under a 2-of-2 set: %v", err)
	}
	// The chain, signed by three sets and the incident key, verifies.
	if _, err := ledger.VerifyDriver(ctx, broker.Schema(), e.b.Storage(), true); err != nil {
		t.Fatalf("verify: %v", err)
	}
	var body apiv1.GovernanceInfo
	if rec := e.get("/v1/governance"); json.Unmarshal(rec.Body.Bytes(), &body) != nil || len(body.Incident) != 1 || body.Threshold != 2 {
		t.Fatalf("GET /v1/governance: %s", rec.Body)
	}
}
