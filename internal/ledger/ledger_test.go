package ledger_test

import (
	"context"
	"crypto/ed25519"
	"database/sql"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/decred/dcrd/dcrec/secp256k1/v4"

	"github.com/agentkeys/agentkeys/internal/ledger"
	"github.com/agentkeys/agentkeys/internal/ledger/sqlite"
	"github.com/agentkeys/agentkeys/internal/wallet"
)

// testSigner stands in for the enclave: an ed25519 ledger key and one secp256k1
// wallet per omni, derived deterministically from the omni.
type testSigner struct {
	key  ed25519.PrivateKey
	mu   sync.Mutex
	ws   map[string]*secp256k1.PrivateKey
	fail atomic.Pointer[string] // SignAccount fails for this omni
}

func newTestSigner() *testSigner {
	return &testSigner{key: ed25519.NewKeyFromSeed(make([]byte, 32)), ws: map[string]*secp256k1.PrivateKey{}}
}

func (s *testSigner) LedgerKey() string {
	return hex.EncodeToString(s.key.Public().(ed25519.PublicKey))
}
func (s *testSigner) SignLedger(h ledger.Hash) ([]byte, error) {
	return ed25519.Sign(s.key, h[:]), nil
}
func (s *testSigner) wallet(omni string) *secp256k1.PrivateKey {
	s.mu.Lock()
	defer s.mu.Unlock()
	k, ok := s.ws[omni]
	if !ok {
		b, _ := hex.DecodeString(omni)
		k = secp256k1.PrivKeyFromBytes(b)
		s.ws[omni] = k
	}
	return k
}
func (s *testSigner) SignAccount(omni string, h ledger.Hash) ([]byte, error) {
	if f := s.fail.Load(); f != nil && *f == omni {
		return nil, errors.New("injected: wallet unavailable")
	}
	return wallet.Sign(s.wallet(omni), h), nil
}
func (s *testSigner) address(omni string) string { return wallet.Address(s.wallet(omni).PubKey()) }

// testSchema: accounts created by the enclave, notes by enclave or accounts, and a
// governance-only registry with at most 2 items.
func testSchema() ledger.Schema {
	return ledger.Schema{
		Kinds: map[string]ledger.Kind{
			"test.account": {Origins: ledger.FromEnclave, Fold: func(st ledger.State, e *ledger.Entry) error {
				var p struct{ Omni, Wallet string }
				if err := ledger.DecodeStrict(e.Payload, &p); err != nil {
					return err
				}
				return ledger.PutJSON(st, "account/"+p.Omni, p.Wallet)
			}},
			"test.note": {Origins: ledger.FromEnclave | ledger.FromAccount, Fold: func(st ledger.State, e *ledger.Entry) error {
				var p struct{ N int }
				if err := ledger.DecodeStrict(e.Payload, &p); err != nil {
					return err
				}
				if p.N < 0 {
					return errors.New("negative note")
				}
				return st.Put(fmt.Sprintf("note/%s/%08d", e.Origin, p.N), e.Payload)
			}},
			"test.claim": {Origins: ledger.FromEnclave, Fold: func(st ledger.State, e *ledger.Entry) error {
				var p struct{ ID string }
				if err := ledger.DecodeStrict(e.Payload, &p); err != nil {
					return err
				}
				if _, ok, err := st.Get("claim/" + p.ID); err != nil || ok {
					return errors.New("already claimed")
				}
				return st.Put("claim/"+p.ID, e.Payload)
			}},
			"test.gov": {Origins: ledger.FromGovernance, Public: true, Fold: func(st ledger.State, e *ledger.Entry) error {
				n := 0
				st.Scan("gov/", func(string, []byte) error { n++; return nil })
				if n >= 2 {
					return errors.New("at most 2")
				}
				return st.Put(fmt.Sprintf("gov/%d", e.Seq), e.Payload)
			}},
		},
		Wallet: func(st ledger.State, omni string) (string, error) {
			var w string
			ok, err := ledger.GetJSON(st, "account/"+omni, &w)
			if err != nil {
				return "", err
			}
			if !ok {
				return "", errors.New("no such account")
			}
			return w, nil
		},
	}
}

type fixture struct {
	l      *ledger.Ledger
	d      ledger.Driver
	s      *testSigner
	gov    []ed25519.PrivateKey
	path   string
	schema ledger.Schema
	store  func() (ledger.Driver, error) // opens the store again; nil: the SQLite file at path
}

func newFixture(t testing.TB, opts ledger.Options, threshold int) *fixture {
	t.Helper()
	return newFixtureOn(t, opts, threshold, nil)
}

// newFixtureOn is newFixture on the store that store opens (nil: a SQLite file).
func newFixtureOn(t testing.TB, opts ledger.Options, threshold int, store func() (ledger.Driver, error)) *fixture {
	t.Helper()
	f := &fixture{s: newTestSigner(), path: filepath.Join(t.TempDir(), "ledger.db"), schema: testSchema(), store: store}
	var keys []string
	for i := range 3 {
		k := ed25519.NewKeyFromSeed(append(make([]byte, 31), byte(i+1)))
		f.gov = append(f.gov, k)
		keys = append(keys, hex.EncodeToString(k.Public().(ed25519.PublicKey)))
	}
	opts.Genesis = func() (*ledger.Genesis, error) {
		return &ledger.Genesis{MrEnclave: "aa", MrSigner: "bb", Tier: "dev",
			Governance: ledger.Governance{Threshold: threshold, Keys: keys}}, nil
	}
	f.open(t, opts)
	return f
}

func (f *fixture) open(t testing.TB, opts ledger.Options) {
	t.Helper()
	var d ledger.Driver
	var err error
	if f.store != nil {
		d, err = f.store()
	} else {
		d, err = sqlite.Open(f.path)
	}
	if err != nil {
		t.Fatal(err)
	}
	l, err := ledger.Open(context.Background(), d, f.schema, f.s, opts)
	if err != nil {
		t.Fatal(err)
	}
	f.d, f.l = d, l
	t.Cleanup(func() { l.Close(); d.Close() })
}

func omni(i int) string { return fmt.Sprintf("%064x", i+1) }

func (f *fixture) account(t testing.TB, i int) string {
	t.Helper()
	o := omni(i)
	if _, err := f.l.Append(context.Background(), ledger.OriginEnclave, "test.account",
		map[string]string{"Omni": o, "Wallet": f.s.address(o)}); err != nil {
		t.Fatal(err)
	}
	return o
}

// govEntry builds a governance entry linked to the current head, signed by keys.
func (f *fixture) govEntry(payload string, keys ...ed25519.PrivateKey) ledger.Entry {
	h := f.l.Head()
	e := ledger.Entry{Seq: h.Seq + 1, PrevHash: h.Hash, Time: max(time.Now().UnixNano(), h.Time),
		Kind: "test.gov", Origin: ledger.OriginGovernance, Payload: []byte(payload)}
	for _, k := range keys {
		ledger.SignGovernance(&e, k)
	}
	return e
}

func (f *fixture) verify(t *testing.T) {
	t.Helper()
	if _, err := ledger.VerifyDriver(context.Background(), f.schema, f.d, true); err != nil {
		t.Fatalf("verify: %v", err)
	}
}

func TestAppendVerifyRefold(t *testing.T) {
	f := newFixture(t, ledger.Options{}, 1)
	ctx := context.Background()
	o := f.account(t, 0)
	for i := range 5 {
		if _, err := f.l.Append(ctx, ledger.AccountOrigin(o), "test.note", map[string]int{"N": i}); err != nil {
			t.Fatal(err)
		}
	}
	e, err := f.l.Append(ctx, ledger.OriginEnclave, "test.note", map[string]int{"N": 1})
	if err != nil {
		t.Fatal(err)
	}
	if e.Seq != 7 || f.l.Head().Seq != 7 || f.l.Head().Hash != e.Hash() {
		t.Fatalf("seq %d head %+v", e.Seq, f.l.Head())
	}
	if e.Signer != f.s.LedgerKey() {
		t.Fatalf("enclave entry signer %q", e.Signer)
	}
	f.verify(t)
	if _, err := f.l.Submit(ctx, f.govEntry(`{"x":1}`, f.gov[0])); err != nil {
		t.Fatalf("governance submit: %v", err)
	}
	f.verify(t)
}

func TestRejectedEntriesWriteNothing(t *testing.T) {
	f := newFixture(t, ledger.Options{}, 2)
	ctx := context.Background()
	o := f.account(t, 0)
	before := f.l.Head()
	cases := map[string]func() error{
		"account submits enclave-only kind": func() error {
			_, err := f.l.Append(ctx, ledger.AccountOrigin(o), "test.account", map[string]string{"Omni": o, "Wallet": "x"})
			return err
		},
		"enclave submits governance kind": func() error {
			_, err := f.l.Append(ctx, ledger.OriginEnclave, "test.gov", map[string]int{"x": 1})
			return err
		},
		"unknown account": func() error {
			_, err := f.l.Append(ctx, ledger.AccountOrigin(omni(9)), "test.note", map[string]int{"N": 1})
			return err
		},
		"malformed origin": func() error {
			_, err := f.l.Append(ctx, "account:XYZ", "test.note", map[string]int{"N": 1})
			return err
		},
		"unknown kind": func() error {
			_, err := f.l.Append(ctx, ledger.OriginEnclave, "test.nope", map[string]int{"N": 1})
			return err
		},
		"fold refuses": func() error {
			_, err := f.l.Append(ctx, ledger.OriginEnclave, "test.note", map[string]int{"N": -1})
			return err
		},
		"governance below threshold": func() error {
			_, err := f.l.Submit(ctx, f.govEntry(`{"x":1}`, f.gov[0]))
			return err
		},
		"governance same key twice": func() error {
			_, err := f.l.Submit(ctx, f.govEntry(`{"x":1}`, f.gov[0], f.gov[0]))
			return err
		},
		"governance signed by a stranger": func() error {
			stranger := ed25519.NewKeyFromSeed(make([]byte, 32))
			_, err := f.l.Submit(ctx, f.govEntry(`{"x":1}`, f.gov[0], stranger))
			return err
		},
		"governance payload changed after signing": func() error {
			e := f.govEntry(`{"x":1}`, f.gov[0], f.gov[1])
			e.Payload = []byte(`{"x":2}`)
			_, err := f.l.Submit(ctx, e)
			return err
		},
		"governance entry with wrong origin": func() error {
			e := f.govEntry(`{"x":1}`)
			e.Origin = ledger.OriginEnclave
			e.Signer = f.s.LedgerKey()
			h := e.Hash()
			e.Sig, _ = f.s.SignLedger(h)
			_, err := f.l.Submit(ctx, e)
			return err
		},
		"stale head": func() error {
			e := f.govEntry(`{"x":1}`)
			e.Seq--
			e.PrevHash = ledger.Hash{}
			ledger.SignGovernance(&e, f.gov[0])
			ledger.SignGovernance(&e, f.gov[1])
			_, err := f.l.Submit(ctx, e)
			if !errors.Is(err, ledger.ErrConflict) {
				return fmt.Errorf("want ErrConflict, got %v", err)
			}
			return err
		},
		"non-canonical payload": func() error {
			_, err := f.l.Submit(ctx, f.govEntry(`{ "x": 1 }`, f.gov[0], f.gov[1]))
			return err
		},
	}
	for name, fn := range cases {
		err := fn()
		if err == nil || strings.HasPrefix(err.Error(), "want ") {
			t.Errorf("%s: accepted or wrong error: %v", name, err)
		}
	}
	if h := f.l.Head(); h != before {
		t.Fatalf("rejected entries moved the head from %d to %d", before.Seq, h.Seq)
	}
	var keys []string
	f.d.Scan(ctx, "", func(k string, _ []byte) error { keys = append(keys, k); return nil })
	if len(keys) != 2 { // genesis + the account
		t.Fatalf("state after rejections: %v", keys)
	}
	f.verify(t)
	if _, err := f.l.Submit(ctx, f.govEntry(`{"x":1}`, f.gov[2], f.gov[0])); err != nil {
		t.Fatalf("valid 2-of-3: %v", err)
	}
}

func TestConcurrentAppendsAndCheckpoints(t *testing.T) {
	f := newFixture(t, ledger.Options{CheckpointEvery: 50}, 1)
	ctx := context.Background()
	var mu sync.Mutex
	acked := map[uint64]ledger.Hash{}
	var wg sync.WaitGroup
	for w := range 16 {
		wg.Go(func() {
			for i := range 40 {
				e, err := f.l.Append(ctx, ledger.OriginEnclave, "test.note", map[string]int{"N": w*1000 + i})
				if err != nil {
					t.Error(err)
					return
				}
				mu.Lock()
				acked[e.Seq] = e.Hash()
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	es, err := f.l.Entries(ctx, 0, 10000)
	if err != nil {
		t.Fatal(err)
	}
	checkpoints := 0
	for _, e := range es {
		if h, ok := acked[e.Seq]; ok && h != e.Hash() {
			t.Fatalf("acked seq %d changed", e.Seq)
		}
		delete(acked, e.Seq)
		if e.Kind == ledger.KindCheckpoint {
			checkpoints++
		}
	}
	if len(acked) != 0 {
		t.Fatalf("%d acknowledged entries missing", len(acked))
	}
	if checkpoints < 640/50 {
		t.Fatalf("%d checkpoints for 640 entries every 50", checkpoints)
	}
	f.verify(t)
}

func TestTimedCheckpoint(t *testing.T) {
	f := newFixture(t, ledger.Options{CheckpointInterval: 20 * time.Millisecond}, 1)
	if _, err := f.l.Append(context.Background(), ledger.OriginEnclave, "test.note", map[string]int{"N": 1}); err != nil {
		t.Fatal(err)
	}
	for range 500 {
		if c, ok, _ := ledger.LastCheckpoint(f.l.State(context.Background())); ok && c.Seq == 1 {
			f.verify(t)
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatal("no checkpoint vouching for seq 1 after 5s")
}

// TestTamperNamesSeq changes one stored field of one entry at a time and expects
// verification to name that entry.
func TestTamperNamesSeq(t *testing.T) {
	cols := map[string]string{
		"payload":   `UPDATE entries SET payload = CAST(replace(CAST(payload AS TEXT), '"N":3', '"N":4') AS BLOB) WHERE seq = ?`,
		"kind":      `UPDATE entries SET kind = 'test.nota' WHERE seq = ?`,
		"origin":    `UPDATE entries SET origin = 'governance' WHERE seq = ?`,
		"time":      `UPDATE entries SET time = time + 1 WHERE seq = ?`,
		"prev_hash": `UPDATE entries SET prev_hash = zeroblob(32) WHERE seq = ?`,
		"signer":    `UPDATE entries SET signer = 'x' || substr(signer, 2) WHERE seq = ?`,
		"sig":       `UPDATE entries SET sig = zeroblob(length(sig)) WHERE seq = ?`,
		"seq":       `UPDATE entries SET seq = seq + 100 WHERE seq = ?`,
		"salt":      `UPDATE entries SET salt = zeroblob(32) WHERE seq = ?`,
		"no salt":   `UPDATE entries SET salt = NULL WHERE seq = ?`, // passed off as format 1
	}
	for name, q := range cols {
		t.Run(name, func(t *testing.T) {
			f := newFixture(t, ledger.Options{}, 1)
			ctx := context.Background()
			for i := range 6 {
				if _, err := f.l.Append(ctx, ledger.OriginEnclave, "test.note", map[string]int{"N": i}); err != nil {
					t.Fatal(err)
				}
			}
			tamper(t, f.path, q, 4)
			for _, refold := range []bool{true, false} {
				_, err := ledger.VerifyDriver(ctx, f.schema, f.d, refold)
				var ce *ledger.ChainError
				if !errors.As(err, &ce) || ce.Seq != 4 {
					t.Fatalf("refold=%v: err = %v, want a ChainError at seq 4", refold, err)
				}
			}
		})
	}
}

func TestStateTamperDetected(t *testing.T) {
	f := newFixture(t, ledger.Options{}, 1)
	ctx := context.Background()
	if _, err := f.l.Append(ctx, ledger.OriginEnclave, "test.note", map[string]int{"N": 1}); err != nil {
		t.Fatal(err)
	}
	tamper(t, f.path, `UPDATE state SET value = X'00' WHERE key LIKE 'note/%'`)
	_, err := ledger.VerifyDriver(ctx, f.schema, f.d, true)
	var se *ledger.StateMismatchError
	if !errors.As(err, &se) || !strings.HasPrefix(se.Key, "note/") {
		t.Fatalf("err = %v, want a state mismatch on the note", err)
	}
}

// appendingReader is a store that a broker appends to while it is verified:
// before each state scan, append runs (as another broker's commit landing
// between the verifier's walk and its reading of the state).
type appendingReader struct {
	ledger.Driver
	append func()
	scans  int
}

func (a *appendingReader) Scan(ctx context.Context, prefix string, fn func(string, []byte) error) error {
	a.scans++
	a.append()
	return a.Driver.Scan(ctx, prefix, fn)
}

// TestVerifyLiveStore: verifying a store while brokers append to it (as `audit
// verify --ledger` on a shared PostgreSQL does) compares the state with the
// chain as it stands then, not as it stood when the walk ended.
func TestVerifyLiveStore(t *testing.T) {
	ctx := context.Background()
	note := func(f *fixture, n int) func() {
		return func() {
			if _, err := f.l.Append(ctx, ledger.OriginEnclave, "test.note", map[string]int{"N": n}); err != nil {
				t.Fatal(err)
			}
		}
	}
	t.Run("entries after the walk", func(t *testing.T) {
		f := newFixture(t, ledger.Options{}, 1)
		note(f, 1)()
		n := 1
		live := &appendingReader{Driver: f.d, append: func() {
			if n < 3 { // two brokers' commits land, each after a reading of the state
				n++
				note(f, n)()
			}
		}}
		got, err := ledger.VerifyDriver(ctx, f.schema, live, true)
		if err != nil {
			t.Fatalf("a store appended to during verification: %v", err)
		}
		if want := f.l.Head().Seq + 1; got != want {
			t.Fatalf("verified %d entries, want every one, %d", got, want)
		}
	})
	t.Run("tampered state is still found", func(t *testing.T) {
		f := newFixture(t, ledger.Options{}, 1)
		note(f, 1)()
		tamper(t, f.path, `UPDATE state SET value = X'00' WHERE key LIKE 'note/%'`)
		live := &appendingReader{Driver: f.d}
		live.append = func() {
			if live.scans == 1 {
				note(f, 2)()
			}
		}
		_, err := ledger.VerifyDriver(ctx, f.schema, live, true)
		var se *ledger.StateMismatchError
		if !errors.As(err, &se) || se.Key != "note/enclave/00000001" {
			t.Fatalf("err = %v, want the tampered note's state mismatch", err)
		}
	})
	t.Run("a store that never settles", func(t *testing.T) {
		f := newFixture(t, ledger.Options{}, 1)
		n := 0
		live := &appendingReader{Driver: f.d}
		live.append = func() { n++; note(f, n)() }
		if _, err := ledger.VerifyDriver(ctx, f.schema, live, true); !errors.Is(err, ledger.ErrUnsettled) {
			t.Fatalf("err = %v, want ErrUnsettled", err)
		}
		if live.scans > 10 {
			t.Fatalf("compared the state %d times: the comparisons must be bounded", live.scans)
		}
	})
}

// failingDriver fails every commit: the ledger must then return no entry.
type failingDriver struct{ ledger.Driver }

func (failingDriver) Commit(context.Context, []ledger.Entry, []ledger.Write) error {
	return errors.New("disk full")
}

func TestCommitFailureFailsClosed(t *testing.T) {
	f := newFixture(t, ledger.Options{}, 1)
	f.l.Close()
	l, err := ledger.Open(context.Background(), failingDriver{f.d}, f.schema, f.s, ledger.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	before := l.Head()
	e, err := l.Append(context.Background(), ledger.OriginEnclave, "test.note", map[string]int{"N": 1})
	if err == nil || e.Seq != 0 || e.Sig != nil {
		t.Fatalf("append on a failing driver: entry %+v err %v", e, err)
	}
	if l.Head() != before {
		t.Fatal("head moved after a failed commit")
	}
}

func TestReopenKeepsChainAndRefusesForeignSeed(t *testing.T) {
	f := newFixture(t, ledger.Options{}, 1)
	ctx := context.Background()
	e, err := f.l.Append(ctx, ledger.OriginEnclave, "test.note", map[string]int{"N": 1})
	if err != nil {
		t.Fatal(err)
	}
	f.l.Close()
	f.d.Close()
	f.open(t, ledger.Options{})
	if f.l.Head().Hash != e.Hash() {
		t.Fatal("head changed across reopen")
	}
	if _, err := f.l.Append(ctx, ledger.OriginEnclave, "test.note", map[string]int{"N": 2}); err != nil {
		t.Fatal(err)
	}
	f.verify(t)
	f.l.Close()
	other := newTestSigner()
	other.key = ed25519.NewKeyFromSeed(append(make([]byte, 31), 7))
	if _, err := ledger.Open(ctx, f.d, f.schema, other, ledger.Options{}); !errors.Is(err, ledger.ErrForeignLedger) {
		t.Fatalf("foreign seed: %v", err)
	}
}

// flakyDriver fails every third commit, as a full disk might.
type flakyDriver struct {
	ledger.Driver
	mu sync.Mutex
	n  int
}

func (f *flakyDriver) Commit(ctx context.Context, es []ledger.Entry, ws []ledger.Write) error {
	f.mu.Lock()
	f.n++
	fail := f.n%3 == 0
	f.mu.Unlock()
	if fail {
		return errors.New("injected commit failure")
	}
	return f.Driver.Commit(ctx, es, ws)
}

// TestPipelineRecoversFromFailedCommits: with commits failing while many appenders
// wait, every acknowledged entry is stored, every failed one is absent, and the
// chain still verifies.
func TestPipelineRecoversFromFailedCommits(t *testing.T) {
	f := newFixture(t, ledger.Options{CheckpointEvery: 25}, 1)
	f.l.Close()
	l, err := ledger.Open(context.Background(), &flakyDriver{Driver: f.d}, f.schema, f.s, ledger.Options{CheckpointEvery: 25})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	var mu sync.Mutex
	acked := map[uint64]ledger.Hash{}
	failed := 0
	var wg sync.WaitGroup
	for w := range 16 {
		wg.Go(func() {
			for i := range 30 {
				e, err := l.Append(context.Background(), ledger.OriginEnclave, "test.note", map[string]int{"N": w*100 + i})
				mu.Lock()
				if err != nil {
					failed++
				} else {
					acked[e.Seq] = e.Hash()
				}
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if failed == 0 {
		t.Fatal("no append failed: the injection did not happen")
	}
	es, err := f.d.Entries(context.Background(), 0, 10000)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range es {
		if h, ok := acked[e.Seq]; ok {
			if h != e.Hash() {
				t.Fatalf("acknowledged seq %d was replaced", e.Seq)
			}
			delete(acked, e.Seq)
		}
	}
	if len(acked) > 0 {
		t.Fatalf("%d acknowledged entries are missing", len(acked))
	}
	if l.Head().Hash != es[len(es)-1].Hash() {
		t.Fatal("in-memory head differs from storage")
	}
	f.verify(t)
}

// TestAppendAllIsAtomic: a group is written whole or not at all, and a failing
// group does not disturb appends around it.
func TestAppendAllIsAtomic(t *testing.T) {
	f := newFixture(t, ledger.Options{}, 1)
	ctx := context.Background()
	o := omni(3)
	es, err := f.l.AppendAll(ctx, []ledger.Req{
		{Origin: ledger.OriginEnclave, Kind: "test.account", Payload: map[string]string{"Omni": o, "Wallet": f.s.address(o)}},
		{Origin: ledger.AccountOrigin(o), Kind: "test.note", Payload: map[string]int{"N": 1}}, // needs the account above
		{Origin: ledger.AccountOrigin(o), Kind: "test.note", Payload: map[string]int{"N": 2}},
	})
	if err != nil || len(es) != 3 || es[1].Seq != es[0].Seq+1 || es[2].Seq != es[1].Seq+1 {
		t.Fatalf("group: %v %v", es, err)
	}
	before := f.l.Head()
	var wg sync.WaitGroup
	for i := range 8 { // concurrent single appends around the failing group
		wg.Go(func() {
			if _, err := f.l.Append(ctx, ledger.OriginEnclave, "test.note", map[string]int{"N": 100 + i}); err != nil {
				t.Error(err)
			}
		})
	}
	o2 := omni(4)
	_, err = f.l.AppendAll(ctx, []ledger.Req{
		{Origin: ledger.OriginEnclave, Kind: "test.account", Payload: map[string]string{"Omni": o2, "Wallet": f.s.address(o2)}},
		{Origin: ledger.AccountOrigin(o2), Kind: "test.note", Payload: map[string]int{"N": -1}}, // refused by its fold
	})
	wg.Wait()
	if !errors.Is(err, ledger.ErrRejected) {
		t.Fatalf("failing group: %v", err)
	}
	if h := f.l.Head(); h.Seq != before.Seq+8 {
		t.Fatalf("head moved by %d, want the 8 single appends only", h.Seq-before.Seq)
	}
	if _, ok, _ := f.d.Get(ctx, "account/"+o2); ok {
		t.Fatal("the failed group's first entry left state behind")
	}
	f.verify(t)
}

type spaced struct{}

func (spaced) MarshalJSON() ([]byte, error) { return []byte(`{ "a" : [ 1, 2 ],  "b":"<&>" }`), nil }

// TestMarshalPayloadIsCanonical holds MarshalPayload (which trusts encoding/json
// to write compact, HTML-escaped output) to CheckPayload, the rule for entries
// from outside.
func TestMarshalPayloadIsCanonical(t *testing.T) {
	for _, v := range []any{
		map[string]any{"s": "<script>&\u2028\u00e9\u0001", "n": 1.5, "z": nil, "l": []any{}},
		struct {
			R json.RawMessage `json:"r"`
			C spaced          `json:"c"`
		}{json.RawMessage("{ \"x\" :\n 1 }"), spaced{}},
		struct{}{},
	} {
		p, err := ledger.MarshalPayload(v)
		if err != nil {
			t.Fatalf("%#v: %v", v, err)
		}
		if err := ledger.CheckPayload(p); err != nil {
			t.Fatalf("MarshalPayload wrote a non-canonical payload %s", p)
		}
	}
	for _, v := range []any{"string", 1, []int{1}, nil} {
		if _, err := ledger.MarshalPayload(v); err == nil {
			t.Fatalf("%#v: a payload that is not an object was accepted", v)
		}
	}
}

// TestBegin: queued appends answer like Append, in chain order, refusals and
// bad payloads included; after Close nothing is queued.
func TestBegin(t *testing.T) {
	f := newFixture(t, ledger.Options{}, 1)
	ctx := context.Background()
	o := f.account(t, 0)
	var waits []func() (ledger.Entry, error)
	for i := range 20 {
		waits = append(waits, f.l.Begin(ctx, ledger.AccountOrigin(o), "test.note", map[string]int{"N": i}))
	}
	refused := f.l.Begin(ctx, ledger.AccountOrigin(o), "no.such.kind", map[string]int{"N": 0})
	badPayload := f.l.Begin(ctx, ledger.AccountOrigin(o), "test.note", "not an object")
	var last uint64
	for i, w := range waits {
		e, err := w()
		if err != nil {
			t.Fatalf("append %d: %v", i, err)
		}
		if i > 0 && e.Seq <= last {
			t.Fatalf("append %d got seq %d after %d", i, e.Seq, last)
		}
		last = e.Seq
	}
	if _, err := refused(); !errors.Is(err, ledger.ErrUnknownKind) {
		t.Fatalf("unknown kind: %v", err)
	}
	if _, err := badPayload(); err == nil {
		t.Fatal("a payload that is not an object was queued")
	}
	f.verify(t)
	f.l.Close()
	if _, err := f.l.Begin(ctx, ledger.AccountOrigin(o), "test.note", map[string]int{"N": 1})(); !errors.Is(err, ledger.ErrClosed) {
		t.Fatalf("after close: %v", err)
	}
}

// TestSigningFailureFailsItsBatchOnly: when the enclave cannot sign one entry of
// a batch signed in parallel, the appenders of that batch get an error, nothing
// of it is written, and the ledger goes on from the same head.
func TestSigningFailureFailsItsBatchOnly(t *testing.T) {
	f := newFixture(t, ledger.Options{}, 1)
	ctx := context.Background()
	var accounts []string
	for i := range 4 {
		accounts = append(accounts, f.account(t, i))
	}
	before := f.l.Head()
	f.s.fail.Store(&accounts[2])
	var waits []func() (ledger.Entry, error)
	for i := range 40 {
		waits = append(waits, f.l.Begin(ctx, ledger.AccountOrigin(accounts[i%4]), "test.note", map[string]int{"N": i}))
	}
	failed := 0
	for i, w := range waits {
		_, err := w()
		if i%4 == 2 && err == nil {
			t.Fatalf("append %d by the account whose wallet fails succeeded", i)
		}
		if err != nil {
			failed++
		}
	}
	if failed < 10 {
		t.Fatalf("%d appends failed, want at least the 10 of the failing account", failed)
	}
	f.s.fail.Store(nil)
	e, err := f.l.Append(ctx, ledger.AccountOrigin(accounts[2]), "test.note", map[string]int{"N": 1000})
	if err != nil {
		t.Fatalf("after the fault: %v", err)
	}
	es, err := f.l.Entries(ctx, before.Seq+1, 1000)
	if err != nil {
		t.Fatal(err)
	}
	notes := 0
	for _, x := range es {
		if x.Kind == "test.note" {
			notes++
		}
	}
	if notes != 40-failed+1 || es[len(es)-1].Seq != e.Seq {
		t.Fatalf("%d notes written for %d acknowledged appends: a failed batch left entries behind", notes, 40-failed+1)
	}
	f.verify(t)
}

// TestListJSON: values under a prefix in key order, an empty list (not nil) when
// there are none, and an error for a value that is not the type's JSON.
func TestListJSON(t *testing.T) {
	st := ledger.NewMemState()
	for k, v := range map[string]string{"n/b": `{"N":2}`, "n/a": `{"N":1}`, "m/x": `{"N":9}`} {
		st.Put(k, []byte(v))
	}
	type n struct{ N int }
	got, err := ledger.ListJSON[n](st, "n/")
	if err != nil || len(got) != 2 || got[0].N != 1 || got[1].N != 2 {
		t.Fatalf("list: %v %v", got, err)
	}
	if none, err := ledger.ListJSON[n](st, "z/"); err != nil || none == nil || len(none) != 0 {
		t.Fatalf("empty list: %#v %v", none, err)
	}
	st.Put("n/c", []byte(`[1]`))
	if _, err := ledger.ListJSON[n](st, "n/"); err == nil {
		t.Fatal("a value of another shape was listed")
	}
}

// gatedDriver holds every commit until release is closed, saying on entered
// when one is waiting.
type gatedDriver struct {
	ledger.Driver
	entered chan struct{}
	release chan struct{}
}

func (g *gatedDriver) Commit(ctx context.Context, es []ledger.Entry, ws []ledger.Write) error {
	select {
	case g.entered <- struct{}{}:
	default:
	}
	<-g.release
	return g.Driver.Commit(ctx, es, ws)
}

// TestRefusalAnsweredAfterWhatRefusedIt: an append refused because of an entry
// not yet durable is answered only once that entry is: a caller that looks at
// state after the refusal sees what refused it (a read that lost the race for
// a one-read grant finds the grant used, not still granted).
func TestRefusalAnsweredAfterWhatRefusedIt(t *testing.T) {
	f := newFixture(t, ledger.Options{}, 1)
	f.l.Close()
	g := &gatedDriver{Driver: f.d, entered: make(chan struct{}, 1), release: make(chan struct{})}
	l, err := ledger.Open(context.Background(), g, f.schema, f.s, ledger.Options{})
	if err != nil {
		t.Fatal(err)
	}
	var once sync.Once
	release := func() { once.Do(func() { close(g.release) }) }
	defer l.Close()
	defer release() // before Close: a failing test must not leave the committer waiting
	ctx := context.Background()
	winner := l.Begin(ctx, ledger.OriginEnclave, "test.claim", map[string]string{"ID": "grant"})
	<-g.entered // the winner is prepared; its commit waits
	loser := make(chan error, 1)
	go func() {
		_, err := l.Append(ctx, ledger.OriginEnclave, "test.claim", map[string]string{"ID": "grant"})
		loser <- err
	}()
	select {
	case err := <-loser:
		_, ok, _ := f.d.Get(ctx, "claim/grant")
		t.Fatalf("the loser was answered (%v) before the winning entry was durable (stored: %v)", err, ok)
	case <-time.After(200 * time.Millisecond): // time for the old behaviour to show; nothing asserts on it
	}
	release()
	if _, err := winner(); err != nil {
		t.Fatal(err)
	}
	if err := <-loser; !errors.Is(err, ledger.ErrRejected) {
		t.Fatalf("the loser: %v", err)
	}
	if _, ok, err := f.d.Get(ctx, "claim/grant"); !ok || err != nil {
		t.Fatalf("the winning claim is not stored: %v", err)
	}
	// A refusal with nothing pending is answered at once.
	if _, err := l.Append(ctx, ledger.OriginEnclave, "test.claim", map[string]string{"ID": "grant"}); !errors.Is(err, ledger.ErrRejected) {
		t.Fatalf("a refusal with nothing pending: %v", err)
	}
}

// tamper runs q on the ledger file at path through a connection of its own, as
// someone with the file would.
func tamper(t *testing.T, path, q string, args ...any) {
	t.Helper()
	db, err := sql.Open("sqlite", "file:"+path+"?_pragma=busy_timeout(10000)")
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if _, err := db.Exec(q, args...); err != nil {
		t.Fatal(err)
	}
}

// TestBeginEach: a bundle's appends are each admitted and answered on their
// own (one refused, one unmarshalable, two written), and the written ones share
// one commit; on a closed ledger each wait says so.
func TestBeginEach(t *testing.T) {
	var commits atomic.Int64
	f := newFixture(t, ledger.Options{CommitTook: func(time.Duration) { commits.Add(1) }}, 1)
	ctx := context.Background()
	before, n0 := f.l.Head(), commits.Load()
	waits := f.l.BeginEach(ctx, []ledger.Req{
		{Origin: ledger.OriginEnclave, Kind: "test.note", Payload: map[string]int{"N": 1}},
		{Origin: ledger.OriginEnclave, Kind: "test.note", Payload: map[string]int{"N": -1}}, // refused by its fold
		{Origin: ledger.OriginEnclave, Kind: "test.note", Payload: make(chan int)},          // cannot be marshalled
		{Origin: ledger.OriginEnclave, Kind: "test.note", Payload: map[string]int{"N": 2}},
	})
	var got []error
	var seqs []uint64
	for _, wait := range waits {
		e, err := wait()
		got = append(got, err)
		if err == nil {
			seqs = append(seqs, e.Seq)
		}
	}
	if got[0] != nil || got[3] != nil || !errors.Is(got[1], ledger.ErrRejected) || got[2] == nil || !strings.Contains(got[2].Error(), "payload") {
		t.Fatalf("each answered on its own: %v", got)
	}
	if len(seqs) != 2 || seqs[0] != before.Seq+1 || seqs[1] != before.Seq+2 || f.l.Head().Seq != before.Seq+2 {
		t.Fatalf("entries at %v, head %d, want the two admitted ones after %d", seqs, f.l.Head().Seq, before.Seq)
	}
	if n := commits.Load() - n0; n != 1 {
		t.Fatalf("the bundle took %d commits, want 1", n)
	}
	f.verify(t)

	f.l.Close()
	closed := f.l.BeginEach(ctx, []ledger.Req{
		{Origin: ledger.OriginEnclave, Kind: "test.note", Payload: map[string]int{"N": 3}},
		{Origin: ledger.OriginEnclave, Kind: "test.note", Payload: make(chan int)},
	})
	if _, err := closed[0](); !errors.Is(err, ledger.ErrClosed) {
		t.Fatalf("append on a closed ledger: %v", err)
	}
	if _, err := closed[1](); err == nil || errors.Is(err, ledger.ErrClosed) || !strings.Contains(err.Error(), "payload") {
		t.Fatalf("an unmarshalable payload on a closed ledger: %v, want its own error", err)
	}
}
