package api_test

import (
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/agentkeys/agentkeys/internal/agent"
	"github.com/agentkeys/agentkeys/internal/apiv1"
	"github.com/agentkeys/agentkeys/internal/broker"
	"github.com/agentkeys/agentkeys/internal/dpop"
	"github.com/agentkeys/agentkeys/internal/ledger"
	"github.com/agentkeys/agentkeys/internal/problem"
)

// attackerPredict is the best an attacker can do offline with a signed request
// alone: the old VVC formula, digits of SHA-256(signature). With the broker's
// secret nonce in the VVC it predicts nothing.
func attackerPredict(sig string) string {
	raw, _ := base64.RawURLEncoding.DecodeString(sig)
	h := sha256.Sum256(raw)
	return fmt.Sprintf("%06d", binary.BigEndian.Uint64(h[:8])%1_000_000)
}

func sameDigits(a, b string) int {
	n := 0
	for i := range min(len(a), len(b)) {
		if a[i] == b[i] {
			n++
		}
	}
	return n
}

// ownerPending fetches the owner's pending view as raw JSON rows.
func ownerPending(t *testing.T, e *env, token string) []map[string]any {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, e.srv.URL+"/v1/pair/requests", nil)
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var out struct{ Requests []map[string]any }
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("pending: %d %v", resp.StatusCode, err)
	}
	return out.Requests
}

// publicEntries is everything an anonymous caller reads on GET /v1/ledger/entries.
func publicEntries(t *testing.T, e *env) (raw string, entries []ledger.Entry) {
	t.Helper()
	resp, err := http.Get(e.srv.URL + "/v1/ledger/entries?from=0&limit=1000")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var page struct{ Entries []ledger.Entry }
	if err := json.Unmarshal(b, &page); err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("public entries: %d %v", resp.StatusCode, err)
	}
	return string(b), page.Entries
}

// TestPairGrindingCannotHijack is the hijack of issue 16 with a bounded budget:
// the attacker knows the victim daemon's VVC (it is on the victim's screen, or
// was on the public ledger), re-signs 10^4 look-alike requests offline choosing
// the one its best predictor scores closest, and files it. It must neither get a
// look-alike row into the owner's view nor be able to predict any VVC it gets.
func TestPairGrindingCannotHijack(t *testing.T) {
	e := newEnv(t, broker.Config{})
	ctx := context.Background()
	_, g, _ := e.ownerKey(t)
	victimReq, _ := e.pairRequest(t, g.Wallet, "ci-bot", "openai", "github")
	victim, err := e.b.RequestPairing(ctx, victimReq, "192.0.2.10")
	if err != nil {
		t.Fatal(err)
	}
	v := victim.VVC

	// Grind: the same owner, alias and scope, re-signed 10^4 times.
	const budget = 10_000
	key, _ := dpop.NewKey()
	jwk, _ := dpop.PublicJWK(key)
	base := apiv1.PairRequest{Owner: g.Wallet, Alias: "ci-bot", Scope: []string{"openai", "github"}, ProofJWK: string(jwk),
		HPKEPublic: victimReq.HPKEPublic, ValidUntil: e.now().Add(time.Minute).Unix()}
	var best apiv1.PairRequest
	bestScore := -1
	for i := range budget {
		r := base
		r.ValidUntil += int64(i % 30)
		if err := apiv1.SignPairRequest(&r, key); err != nil {
			t.Fatal(err)
		}
		if s := sameDigits(attackerPredict(r.Sig), v); s > bestScore {
			best, bestScore = r, s
			if s == len(v) {
				break
			}
		}
	}
	got, err := e.b.RequestPairing(ctx, best, "203.0.113.66")
	if err == nil {
		t.Errorf("a second pending request for owner and alias ci-bot was accepted (VVC %s, attacker predicted %s, victim's %s)",
			got.VVC, attackerPredict(best.Sig), v)
	} else if p := problem.As(err); p.Code != problem.Conflict || !strings.Contains(p.Fix, "deny") || !strings.Contains(p.Fix, "expire") {
		t.Errorf("look-alike refused with %v (fix %q), want CONFLICT naming deny/expiry", err, p.Fix)
	}

	// The VVC is not computable from the request: for requests the attacker
	// files under its own aliases, its offline prediction is not the VVC.
	predicted := 0
	for _, alias := range []string{"ci-bot-2", "cibot", "ci_bot"} {
		r, _ := e.pairRequest(t, g.Wallet, alias, "openai", "github")
		c, err := e.b.RequestPairing(ctx, r, "203.0.113.66")
		if err != nil {
			t.Fatal(err)
		}
		if c.VVC == attackerPredict(r.Sig) {
			predicted++
		}
	}
	if predicted == 3 {
		t.Errorf("the attacker predicted the VVC of all 3 of its requests offline (the VVC depends only on the requester's signature)")
	}

	// The owner sees exactly one ci-bot request: the victim's, with its VVC.
	var rows []string
	for _, row := range ownerPending(t, e, g.Token) {
		if row["alias"] == "ci-bot" {
			rows = append(rows, fmt.Sprintf("%v (VVC %v)", row["id"], row["vvc"]))
		}
	}
	if want := fmt.Sprintf("%s (VVC %s)", victim.ID, v); len(rows) != 1 || rows[0] != want {
		t.Errorf("owner's view of alias ci-bot: %v, want only the victim's request %s", rows, want)
	}
	// Every row tells its own key and source: the victim's shows the victim
	// daemon's fingerprint, the attacker's rows the attacker's address.
	for _, row := range ownerPending(t, e, g.Token) {
		if row["id"] == victim.ID {
			if row["fingerprint"] != victim.Fingerprint || row["source"] != "192.0.2.10" {
				t.Errorf("victim's row: key %v from %v, daemon shows key %s", row["fingerprint"], row["source"], victim.Fingerprint)
			}
		} else if row["fingerprint"] == victim.Fingerprint || row["source"] != "203.0.113.66" {
			t.Errorf("attacker's row %v: key %v from %v", row["id"], row["fingerprint"], row["source"])
		}
	}
}

// TestPairVVCChangesWithBrokerNonce files the very same signed request three
// times (each after the previous one expired): only the broker's contribution
// differs, so the VVCs must.
func TestPairVVCChangesWithBrokerNonce(t *testing.T) {
	e := newEnv(t, broker.Config{})
	ctx := context.Background()
	_, g, _ := e.ownerKey(t)
	r, _ := e.pairRequest(t, g.Omni, "bot", "openai")
	r.ValidUntil = 0 // the broker's default lifetime, so the request can be filed again later
	k, _ := dpop.NewKey()
	jwk, _ := dpop.PublicJWK(k)
	r.ProofJWK = string(jwk)
	if err := apiv1.SignPairRequest(&r, k); err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	for i := range 3 {
		c, err := e.b.RequestPairing(ctx, r, "192.0.2.20")
		if err != nil {
			t.Fatalf("filing %d: %v", i, err)
		}
		seen[c.VVC] = true
		e.clock.Advance(broker.MaxPairTTL + time.Minute)
	}
	if len(seen) == 1 {
		t.Errorf("the same signed request got the same VVC three times: the broker contributes nothing")
	}
}

// TestPublicLedgerHidesVVC: nothing on the public route tells the VVC of a
// pending request, its nonce or where it came from.
func TestPublicLedgerHidesVVC(t *testing.T) {
	e := newEnv(t, broker.Config{})
	ctx := context.Background()
	_, g, idKey := e.ownerKey(t)
	r, _ := e.pairRequest(t, g.Wallet, "ci-bot", "openai")
	c, err := e.b.RequestPairing(ctx, r, "192.0.2.77")
	if err != nil {
		t.Fatal(err)
	}
	owner := e.c.WithToken(g.Token)
	vh := vvcHash(t, owner, c.ID)
	if _, err := owner.ApprovePairing(ctx, c.ID, apiv1.SignDecision(idKey, e.srv.URL, c.ID, vh, "approve", e.now().Unix())); err != nil {
		t.Fatal(err)
	}
	// The public route serves these kinds as commitments; the stored payloads
	// (what the owner's session gets in full) must not carry the VVC either.
	raw, _ := publicEntries(t, e)
	page, err := owner.Entries(ctx, 0, 1000)
	if err != nil {
		t.Fatal(err)
	}
	entries := page.Entries
	var found bool
	for _, en := range entries {
		if en.Kind != agent.KindPairRequested {
			continue
		}
		found = true
		var p map[string]any
		if err := json.Unmarshal(en.Payload, &p); err != nil {
			t.Fatal(err)
		}
		for k, val := range p {
			if k == "vvc" || val == c.VVC {
				t.Errorf("public pair.requested entry %d carries the VVC in %q", en.Seq, k)
			}
		}
	}
	if !found {
		t.Fatal("no pair.requested entry on the public route")
	}
	nonce, _ := hex.DecodeString(c.Nonce)
	for _, form := range []string{c.Nonce, base64.StdEncoding.EncodeToString(nonce), base64.RawURLEncoding.EncodeToString(nonce), vh} {
		if len(nonce) != apiv1.VVCNonceSize || strings.Contains(raw, form) {
			t.Errorf("the public ledger carries the broker's VVC nonce or VVC hash (%q)", form)
		}
	}
	// The owner's public decision is over the VVC hash: trying the 10^6 codes
	// against it finds nothing (checked here for the right code only).
	var approved bool
	for _, en := range entries {
		if en.Kind != agent.KindPairApproved {
			continue
		}
		var a agent.Approval
		if err := json.Unmarshal(en.Payload, &a); err != nil {
			t.Fatal(err)
		}
		approved = true
		sig, _ := hex.DecodeString(a.Statement)
		pub := idKey.Public().(ed25519.PublicKey)
		if ed25519.Verify(pub, apiv1.DecisionMessage(e.srv.URL, c.ID, c.VVC, "approve", a.Time), sig) {
			t.Errorf("the public approval is a signature over the 6-digit VVC: 10^6 guesses recover it")
		}
		if !ed25519.Verify(pub, apiv1.DecisionMessage(e.srv.URL, c.ID, vh, "approve", a.Time), sig) {
			t.Errorf("the approval does not verify over the VVC hash")
		}
	}
	if !approved {
		t.Fatal("no pair.approved entry on the public route")
	}
	if strings.Contains(raw, "192.0.2.77") {
		t.Errorf("the public ledger carries the requester's address")
	}
}

// TestOwnerPendingTellsRequestsApart: the owner's view of two requests shows
// what tells them apart: id, source address, time and the daemon key's
// fingerprint.
func TestOwnerPendingTellsRequestsApart(t *testing.T) {
	e := newEnv(t, broker.Config{})
	at := e.now() // the clock stands still: every request is made at this second
	ctx := context.Background()
	_, g, _ := e.ownerKey(t)
	src, fp := map[string]string{}, map[string]string{}
	for i, alias := range []string{"bot-a", "bot-b"} {
		r, _ := e.pairRequest(t, g.Omni, alias, "openai")
		addr := fmt.Sprintf("192.0.2.%d", 30+i)
		c, err := e.b.RequestPairing(ctx, r, addr)
		if err != nil {
			t.Fatal(err)
		}
		jkt, _ := apiv1.VerifyPairRequest(r)
		src[c.ID], fp[c.ID] = addr, apiv1.Fingerprint(jkt)
	}
	// Over HTTP the source is the connection's address.
	r, _ := e.pairRequest(t, g.Omni, "bot-c", "openai")
	c, err := e.c.RequestPairing(ctx, r)
	if err != nil {
		t.Fatal(err)
	}
	src[c.ID], fp[c.ID] = "127.0.0.1", c.Fingerprint
	rows := ownerPending(t, e, g.Token)
	if len(rows) != 3 {
		t.Fatalf("pending: %d rows", len(rows))
	}
	fps := map[any]bool{}
	for _, row := range rows {
		id, _ := row["id"].(string)
		if row["source"] != src[id] {
			t.Errorf("request %s: source %v, want %s", id, row["source"], src[id])
		}
		if created, _ := row["created_at"].(float64); int64(created) != at.Unix() {
			t.Errorf("request %s: created_at %v, it was made at %d", id, row["created_at"], at.Unix())
		}
		if row["fingerprint"] != fp[id] || len(fp[id]) != 19 {
			t.Errorf("request %s: key fingerprint %v, the daemon's is %s", id, row["fingerprint"], fp[id])
		}
		fps[row["fingerprint"]] = true
	}
	if len(fps) != 3 {
		t.Errorf("two daemons' keys show the same fingerprint %v", fps)
	}
}

// TestPairConcurrentSameAlias: requests for one alias racing each other (from
// different addresses) leave exactly one pending; every other one gets the
// CONFLICT with its fix, never a server error.
func TestPairConcurrentSameAlias(t *testing.T) {
	e := newEnv(t, broker.Config{})
	ctx := context.Background()
	_, g, _ := e.ownerKey(t)
	const n = 8
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		r, _ := e.pairRequest(t, g.Omni, "racer", "openai")
		wg.Go(func() { _, errs[i] = e.b.RequestPairing(ctx, r, fmt.Sprintf("198.51.100.%d", i)) })
	}
	wg.Wait()
	ok := 0
	for i, err := range errs {
		if err == nil {
			ok++
		} else if p := problem.As(err); p.Code != problem.Conflict || !strings.Contains(p.Fix, "deny") {
			t.Errorf("request %d: %v", i, err)
		}
	}
	rows := 0
	for _, row := range ownerPending(t, e, g.Token) {
		if row["alias"] == "racer" {
			rows++
		}
	}
	if ok != 1 || rows != 1 {
		t.Fatalf("%d of %d racing requests accepted, %d pending rows; want 1 and 1", ok, n, rows)
	}
}
