package api_test

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/hex"
	"strings"
	"testing"
	"time"

	"github.com/agentkeys/agentkeys/internal/apiv1"
	"github.com/agentkeys/agentkeys/internal/broker"
	"github.com/agentkeys/agentkeys/internal/ledger"
	"github.com/agentkeys/agentkeys/internal/problem"
)

// proposalFor builds a proposal for e's ledger, signed by keys.
func proposalFor(t *testing.T, e *env, kind string, payload any, keys ...ed25519.PrivateKey) ledger.Proposal {
	t.Helper()
	g, err := e.c.Governance(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	p, err := ledger.MarshalPayload(payload)
	if err != nil {
		t.Fatal(err)
	}
	var nonce [16]byte
	rand.Read(nonce[:])
	pr := ledger.Proposal{Ledger: g.Ledger, Kind: kind, Payload: p, Nonce: hex.EncodeToString(nonce[:]), Expires: e.now().Add(time.Hour).Unix()}
	for _, k := range keys {
		pr.Sign(k)
	}
	return pr
}

// TestGovernanceProposalRoute: GET /v1/governance shows the set in force; the
// proposal route answers each refusal with its code and a fix, and writes
// nothing for any of them.
func TestGovernanceProposalRoute(t *testing.T) {
	e := newEnv(t, broker.Config{Anon: unlimited()})
	ctx := context.Background()
	op, err := broker.LoadOperatorKey(broker.OperatorKeyPath(e.dataDir))
	if err != nil {
		t.Fatal(err)
	}
	g, err := e.c.Governance(ctx)
	if err != nil || g.Threshold != 1 || len(g.Members) != 1 || g.Members[0] != hex.EncodeToString(op.Public().(ed25519.PublicKey)) {
		t.Fatalf("governance of a fresh broker: %+v %v", g, err)
	}
	head := func() uint64 { h, _, _ := e.b.Storage().Head(ctx); return h.Seq }
	before := head()
	authorize := map[string]any{"mrsigner": strings.Repeat("ab", 32), "effective_from": 1}
	foreign := proposalFor(t, e, "successor.authorize", authorize)
	foreign.Ledger[0] ^= 1
	foreign.Sign(op)
	expired := proposalFor(t, e, "successor.authorize", authorize)
	expired.Expires = e.now().Add(-time.Minute).Unix()
	expired.Sign(op)
	many := proposalFor(t, e, "successor.authorize", authorize)
	for range ledger.MaxGovernanceMembers + 1 {
		_, k, _ := ed25519.GenerateKey(rand.Reader)
		many.Sign(k)
	}
	unsigned := proposalFor(t, e, "successor.authorize", authorize)
	unknown := proposalFor(t, e, "no.such.kind", authorize, op)
	for name, c := range map[string]struct {
		p    ledger.Proposal
		code problem.Code
		msg  string
	}{
		"another ledger":        {foreign, problem.Denied, "not this broker's ledger"},
		"expired":               {expired, problem.Denied, "expired"},
		"too many signatures":   {many, problem.BadRequest, "at most 32"},
		"no signature":          {unsigned, problem.Denied, "governance entries carry"},
		"unknown kind":          {unknown, problem.BadRequest, "unknown entry kind"},
		"not a governance kind": {proposalFor(t, e, "checkpoint", map[string]any{"seq": 1}, op), problem.Denied, "may not submit"},
	} {
		_, err := e.c.SubmitProposal(ctx, c.p)
		if p := problem.As(err); p.Code != c.code || !strings.Contains(p.Message, c.msg) || p.Fix == "" {
			t.Errorf("%s: want %s %q with a fix, got %v (fix %q)", name, c.code, c.msg, err, p.Fix)
		}
	}
	if head() != before {
		t.Fatal("a refused proposal wrote to the ledger")
	}
	ok := proposalFor(t, e, "successor.authorize", authorize, op)
	if res, err := e.c.SubmitProposal(ctx, ok); err != nil || res.Entry.Seq != before+1 || !ledger.IsProposal(&res.Entry) {
		t.Fatalf("a 1-of-1 proposal: %+v %v", res, err)
	}
}

// TestInviteNeedsCurrentMember: once governance replaced its set, an invite
// signed by a removed member creates nothing; one by a member of the set in
// force does.
func TestInviteNeedsCurrentMember(t *testing.T) {
	e := newEnv(t, broker.Config{SignupInvite: true, Anon: unlimited()})
	ctx := context.Background()
	op, err := broker.LoadOperatorKey(broker.OperatorKeyPath(e.dataDir))
	if err != nil {
		t.Fatal(err)
	}
	_, member, _ := ed25519.GenerateKey(rand.Reader)
	set := ledger.Governance{Threshold: 1, Keys: []string{hex.EncodeToString(member.Public().(ed25519.PublicKey))}}
	if _, err := e.c.SubmitProposal(ctx, proposalFor(t, e, ledger.KindGovernanceSet, set, op)); err != nil {
		t.Fatal(err)
	}
	try := func(invite string) error {
		_, k, _ := ed25519.GenerateKey(rand.Reader)
		l := loginFor(e, k)
		apiv1.SignLogin(&l, k)
		l.Invite = invite
		_, err := e.c.CreateAccount(ctx, l)
		return err
	}
	if err := try(broker.NewInvite(op, e.srv.URL, e.now().Add(time.Hour))); code(err) != problem.Denied {
		t.Fatalf("an invite by the removed operator key: %v", err)
	}
	if err := try(broker.NewInvite(member, e.srv.URL, e.now().Add(time.Hour))); err != nil {
		t.Fatalf("an invite by the current member: %v", err)
	}
}
