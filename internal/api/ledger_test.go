package api_test

import (
	"context"
	"crypto/ed25519"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/agentkeys/agentkeys/internal/apiv1"
	"github.com/agentkeys/agentkeys/internal/audit"
	"github.com/agentkeys/agentkeys/internal/broker"
	"github.com/agentkeys/agentkeys/internal/client"
	"github.com/agentkeys/agentkeys/internal/daemon"
	"github.com/agentkeys/agentkeys/internal/ledger"
	"github.com/agentkeys/agentkeys/internal/ledger/sqlite"
	"github.com/agentkeys/agentkeys/internal/problem"
	"github.com/agentkeys/agentkeys/internal/registry"
)

// rawEntries pages through GET /v1/ledger/entries with an optional bearer token and
// returns the raw body of every page, and the entries decoded.
func rawEntries(t *testing.T, e *env, token string) (string, []ledger.Entry) {
	t.Helper()
	var bodies strings.Builder
	var all []ledger.Entry
	for from := uint64(0); ; {
		req, _ := http.NewRequest(http.MethodGet, fmt.Sprintf("%s/v1/ledger/entries?from=%d&limit=7", e.srv.URL, from), nil)
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("GET entries: %d %s", resp.StatusCode, b)
		}
		bodies.Write(b)
		var p struct {
			Entries []ledger.Entry `json:"entries"`
			Next    uint64         `json:"next"`
		}
		if err := json.Unmarshal(b, &p); err != nil {
			t.Fatalf("decoding a page: %v", err)
		}
		all = append(all, p.Entries...)
		if len(p.Entries) < 7 {
			return bodies.String(), all
		}
		from = p.Next
	}
}

// TestPublicLedgerHidesOwners: an anonymous caller of GET /v1/ledger/entries sees,
// for every owner-private kind, the entry header and a commitment only — no
// service, alias, scope, session id or VVC — and still verifies the whole chain;
// an owner sees their own entries in full and nobody else's; public kinds stay full.
func TestPublicLedgerHidesOwners(t *testing.T) {
	e := newEnv(t, broker.Config{Ledger: ledger.Options{CheckpointEvery: 5}})
	ctx := context.Background()

	// Owner A: a credential, an owner read, a paired agent that reads it.
	ownerA, gA, keyA := e.ownerKey(t)
	e.store(t, ownerA, gA.Omni, "svc-alpha-secretname", []byte("sk-alpha-value"), "")
	r, dk := e.pairRequest(t, gA.Omni, "alias-bravo-hidden", "svc-alpha-secretname")
	created, err := e.c.RequestPairing(ctx, r)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ownerA.ApprovePairing(ctx, created.ID, apiv1.SignDecision(keyA, e.srv.URL, created.ID, vvcHash(t, ownerA, created.ID), "approve", e.now().Unix())); err != nil {
		t.Fatal(err)
	}
	st, err := e.c.PollPairing(ctx, created.ID, dk.proof)
	if err != nil || st.Delivery == nil {
		t.Fatalf("poll: %+v %v", st, err)
	}
	d := daemon.Dir(t.TempDir())
	dk.p.ID, dk.p.Server = created.ID, e.srv.URL
	if _, err := d.Complete(dk.p, st.Delivery); err != nil {
		t.Fatal(err)
	}
	if v, err := e.source(d).Get(ctx, "svc-alpha-secretname", daemon.Wait{}); err != nil || string(v) != "sk-alpha-value" {
		t.Fatalf("agent read: %q %v", v, err)
	}
	// Owner B: a credential of its own.
	ownerB, gB := e.owner(t)
	e.store(t, ownerB, gB.Omni, "svc-charlie-othername", []byte("sk-charlie-value"), "")

	// A governance entry: a public kind.
	op, err := broker.LoadOperatorKey(broker.OperatorKeyPath(e.dataDir))
	if err != nil {
		t.Fatal(err)
	}
	mrsigner := strings.Repeat("ab", 32)
	if _, err := e.c.SubmitGovernance(ctx, registry.KindSuccessorAuthorize, registry.Successor{MrSigner: mrsigner, EffectiveFrom: e.now().Unix()}, op); err != nil {
		t.Fatal(err)
	}

	secrets := []string{"svc-alpha-secretname", "alias-bravo-hidden", "svc-charlie-othername", gA.SID, gB.SID, `"` + created.VVC + `"`, created.ID}
	body, public := rawEntries(t, e, "")
	for _, s := range secrets {
		if strings.Contains(body, s) {
			t.Errorf("anonymous GET /v1/ledger/entries exposes %q", s)
		}
	}
	stored, err := e.b.Storage().Entries(ctx, 0, 10_000)
	if err != nil {
		t.Fatal(err)
	}
	if len(public) != len(stored) {
		t.Fatalf("public view has %d entries, the ledger %d", len(public), len(stored))
	}
	schema := broker.Schema()
	kinds := map[string]bool{}
	for i, pe := range public {
		kinds[pe.Kind] = true
		if pe.Hash() != stored[i].Hash() {
			t.Fatalf("seq %d: public hash differs from the stored entry's", pe.Seq)
		}
		if schema.Public(pe.Kind) {
			if pe.Redacted() || string(pe.Payload) != string(stored[i].Payload) {
				t.Errorf("seq %d (%s, public kind) is not served in full", pe.Seq, pe.Kind)
			}
		} else if !pe.Redacted() || pe.Payload != nil || pe.Salt != nil {
			t.Errorf("seq %d (%s, private kind) is served with its payload", pe.Seq, pe.Kind)
		}
	}
	for _, k := range []string{"genesis", "checkpoint", registry.KindSuccessorAuthorize, "account.created", "session.issued", "credential.stored", "credential.read", "pair.requested", "pair.approved"} {
		if !kinds[k] {
			t.Errorf("the test ledger has no %s entry", k)
		}
	}
	if !strings.Contains(body, mrsigner) {
		t.Error("a public registry entry is not served in full")
	}
	sum, err := audit.VerifyServer(ctx, e.c, nil)
	if err != nil {
		t.Fatalf("audit verify --server on a ledger with private entries: %v", err)
	}
	if sum.Entries != uint64(len(stored)) || sum.Checkpoint == nil || sum.Opened != 0 || sum.Redacted == 0 {
		t.Fatalf("verify summary %+v, want %d entries and a checkpoint", sum, len(stored))
	}

	// An owner sees their own entries in full, nobody else's.
	for _, o := range []struct {
		s           *client.Session
		omni, token string
		own, other  string
	}{{ownerA, gA.Omni, gA.Token, "svc-alpha-secretname", "svc-charlie-othername"}, {ownerB, gB.Omni, gB.Token, "svc-charlie-othername", "svc-alpha-secretname"}} {
		body, mine := rawEntries(t, e, o.token)
		if !strings.Contains(body, o.own) {
			t.Errorf("owner %s… does not see its own service %q", o.omni[:8], o.own)
		}
		if strings.Contains(body, o.other) {
			t.Errorf("owner %s… sees another owner's service %q", o.omni[:8], o.other)
		}
		opened := uint64(0)
		for i, me := range mine {
			if me.Hash() != stored[i].Hash() {
				t.Fatalf("seq %d: the owner's view hashes differently", me.Seq)
			}
			if !me.Redacted() && !schema.Public(me.Kind) {
				opened++
			}
		}
		if opened == 0 {
			t.Errorf("owner %s… got none of its private entries in full", o.omni[:8])
		}
		sum, err := audit.VerifyServer(ctx, o.s, nil)
		if err != nil || sum.Opened != opened {
			t.Fatalf("owner verify: %+v %v, want %d opened", sum, err, opened)
		}
	}
	// A bad token is refused, not treated as anonymous.
	if _, err := e.c.WithToken("not-a-token").Entries(ctx, 0, 10); code(err) != problem.Unauthenticated {
		t.Fatalf("entries with a bad token: %v", err)
	}
}

// copyLegacy copies testdata/legacy-data to a new data dir and returns it.
func copyLegacy(t *testing.T) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "data")
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{"ledger.db", "seed.sealed", "operator.key"} {
		b, err := os.ReadFile(filepath.Join("testdata/legacy-data", f))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, f), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	if filepath.Base(broker.LedgerPath(dir)) != "ledger.db" {
		t.Fatalf("the ledger file is now %s: rename the fixture's", broker.LedgerPath(dir))
	}
	return dir
}

// legacyHex reads a hex fixture of testdata/legacy-data (legacy-platform.hex, legacy-owner.hex).
func legacyHex(t *testing.T, name string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(b))
}

// TestLegacyLedgerUpgrades: a data dir written before payload commitments
// (testdata/legacy-data, made by that code: two owners, credentials, reads, a
// paired agent) opens, verifies, and keeps serving its old entries as they always
// were (their hash covers the payload, so they cannot be redacted); what happens
// after the upgrade is private, and both audits pass on the mixed chain.
func TestLegacyLedgerUpgrades(t *testing.T) {
	ctx := context.Background()
	dir := copyLegacy(t)
	hexOf := func(name string) string { return legacyHex(t, name) }
	old, err := verifyDataDir(t, dir) // read-only, before any migration
	if err != nil {
		t.Fatalf("audit --data-dir of the legacy ledger: %v", err)
	}
	e := newEnv(t, broker.Config{DataDir: dir, PlatformKeyHex: hexOf("legacy-platform.hex")})
	body, _ := rawEntries(t, e, "")
	if !strings.Contains(body, "legacy-svc-alpha") {
		t.Fatal("format-1 entries are no longer served in full")
	}
	// Owner A logs in again and stores something new: it is private.
	seed, _ := hex.DecodeString(hexOf("legacy-owner.hex"))
	key := ed25519.NewKeyFromSeed(seed)
	l := loginFor(e, key)
	apiv1.SignLogin(&l, key)
	g, err := e.c.OpenSession(ctx, l)
	if err != nil {
		t.Fatalf("the legacy owner cannot log in: %v", err)
	}
	ownerA := e.c.WithToken(g.Token)
	e.store(t, ownerA, g.Omni, "svc-after-upgrade", []byte("sk-new"), "")
	body, public := rawEntries(t, e, "")
	if strings.Contains(body, "svc-after-upgrade") || strings.Contains(body, g.SID) {
		t.Fatal("an entry written after the upgrade is public")
	}
	if public[0].Format() != 1 || public[len(public)-1].Format() != 2 || int(old.Entries) >= len(public) {
		t.Fatalf("formats: first %d, last %d; %d old entries of %d", public[0].Format(), public[len(public)-1].Format(), old.Entries, len(public))
	}
	mine, _ := rawEntries(t, e, g.Token)
	if !strings.Contains(mine, "svc-after-upgrade") {
		t.Fatal("the owner does not see its new entry")
	}
	for name, src := range map[string]audit.Server{"anonymous": e.c, "owner": ownerA} {
		if _, err := audit.VerifyServer(ctx, src, nil); err != nil {
			t.Fatalf("%s audit --server of the upgraded ledger: %v", name, err)
		}
	}
	if _, err := verifyDataDir(t, dir); err != nil {
		t.Fatalf("audit --data-dir of the upgraded ledger: %v", err)
	}
}

// verifyDataDir runs the operator's audit (audit verify --data-dir) on the store
// in dir, opened read-only.
func verifyDataDir(t *testing.T, dir string) (audit.Summary, error) {
	t.Helper()
	d, err := sqlite.OpenReadOnly(broker.LedgerPath(dir))
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	return audit.VerifyStore(context.Background(), d)
}
