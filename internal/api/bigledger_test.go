package api_test

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"github.com/agentkeys/agentkeys/internal/audit"
	"github.com/agentkeys/agentkeys/internal/ledger/postgres"
	"github.com/agentkeys/agentkeys/internal/ledger/postgres/pgtest"
	"github.com/agentkeys/agentkeys/internal/ledger/sqlite"
	"github.com/agentkeys/agentkeys/internal/problem"
	"log/slog"
	"os"
	"runtime/pprof"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/agentkeys/agentkeys/internal/broker"
	"github.com/agentkeys/agentkeys/internal/ledger"
	"github.com/agentkeys/agentkeys/internal/oidc"
)

// bigLedgerSize is how many entries the start-up tests generate: 20,000 by
// default (quick enough for CI), AGENTKEYS_BIG_LEDGER to measure a full-size
// ledger (e.g. 1000000).
func bigLedgerSize(t testing.TB) int {
	if s := os.Getenv("AGENTKEYS_BIG_LEDGER"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 {
			t.Fatalf("AGENTKEYS_BIG_LEDGER=%q: want a positive entry count", s)
		}
		return n
	}
	return 20_000
}

// generateLedger appends about n entries (oidc.minted, the kind a busy broker
// writes most, signed by owners' wallets, filed in their usage trails) to e's
// ledger through the ledger itself: many appends in flight, so group commit
// writes them a batch per transaction. It returns the owners' omnis.
func generateLedger(t testing.TB, e *env, n int) []string {
	t.Helper()
	owners := make([]string, 4)
	for i := range owners {
		_, g := e.owner(t)
		owners[i] = g.Omni
	}
	l, err := e.b.Ledger()
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	start := l.Head().Seq
	const workers = 8
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			const inFlight = 256
			waits := make([]func() (ledger.Entry, error), 0, inFlight)
			flush := func() error {
				for _, wait := range waits {
					if _, err := wait(); err != nil {
						return err
					}
				}
				waits = waits[:0]
				return nil
			}
			for i := w; i < n; i += workers {
				owner := owners[i%len(owners)]
				m := oidc.Mint{Owner: owner, Actor: owner, ActorRole: "owner", SID: "s", Audience: "sts.amazonaws.com",
					Kid: "k1", JTI: fmt.Sprintf("jti-%d", i), Exp: 1_900_000_000, OwnerSelf: true}
				waits = append(waits, l.Begin(ctx, ledger.AccountOrigin(owner), oidc.KindMinted, m))
				if len(waits) == inFlight {
					if err := flush(); err != nil {
						errs <- err
						return
					}
				}
			}
			if err := flush(); err != nil {
				errs <- err
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	t.Logf("generated %d entries (head %d → %d)", n, start, l.Head().Seq)
	return owners
}

// TestBigLedgerStart generates a big ledger and reports how long a start takes
// on it in three cases: after a clean stop (a snapshot at the head), after a
// crash (the last snapshot written while running, at most snapshotEvery entries
// behind: its tail is read), and with no snapshot at all. It bounds the work,
// not the wall clock: how many entries each start read (from the broker's
// "ledger verified" log line). The full-size figure: AGENTKEYS_BIG_LEDGER=1000000
// (docs/benchmarks.md).
func TestBigLedgerStart(t *testing.T) {
	logs := &syncBuffer{}
	bigLedgerStart(t, newEnv(t, broker.Config{Logger: slog.New(slog.NewJSONHandler(logs, nil))}), logs)
}

// TestBigLedgerStartPostgres is TestBigLedgerStart on PostgreSQL.
func TestBigLedgerStartPostgres(t *testing.T) {
	u := pgtest.Start(t).NewDatabase(t)
	logs := &syncBuffer{}
	bigLedgerStart(t, newEnvOn(t, broker.Config{Logger: slog.New(slog.NewJSONHandler(logs, nil))},
		func() (ledger.Driver, error) { return postgres.Open(u) }), logs)
}

func bigLedgerStart(t *testing.T, e *env, logs *syncBuffer) {
	n := bigLedgerSize(t)
	// The last 100,000 entries (a tenth on a smaller ledger) come after a
	// restart, whose snapshot stands for one a running broker writes every
	// 100,000 entries: a crash leaves at most that many after it.
	tail := min(n/10, 100_000)
	t0 := time.Now()
	generateLedger(t, e, n-tail)
	e.restart(t)
	earlier, err := os.ReadFile(broker.SnapshotPath(e.dataDir))
	if err != nil {
		t.Fatal(err)
	}
	generateLedger(t, e, tail)
	t.Logf("generation took %s", time.Since(t0))
	l, _ := e.b.Ledger()
	total := l.Head().Seq + 1

	start := func(name string, maxRead uint64) {
		t.Helper()
		if f := os.Getenv("AGENTKEYS_START_PROFILE"); f != "" {
			out, err := os.Create(f + "." + name)
			if err != nil {
				t.Fatal(err)
			}
			pprof.StartCPUProfile(out)
			defer pprof.StopCPUProfile()
		}
		logs.Reset()
		t0 := time.Now()
		e.open(t)
		took := time.Since(t0)
		var line struct {
			Entries uint64 `json:"entries"`
			From    uint64 `json:"from_seq"`
		}
		for _, s := range strings.Split(logs.String(), "\n") {
			if strings.Contains(s, `"msg":"ledger verified"`) {
				if err := json.Unmarshal([]byte(s), &line); err != nil {
					t.Fatal(err)
				}
			}
		}
		t.Logf("start on %d entries, %s: took %s, read %d entries from seq %d", total, name, took, line.Entries, line.From)
		if line.Entries > maxRead {
			t.Errorf("start %s read %d entries, want at most %d", name, line.Entries, maxRead)
		}
	}

	e.b.Close() // a clean stop writes a snapshot at the head
	start("after a clean stop", 0)
	e.b.Close()
	if err := os.WriteFile(broker.SnapshotPath(e.dataDir), earlier, 0o600); err != nil {
		t.Fatal(err)
	}
	start(fmt.Sprintf("after a crash (the last snapshot %d entries behind)", tail), uint64(tail)+1024)
	e.b.Close()
	if err := os.Remove(broker.SnapshotPath(e.dataDir)); err != nil {
		t.Fatal(err)
	}
	start("with no snapshot", total)
}

// syncBuffer is a bytes.Buffer safe for the broker's goroutines to log into.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func (s *syncBuffer) Reset() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.b.Reset()
}

// tamperedStart builds a ledger the way a broker killed after a snapshot leaves
// it: a start-up snapshot at head1, entries after it (with checkpoints every
// 1,000), no snapshot of those. It returns the env (stopped), head1, and the
// last checkpoint entry's seq.
func tamperedStart(t *testing.T) (e *env, head1, checkpoint uint64) {
	e = newEnv(t, broker.Config{})
	generateLedger(t, e, 2500)
	e.restart(t) // stopping writes a snapshot at the head
	old, err := os.ReadFile(broker.SnapshotPath(e.dataDir))
	if err != nil {
		t.Fatal(err)
	}
	l, _ := e.b.Ledger()
	head1 = l.Head().Seq
	generateLedger(t, e, 2500)
	e.b.Close()
	// As if killed before it could write the newer one.
	if err := os.WriteFile(broker.SnapshotPath(e.dataDir), old, 0o600); err != nil {
		t.Fatal(err)
	}
	d, err := sqlite.OpenReadOnly(broker.LedgerPath(e.dataDir))
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	c, ok, err := ledger.LastCheckpoint(ledger.View(context.Background(), d))
	h, _, _ := d.Head(context.Background())
	if err != nil || !ok || c.Seq+1 <= head1 || c.Seq+2 > h.Seq {
		t.Fatalf("want a checkpoint between the snapshot (%d) and the head (%d) with entries after it, got %+v %v %v", head1, h.Seq, c, ok, err)
	}
	return e, head1, c.Seq + 1
}

// alter changes one column of entry seq in the data dir's SQLite ledger:
// "payload" (a mint's jti, keeping the JSON valid) or "sig" (one byte).
func alter(t *testing.T, dataDir string, seq uint64, col string) {
	t.Helper()
	db, err := sql.Open("sqlite", "file:"+broker.LedgerPath(dataDir))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var b []byte
	if err := db.QueryRow("SELECT "+col+" FROM entries WHERE seq = ?", seq).Scan(&b); err != nil {
		t.Fatal(err)
	}
	if col == "payload" {
		if !bytes.Contains(b, []byte(`"jti-`)) {
			t.Fatalf("entry %d is not a generated mint: %s", seq, b)
		}
		b = bytes.Replace(b, []byte(`"jti-`), []byte(`"jtX-`), 1)
	} else {
		b[len(b)/2] ^= 1
	}
	if _, err := db.Exec("UPDATE entries SET "+col+" = ? WHERE seq = ?", b, seq); err != nil {
		t.Fatal(err)
	}
}

// startErr opens and starts a broker on e's data dir and returns Start's error.
func startErr(t *testing.T, e *env) error {
	t.Helper()
	cfg := e.cfg
	d, err := sqlite.Open(broker.LedgerPath(e.dataDir))
	if err != nil {
		t.Fatal(err)
	}
	cfg.Store = d
	b, err := broker.Open(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	return b.Start(context.Background())
}

// auditErr is audit verify --data-dir's verdict on e's ledger.
func auditErr(t *testing.T, e *env) error {
	t.Helper()
	d, err := sqlite.OpenReadOnly(broker.LedgerPath(e.dataDir))
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	_, err = audit.VerifyStore(context.Background(), d)
	return err
}

// TestStartCatchesTamperingAfterItsTrustPoint: a start verifies in full every
// entry after the last checkpoint, and by link every entry after its snapshot,
// so altering any of them stops the start naming the entry; audit verify
// catches those too.
func TestStartCatchesTamperingAfterItsTrustPoint(t *testing.T) {
	for _, tc := range []struct {
		name string
		col  string
		seq  func(head1, cp uint64) uint64
	}{
		{"signature after the checkpoint", "sig", func(_, cp uint64) uint64 { return cp + 1 }},
		{"the checkpoint's signature", "sig", func(_, cp uint64) uint64 { return cp }},
		{"payload after the checkpoint", "payload", func(_, cp uint64) uint64 { return cp + 1 }},
		{"payload between the snapshot and the checkpoint", "payload", func(_, cp uint64) uint64 { return cp - 2 }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e, head1, cp := tamperedStart(t)
			seq := tc.seq(head1, cp)
			old, err := os.ReadFile(broker.SnapshotPath(e.dataDir))
			if err != nil {
				t.Fatal(err)
			}
			if err := startErr(t, e); err != nil {
				t.Fatalf("untouched ledger: %v", err)
			}
			if err := os.WriteFile(broker.SnapshotPath(e.dataDir), old, 0o600); err != nil { // that start wrote a newer one
				t.Fatal(err)
			}
			alter(t, e.dataDir, seq, tc.col)
			err = startErr(t, e)
			want := fmt.Sprintf("seq %d:", seq)
			if seq != cp+1 && tc.col == "payload" { // an altered payload breaks the next entry's link
				want = fmt.Sprintf("seq %d:", seq+1)
			}
			if p := problem.As(err); p == nil || p.Code != problem.LedgerInvalid || !strings.Contains(p.Message, want) {
				t.Errorf("start on a ledger with %s of entry %d altered: %v, want LEDGER_INVALID naming %q", tc.col, seq, err, want)
			}
			if err := auditErr(t, e); err == nil {
				t.Errorf("audit verify passed a ledger with entry %d altered", seq)
			}
		})
	}
}

// TestAuditCatchesTamperingBeforeTheTrustPoint: entries before the snapshot
// are not read at start (an earlier run verified them, and signed the
// snapshot); audit verify still checks every one.
func TestAuditCatchesTamperingBeforeTheTrustPoint(t *testing.T) {
	for _, col := range []string{"payload", "sig"} {
		t.Run(col, func(t *testing.T) {
			e, head1, _ := tamperedStart(t)
			seq := head1 - 100
			alter(t, e.dataDir, seq, col)
			if err := startErr(t, e); err != nil {
				t.Fatalf("start: %v (entries before the snapshot are not read at start)", err)
			}
			err := auditErr(t, e)
			if p := problem.As(err); p == nil || !strings.Contains(p.Message, fmt.Sprintf("seq %d", seq)) {
				t.Errorf("audit verify on a ledger with entry %d's %s altered: %v, want an error naming it", seq, col, err)
			}
		})
	}
}

// TestForgedSnapshotIsIgnored: a snapshot that is not signed by the enclave's
// ledger key, or names an entry the store does not hold, is not used: the
// broker walks the chain from genesis, so an altered entry is still caught.
func TestForgedSnapshotIsIgnored(t *testing.T) {
	e, head1, _ := tamperedStart(t)
	snap, err := os.ReadFile(broker.SnapshotPath(e.dataDir))
	if err != nil {
		t.Fatal(err)
	}
	// Claim the chain was verified further than it was: the signature no longer holds.
	forged := bytes.Replace(snap, []byte(fmt.Sprintf(`"next":%d`, head1+1)), []byte(fmt.Sprintf(`"next":%d`, head1+2)), 2)
	if bytes.Equal(forged, snap) {
		t.Fatal("the snapshot does not hold its position")
	}
	if err := os.WriteFile(broker.SnapshotPath(e.dataDir), forged, 0o600); err != nil {
		t.Fatal(err)
	}
	seq := head1 - 100
	alter(t, e.dataDir, seq, "payload")
	err = startErr(t, e)
	if p := problem.As(err); p == nil || p.Code != problem.LedgerInvalid || !strings.Contains(p.Message, fmt.Sprintf("seq %d:", seq+1)) {
		t.Errorf("start with a forged snapshot on an altered ledger: %v, want LEDGER_INVALID at seq %d", err, seq+1)
	}
}

// TestSnapshotNamingAnAlteredEntryIsIgnored: when the store no longer holds the
// entry the snapshot names (restored from an older backup, or that entry was
// altered), the broker walks from genesis instead, and the altered entry is
// caught.
func TestSnapshotNamingAnAlteredEntryIsIgnored(t *testing.T) {
	e, head1, _ := tamperedStart(t)
	if head1 == 0 {
		t.Fatal("no snapshot position")
	}
	// The entry the snapshot names, or the one before it if that is a checkpoint.
	seq := head1
	for ; ; seq-- {
		if err := alterIfMint(t, e.dataDir, seq); err == nil {
			break
		}
	}
	err := startErr(t, e)
	if p := problem.As(err); p == nil || p.Code != problem.LedgerInvalid || !strings.Contains(p.Message, fmt.Sprintf("seq %d:", seq+1)) {
		t.Errorf("start with entry %d altered (snapshot at %d): %v, want LEDGER_INVALID at seq %d", seq, head1, err, seq+1)
	}
}

// alterIfMint alters the payload of entry seq if it is a generated mint.
func alterIfMint(t *testing.T, dataDir string, seq uint64) error {
	t.Helper()
	db, err := sql.Open("sqlite", "file:"+broker.LedgerPath(dataDir))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var b []byte
	if err := db.QueryRow("SELECT payload FROM entries WHERE seq = ?", seq).Scan(&b); err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(b, []byte(`"jti-`)) {
		return fmt.Errorf("entry %d is not a mint", seq)
	}
	db.Close()
	alter(t, dataDir, seq, "payload")
	return nil
}
