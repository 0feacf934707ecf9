package e2e

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"database/sql"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	_ "modernc.org/sqlite"

	"github.com/agentkeys/agentkeys/internal/broker"
	"github.com/agentkeys/agentkeys/internal/home"
	"github.com/agentkeys/agentkeys/internal/ledger"
	"github.com/agentkeys/agentkeys/internal/ledger/ledgerstore"
	"github.com/agentkeys/agentkeys/internal/registry"
)

func authorize(mrsigner string) registry.Successor {
	return registry.Successor{MrSigner: mrsigner, EffectiveFrom: time.Now().Unix(), RationaleURI: "https://example.test/e2e/rotation"}
}

// governanceEntries submits n entries through the client (authorize, deauthorize,
// authorize, …) and returns them as stored.
func governanceEntries(t *testing.T, s *server, key ed25519.PrivateKey, n int) []ledger.Entry {
	t.Helper()
	var out []ledger.Entry
	var m string
	for i := range n {
		var e ledger.Entry
		var err error
		if i%2 == 0 {
			m = randomHex(32)
			e, err = s.client.SubmitGovernance(t.Context(), registry.KindSuccessorAuthorize, authorize(m), key)
		} else {
			e, err = s.client.SubmitGovernance(t.Context(), registry.KindSuccessorDeauthorize, registry.Deauthorize{MrSigner: m}, key)
		}
		if err != nil {
			t.Fatalf("governance entry %d: %v", i, err)
		}
		out = append(out, e)
	}
	return out
}

// copyDir copies the regular files of src into a new dir.
func copyDir(t *testing.T, src string) string {
	t.Helper()
	dst := filepath.Join(t.TempDir(), "data")
	if err := os.Mkdir(dst, 0o700); err != nil {
		t.Fatal(err)
	}
	des, err := os.ReadDir(src)
	if err != nil {
		t.Fatal(err)
	}
	for _, de := range des {
		if !de.Type().IsRegular() {
			continue
		}
		if err := os.WriteFile(filepath.Join(dst, de.Name()), fileBytes(t, filepath.Join(src, de.Name())), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return dst
}

// alterEntry changes one byte of column col of entry seq in the data dir's ledger,
// as an attacker with the file would.
func alterEntry(t *testing.T, dataDir string, seq uint64, col string) {
	t.Helper()
	db, err := sql.Open("sqlite", "file:"+broker.LedgerPath(dataDir))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var v any
	if err := db.QueryRow("SELECT "+col+" FROM entries WHERE seq = ?", seq).Scan(&v); err != nil {
		t.Fatalf("reading %s of seq %d: %v", col, seq, err)
	}
	switch x := v.(type) {
	case int64:
		v = x + 1
	case []byte:
		b := bytes.Clone(x)
		i := len(b) / 2
		if col == "payload" {
			// inside the mrsigner value, keeping canonical JSON: only the hash changes
			i = bytes.Index(b, []byte(`"mrsigner":"`)) + len(`"mrsigner":"`)
			if b[i] == '0' {
				b[i] = '1'
			} else {
				b[i] = '0'
			}
		} else {
			b[i] ^= 0x01
		}
		v = b
	case string:
		b := []byte(x)
		b[len(b)/2] ^= 0x01
		v = string(b)
	default:
		t.Fatalf("column %s has type %T", col, v)
	}
	res, err := db.Exec("UPDATE entries SET "+col+" = ? WHERE seq = ?", v, seq)
	if err != nil {
		t.Fatal(err)
	}
	if n, _ := res.RowsAffected(); n != 1 {
		t.Fatalf("updated %d rows", n)
	}
}

// auditFails runs `audit verify` with args and checks it fails naming seq.
func auditFails(t *testing.T, h *harness, home string, seq uint64, args ...string) {
	t.Helper()
	r := h.cli(home, append([]string{"audit", "verify"}, args...)...)
	if r.code != 1 {
		t.Fatalf("audit verify %v on an altered ledger: exit %d, want 1; stdout %q stderr %q", args, r.code, r.stdout, r.stderr)
	}
	if r.stdout != "" {
		t.Errorf("audit verify %v failed but printed on stdout: %q", args, r.stdout)
	}
	lines := strings.Split(strings.TrimSpace(r.stderr), "\n")
	if len(lines) != 3 || lines[0] != "Error: LEDGER_INVALID" ||
		!strings.HasPrefix(strings.TrimSpace(lines[1]), fmt.Sprintf("seq %d: ", seq)) ||
		!strings.HasPrefix(strings.TrimSpace(lines[2]), "Fix: ") {
		t.Errorf("audit verify %v: want Error: LEDGER_INVALID / seq %d: … / Fix: …, got:\n%s", args, seq, r.stderr)
	}
}

// TestTamper: one byte changed in a stored entry is found by the offline audit,
// and the server refuses to become ready (and to write) on that ledger.
func TestTamper(t *testing.T) {
	h := newHarness(t)
	home := t.TempDir()
	o := serverOpts{home: home}
	dir := o.effectiveDataDir()
	s := h.start(o)
	key := operatorKey(t, dir)
	es := governanceEntries(t, s, key, 10)
	if code := s.stop(syscall.SIGTERM); code != 0 {
		t.Fatalf("stop: exit %d", code)
	}
	h.auditOK(home, "--data-dir", dir)
	k := es[5].Seq // an authorize entry in the middle
	pristine := copyDir(t, dir)

	alterEntry(t, dir, k, "payload")
	auditFails(t, h, home, k, "--data-dir", dir)
	// The stop wrote a start-up snapshot at the head: a start trusts what it
	// vouches for (internal/api TestAuditCatchesTamperingBeforeTheTrustPoint).
	// Without it the start checks the whole chain, as here.
	if err := os.Remove(broker.SnapshotPath(dir)); err != nil {
		t.Fatal(err)
	}

	s = h.spawn(o)
	s.waitListening()
	l, err := s.waitLog(`"broker is not ready"`, startTimeout, msgIs("broker is not ready"))
	if err != nil {
		t.Fatal(err)
	}
	seqK := fmt.Sprintf("seq %d:", k)
	if !strings.Contains(l.str("err"), seqK) {
		t.Errorf("not-ready log line does not name %s: %v", seqK, l)
	}
	code, body := s.get("/readyz")
	var rz struct {
		Ready  bool   `json:"ready"`
		Reason string `json:"reason"`
	}
	if json.Unmarshal(body, &rz) != nil || code != http.StatusServiceUnavailable || rz.Ready || !strings.Contains(rz.Reason, seqK) {
		t.Errorf("/readyz on an altered ledger = %d %s, want 503 with a reason naming %s", code, body, seqK)
	}
	if code, body := s.get("/metrics"); code != http.StatusOK || !strings.Contains(string(body), "\nagentkeys_ready 0\n") {
		t.Errorf("/metrics does not report agentkeys_ready 0")
	}
	// Writes are refused; the public entries still show the altered ledger, so a
	// client-side audit finds the same seq.
	e := newEntry(t, s.head(), registry.KindSuccessorAuthorize, authorize(randomHex(32)))
	ledger.SignGovernance(&e, key)
	code, body = s.postJSON("/v1/ledger/entries", e)
	if c, _, _ := apiError(t, body); code != http.StatusServiceUnavailable || c != "NOT_READY" {
		t.Errorf("POST on a not-ready server = %d %s, want 503 NOT_READY", code, body)
	}
	auditFails(t, h, home, k, "--server", s.url)
	if code, body := s.get("/mock/enclave-successors"); code != http.StatusServiceUnavailable {
		t.Errorf("registry read on a not-ready server = %d %s, want 503", code, body)
	}
	if strings.Contains(s.stderr.String(), `"msg":"ready"`) {
		t.Error("the server logged ready on an altered ledger")
	}
	if code := s.stop(syscall.SIGTERM); code != 0 {
		t.Errorf("stopping the not-ready server: exit %d", code)
	}
	auditFails(t, h, home, k, "--data-dir", dir) // the server did not "repair" anything

	// Every other field of an entry is covered too, and so is a deleted entry.
	for _, col := range []string{"prev_hash", "time", "kind", "origin", "signer", "sig"} {
		t.Run(col, func(t *testing.T) {
			d := copyDir(t, pristine)
			alterEntry(t, d, k, col)
			auditFails(t, h, home, k, "--data-dir", d)
		})
	}
	t.Run("deleted entry", func(t *testing.T) {
		d := copyDir(t, pristine)
		execSQL(t, d, "DELETE FROM entries WHERE seq = ?", k)
		auditFails(t, h, home, k, "--data-dir", d)
	})
	// The offline audit also re-folds the state and compares it with the stored one.
	t.Run("state value", func(t *testing.T) {
		d := copyDir(t, pristine)
		execSQL(t, d, "UPDATE state SET value = value || x'00' WHERE key = (SELECT min(key) FROM state)")
		r := h.cli(home, "audit", "verify", "--data-dir", d)
		if r.code != 1 || !strings.HasPrefix(r.stderr, "Error: LEDGER_INVALID\n") || !strings.Contains(r.stderr, "state key") {
			t.Errorf("audit verify on altered state: exit %d, stderr %q", r.code, r.stderr)
		}
	})
}

// execSQL runs one statement that must change exactly one row of the data dir's ledger.
func execSQL(t *testing.T, dataDir, stmt string, args ...any) {
	t.Helper()
	db, err := sql.Open("sqlite", "file:"+broker.LedgerPath(dataDir))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	res, err := db.Exec(stmt, args...)
	if err != nil {
		t.Fatal(err)
	}
	if n, _ := res.RowsAffected(); n != 1 {
		t.Fatalf("%s changed %d rows, want 1", stmt, n)
	}
}

// TestRejections: entries with the wrong origin, a bad signature, an unknown kind,
// a stale seq or a malformed body are refused with the right error, and nothing
// is written.
func TestRejections(t *testing.T) {
	h := newHarness(t)
	home := t.TempDir()
	o := serverOpts{home: home}
	s := h.start(o)
	op := operatorKey(t, o.effectiveDataDir())
	_, stranger, err := ed25519.GenerateKey(nil)
	if err != nil {
		t.Fatal(err)
	}
	// one accepted entry first, so that "stale" has something to be stale against
	governanceEntries(t, s, op, 1)
	before := s.head()
	hd := before

	signed := func(kind string, payload any, keys ...ed25519.PrivateKey) ledger.Entry {
		e := newEntry(t, hd, kind, payload)
		for _, k := range keys {
			ledger.SignGovernance(&e, k)
		}
		return e
	}
	enclaveOrigin := newEntry(t, hd, registry.KindSuccessorAuthorize, authorize(randomHex(32)))
	enclaveOrigin.Origin = ledger.OriginEnclave
	ledger.SignGovernance(&enclaveOrigin, op)
	accountOrigin := newEntry(t, hd, registry.KindSuccessorAuthorize, authorize(randomHex(32)))
	accountOrigin.Origin = ledger.AccountOrigin(randomHex(32))
	ledger.SignGovernance(&accountOrigin, op)
	changed := signed(registry.KindSuccessorAuthorize, authorize(randomHex(32)), op)
	changed.Payload, _ = ledger.MarshalPayload(authorize(randomHex(32)))
	// stale: a well-formed entry for the seq the head already has
	stale := newEntry(t, hd, registry.KindSuccessorAuthorize, authorize(randomHex(32)))
	stale.Seq = hd.Seq
	stale.PrevHash = s.allEntries()[hd.Seq-1].Hash()
	ledger.SignGovernance(&stale, op)
	future := signed(registry.KindSuccessorAuthorize, authorize(randomHex(32)))
	future.Time = time.Now().Add(time.Hour).UnixNano()
	ledger.SignGovernance(&future, op)
	unsigned := newEntry(t, hd, registry.KindSuccessorAuthorize, authorize(randomHex(32)))
	unsigned.Signer = ledger.OriginGovernance

	cases := []struct {
		name   string
		path   string
		body   any
		status int
		code   string
	}{
		{"origin enclave signed by the operator", "/v1/ledger/entries", enclaveOrigin, http.StatusForbidden, "DENIED"},
		{"origin account signed by the operator", "/v1/ledger/entries", accountOrigin, http.StatusForbidden, "DENIED"},
		{"payload changed after signing", "/v1/ledger/entries", changed, http.StatusForbidden, "DENIED"},
		{"signed by a stranger", "/v1/ledger/entries", signed(registry.KindSuccessorAuthorize, authorize(randomHex(32)), stranger), http.StatusForbidden, "DENIED"},
		{"operator and stranger", "/v1/ledger/entries", signed(registry.KindSuccessorAuthorize, authorize(randomHex(32)), op, stranger), http.StatusForbidden, "DENIED"},
		{"no signature", "/v1/ledger/entries", unsigned, http.StatusForbidden, "DENIED"},
		{"unknown kind", "/v1/ledger/entries", signed("successor.promote", authorize(randomHex(32)), op), http.StatusBadRequest, "BAD_REQUEST"},
		{"refused payload (upper-case mrsigner)", "/v1/ledger/entries", signed(registry.KindSuccessorAuthorize, authorize(strings.ToUpper(randomHex(32))), op), http.StatusBadRequest, "BAD_REQUEST"},
		{"deauthorize of an unknown mrsigner", "/v1/ledger/entries", signed(registry.KindSuccessorDeauthorize, registry.Deauthorize{MrSigner: randomHex(32)}, op), http.StatusBadRequest, "BAD_REQUEST"},
		{"wrong kind for the route", "/mock/enclave-successors/authorize", signed(registry.KindSuccessorDeauthorize, registry.Deauthorize{MrSigner: randomHex(32)}, op), http.StatusBadRequest, "BAD_REQUEST"},
		{"time an hour ahead", "/v1/ledger/entries", future, http.StatusBadRequest, "BAD_REQUEST"},
		{"stale seq", "/v1/ledger/entries", stale, http.StatusConflict, "CONFLICT"},
		{"malformed JSON", "/v1/ledger/entries", []byte(`{"seq":`), http.StatusBadRequest, "BAD_REQUEST"},
		{"unknown field", "/v1/ledger/entries", []byte(`{"seq":1,"color":"red"}`), http.StatusBadRequest, "BAD_REQUEST"},
		{"two JSON objects", "/v1/ledger/entries", []byte(`{} {}`), http.StatusBadRequest, "BAD_REQUEST"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			status, body := s.postJSON(c.path, c.body)
			if status != c.status {
				t.Fatalf("status %d, want %d: %s", status, c.status, body)
			}
			if code, msg, fix := apiError(t, body); code != c.code || msg == "" || fix == "" {
				t.Errorf("error %q %q %q, want code %s with a message and a fix", code, msg, fix, c.code)
			}
			assertNothingWritten(t, s, before)
		})
	}
	h.auditOK(home, "--server", s.url)
	h.auditOK(home, "--data-dir", o.effectiveDataDir())

	// The same construction, correctly signed on the current head, is accepted on
	// both the generic and the registry route.
	m := randomHex(32)
	for _, path := range []string{"/mock/enclave-successors/authorize", "/v1/ledger/entries"} {
		hd = s.head()
		var e ledger.Entry
		if path == "/v1/ledger/entries" {
			e = signed(registry.KindSuccessorDeauthorize, registry.Deauthorize{MrSigner: m}, op)
		} else {
			e = signed(registry.KindSuccessorAuthorize, authorize(m), op)
		}
		status, body := s.postJSON(path, e)
		if status != http.StatusCreated {
			t.Fatalf("valid entry on %s: %d %s", path, status, body)
		}
		var got ledger.Entry
		if err := json.Unmarshal(body, &got); err != nil || got.Hash() != e.Hash() {
			t.Fatalf("the stored entry differs from the submitted one: %v %s", err, body)
		}
		if path == "/mock/enclave-successors/authorize" {
			_, body := s.get("/mock/enclave-successors")
			if !strings.Contains(string(body), m) {
				t.Errorf("authorized mrsigner is not listed: %s", body)
			}
		}
	}
	h.auditOK(home, "--server", s.url)
}

// ack is an acknowledged entry: the broker answered it as durable.
type ack struct {
	seq   uint64
	hash  ledger.Hash
	round int
}

// TestCrashConsistency: kill -9 the server at random moments while four writers
// append governance entries and an owner and its agent read a credential (a new
// version each round); after every restart each acknowledged entry is there
// with the same hash, the ledger verifies, and every read a reader was answered
// has its durable credential.read entry.
func TestCrashConsistency(t *testing.T) {
	dataDir := filepath.Join(t.TempDir(), "data")
	crashRounds(t, crashConfig{rounds: 20, dataDir: dataDir,
		store: ledgerstore.SQLite(broker.LedgerPath(dataDir)), audit: []string{"--data-dir", dataDir}})
}

// crashConfig is one crash test: a broker on a store, killed rounds times.
type crashConfig struct {
	rounds  int
	dataDir string
	args    []string // extra server flags (--ledger)
	store   string   // the store's URL, read after the last round
	audit   []string // how `audit verify` names the store
	// storeCrash, when set, is called in round storeCrashAt instead of killing
	// the broker: it kills the store mid-load and brings it back; the same
	// broker must then serve again before it is killed at the round's end.
	storeCrash   func()
	storeCrashAt int
}

// crashRounds runs the crash test: four writers append governance entries and
// an owner and its agent read a credential (a new version each round) while the
// broker is killed at a random moment; after every restart each acknowledged
// entry is there with the same hash; at the end the ledger verifies and every
// read a reader was answered has its durable credential.read entry.
func crashRounds(t *testing.T, cfg crashConfig) {
	const nWriters = 4
	h := newHarness(t)
	home := t.TempDir()
	// Reads are not rate limited here: the readers read as fast as they can; nor
	// are the writers, the operator's own governance submissions.
	o := serverOpts{home: home, dataDir: cfg.dataDir,
		args: append([]string{"--read-rate", "1000000/1s", "--submit-rate", "1000000/1m,1000000/1m"}, cfg.args...)}
	// The first start picks a port; every restart keeps it, so the issuer (and
	// with it every session token and the CLI's server URL) stays the same.
	first := h.start(o)
	o.args = append(o.args, "--listen", first.addr)
	reads := newCrashReads(h, first)
	first.kill()
	var (
		mu         sync.Mutex
		acks       []ack
		inFlightAt int // rounds with a write in flight at the kill
		roundWrote int // rounds with at least one acknowledged write
		readAtKill int // rounds with a read in flight at the kill
	)
	record := func(e ledger.Entry, round int) {
		mu.Lock()
		acks = append(acks, ack{e.Seq, e.Hash(), round})
		mu.Unlock()
	}
	checkAcks := func(s *server) {
		t.Helper()
		stored := map[uint64]ledger.Hash{}
		for _, e := range s.allEntries() {
			stored[e.Seq] = e.Hash()
		}
		mu.Lock()
		defer mu.Unlock()
		seen := map[uint64]bool{}
		for _, a := range acks {
			if seen[a.seq] {
				t.Fatalf("seq %d was acknowledged twice", a.seq)
			}
			seen[a.seq] = true
			if got, ok := stored[a.seq]; !ok {
				t.Fatalf("acknowledged seq %d (round %d) is missing after the crash", a.seq, a.round)
			} else if got != a.hash {
				t.Fatalf("acknowledged seq %d (round %d) has another hash after the crash", a.seq, a.round)
			}
		}
	}
	// Successors left authorized by a kill are deauthorized first, so the
	// registry never reaches its limit of 8.
	clearLeftovers := func(s *server, key ed25519.PrivateKey, round int) {
		t.Helper()
		var left []string
		if err := s.client.Do(t.Context(), http.MethodGet, "/mock/enclave-successors", nil, &left); err != nil {
			t.Fatal(err)
		}
		for _, m := range left {
			e, err := s.client.SubmitGovernance(t.Context(), registry.KindSuccessorDeauthorize, registry.Deauthorize{MrSigner: m}, key)
			if err != nil {
				t.Fatalf("round %d: deauthorizing a leftover: %v", round, err)
			}
			record(e, round)
		}
	}
	// load runs the writers and readers for a random while, then halts them.
	load := func(s *server, key ed25519.PrivateKey, round int) (*writers, *runningReads) {
		w := startWriters(t, s, key, nWriters, fmt.Sprintf("round %d", round), func(e ledger.Entry) { record(e, round) })
		r := reads.start(round)
		time.Sleep(time.Duration(100+rand.IntN(301)) * time.Millisecond) // when to crash, not an assertion
		if w.halt() {
			inFlightAt++
		}
		if r.halt() {
			readAtKill++
		}
		return w, r
	}
	storeCrashes := 0
	for round := range cfg.rounds {
		s := h.start(o)
		checkAcks(s)
		if round > 0 {
			reads.storeNext(s)
		}
		key := operatorKey(t, o.dataDir)
		clearLeftovers(s, key, round)
		w, r := load(s, key, round)
		if cfg.storeCrash != nil && round == cfg.storeCrashAt {
			// The store dies under load; the broker keeps running. Once it is
			// back, the same broker serves again (the first request may still
			// meet a connection broken by the crash), then is killed as usual.
			writing, reading := w.inFlight.Load(), r.inFlight.Load()
			cfg.storeCrash()
			w.wait()
			r.wait()
			back := time.Now()
			if !waitFor(30*time.Second, func() bool {
				e, err := s.client.SubmitGovernance(t.Context(), registry.KindSuccessorAuthorize, authorize(randomHex(32)), key)
				if err == nil {
					record(e, round)
				}
				return err == nil
			}) {
				t.Fatalf("round %d: the broker does not serve again after the store came back:\n%s", round, s.stderr.String())
			}
			t.Logf("round %d: the store was killed with %d writes and %d reads in flight; the broker served again %s after it was back",
				round, writing, reading, time.Since(back).Round(time.Millisecond))
			storeCrashes++
			clearLeftovers(s, key, round)
			w, r = load(s, key, round)
		}
		s.kill()
		if w.wait() > 0 {
			roundWrote++
		}
		r.wait()
		if t.Failed() {
			t.FailNow()
		}
	}
	s := h.start(o)
	checkAcks(s)
	if code := s.stop(syscall.SIGTERM); code != 0 {
		t.Fatalf("final stop: exit %d", code)
	}
	t.Log(h.auditOK(home, cfg.audit...))
	if len(acks) == 0 {
		t.Fatal("no entry was acknowledged in any round")
	}
	n := reads.checkAudited(cfg.store)
	t.Logf("%d rounds (%d with the store killed): %d acknowledged entries, %d rounds acknowledged writes, %d rounds had writes in flight at the kill; "+
		"%d answered reads, each with its durable audit entry, %d rounds had reads in flight at the kill",
		cfg.rounds, storeCrashes, len(acks), roundWrote, inFlightAt, n, readAtKill)
}

// writers is a set of goroutines that authorize, then deauthorize, random
// mrsigners through SubmitGovernance until they are halted and the server fails
// them. Every acknowledged entry goes to record. An error before halt is a test
// error; after it, errors are expected (the server is going away).
type writers struct {
	wg       sync.WaitGroup
	halted   atomic.Bool
	inFlight atomic.Int32
	acked    atomic.Int32
}

func startWriters(t *testing.T, s *server, key ed25519.PrivateKey, n int, what string, record func(ledger.Entry)) *writers {
	w := &writers{}
	for range n {
		w.wg.Go(func() {
			submit := func(kind string, payload any) bool {
				w.inFlight.Add(1)
				e, err := s.client.SubmitGovernance(context.Background(), kind, payload, key)
				w.inFlight.Add(-1)
				if err != nil {
					if !w.halted.Load() {
						t.Errorf("%s: %s while the server was up: %v", what, kind, err)
					}
					return false
				}
				record(e)
				w.acked.Add(1)
				return true
			}
			for !w.halted.Load() {
				m := randomHex(32)
				if !submit(registry.KindSuccessorAuthorize, authorize(m)) ||
					!submit(registry.KindSuccessorDeauthorize, registry.Deauthorize{MrSigner: m}) {
					return
				}
			}
		})
	}
	return w
}

// halt tells the writers to stop and reports whether a write was in flight.
func (w *writers) halt() bool {
	w.halted.Store(true)
	return w.inFlight.Load() > 0
}

// wait waits for the writers and returns how many entries were acknowledged.
func (w *writers) wait() int {
	w.wg.Wait()
	return int(w.acked.Load())
}

// TestGracefulStopUnderLoad: SIGTERM while four writers append: the server exits
// 0, and every entry it acknowledged is there after a restart.
func TestGracefulStopUnderLoad(t *testing.T) {
	h := newHarness(t)
	home := t.TempDir()
	// Four writers racing for the head re-sign and resubmit on every conflict, and
	// each submission counts against the governance limit: raise it, this test is
	// about the stop, not the limit.
	o := serverOpts{home: home, args: []string{"--submit-rate", "10000/1m,10000/1m"}}
	s := h.start(o)
	key := operatorKey(t, o.effectiveDataDir())
	var mu sync.Mutex
	acked := map[uint64]ledger.Hash{}
	twenty := make(chan struct{}) // closed at the 20th acknowledged entry
	w := startWriters(t, s, key, 4, "before SIGTERM", func(e ledger.Entry) {
		mu.Lock()
		acked[e.Seq] = e.Hash()
		if len(acked) == 20 {
			close(twenty)
		}
		mu.Unlock()
	})
	// Let the writers get going, and halt them as soon as the 20th entry is
	// acknowledged: a poll would let them run on into the governance rate limit.
	select {
	case <-twenty:
	case <-time.After(startTimeout):
		t.Fatalf("writers acknowledged only %d entries", w.acked.Load())
	}
	w.halt()
	if code := s.stop(syscall.SIGTERM); code != 0 {
		t.Fatalf("SIGTERM under load: exit %d", code)
	}
	n := w.wait()
	if !strings.Contains(s.stderr.String(), `"msg":"stopped"`) {
		t.Error("no \"stopped\" log line")
	}
	s = h.start(o)
	stored := map[uint64]ledger.Hash{}
	for _, e := range s.allEntries() {
		stored[e.Seq] = e.Hash()
	}
	mu.Lock()
	defer mu.Unlock()
	for seq, hash := range acked {
		if stored[seq] != hash {
			t.Errorf("acknowledged seq %d is missing or changed after a graceful stop", seq)
		}
	}
	h.auditOK(home, "--server", s.url)
	t.Logf("%d entries acknowledged before SIGTERM", n)
}

// TestPublicLedgerPrivacy: with two owners at work, an anonymous reader of GET
// /v1/ledger/entries learns no service name or session id, yet `audit verify
// --server` checks the whole chain; `audit verify --mine` opens the owner's own
// entries; and a private payload altered in the database is found by the
// operator's `audit verify --data-dir`, naming its seq.
func TestPublicLedgerPrivacy(t *testing.T) {
	h := newHarness(t)
	s := h.start(serverOpts{home: t.TempDir()})
	dir := s.opts.effectiveDataDir()
	type ownerRun struct{ home, service, sid string }
	var owners []ownerRun
	for _, name := range []string{"alpha", "bravo"} {
		oh := h.owner(s)
		svc := "svc-" + name + "-" + randomHex(4)
		h.mustOK(h.cliIn(oh, "sk-"+randomHex(8)+"\n", false, "store", svc), "store")
		h.mustOK(h.cliIn(oh, "", true, "read", svc), "read")
		sess, err := home.Dir(oh).Session()
		if err != nil {
			t.Fatal(err)
		}
		owners = append(owners, ownerRun{oh, svc, sess.SID})
	}
	var body strings.Builder
	for from := 0; ; from += 1000 {
		code, b := s.get(fmt.Sprintf("/v1/ledger/entries?from=%d&limit=1000", from))
		if code != http.StatusOK {
			t.Fatalf("GET entries: %d %s", code, b)
		}
		body.Write(b)
		if n := strings.Count(string(b), `"seq":`); n < 1000 {
			break
		}
	}
	for _, o := range owners {
		for _, s := range []string{o.service, o.sid} {
			if strings.Contains(body.String(), s) {
				t.Errorf("anonymous GET /v1/ledger/entries shows %q", s)
			}
		}
	}
	line := h.auditOK(owners[0].home, "--server", s.url)
	if !strings.Contains(line, "private entries checked by commitment, 0 opened") {
		t.Errorf("audit verify --server: %q", line)
	}
	for _, o := range owners {
		r := h.mustOK(h.cliIn(o.home, "", false, "audit", "verify", "--mine"), "audit verify --mine")
		if !regexp.MustCompile(`checked by commitment, [1-9][0-9]* opened(; enclave tier \w+, mrsigner [0-9a-f]{16}…)?\n$`).MatchString(r.stdout) {
			t.Errorf("audit verify --mine opened none of the owner's entries: %q", r.stdout)
		}
	}
	if code := s.stop(syscall.SIGTERM); code != 0 {
		t.Fatalf("stop: exit %d", code)
	}
	h.auditOK(owners[0].home, "--data-dir", dir)

	// Alter the service name inside a stored credential entry (same length, still
	// canonical JSON): only the payload changes, its commitment no longer matches.
	db, err := sql.Open("sqlite", "file:"+broker.LedgerPath(dir))
	if err != nil {
		t.Fatal(err)
	}
	var seq uint64
	if err := db.QueryRow(`SELECT seq FROM entries WHERE kind = 'credential.stored' ORDER BY seq LIMIT 1`).Scan(&seq); err != nil {
		t.Fatal(err)
	}
	db.Close()
	forged := strings.Replace(owners[0].service, "alpha", "omega", 1)
	execSQL(t, dir, `UPDATE entries SET payload = CAST(replace(CAST(payload AS TEXT), ?, ?) AS BLOB) WHERE seq = ?`, owners[0].service, forged, seq)
	auditFails(t, h, owners[0].home, seq, "--data-dir", dir)
}
