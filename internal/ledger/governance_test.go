package ledger_test

import (
	"context"
	"crypto/ed25519"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/agentkeys/agentkeys/internal/ledger"
)

// govClock is the fixtures' stopped clock: proposal expiry is judged against it.
var govClock = time.Unix(1_800_000_000, 0)

func govOpts() ledger.Options {
	return ledger.Options{Now: func() time.Time { return govClock }}
}

// proposal builds a proposal for this fixture's ledger, signed by keys.
func (f *fixture) proposal(kind, payload string, nonce byte, keys ...ed25519.PrivateKey) ledger.Proposal {
	p := ledger.Proposal{Ledger: f.l.ID(), Kind: kind, Payload: []byte(payload),
		Nonce: fmt.Sprintf("%032x", nonce), Expires: govClock.Add(time.Hour).Unix()}
	for _, k := range keys {
		p.Sign(k)
	}
	return p
}

func (f *fixture) submitProposal(p ledger.Proposal) (ledger.Entry, error) {
	e, err := p.Entry()
	if err != nil {
		return ledger.Entry{}, err
	}
	return f.l.Submit(context.Background(), e)
}

func pubHex(k ed25519.PrivateKey) string { return hex.EncodeToString(k.Public().(ed25519.PublicKey)) }

// TestGovernanceProposals: a 2-of-3 set. Two distinct members' signatures over
// the proposal carry it out wherever the head is; one signature, one member
// twice, a stranger, a replay, another ledger's proposal, an expired one and
// more signatures than members are refused and write nothing.
func TestGovernanceProposals(t *testing.T) {
	f := newFixture(t, govOpts(), 2)
	if first, err := f.l.Entries(context.Background(), 0, 1); err != nil || f.l.ID() != first[0].Hash() {
		t.Fatalf("ledger id %s is not the genesis entry's hash (%v)", f.l.ID(), err)
	}
	f.account(t, 0) // the head moves after the proposal was made: it does not matter
	ok := f.proposal("test.gov", `{"x":1}`, 1, f.gov[0], f.gov[2])
	e, err := f.submitProposal(ok)
	if err != nil {
		t.Fatalf("2 of 3: %v", err)
	}
	if !ledger.IsProposal(&e) || e.Seq != 2 || !strings.HasPrefix(e.Signer, "governance:"+ok.Nonce+":") {
		t.Fatalf("stored entry: seq %d signer %q", e.Seq, e.Signer)
	}
	if _, found, _ := f.l.State(context.Background()).Get(fmt.Sprintf("gov/%d", e.Seq)); !found {
		t.Fatal("the accepted proposal was not folded")
	}
	before := f.l.Head()

	stranger := ed25519.NewKeyFromSeed(make([]byte, 32))
	other := f.proposal("test.gov", `{"x":3}`, 7, f.gov[0], f.gov[1])
	other.Ledger[0] ^= 1
	other.Signatures = nil
	other.Sign(f.gov[0])
	other.Sign(f.gov[1])
	expired := f.proposal("test.gov", `{"x":4}`, 8)
	expired.Expires = govClock.Add(-time.Second).Unix()
	expired.Sign(f.gov[0])
	expired.Sign(f.gov[1])
	tooLong := f.proposal("test.gov", `{"x":5}`, 9)
	tooLong.Expires = govClock.Add(ledger.MaxProposalLifetime + time.Hour).Unix()
	tooLong.Sign(f.gov[0])
	tooLong.Sign(f.gov[1])
	twice := f.proposal("test.gov", `{"x":2}`, 3, f.gov[1])
	twice.Signatures = append(twice.Signatures, twice.Signatures[0])
	four := f.proposal("test.gov", `{"x":2}`, 4, f.gov[0], f.gov[1], f.gov[2], stranger)
	changed := f.proposal("test.gov", `{"x":2}`, 5, f.gov[0], f.gov[1])
	changed.Payload = []byte(`{"x":99}`)

	cases := []struct {
		name string
		p    ledger.Proposal
		want error
		msg  string
	}{
		{"one signature", f.proposal("test.gov", `{"x":2}`, 2, f.gov[1]), ledger.ErrSignature, "1 distinct member signature(s); the governance set needs 2 of its 3 members"},
		{"same member twice", twice, ledger.ErrSignature, "needs 2 of its 3"},
		{"non-member", f.proposal("test.gov", `{"x":2}`, 6, f.gov[0], stranger), ledger.ErrSignature, "not a member"},
		{"more signatures than members", four, ledger.ErrSignature, "more than the 3 members"},
		{"replay", ok, ledger.ErrReplay, "carried out at seq 2"},
		{"another ledger", other, ledger.ErrSignature, "does not verify"},
		{"changed after signing", changed, ledger.ErrSignature, "does not verify"},
		{"expired", expired, ledger.ErrRejected, "expired"},
		{"expiry too far", tooLong, ledger.ErrRejected, "more than"},
	}
	for _, c := range cases {
		_, err := f.submitProposal(c.p)
		if !errors.Is(err, c.want) || !strings.Contains(err.Error(), c.msg) {
			t.Errorf("%s: want %v containing %q, got %v", c.name, c.want, c.msg, err)
		}
	}
	var te *ledger.ThresholdError
	if _, err := f.submitProposal(f.proposal("test.gov", `{"x":2}`, 2, f.gov[1])); !errors.As(err, &te) || te.Have != 1 || te.Need != 2 {
		t.Errorf("below threshold: want a ThresholdError 1/2, got %v", err)
	}
	if h := f.l.Head(); h != before {
		t.Fatalf("refused proposals moved the head from %d to %d", before.Seq, h.Seq)
	}
	f.verify(t)
	if _, err := ledger.VerifyDriver(context.Background(), f.schema, f.d, false); err != nil {
		t.Fatalf("link verify: %v", err)
	}
}

// TestGovernanceSetChange: replacing the set needs the threshold of the set in
// force; afterwards the new set signs (a removed member no longer counts), and
// the whole chain still verifies — entries before the change against the old
// set, also when a verifier reads the final state (the server's start).
func TestGovernanceSetChange(t *testing.T) {
	f := newFixture(t, govOpts(), 2)
	ctx := context.Background()
	// Entry form, signed by a member who is removed below.
	if _, err := f.l.Submit(ctx, f.govEntry(`{"x":1}`, f.gov[1], f.gov[2])); err != nil {
		t.Fatal(err)
	}
	newKey := ed25519.NewKeyFromSeed(append(make([]byte, 31), 9))
	set := fmt.Sprintf(`{"keys":["%s","%s","%s"],"threshold":2}`, pubHex(f.gov[0]), pubHex(f.gov[1]), pubHex(newKey))
	if _, err := f.submitProposal(f.proposal(ledger.KindGovernanceSet, set, 1, f.gov[0])); !errors.Is(err, ledger.ErrSignature) {
		t.Fatalf("set change with 1 of 2: %v", err)
	}
	bad := f.proposal(ledger.KindGovernanceSet, fmt.Sprintf(`{"keys":["%s"],"threshold":2}`, pubHex(f.gov[0])), 2, f.gov[0], f.gov[1])
	if _, err := f.submitProposal(bad); !errors.Is(err, ledger.ErrRejected) || !strings.Contains(err.Error(), "impossible") {
		t.Fatalf("impossible set: %v", err)
	}
	if _, err := f.submitProposal(f.proposal(ledger.KindGovernanceSet, set, 3, f.gov[0], f.gov[2])); err != nil {
		t.Fatalf("set change with 2 of 3: %v", err)
	}
	gv, err := ledger.CurrentGovernance(f.l.State(ctx))
	if err != nil || gv.Threshold != 2 || len(gv.Keys) != 3 || gv.Keys[2] != pubHex(newKey) {
		t.Fatalf("current set %+v, %v", gv, err)
	}
	if _, err := f.submitProposal(f.proposal("test.gov", `{"x":2}`, 4, f.gov[0], f.gov[2])); err == nil || !strings.Contains(err.Error(), "not a member") {
		t.Fatalf("a removed member's signature: %v", err)
	}
	if _, err := f.submitProposal(f.proposal("test.gov", `{"x":2}`, 5, f.gov[0], newKey)); err != nil {
		t.Fatalf("the new set: %v", err)
	}
	f.verify(t)
	if _, err := ledger.VerifyDriver(ctx, f.schema, f.d, false); err != nil {
		t.Fatalf("link verify against final state: %v", err)
	}
}

// TestProposalFileForm: a proposal read back from a re-indented file has the
// digest its members signed; unknown fields and bad nonces are refused.
func TestProposalFileForm(t *testing.T) {
	p := ledger.Proposal{Kind: "k", Payload: []byte(`{"a":"\u003cb\u003e","n":1}`), Nonce: strings.Repeat("ab", 16), Expires: 5}
	want := p.Digest()
	indented := `{"ledger":"` + strings.Repeat("00", 32) + `","kind":"k","payload":{ "a": "<b>",
	  "n": 1 },"nonce":"` + p.Nonce + `","expires":5,"signatures":[]}`
	var q ledger.Proposal
	if err := q.UnmarshalJSON([]byte(indented)); err != nil {
		t.Fatal(err)
	}
	if q.Digest() != want || q.Check() != nil {
		t.Fatalf("re-indented payload %s changed the digest", q.Payload)
	}
	if err := q.UnmarshalJSON([]byte(`{"kind":"k","extra":1}`)); err == nil {
		t.Fatal("unknown field accepted")
	}
	q.Nonce = "XYZ"
	if _, err := q.Entry(); err == nil {
		t.Fatal("bad nonce accepted")
	}
}

// FuzzProposalDecode: any proposal the decoder accepts round-trips with the same
// digest (what members signed), and one that passes Check becomes an entry in
// proposal form or is refused — never a panic.
func FuzzProposalDecode(f *testing.F) {
	k := ed25519.NewKeyFromSeed(make([]byte, 32))
	p := ledger.Proposal{Kind: "successor.authorize", Payload: []byte(`{"mrsigner":"ab"}`), Nonce: strings.Repeat("0f", 16), Expires: 1800000000}
	p.Sign(k)
	good, _ := json.Marshal(&p)
	f.Add(good)
	f.Add([]byte(`{"ledger":"` + strings.Repeat("00", 32) + `","kind":"k","payload":{ "a" : [1, "\u003c"] },"nonce":"x","expires":1,"signatures":[{"key":"zz","sig":""}]}`))
	f.Add([]byte(`{"kind":"k","payload":null}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		var p ledger.Proposal
		if json.Unmarshal(b, &p) != nil {
			return
		}
		again, err := json.Marshal(&p)
		if err != nil {
			t.Fatalf("decoded proposal does not encode: %v", err)
		}
		var q ledger.Proposal
		if err := json.Unmarshal(again, &q); err != nil {
			t.Fatalf("re-encoded proposal does not decode: %v", err)
		}
		if q.Digest() != p.Digest() {
			t.Fatal("digest changed across a round trip")
		}
		if p.Check() != nil {
			return
		}
		if e, err := p.Entry(); err == nil && !ledger.IsProposal(&e) {
			t.Fatal("a proposal's entry is not in proposal form")
		}
	})
}

// TestGovernanceIncidentKeysValidate: incident keys are hex Ed25519 keys, at
// most MaxIncidentKeys, and never also members.
func TestGovernanceIncidentKeysValidate(t *testing.T) {
	k := func(i byte) string { return pubHex(ed25519.NewKeyFromSeed(append(make([]byte, 31), i))) }
	many := []string{}
	for i := range ledger.MaxIncidentKeys + 1 {
		many = append(many, k(byte(10+i)))
	}
	for _, c := range []struct {
		name string
		gv   ledger.Governance
		msg  string
	}{
		{"ok", ledger.Governance{Threshold: 1, Keys: []string{k(1)}, Incident: []string{k(2)}}, ""},
		{"member and incident", ledger.Governance{Threshold: 1, Keys: []string{k(1)}, Incident: []string{k(1)}}, "not both"},
		{"incident twice", ledger.Governance{Threshold: 1, Keys: []string{k(1)}, Incident: []string{k(2), k(2)}}, "duplicate"},
		{"not a key", ledger.Governance{Threshold: 1, Keys: []string{k(1)}, Incident: []string{"zz"}}, "lowercase hex"},
		{"upper case", ledger.Governance{Threshold: 1, Keys: []string{k(1)}, Incident: []string{strings.ToUpper(k(2))}}, "lowercase hex"},
		{"too many", ledger.Governance{Threshold: 1, Keys: []string{k(1)}, Incident: many}, "at most 8"},
		{"incident keys only", ledger.Governance{Threshold: 1, Incident: []string{k(2)}}, "impossible"},
	} {
		err := ledger.ValidateGovernance(c.gv)
		if (c.msg == "") != (err == nil) || err != nil && !strings.Contains(err.Error(), c.msg) {
			t.Errorf("%s: want %q, got %v", c.name, c.msg, err)
		}
	}
	// A set without incident keys encodes as before (genesis hashes of existing
	// ledgers do not change).
	b, _ := json.Marshal(ledger.Governance{Threshold: 1, Keys: []string{k(1)}})
	if strings.Contains(string(b), "incident") {
		t.Fatalf("a set without incident keys encodes %s", b)
	}
}
