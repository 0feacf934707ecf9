package ledger_test

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/agentkeys/agentkeys/internal/ledger"
	"github.com/agentkeys/agentkeys/internal/ledger/sqlite"
	"github.com/agentkeys/agentkeys/internal/wallet"
)

// publicView is the chain as an anonymous reader gets it (§3.4): private kinds
// redacted when they can be, through the JSON wire form.
func publicView(t *testing.T, s ledger.Schema, es []ledger.Entry) []ledger.Entry {
	t.Helper()
	out := make([]ledger.Entry, len(es))
	for i, e := range es {
		if !s.Public(e.Kind) {
			e, _ = e.Redact()
		}
		b, err := json.Marshal(e)
		if err != nil {
			t.Fatal(err)
		}
		if err := json.Unmarshal(b, &out[i]); err != nil {
			t.Fatalf("seq %d: %v (%s)", e.Seq, err, b)
		}
		if out[i].Hash() != es[i].Hash() {
			t.Fatalf("seq %d: the wire form hashes differently", e.Seq)
		}
	}
	return out
}

func verifyPublic(s ledger.Schema, es []ledger.Entry) (*ledger.Verifier, error) {
	v, _, err := verifyPublicState(s, es)
	return v, err
}

func verifyPublicState(s ledger.Schema, es []ledger.Entry) (*ledger.Verifier, ledger.State, error) {
	mem := ledger.NewMemState()
	v := ledger.NewPublicVerifier(s, mem)
	for i := range es {
		if err := v.Check(&es[i]); err != nil {
			return v, mem, err
		}
	}
	return v, mem, nil
}

func allEntries(t *testing.T, d ledger.Driver) []ledger.Entry {
	t.Helper()
	es, err := d.Entries(context.Background(), 0, 100_000)
	if err != nil {
		t.Fatal(err)
	}
	return es
}

// TestCommitments: every entry the ledger writes is format 2 (salted); a redacted
// private entry keeps its hash and signature, and the public verifier checks the
// chain, signatures and checkpoints without seeing a private payload.
func TestCommitments(t *testing.T) {
	f := newFixture(t, ledger.Options{CheckpointEvery: 3}, 1)
	ctx := context.Background()
	o := f.account(t, 0)
	for i := range 4 {
		if _, err := f.l.Append(ctx, ledger.AccountOrigin(o), "test.note", map[string]int{"N": i}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := f.l.Submit(ctx, f.govEntry(`{"x":1}`, f.gov[0])); err != nil {
		t.Fatal(err)
	}
	f.verify(t)
	es := allEntries(t, f.d)
	salts := map[string]bool{}
	for _, e := range es {
		if e.Origin == ledger.OriginGovernance {
			continue // submitted: format 1 is fine for a public kind
		}
		if e.Format() != 2 || len(e.Salt) != ledger.SaltSize || salts[string(e.Salt)] {
			t.Fatalf("seq %d (%s): format %d, salt %x (must be fresh, %d bytes)", e.Seq, e.Kind, e.Format(), e.Salt, ledger.SaltSize)
		}
		salts[string(e.Salt)] = true
	}
	pub := publicView(t, f.schema, es)
	for _, e := range pub {
		b, _ := json.Marshal(e)
		if !f.schema.Public(e.Kind) && (e.Payload != nil || strings.Contains(string(b), `"N"`) || strings.Contains(string(b), `"salt"`)) {
			t.Fatalf("seq %d (%s) leaks its payload or salt: %s", e.Seq, e.Kind, b)
		}
	}
	v, st, err := verifyPublicState(f.schema, pub)
	if err != nil {
		t.Fatalf("public verification: %v", err)
	}
	if c, ok, _ := ledger.LastCheckpoint(st); !ok || c.Seq == 0 {
		t.Fatalf("public verification did not fold the checkpoints: %+v %v", c, ok)
	}
	if v.Opened != 0 {
		t.Fatalf("opened %d private entries in a fully redacted view", v.Opened)
	}
	var notes []int // the account's notes
	ck := -1        // the first checkpoint
	for i, e := range es {
		if e.Kind == "test.note" && e.Origin == ledger.AccountOrigin(o) {
			notes = append(notes, i)
		}
		if e.Kind == ledger.KindCheckpoint && ck < 0 {
			ck = i
		}
	}
	if len(notes) != 4 || ck < 0 {
		t.Fatalf("notes at %v, first checkpoint at %d", notes, ck)
	}
	// An owner's view: some private entries in full, checked against their hash.
	mixed := publicView(t, f.schema, es)
	mixed[notes[0]], mixed[notes[1]] = es[notes[0]], es[notes[1]]
	if v, err := verifyPublic(f.schema, mixed); err != nil || v.Opened != 2 {
		t.Fatalf("mixed view: opened %d, %v", v.Opened, err)
	}

	fails := func(name string, view []ledger.Entry, seq uint64, want string) {
		t.Helper()
		_, err := verifyPublic(f.schema, view)
		var ce *ledger.ChainError
		if !errors.As(err, &ce) || ce.Seq != seq || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: err = %v, want seq %d: …%s…", name, err, seq, want)
		}
	}
	// A payload opened wrongly (another payload, another salt) breaks the hash.
	for name, mut := range map[string]func(*ledger.Entry){
		"payload": func(e *ledger.Entry) { e.Payload = []byte(`{"N":9}`) },
		"salt":    func(e *ledger.Entry) { e.Salt = make([]byte, ledger.SaltSize) },
		"commitment": func(e *ledger.Entry) {
			c := e.PayloadHash()
			c[0] ^= 1
			e.Payload, e.Salt, e.Commitment = nil, nil, &c
		},
	} {
		view := publicView(t, f.schema, es)
		n := notes[1]
		view[n] = es[n]
		mut(&view[n])
		fails(name, view, uint64(n), "signature")
	}
	// A public kind must not be withheld.
	view := publicView(t, f.schema, es)
	view[0], _ = es[0].Redact()
	fails("genesis withheld", view, 0, "withheld")
	view = publicView(t, f.schema, es)
	view[ck], _ = es[ck].Redact()
	fails("checkpoint withheld", view, uint64(ck), "withheld")
	// Full verification needs every payload.
	rv := ledger.NewVerifier(f.schema, ledger.NewMemState())
	var err2 error
	for i := range pub {
		if err2 = rv.Check(&pub[i]); err2 != nil {
			break
		}
	}
	if err2 == nil || !strings.Contains(err2.Error(), "payload withheld") {
		t.Errorf("re-folding a redacted chain: %v", err2)
	}
	// An account's entries must keep one wallet: a second wallet is refused even
	// with a valid signature by it.
	view = publicView(t, f.schema, es)
	other := f.s.wallet(omni(9))
	n := notes[1]
	e := view[n]
	e.Signer = wallet.Address(other.PubKey())
	e.Sig = wallet.Sign(other, e.Hash())
	view[n] = e
	fails("second wallet", view[:n+1], uint64(n), "wallet")
}

// TestFormat1LedgerStillOpens: a ledger written by the code before commitments
// (testdata/format1.db, made by that code with this file's test signer) is read
// as it is, migrated when opened for writing, verifies, and goes on with
// format-2 entries; its format-1 private entries stay readable in full.
func TestFormat1LedgerStillOpens(t *testing.T) {
	ctx := context.Background()
	src, err := os.ReadFile("testdata/format1.db")
	if err != nil {
		t.Fatal(err)
	}
	f := &fixture{s: newTestSigner(), path: filepath.Join(t.TempDir(), "ledger.db"), schema: testSchema()}
	for i := range 3 {
		f.gov = append(f.gov, newFixture(t, ledger.Options{}, 1).gov[i])
	}
	if err := os.WriteFile(f.path, src, 0o600); err != nil {
		t.Fatal(err)
	}
	// Read-only, before any migration (an operator's audit of an old data dir).
	ro, err := sqlite.OpenReadOnly(f.path)
	if err != nil {
		t.Fatal(err)
	}
	old := allEntries(t, ro)
	if n, err := ledger.VerifyDriver(ctx, f.schema, ro, true); err != nil || n != 13 {
		t.Fatalf("read-only verify of the old ledger: %d entries, %v", n, err)
	}
	ro.Close()
	for _, e := range old {
		if e.Format() != 1 {
			t.Fatalf("fixture seq %d is format %d", e.Seq, e.Format())
		}
	}
	f.open(t, ledger.Options{CheckpointEvery: 1000})
	if h := f.l.Head(); h.Seq != old[len(old)-1].Seq || h.Hash != old[len(old)-1].Hash() {
		t.Fatalf("head after migration %+v", h)
	}
	f.verify(t)
	o := omni(0)
	if _, err := f.l.Append(ctx, ledger.AccountOrigin(o), "test.note", map[string]int{"N": 40}); err != nil {
		t.Fatal(err)
	}
	if _, err := f.l.Submit(ctx, f.govEntry(`{"y":2}`, f.gov[0])); err != nil {
		t.Fatal(err)
	}
	if _, err := f.l.Append(ctx, ledger.AccountOrigin(omni(1)), "test.note", map[string]int{"N": 41}); err != nil {
		t.Fatal(err)
	}
	f.verify(t)
	es := allEntries(t, f.d)
	for i, e := range old {
		if es[i].Hash() != e.Hash() || string(es[i].Payload) != string(e.Payload) || es[i].Salt != nil {
			t.Fatalf("old seq %d changed across the migration", e.Seq)
		}
	}
	if es[len(old)].Format() != 2 {
		t.Fatal("the first entry after the migration is not format 2")
	}
	// Public view: format-1 private entries cannot be redacted and are served as
	// they always were; new ones are redacted; the whole chain verifies.
	pub := publicView(t, f.schema, es)
	v, err := verifyPublic(f.schema, pub)
	if err != nil {
		t.Fatalf("public verification of the migrated ledger: %v", err)
	}
	if v.Opened != 9 || !pub[len(pub)-1].Redacted() {
		t.Fatalf("opened %d (want the 9 format-1 private entries); last redacted %v", v.Opened, pub[len(pub)-1].Redacted())
	}
	// After the switch, a private entry without a commitment is refused.
	last := es[len(es)-1]
	last.Salt = nil
	sig, _ := f.s.SignAccount(omni(1), last.Hash())
	last.Sig = sig
	pub[len(pub)-1] = last
	if _, err := verifyPublic(f.schema, pub); err == nil || !strings.Contains(err.Error(), "after the chain switched") {
		t.Fatalf("a format-1 private entry after the switch: %v", err)
	}
}

// TestSubmitFormRules: a submitted entry carries its payload, and one of a
// private kind needs a salt.
func TestSubmitFormRules(t *testing.T) {
	f := newFixture(t, ledger.Options{}, 1)
	ctx := context.Background()
	redacted, _ := func() (ledger.Entry, bool) {
		e := f.govEntry(`{"x":1}`)
		e.Salt = make([]byte, ledger.SaltSize)
		e, ok := e.Redact()
		ledger.SignGovernance(&e, f.gov[0])
		return e, ok
	}()
	if _, err := f.l.Submit(ctx, redacted); !errors.Is(err, ledger.ErrRejected) {
		t.Fatalf("redacted submit: %v", err)
	}
	f.schema.Kinds["test.gov"] = ledger.Kind{Origins: ledger.FromGovernance, Fold: f.schema.Kinds["test.gov"].Fold} // private now
	if _, err := f.l.Submit(ctx, f.govEntry(`{"x":1}`, f.gov[0])); !errors.Is(err, ledger.ErrRejected) || !strings.Contains(err.Error(), "salt") {
		t.Fatalf("format-1 submit of a private kind: %v", err)
	}
	e := f.govEntry(`{"x":1}`)
	e.Salt = make([]byte, ledger.SaltSize)
	ledger.SignGovernance(&e, f.gov[0])
	if _, err := f.l.Submit(ctx, e); err != nil {
		t.Fatalf("salted submit of a private kind: %v", err)
	}
	f.verify(t)
}

// TestCommitTook: the writer reports every transaction's duration, measured
// with the injected clock (a stopped clock: every duration is exactly 0), and
// an idle ledger has nothing queued.
func TestCommitTook(t *testing.T) {
	stopped := time.Unix(1_800_000_000, 0)
	var mu sync.Mutex
	var took []time.Duration
	f := newFixture(t, ledger.Options{Now: func() time.Time { return stopped },
		CommitTook: func(d time.Duration) { mu.Lock(); took = append(took, d); mu.Unlock() }}, 1)
	mu.Lock()
	if len(took) != 1 {
		t.Errorf("opening a new ledger reported %d commits, want 1 (genesis)", len(took))
	}
	took = nil
	mu.Unlock()
	for i := range 3 {
		f.account(t, i)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(took) != 3 || took[0] != 0 || took[1] != 0 || took[2] != 0 {
		t.Errorf("three appends, one at a time, reported commit durations %v, want [0 0 0] (from the injected clock)", took)
	}
	if n := f.l.QueueDepth(); n != 0 {
		t.Errorf("an idle ledger has queue depth %d, want 0", n)
	}
}
