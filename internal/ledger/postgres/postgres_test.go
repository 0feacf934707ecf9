package postgres_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/agentkeys/agentkeys/internal/ledger"
	"github.com/agentkeys/agentkeys/internal/ledger/ledgertest"
	"github.com/agentkeys/agentkeys/internal/ledger/postgres"
	"github.com/agentkeys/agentkeys/internal/ledger/postgres/pgtest"
)

func open(url string) (ledger.Driver, error) { return postgres.Open(url) }

func TestMain(m *testing.M) {
	ledgertest.WriterMain(open) // when run as a writer of TestPostgres/ConcurrentProcesses
	os.Exit(m.Run())
}

// TestPostgres runs the driver against one throwaway cluster: the conformance
// suite (each case on a fresh database), writers in two OS processes, the
// migrations, read-only handles, and unreachable servers.
func TestPostgres(t *testing.T) {
	c := pgtest.Start(t)
	t.Run("Conformance", func(t *testing.T) {
		ledgertest.Run(t, func(t *testing.T) ledgertest.Opener {
			u := c.NewDatabase(t)
			return func() (ledger.Driver, error) { return postgres.Open(u) }
		})
	})
	t.Run("ConcurrentProcesses", func(t *testing.T) {
		ledgertest.ConcurrentProcesses(t, c.NewDatabase(t), open)
	})
	t.Run("Migrations", func(t *testing.T) { testMigrations(t, c) })
	t.Run("ReadOnly", func(t *testing.T) { testReadOnly(t, c) })
	t.Run("Unreachable", func(t *testing.T) { testUnreachable(t, c) })
	t.Run("Notify", func(t *testing.T) { testNotify(t, c) })
	t.Run("HeadMovedElsewhere", func(t *testing.T) { testHeadMovedElsewhere(t, c) })
	t.Run("Replays", func(t *testing.T) { testReplays(t, c) })
	t.Run("Limiters", func(t *testing.T) { testLimiters(t, c) })
	t.Run("FirstCallsRace", func(t *testing.T) { testFirstCallsRace(t, c) })
	t.Run("LimiterUpgrade", func(t *testing.T) { testLimiterUpgrade(t, c) })
	t.Run("ReplayBatch", func(t *testing.T) { testReplayBatch(t, c) })
	t.Run("LimiterBatch", func(t *testing.T) { testLimiterBatch(t, c) })
	t.Run("BatchErrors", func(t *testing.T) { testBatchErrors(t, c) })
	t.Run("SharedMixed", func(t *testing.T) { testSharedMixed(t, c) })
	t.Run("LimiterStorage", func(t *testing.T) { testLimiterStorage(t, c) })
	t.Run("SharedDurable", func(t *testing.T) { testSharedDurable(t, c) }) // kills the server: last
}

func entry(prev *ledger.Entry) ledger.Entry {
	e := ledger.Entry{Kind: "k", Origin: ledger.OriginEnclave, Payload: []byte(`{}`), Signer: "s", Sig: []byte{1}}
	if prev != nil {
		e.Seq, e.PrevHash, e.Time = prev.Seq+1, prev.Hash(), prev.Time+1
	}
	return e
}

// testMigrations: brokers opening a new database at once migrate it once (the
// advisory lock), schema_migrations records version 1, and a database migrated
// by a newer agentkeys is refused, read-write and read-only.
func testMigrations(t *testing.T, c *pgtest.Cluster) {
	u := c.NewDatabase(t)
	var wg sync.WaitGroup
	errs := make([]error, 4)
	for i := range errs {
		wg.Go(func() {
			d, err := postgres.Open(u)
			if err == nil {
				d.Close()
			}
			errs[i] = err
		})
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("concurrent open %d: %v", i, err)
		}
	}
	d, err := postgres.Open(u)
	if err != nil {
		t.Fatal(err)
	}
	e := entry(nil)
	if err := d.Commit(context.Background(), []ledger.Entry{e}, nil); err != nil {
		t.Fatal(err)
	}
	d.Close()
	c.Exec(t, u, `INSERT INTO schema_migrations (version) VALUES (7)`)
	for name, o := range map[string]func(string) (*postgres.Driver, error){"read-write": postgres.Open, "read-only": postgres.OpenReadOnly} {
		if _, err := o(u); err == nil || !strings.Contains(err.Error(), "newer") {
			t.Errorf("%s open of a newer database: %v", name, err)
		}
	}
	c.Exec(t, u, `DELETE FROM schema_migrations WHERE version = 7`)
	d, err = postgres.Open(u)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	if h, ok, err := d.Head(context.Background()); err != nil || !ok || h.Hash != e.Hash() {
		t.Fatalf("after reopening: head %+v %v %v", h, ok, err)
	}
}

// testReadOnly: a read-only handle reads a ledger a writer holds open, refuses
// to commit, and refuses a database that holds no ledger.
func testReadOnly(t *testing.T, c *pgtest.Cluster) {
	ctx := context.Background()
	u := c.NewDatabase(t)
	if _, err := postgres.OpenReadOnly(u); err == nil || !strings.Contains(err.Error(), "holds no ledger") {
		t.Fatalf("read-only open of an empty database: %v", err)
	}
	w, err := postgres.Open(u)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	e := entry(nil)
	if err := w.Commit(ctx, []ledger.Entry{e}, []ledger.Write{{Key: "k", Value: []byte("v")}}); err != nil {
		t.Fatal(err)
	}
	r, err := postgres.OpenReadOnly(u)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if h, ok, err := r.Head(ctx); err != nil || !ok || h.Hash != e.Hash() {
		t.Fatalf("read-only head %+v %v %v", h, ok, err)
	}
	if v, ok, err := r.Get(ctx, "k"); err != nil || !ok || string(v) != "v" {
		t.Fatalf("read-only get %q %v %v", v, ok, err)
	}
	next := entry(&e)
	if err := r.Commit(ctx, []ledger.Entry{next}, nil); err == nil {
		t.Fatal("a read-only handle committed")
	}
	if h, _, _ := w.Head(ctx); h.Seq != 0 {
		t.Fatalf("the read-only handle's refused commit moved the head to %d", h.Seq)
	}
}

// testUnreachable: no server at the address, or a wrong password, is
// ledger.ErrUnreachable, and no error quotes the password.
func testUnreachable(t *testing.T, c *pgtest.Cluster) {
	const secret = "hunter2-do-not-print"
	for name, u := range map[string]string{
		"no server":      "postgres://agentkeys:" + secret + "@/ledger?host=" + filepath.Join(t.TempDir(), "nothing"),
		"no server, tcp": "postgres://agentkeys:" + secret + "@127.0.0.1:1/ledger?connect_timeout=5",
		"wrong password": "postgres://" + pgtest.User + ":" + secret + "@/postgres?host=" + c.Dir(),
		"password query": "postgres://" + pgtest.User + "@/postgres?host=" + c.Dir() + "&password=" + secret,
		"bad url":        "postgres://agentkeys:" + secret + "@127.0.0.1:99999999/ledger",
	} {
		for _, o := range []func(string) (*postgres.Driver, error){postgres.Open, postgres.OpenReadOnly} {
			_, err := o(u)
			if err == nil {
				t.Fatalf("%s: opened", name)
			}
			if strings.Contains(err.Error(), secret) {
				t.Errorf("%s: the error shows the password: %v", name, err)
			}
			if name != "bad url" && !errors.Is(err, ledger.ErrUnreachable) {
				t.Errorf("%s: %v, want ErrUnreachable", name, err)
			}
		}
	}
}

// testHeadMovedElsewhere: a driver whose last commit was the head sends its
// next commit in one round trip, conditioned on that head. When another
// driver (another broker) has appended since, that commit writes nothing and
// answers ErrConflict; the driver then knows the new head and commits on it.
// State writes of a refused commit are not applied either.
func testHeadMovedElsewhere(t *testing.T, c *pgtest.Cluster) {
	u := c.NewDatabase(t)
	open := func() *postgres.Driver {
		d, err := postgres.Open(u)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { d.Close() })
		return d
	}
	a, b := open(), open()
	ctx := context.Background()
	e0 := entry(nil)
	if err := a.Commit(ctx, []ledger.Entry{e0}, nil); err != nil {
		t.Fatal(err)
	}
	e1 := entry(&e0)
	if err := b.Commit(ctx, []ledger.Entry{e1}, nil); err != nil {
		t.Fatal(err)
	}
	stale := entry(&e0)
	stale.Payload = []byte(`{"stale":true}`)
	err := a.Commit(ctx, []ledger.Entry{stale}, []ledger.Write{{Key: "k", Value: []byte("stale")}})
	if !errors.Is(err, ledger.ErrConflict) {
		t.Fatalf("a commit on a head another driver moved: %v, want ErrConflict", err)
	}
	if h, _, err := a.Head(ctx); err != nil || h.Seq != 1 || h.Hash != e1.Hash() {
		t.Fatalf("head after the refused commit: %+v %v, want e1", h, err)
	}
	if _, ok, err := a.Get(ctx, "k"); ok || err != nil {
		t.Fatalf("the refused commit's state write was applied: %v %v", ok, err)
	}
	e2 := entry(&e1)
	if err := a.Commit(ctx, []ledger.Entry{e2}, []ledger.Write{{Key: "k", Value: []byte("e2")}}); err != nil {
		t.Fatalf("a commit on the new head: %v", err)
	}
	e3 := entry(&e2)
	if err := a.Commit(ctx, []ledger.Entry{e3}, nil); err != nil {
		t.Fatal(err)
	}
	es, err := b.Entries(ctx, 0, 10)
	if err != nil || len(es) != 4 || es[3].Hash() != e3.Hash() {
		t.Fatalf("the chain: %d entries, %v; want e0-e3", len(es), err)
	}
	if v, _, _ := b.Get(ctx, "k"); string(v) != "e2" {
		t.Fatalf("state k = %q, want e2", v)
	}
}
