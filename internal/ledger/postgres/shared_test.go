package postgres_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/agentkeys/agentkeys/internal/dpop"
	"github.com/agentkeys/agentkeys/internal/dpop/replaytest"
	"github.com/agentkeys/agentkeys/internal/ledger"
	"github.com/agentkeys/agentkeys/internal/ledger/postgres"
	"github.com/agentkeys/agentkeys/internal/ledger/postgres/pgtest"
	"github.com/agentkeys/agentkeys/internal/ratelimit"
	"github.com/agentkeys/agentkeys/internal/ratelimit/ratelimittest"
)

// handles opens a driver on u for each call, closed when t ends: each is
// another broker process's view of the same database.
func handles(t *testing.T, u string) func() *postgres.Driver {
	return func() *postgres.Driver {
		d, err := postgres.Open(u)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { d.Close() })
		return d
	}
}

// testReplays: the shared ReplayStore passes the conformance suite, every
// handle a driver of its own (another broker), and expired proofs are deleted.
func testReplays(t *testing.T, c *pgtest.Cluster) {
	replaytest.Run(t, func(t *testing.T) replaytest.Opener {
		open := handles(t, c.NewDatabase(t))
		return func() dpop.ReplayStore { return open().Replays() }
	})
	t.Run("Bounded", func(t *testing.T) {
		u := c.NewDatabase(t)
		s := handles(t, u)().Replays()
		t0 := time.Unix(1_800_000_000, 0)
		for i := range 20 {
			var id dpop.ProofID
			id[0] = byte(i)
			if ok, err := s.First(context.Background(), id, t0, t0.Add(dpop.Skew)); !ok || err != nil {
				t.Fatalf("proof %d: %v %v", i, ok, err)
			}
		}
		if n := count(t, u, `SELECT count(*) FROM dpop_replays`); n != 20 {
			t.Fatalf("%d proofs stored, want 20", n)
		}
		later := t0.Add(dpop.Skew + time.Second)
		if ok, err := s.First(context.Background(), dpop.ProofID{0xff}, later, later.Add(dpop.Skew)); !ok || err != nil {
			t.Fatalf("a new proof after the others expired: %v %v", ok, err)
		}
		if n := count(t, u, `SELECT count(*) FROM dpop_replays`); n != 1 {
			t.Fatalf("%d proofs stored after the others expired, want 1: expired rows are kept", n)
		}
	})
}

// testLimiters: the shared limiter passes the conformance suite (exact across
// brokers), refuses a new key when its rule has MaxKeys, and deletes what left
// the window.
func testLimiters(t *testing.T, c *pgtest.Cluster) {
	ratelimittest.Run(t, func(t *testing.T) ratelimittest.Opener {
		open := handles(t, c.NewDatabase(t))
		return func(r ratelimit.Rule) ratelimit.Limiter { return open().Limiters()(r) }
	})
	t.Run("Bounded", func(t *testing.T) {
		u := c.NewDatabase(t)
		l := handles(t, u)().Limiters()(ratelimit.Rule{Name: "anon/pair/source", Count: 2, Window: time.Minute, MaxKeys: 3})
		t0 := time.Unix(1_800_000_000, 0)
		for _, k := range []string{"a", "b", "c"} {
			if ok, _, err := l.Allow(context.Background(), k, t0); !ok || err != nil {
				t.Fatalf("key %s: %v %v", k, ok, err)
			}
		}
		ok, wait, err := l.Allow(context.Background(), "d", t0)
		if ok || err != nil || wait <= 0 || wait > time.Minute {
			t.Fatalf("a 4th key with MaxKeys 3: ok=%v wait=%v err=%v, want refused", ok, wait, err)
		}
		if ok, _, err := l.Allow(context.Background(), "a", t0); !ok || err != nil {
			t.Fatalf("a known key while the table is full: %v %v", ok, err)
		}
		later := t0.Add(time.Minute + time.Second)
		if ok, _, err := l.Allow(context.Background(), "d", later); !ok || err != nil {
			t.Fatalf("a new key once the others went idle: %v %v", ok, err)
		}
		if n := count(t, u, `SELECT count(*) FROM rate_keys`); n != 1 {
			t.Fatalf("%d keys stored after the others went idle, want 1", n)
		}
		if n := count(t, u, `SELECT count(*) FROM rate_spent`); n != 1 {
			t.Fatalf("%d spent requests stored, want 1: spent ones older than the window are kept", n)
		}
	})
}

// testFirstCallsRace: many concurrent first calls on a fresh key, through two
// handles (two brokers), with a limit far above them, are all admitted. The
// anonymous limits' global rule has MaxKeys 1, so a call that found no row,
// then counted the row another call had just committed, refused the request
// as if the rule's key table were full, for a whole window (a pairing refused
// for 60 s under --pair-rate 100000/1m).
func testFirstCallsRace(t *testing.T, c *pgtest.Cluster) {
	open := handles(t, c.NewDatabase(t))
	a, b := open(), open()
	t0 := time.Unix(1_800_000_000, 0)
	const rounds, callers = 100, 16
	for round := range rounds {
		r := ratelimit.Rule{Name: fmt.Sprintf("anon/pair/global/%d", round), Count: 100_000, Window: time.Minute, MaxKeys: 1}
		handles := []ratelimit.Limiter{a.Limiters()(r), b.Limiters()(r)}
		start := make(chan struct{})
		var refused atomic.Int32
		var wg sync.WaitGroup
		errs := make(chan error, callers)
		for i := range callers {
			l := handles[i%2]
			wg.Go(func() {
				<-start
				ok, _, err := l.Allow(context.Background(), "", t0)
				if err != nil {
					errs <- err
				} else if !ok {
					refused.Add(1)
				}
			})
		}
		close(start)
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Fatal(err)
		}
		if n := refused.Load(); n != 0 {
			t.Fatalf("round %d: %d of %d concurrent first calls on a fresh key refused with a limit of 100000", round, n, callers)
		}
	}
}

// testLimiterUpgrade: a database whose limiter rows were written before
// migration 4 (spent requests without a count on their key) keeps its limits
// exact after the upgrade: the count is the key's spent rows, and spent rows
// whose key was already forgotten are dropped rather than subtracted from a
// new key's count. Then, over many windows of calls, the count stays the
// key's rows and the rows stay within the limit.
func testLimiterUpgrade(t *testing.T, c *pgtest.Cluster) {
	u := c.NewDatabase(t)
	open := handles(t, u)
	open()
	// Back to version 3, as an older agentkeys left it.
	c.Exec(t, u, `DELETE FROM schema_migrations WHERE version >= 4;
DROP FUNCTION agentkeys_allow_many;
ALTER TABLE rate_keys DROP COLUMN spent;
CREATE INDEX rate_spent_at ON rate_spent (rule, at)`)
	t0 := time.Unix(1_800_000_000, 0)
	r := ratelimit.Rule{Name: "read", Count: 3, Window: time.Minute, MaxKeys: 10}
	key, gone := postgres.DigestForTest("s"), postgres.DigestForTest("gone")
	at := func(d time.Duration) int64 { return t0.Add(d).UnixNano() }
	c.Exec(t, u, fmt.Sprintf(`INSERT INTO rate_keys (rule, key, last) VALUES ('read', '\x%x', %d);
INSERT INTO rate_spent (rule, key, at) VALUES ('read', '\x%x', %d), ('read', '\x%x', %d), ('read', '\x%x', %d)`,
		key, at(time.Second), key, at(0), key, at(time.Second), gone, at(0)))
	d := open()
	l := d.Limiters()(r)
	count := func(_ *testing.T, _ string, q string) int {
		t.Helper()
		var n int
		if err := d.QueryRowForTest(context.Background(), q).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	allow := func(d time.Duration) bool {
		t.Helper()
		ok, _, err := l.Allow(context.Background(), "s", t0.Add(d))
		if err != nil {
			t.Fatal(err)
		}
		return ok
	}
	if n := count(t, u, `SELECT count(*) FROM rate_spent`); n != 2 {
		t.Fatalf("%d spent rows after the upgrade, want the key's 2 (the forgotten key's dropped)", n)
	}
	if !allow(2*time.Second) || allow(3*time.Second) {
		t.Fatal("after the upgrade, the 2 requests spent before it did not count: want exactly 1 more admitted")
	}
	if allow(time.Minute-time.Millisecond) || !allow(time.Minute) {
		t.Fatal("after the upgrade, the oldest spent request did not come back exactly one window after it was spent")
	}
	// Many windows of calls: the count is the rows, the rows within the limit.
	admitted := 0
	for i := range 200 {
		if allow(time.Minute + time.Duration(i)*time.Second) {
			admitted++
		}
		rows := count(t, u, `SELECT count(*) FROM rate_spent`)
		if spent := count(t, u, `SELECT spent FROM rate_keys`); spent != rows || rows > r.Count {
			t.Fatalf("call %d: count %d, %d spent rows stored (limit %d)", i, spent, rows, r.Count)
		}
	}
	// Spent at 1, 2 and 60 s, one call a second from 60 s: the slots come back
	// at 61, 62, then 120-122, 180-182 and 240-242 s: 11 admitted.
	if admitted != 11 {
		t.Fatalf("%d of 200 calls over 200 s admitted with 3 a minute, want 11", admitted)
	}
}

func count(t *testing.T, u, q string) int {
	t.Helper()
	d := handles(t, u)()
	var n int
	if err := d.QueryRowForTest(context.Background(), q).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

// testNotify: a commit through one driver wakes a listening driver, one
// through the listening driver itself does not; a transaction that fails to
// commit does not; a dropped listen connection is
// reconnected, wakes once for what it may have missed, and hears later commits.
func testNotify(t *testing.T, c *pgtest.Cluster) {
	u := c.NewDatabase(t)
	open := handles(t, u)
	a, b := open(), open()
	woke := make(chan struct{}, 64)
	a.Notify(func() { woke <- struct{}{} })
	waitWake := func(what string) {
		t.Helper()
		select {
		case <-woke:
		case <-time.After(10 * time.Second):
			t.Fatalf("%s: no wake", what)
		}
	}
	drain := func() {
		for {
			select {
			case <-woke:
			default:
				return
			}
		}
	}
	waitWake("listening") // each connection wakes once
	// The listener's own commit wakes nobody: the sentinel, notified after it
	// by another backend, is delivered after it, and is the only wake.
	own := entry(nil)
	if err := a.Commit(context.Background(), []ledger.Entry{own}, nil); err != nil {
		t.Fatal(err)
	}
	c.Exec(t, u, `SELECT pg_notify('agentkeys_ledger', '')`)
	waitWake("a notification from another backend")
	if len(woke) != 0 || a.OwnNotificationsForTest() != 1 {
		t.Fatalf("after its own commit and another backend's notification: %d more wakes, %d own notifications heard; want 0 and 1",
			len(woke), a.OwnNotificationsForTest())
	}
	e0 := entry(&own)
	if err := b.Commit(context.Background(), []ledger.Entry{e0}, nil); err != nil {
		t.Fatal(err)
	}
	waitWake("a commit through another driver")
	drain()
	// A refused commit (ErrConflict) notifies nobody: sent inside the transaction.
	if err := b.Commit(context.Background(), []ledger.Entry{entry(nil)}, nil); err == nil {
		t.Fatal("a second genesis committed")
	}
	if err := b.Commit(context.Background(), []ledger.Entry{entry(&own)}, nil); err == nil {
		t.Fatal("a second entry 1 committed")
	}
	e1 := entry(&e0)
	if err := b.Commit(context.Background(), []ledger.Entry{e1}, nil); err != nil {
		t.Fatal(err)
	}
	waitWake("the next commit")
	if len(woke) != 0 {
		t.Fatalf("%d extra wakes: the refused commit notified", len(woke))
	}
	// Drop the listen connection from the server side.
	c.Exec(t, u, `SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = 'agentkeys-listen'`)
	waitWake("reconnecting")
	if a.Listens() != 2 {
		t.Fatalf("%d listens, want 2 (one reconnection)", a.Listens())
	}
	drain()
	if err := b.Commit(context.Background(), []ledger.Entry{entry(&e1)}, nil); err != nil {
		t.Fatal(err)
	}
	waitWake("a commit after reconnecting")
	a.Close()
	select {
	case <-woke:
		t.Fatal("woke after Close")
	default:
	}
}

// testReplayBatch: First calls that share a statement are answered exactly as
// the same calls one after the other: a second use of an id in one batch is a
// replay, calls in one batch may carry different times, and an expired record
// is taken over once. Then random batches against the same calls made one by
// one on another database.
func testReplayBatch(t *testing.T, c *pgtest.Cluster) {
	const t0 = 1_800_000_000
	id := func(s string) dpop.ProofID {
		var p dpop.ProofID
		copy(p[:], s)
		return p
	}
	s := handles(t, c.NewDatabase(t))().Replays()
	before, err := postgres.RecordBatchForTest(s, []dpop.ProofID{id("E"), id("F")}, []int64{t0 - 5, t0 - 5}, []int64{t0 + 5, t0 + 20})
	if err != nil || !before[0] || !before[1] {
		t.Fatalf("recording E and F: %v %v", before, err)
	}
	type call struct {
		id          string
		now, expiry int64
		want        bool
	}
	calls := []call{
		{"A", t0, t0 + 10, true},
		{"A", t0, t0 + 10, false}, // a replay in the same batch
		{"B", t0, t0 + 10, true},
		{"C", t0 + 1, t0 + 11, true}, // another time in the same batch
		{"A", t0 + 1, t0 + 11, false},
		{"D", t0, t0 + 10, true},
		{"C", t0, t0 + 10, false},     // C came first, at another time
		{"E", t0 + 5, t0 + 15, true},  // E expired at t0+5: taken over
		{"E", t0 + 5, t0 + 15, false}, // and now recorded again
		{"F", t0, t0 + 10, false},     // F lives until t0+20
	}
	var ids []dpop.ProofID
	var nows, exps []int64
	for _, c := range calls {
		ids, nows, exps = append(ids, id(c.id)), append(nows, c.now), append(exps, c.expiry)
	}
	got, err := postgres.RecordBatchForTest(s, ids, nows, exps)
	if err != nil {
		t.Fatal(err)
	}
	for i, c := range calls {
		if got[i] != c.want {
			t.Errorf("call %d (%s at +%d s): fresh=%v, want %v", i, c.id, c.now-t0, got[i], c.want)
		}
	}

	batched, oneByOne := handles(t, c.NewDatabase(t))().Replays(), handles(t, c.NewDatabase(t))().Replays()
	rng := rand.New(rand.NewPCG(1, 2))
	now := int64(t0)
	for round := range 30 {
		n := 1 + rng.IntN(40)
		ids, nows, exps := make([]dpop.ProofID, n), make([]int64, n), make([]int64, n)
		for i := range n {
			ids[i] = id(fmt.Sprint(rng.IntN(12)))
			nows[i] = now + rng.Int64N(3)
		}
		// Times never go back, as one broker's clock does not (one by one,
		// a sweep at a later time would forget a record an earlier call
		// still sees).
		slices.Sort(nows)
		for i := range n {
			exps[i] = nows[i] + 1 + rng.Int64N(4)
		}
		got, err := postgres.RecordBatchForTest(batched, ids, nows, exps)
		if err != nil {
			t.Fatal(err)
		}
		for i := range n {
			want, err := postgres.RecordBatchForTest(oneByOne, ids[i:i+1], nows[i:i+1], exps[i:i+1])
			if err != nil {
				t.Fatal(err)
			}
			if got[i] != want[0] {
				t.Fatalf("round %d, call %d of %d: fresh=%v in a batch, %v one by one", round, i, n, got[i], want[0])
			}
		}
		now = nows[n-1] + rng.Int64N(3)
	}
}

// testLimiterBatch: Allow calls that share a statement are decided exactly as
// the same calls one after the other: a key given twice in one batch spends
// twice, in arrival order, a new key is refused when the rule's MaxKeys are
// in use, and random batches give what the same calls give one by one on
// another database.
func testLimiterBatch(t *testing.T, c *pgtest.Cluster) {
	const t0 = int64(1_800_000_000) * 1e9
	const sec = int64(time.Second)
	r := ratelimit.Rule{Name: "read", Count: 2, Window: time.Minute, MaxKeys: 2}
	l := handles(t, c.NewDatabase(t))().Limiters()(r)
	if got, err := postgres.SpendBatchForTest(l, []string{"a", "b"}, []int64{t0, t0}); err != nil || got[0] != 0 || got[1] != 0 {
		t.Fatalf("first requests of a and b: %v %v", got, err)
	}
	type call struct {
		key  string
		at   int64
		want int64
	}
	calls := []call{
		{"a", t0 + sec, 0},
		{"a", t0 + 2*sec, 58 * sec}, // a's first comes back at t0+60s
		{"c", t0, -1},               // a third key: the rule's 2 are in use
		{"b", t0 + 3*sec, 0},
		{"b", t0 + 3*sec, 57 * sec}, // b's first comes back at t0+60s
		{"a", t0 + 60*sec, 0},       // the first came back
	}
	var keys []string
	var ats []int64
	for _, c := range calls {
		keys, ats = append(keys, c.key), append(ats, c.at)
	}
	got, err := postgres.SpendBatchForTest(l, keys, ats)
	if err != nil {
		t.Fatal(err)
	}
	for i, c := range calls {
		if got[i] != c.want {
			t.Errorf("call %d (%s at +%v): %v, want %v", i, c.key, time.Duration(c.at-t0), got[i], c.want)
		}
	}

	r = ratelimit.Rule{Name: "mint", Count: 3, Window: 2 * time.Second, MaxKeys: 1000}
	batched, oneByOne := handles(t, c.NewDatabase(t))().Limiters()(r), handles(t, c.NewDatabase(t))().Limiters()(r)
	rng := rand.New(rand.NewPCG(3, 4))
	now := t0
	for round := range 60 {
		// Half the rounds give each key once, half repeat keys.
		n := 1 + rng.IntN(30)
		if round%2 == 0 {
			n = 1 + rng.IntN(8)
		}
		keys, ats := make([]string, n), make([]int64, n)
		perm := rng.Perm(8)
		for i := range n {
			keys[i] = fmt.Sprint(rng.IntN(5))
			if round%2 == 0 {
				keys[i] = fmt.Sprint(perm[i])
			}
			ats[i] = now + rng.Int64N(100)*int64(time.Millisecond)
		}
		slices.Sort(ats)
		got, err := postgres.SpendBatchForTest(batched, keys, ats)
		if err != nil {
			t.Fatal(err)
		}
		for i := range n {
			want, err := postgres.SpendBatchForTest(oneByOne, keys[i:i+1], ats[i:i+1])
			if err != nil {
				t.Fatal(err)
			}
			if got[i] != want[0] {
				t.Fatalf("round %d, call %d of %d (key %s): %v in a batch, %v one by one", round, i, n, keys[i], got[i], want[0])
			}
		}
		now = ats[n-1] + rng.Int64N(300)*int64(time.Millisecond)
	}
}

// testBatchErrors: when the statement a batch shares fails, every concurrent
// caller gets an error, none an admission or a fresh proof (fail closed).
func testBatchErrors(t *testing.T, c *pgtest.Cluster) {
	u := c.NewDatabase(t)
	d := handles(t, u)()
	lim, replays := d.Limiters()(ratelimit.Rule{Name: "read", Count: 1000, Window: time.Minute}), d.Replays()
	c.Exec(t, u, `DROP FUNCTION agentkeys_allow_many; ALTER TABLE dpop_replays RENAME TO gone`)
	const callers = 32
	var wg sync.WaitGroup
	var admitted, failed atomic.Int32
	now := time.Unix(1_800_000_000, 0)
	for i := range callers {
		wg.Go(func() {
			ok, _, err := lim.Allow(context.Background(), fmt.Sprint(i%4), now)
			if ok {
				admitted.Add(1)
			}
			if err != nil {
				failed.Add(1)
			}
			var id dpop.ProofID
			id[0] = byte(i)
			ok, err = replays.First(context.Background(), id, now, now.Add(dpop.Skew))
			if ok {
				admitted.Add(1)
			}
			if err != nil {
				failed.Add(1)
			}
		})
	}
	wg.Wait()
	if admitted.Load() != 0 || failed.Load() != 2*callers {
		t.Fatalf("with the statements failing: %d admitted, %d errors of %d calls; want 0 and all", admitted.Load(), failed.Load(), 2*callers)
	}
}

// testSharedMixed: First calls and Allow calls of two rules, concurrent
// through two drivers (two brokers), share transactions and are still exact:
// each proof is fresh once, and each key is admitted exactly its count.
func testSharedMixed(t *testing.T, c *pgtest.Cluster) {
	u := c.NewDatabase(t)
	open := handles(t, u)
	a, b := open(), open()
	read, mint := ratelimit.Rule{Name: "read", Count: 5, Window: time.Minute}, ratelimit.Rule{Name: "mint", Count: 10, Window: time.Minute}
	type handle struct {
		read, mint ratelimit.Limiter
		replays    dpop.ReplayStore
	}
	hs := []handle{{a.Limiters()(read), a.Limiters()(mint), a.Replays()}, {b.Limiters()(read), b.Limiters()(mint), b.Replays()}}
	const callers = 96
	now := time.Unix(1_800_000_000, 0)
	var wg sync.WaitGroup
	var reads, mints, fresh atomic.Int32
	for i := range callers {
		h := hs[i%2]
		wg.Go(func() {
			var id dpop.ProofID
			id[0] = byte(i % 40) // 40 proofs, most used more than once
			ok, err := h.replays.First(context.Background(), id, now, now.Add(dpop.Skew))
			if err != nil {
				t.Error(err)
			} else if ok {
				fresh.Add(1)
			}
			for l, n := range map[ratelimit.Limiter]*atomic.Int32{h.read: &reads, h.mint: &mints} {
				key := fmt.Sprint(i % 4)
				if l == h.mint {
					key = "owner"
				}
				ok, _, err := l.Allow(context.Background(), key, now)
				if err != nil {
					t.Error(err)
				} else if ok {
					n.Add(1)
				}
			}
		})
	}
	wg.Wait()
	if fresh.Load() != 40 || reads.Load() != 4*5 || mints.Load() != 10 {
		t.Fatalf("fresh proofs %d (want 40), reads admitted %d (want 20), mints admitted %d (want 10)", fresh.Load(), reads.Load(), mints.Load())
	}
}

// testSharedDurable: the shared transaction commits without waiting for its
// WAL, and a request's later entry commit (synchronous) makes it durable: a
// proof recorded, then a synchronous commit, then kill -9 of the server, and
// the proof is still refused after the restart.
func testSharedDurable(t *testing.T, c *pgtest.Cluster) {
	u := c.NewDatabase(t)
	c.Exec(t, u, `CREATE TABLE entry_stand_in (n int)`)
	d := handles(t, u)()
	// Only the shared tables' connections commit asynchronously.
	var sync string
	if err := d.QueryRowForTest(context.Background(), `SHOW synchronous_commit`).Scan(&sync); err != nil || sync != "on" {
		t.Fatalf("the ledger's connections have synchronous_commit %q (%v), want on", sync, err)
	}
	now := time.Now()
	id := dpop.ProofID{1, 2, 3}
	if ok, err := d.Replays().First(context.Background(), id, now, now.Add(dpop.Skew)); err != nil || !ok {
		t.Fatalf("first use: %v %v", ok, err)
	}
	var n int
	if err := d.QueryRowForTest(context.Background(), `INSERT INTO entry_stand_in VALUES (1) RETURNING n`).Scan(&n); err != nil {
		t.Fatal(err)
	}
	c.Kill(t)
	c.Restart(t)
	ok, err := handles(t, u)().Replays().First(context.Background(), id, now, now.Add(dpop.Skew))
	if err != nil || ok {
		t.Fatalf("after a crash, a proof recorded before a durable commit: fresh=%v %v; want refused", ok, err)
	}
}

// testLimiterStorage: a key far under a high limit stores at most 64 spent
// requests beyond those in its window (each call deletes nothing until then),
// and the count stays the rows stored.
func testLimiterStorage(t *testing.T, c *pgtest.Cluster) {
	u := c.NewDatabase(t)
	d := handles(t, u)()
	l := d.Limiters()(ratelimit.Rule{Name: "read", Count: 100_000, Window: 10 * time.Second})
	t0 := time.Unix(1_800_000_000, 0)
	most := 0
	for i := range 300 {
		if ok, _, err := l.Allow(context.Background(), "s", t0.Add(time.Duration(i)*time.Second)); err != nil || !ok {
			t.Fatalf("call %d: %v %v", i, ok, err)
		}
		var rows, spent int
		if err := d.QueryRowForTest(context.Background(), `SELECT (SELECT count(*) FROM rate_spent), (SELECT spent FROM rate_keys)`).Scan(&rows, &spent); err != nil {
			t.Fatal(err)
		}
		if rows != spent {
			t.Fatalf("call %d: count %d, %d rows stored", i, spent, rows)
		}
		most = max(most, rows)
	}
	if most > 10+64 {
		t.Fatalf("one call a second in a 10 s window stored up to %d spent requests, want at most 10 + 64", most)
	}
}
