package ledger_test

import (
	"context"
	"crypto/ed25519"
	"encoding/hex"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/agentkeys/agentkeys/internal/ledger"
	"github.com/agentkeys/agentkeys/internal/ledger/sqlite"
)

// observer records what a ledger's OnCommit was given, in order.
type observer struct {
	mu   sync.Mutex
	seqs []uint64
}

func (o *observer) observe(es []ledger.Entry) {
	o.mu.Lock()
	defer o.mu.Unlock()
	for _, e := range es {
		o.seqs = append(o.seqs, e.Seq)
	}
}

// exactlyOnce fails unless the observer saw every seq from first to head once, in order.
func (o *observer) exactlyOnce(t *testing.T, name string, first, head uint64) {
	t.Helper()
	o.mu.Lock()
	defer o.mu.Unlock()
	if len(o.seqs) != int(head-first+1) {
		t.Fatalf("%s: OnCommit saw %d entries, want %d (seqs %d..%d)", name, len(o.seqs), head-first+1, first, head)
	}
	for i, s := range o.seqs {
		if s != first+uint64(i) {
			t.Fatalf("%s: OnCommit's entry %d has seq %d, want %d: out of order, duplicated or missed", name, i, s, first+uint64(i))
		}
	}
}

// second opens another ledger, with its own store handle, on the fixture's file:
// a second broker process on the same store.
func (f *fixture) second(t *testing.T, opts ledger.Options) (*ledger.Ledger, *observer) {
	t.Helper()
	d, err := sqlite.Open(f.path)
	if err != nil {
		t.Fatal(err)
	}
	o := &observer{}
	opts.OnCommit = o.observe
	l, err := ledger.Open(context.Background(), d, f.schema, f.s, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close(); d.Close() })
	return l, o
}

// TestFollowerSeesForeignEntries: entries appended through ledger A reach B's
// OnCommit, head and state once B follows, and a value B had cached is not
// served stale.
func TestFollowerSeesForeignEntries(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t, ledger.Options{}, 1)
	b, seen := f.second(t, ledger.Options{})
	start := b.Head().Seq
	if _, ok, err := b.State(ctx).Get("claim/x"); ok || err != nil { // B caches "no claim x"
		t.Fatalf("claim/x before: ok=%v err=%v", ok, err)
	}
	if _, err := f.l.Append(ctx, ledger.OriginEnclave, "test.claim", map[string]string{"ID": "x"}); err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		if _, err := f.l.Append(ctx, ledger.OriginEnclave, "test.note", map[string]int{"N": i}); err != nil {
			t.Fatal(err)
		}
	}
	if b.Head() == f.l.Head() {
		t.Fatal("B's head moved before it followed: the test shows nothing")
	}
	h, err := b.Follow(ctx)
	if err != nil || h != f.l.Head() || b.Head() != h {
		t.Fatalf("B followed to %+v (%v), A's head is %+v", h, err, f.l.Head())
	}
	seen.exactlyOnce(t, "B", start+1, h.Seq)
	if _, ok, err := b.State(ctx).Get("claim/x"); !ok || err != nil {
		t.Fatalf("B still serves its cached state after following: claim/x ok=%v err=%v", ok, err)
	}
	if h2, err := b.Follow(ctx); err != nil || h2 != h {
		t.Fatalf("following again with nothing new: %+v %v", h2, err)
	}
	seen.exactlyOnce(t, "B", start+1, h.Seq)
}

// TestAppendOnTopOfForeignEntries: B appends right after A did, without being
// told to follow. Its append is folded on top of A's entries — a claim A took
// is refused to B although B had cached it as free — and B's OnCommit gets A's
// entries before its own, each once.
func TestAppendOnTopOfForeignEntries(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t, ledger.Options{}, 1)
	b, seen := f.second(t, ledger.Options{})
	start := b.Head().Seq
	if _, ok, _ := b.State(ctx).Get("claim/grant"); ok {
		t.Fatal("claim/grant exists before it was claimed")
	}
	if _, err := f.l.Append(ctx, ledger.OriginEnclave, "test.claim", map[string]string{"ID": "grant"}); err != nil {
		t.Fatal(err)
	}
	if _, err := b.Append(ctx, ledger.OriginEnclave, "test.claim", map[string]string{"ID": "grant"}); !errors.Is(err, ledger.ErrRejected) {
		t.Fatalf("B claimed what A had claimed: %v (want ErrRejected)", err)
	}
	e, err := b.Append(ctx, ledger.OriginEnclave, "test.note", map[string]int{"N": 1})
	if err != nil {
		t.Fatalf("B cannot append after A did: %v", err)
	}
	if e.Seq != f.l.Head().Seq+1 {
		t.Fatalf("B appended at seq %d, A's head is %d", e.Seq, f.l.Head().Seq)
	}
	seen.exactlyOnce(t, "B", start+1, e.Seq)
	if _, err := f.l.Follow(ctx); err != nil {
		t.Fatal(err)
	}
	if f.l.Head() != b.Head() {
		t.Fatalf("heads differ after following: A %+v, B %+v", f.l.Head(), b.Head())
	}
	f.verify(t)
}

// TestTwoLedgersAppendConcurrently: many appenders on two ledgers over one store.
// Every append succeeds, the store keeps one verified chain, and after following
// both ledgers delivered every entry to OnCommit exactly once, in seq order.
func TestTwoLedgersAppendConcurrently(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t, ledger.Options{}, 1)
	f.l.Close()
	a, seenA := f.second(t, ledger.Options{CheckpointEvery: 40})
	b, seenB := f.second(t, ledger.Options{CheckpointEvery: 40})
	start := a.Head().Seq
	var wg sync.WaitGroup
	var mu sync.Mutex
	acked := map[uint64]ledger.Hash{}
	for w := range 8 {
		l := []*ledger.Ledger{a, b}[w%2]
		wg.Go(func() {
			for i := range 20 {
				e, err := l.Append(ctx, ledger.OriginEnclave, "test.note", map[string]int{"N": w*100 + i})
				if err != nil {
					t.Errorf("writer %d: %v", w, err)
					return
				}
				mu.Lock()
				acked[e.Seq] = e.Hash()
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if t.Failed() {
		t.FailNow()
	}
	ha, errA := a.Follow(ctx)
	hb, errB := b.Follow(ctx)
	if errA != nil || errB != nil || ha != hb {
		t.Fatalf("after following: A %+v (%v), B %+v (%v)", ha, errA, hb, errB)
	}
	seenA.exactlyOnce(t, "A", start+1, ha.Seq)
	seenB.exactlyOnce(t, "B", start+1, hb.Seq)
	es, err := f.d.Entries(ctx, 0, 10_000)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range es {
		if h, ok := acked[e.Seq]; ok && h != e.Hash() {
			t.Fatalf("acknowledged seq %d was replaced", e.Seq)
		}
		delete(acked, e.Seq)
	}
	if len(acked) != 0 {
		t.Fatalf("%d acknowledged entries are missing", len(acked))
	}
	f.verify(t)
}

// TestFollowerPollsAndWakes: with FollowEvery set, B follows on its own; Wake
// makes it follow without waiting for the poll.
func TestFollowerPollsAndWakes(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ctx := context.Background()
		f := newFixture(t, ledger.Options{}, 1)
		polled, _ := f.second(t, ledger.Options{FollowEvery: time.Second})
		woken, _ := f.second(t, ledger.Options{})
		if _, err := f.l.Append(ctx, ledger.OriginEnclave, "test.note", map[string]int{"N": 1}); err != nil {
			t.Fatal(err)
		}
		synctest.Wait()
		if polled.Head() == f.l.Head() || woken.Head() == f.l.Head() {
			t.Fatal("a ledger followed before its poll or a wake")
		}
		woken.Wake()
		synctest.Wait()
		if woken.Head() != f.l.Head() {
			t.Fatal("Wake did not make the ledger follow")
		}
		time.Sleep(time.Second)
		synctest.Wait()
		if polled.Head() != f.l.Head() {
			t.Fatal("the ledger did not follow after FollowEvery")
		}
	})
}

// divergedDriver serves a forged entry after the head: a store that is not the
// chain this ledger committed.
type divergedDriver struct {
	ledger.Driver
	forge bool
}

func (d *divergedDriver) Entries(ctx context.Context, from uint64, limit int) ([]ledger.Entry, error) {
	es, err := d.Driver.Entries(ctx, from, limit)
	if d.forge && err == nil && len(es) > 0 {
		es[0].PrevHash[0] ^= 1
	}
	return es, err
}

// TestFollowRefusesADivergedStore: an entry that does not link to the local
// head is not delivered, and the head stays where it was.
func TestFollowRefusesADivergedStore(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t, ledger.Options{}, 1)
	d, err := sqlite.Open(f.path)
	if err != nil {
		t.Fatal(err)
	}
	dd := &divergedDriver{Driver: d}
	seen := &observer{}
	b, err := ledger.Open(ctx, dd, f.schema, f.s, ledger.Options{OnCommit: seen.observe})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	defer b.Close()
	before := b.Head()
	if _, err := f.l.Append(ctx, ledger.OriginEnclave, "test.note", map[string]int{"N": 1}); err != nil {
		t.Fatal(err)
	}
	dd.forge = true
	if _, err := b.Follow(ctx); !errors.Is(err, ledger.ErrDiverged) {
		t.Fatalf("following a forged entry: %v, want ErrDiverged", err)
	}
	if b.Head() != before || len(seen.seqs) != 0 {
		t.Fatalf("the forged entry moved the head (%+v) or reached OnCommit (%v)", b.Head(), seen.seqs)
	}
	// An append meets the conflict, cannot follow, and says why instead of retrying.
	storeHead := f.l.Head()
	if _, err := b.Append(ctx, ledger.OriginEnclave, "test.note", map[string]int{"N": 2}); !errors.Is(err, ledger.ErrDiverged) {
		t.Fatalf("an append on a diverged store: %v, want ErrDiverged", err)
	}
	if h, _, _ := d.Head(ctx); h != storeHead || len(seen.seqs) != 0 {
		t.Fatalf("the refused append changed the store (head %+v, was %+v) or OnCommit saw %v", h, storeHead, seen.seqs)
	}
}

// TestOpenFollowsFromStart: a ledger opened with Start delivers every entry
// committed after it to OnCommit before Open returns (what another process
// appended while the caller walked the store); a Start past the head is refused.
func TestOpenFollowsFromStart(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t, ledger.Options{}, 1)
	walked := f.l.Head()
	for i := range 3 {
		if _, err := f.l.Append(ctx, ledger.OriginEnclave, "test.note", map[string]int{"N": i}); err != nil {
			t.Fatal(err)
		}
	}
	b, seen := f.second(t, ledger.Options{Start: &walked})
	seen.exactlyOnce(t, "B", walked.Seq+1, f.l.Head().Seq)
	if b.Head() != f.l.Head() {
		t.Fatalf("B opened at %+v, the store's head is %+v", b.Head(), f.l.Head())
	}
	if _, err := b.Append(ctx, ledger.OriginEnclave, "test.note", map[string]int{"N": 9}); err != nil {
		t.Fatal(err)
	}
	seen.exactlyOnce(t, "B", walked.Seq+1, b.Head().Seq)
	past := b.Head()
	past.Seq += 5
	d, err := sqlite.Open(f.path)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	if _, err := ledger.Open(ctx, d, f.schema, f.s, ledger.Options{Start: &past}); err == nil {
		t.Fatal("a start past the store's head was accepted")
	}
}

// TestIdleFollowersDoNotTradeCheckpoints: two idle ledgers that follow each
// other write one checkpoint for the last entry between them, not one each per
// interval forever (each counting the other's checkpoint as news to vouch for).
func TestIdleFollowersDoNotTradeCheckpoints(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ctx := context.Background()
		f := newFixture(t, ledger.Options{}, 1)
		f.l.Close()
		opts := ledger.Options{CheckpointInterval: time.Second, FollowEvery: 100 * time.Millisecond}
		a, _ := f.second(t, opts)
		f.second(t, opts)
		if _, err := a.Append(ctx, ledger.OriginEnclave, "test.note", map[string]int{"N": 1}); err != nil {
			t.Fatal(err)
		}
		time.Sleep(30 * time.Second)
		synctest.Wait()
		es, err := f.d.Entries(ctx, 0, 1000)
		if err != nil {
			t.Fatal(err)
		}
		n := 0
		for _, e := range es {
			if e.Kind == ledger.KindCheckpoint {
				n++
			}
		}
		if n == 0 || n > 2 {
			t.Fatalf("%d checkpoints after 30 idle intervals of two followers, want 1 (2 if both raced for it)", n)
		}
	})
}

// notifyingDriver hears of other processes' commits, as a PostgreSQL driver
// would through LISTEN/NOTIFY.
type notifyingDriver struct {
	ledger.Driver
	wake func()
}

func (d *notifyingDriver) Notify(wake func()) { d.wake = wake }

// TestNotifierWakesTheFollower: a driver that implements Notifier is handed
// the ledger's Wake, and a notification makes the ledger follow without a poll.
func TestNotifierWakesTheFollower(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ctx := context.Background()
		f := newFixture(t, ledger.Options{}, 1)
		d, err := sqlite.Open(f.path)
		if err != nil {
			t.Fatal(err)
		}
		nd := &notifyingDriver{Driver: d}
		b, err := ledger.Open(ctx, nd, f.schema, f.s, ledger.Options{})
		if err != nil {
			t.Fatal(err)
		}
		defer d.Close()
		defer b.Close()
		if nd.wake == nil {
			t.Fatal("Open did not hand the driver its Wake")
		}
		if _, err := f.l.Append(ctx, ledger.OriginEnclave, "test.note", map[string]int{"N": 1}); err != nil {
			t.Fatal(err)
		}
		synctest.Wait()
		if b.Head() == f.l.Head() {
			t.Fatal("B followed before it was notified: the test shows nothing")
		}
		nd.wake()
		synctest.Wait()
		if b.Head() != f.l.Head() {
			t.Fatal("a notification did not make the ledger follow")
		}
	})
}

// TestAppendOnARolledBackStore: the store lost the local head (restored from an
// older backup under a running ledger). An append meets the conflict, finds
// nothing to follow, and fails with ErrDiverged instead of retrying blindly or
// writing a fork.
func TestAppendOnARolledBackStore(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t, ledger.Options{}, 1)
	e, err := f.l.Append(ctx, ledger.OriginEnclave, "test.note", map[string]int{"N": 1})
	if err != nil {
		t.Fatal(err)
	}
	tamper(t, f.path, `DELETE FROM entries WHERE seq = ?`, int64(e.Seq))
	if _, err := f.l.Append(ctx, ledger.OriginEnclave, "test.note", map[string]int{"N": 2}); !errors.Is(err, ledger.ErrDiverged) {
		t.Fatalf("an append on a store that lost the local head: %v, want ErrDiverged", err)
	}
	if h, _, _ := f.d.Head(ctx); h.Seq != e.Seq-1 {
		t.Fatalf("the store's head is %d after the refused append, want %d", h.Seq, e.Seq-1)
	}
}

// unreadableDriver fails every read of entries while down: a store the
// follower cannot reach.
type unreadableDriver struct {
	ledger.Driver
	down atomic.Bool
}

func (d *unreadableDriver) Entries(ctx context.Context, from uint64, limit int) ([]ledger.Entry, error) {
	if d.down.Load() {
		return nil, errors.New("store unreachable")
	}
	return d.Driver.Entries(ctx, from, limit)
}

// TestLag: a following ledger's Lag stays within its poll interval while the
// store answers, grows while it cannot be read (what /readyz bounds), and falls
// back once a follow reaches the store's end again.
func TestLag(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ctx := context.Background()
		f := newFixture(t, ledger.Options{}, 1)
		d, err := sqlite.Open(f.path)
		if err != nil {
			t.Fatal(err)
		}
		ud := &unreadableDriver{Driver: d}
		b, err := ledger.Open(ctx, ud, f.schema, f.s, ledger.Options{FollowEvery: time.Second})
		if err != nil {
			t.Fatal(err)
		}
		defer d.Close()
		defer b.Close()
		if lag := b.Lag(); lag != 0 {
			t.Fatalf("lag right after Open = %v, want 0", lag)
		}
		if _, err := f.l.Append(ctx, ledger.OriginEnclave, "test.note", map[string]int{"N": 1}); err != nil {
			t.Fatal(err)
		}
		time.Sleep(1500 * time.Millisecond)
		synctest.Wait()
		if lag := b.Lag(); lag > time.Second || b.Head() != f.l.Head() {
			t.Fatalf("after a poll: lag %v, head %d of %d; want ≤ 1s and caught up", lag, b.Head().Seq, f.l.Head().Seq)
		}
		ud.down.Store(true)
		time.Sleep(5 * time.Second)
		synctest.Wait()
		if lag := b.Lag(); lag < 4*time.Second {
			t.Fatalf("after 5 s of failed polls: lag %v, want it to grow past 4 s", lag)
		}
		ud.down.Store(false)
		time.Sleep(time.Second)
		synctest.Wait()
		if lag := b.Lag(); lag > time.Second {
			t.Fatalf("after the store answered again: lag %v, want ≤ 1s", lag)
		}
	})
}

// emptyOnceDriver reports an empty store at its first Head: another process
// wrote genesis between this one's look and its own genesis commit.
type emptyOnceDriver struct {
	ledger.Driver
	looked bool
}

func (d *emptyOnceDriver) Head(ctx context.Context) (ledger.Head, bool, error) {
	if !d.looked {
		d.looked = true
		return ledger.Head{}, false, nil
	}
	return d.Driver.Head(ctx)
}

// TestGenesisRace: two processes starting on one empty store both write
// genesis; the one that loses gets ErrConflict from Open (its caller starts
// again on the other's chain), not a crash, and the store keeps one genesis.
func TestGenesisRace(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t, ledger.Options{}, 1)
	before := f.l.Head()
	d, err := sqlite.Open(f.path)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	l, err := ledger.Open(ctx, &emptyOnceDriver{Driver: d}, f.schema, f.s, ledger.Options{Genesis: func() (*ledger.Genesis, error) {
		return &ledger.Genesis{MrEnclave: "aa", MrSigner: "bb", Tier: "dev",
			Governance: ledger.Governance{Threshold: 1, Keys: []string{hex.EncodeToString(f.gov[0].Public().(ed25519.PublicKey))}}}, nil
	}})
	if err == nil {
		l.Close()
		t.Fatal("a second genesis was written over an existing one")
	}
	if !errors.Is(err, ledger.ErrConflict) {
		t.Fatalf("losing the genesis race: %v, want ErrConflict", err)
	}
	if h, _, _ := d.Head(ctx); h != before {
		t.Fatalf("the store's head moved to %+v", h)
	}
}
