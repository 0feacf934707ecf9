package api_test

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"os"
	"strings"
	"testing"

	"github.com/agentkeys/agentkeys/internal/apiv1"
	"github.com/agentkeys/agentkeys/internal/archive"
	"github.com/agentkeys/agentkeys/internal/audit"
	"github.com/agentkeys/agentkeys/internal/broker"
	"github.com/agentkeys/agentkeys/internal/ledger"
	"github.com/agentkeys/agentkeys/internal/ledger/postgres"
	"github.com/agentkeys/agentkeys/internal/ledger/postgres/pgtest"
	"github.com/agentkeys/agentkeys/internal/ledger/sqlite"
	"github.com/agentkeys/agentkeys/internal/modules"
	"github.com/agentkeys/agentkeys/internal/problem"
)

// Anchor and Prune let the harness's wrapper of the SQLite driver be pruned
// like the driver itself.
func (f failingDriver) Anchor(ctx context.Context) (ledger.Anchor, bool, error) {
	return f.Driver.(ledger.Pruner).Anchor(ctx)
}

func (f failingDriver) Prune(ctx context.Context, a ledger.Anchor) error {
	return f.Driver.(ledger.Pruner).Prune(ctx, a)
}

// TestRetention: export, prune, and a broker that restarts on the pruned
// store, with and without a snapshot, serves, appends, passes audit verify
// (the full chain through the archive) and shows owners their usage rows from
// before the cut; without the archive it serves what is after the cut.
func TestRetention(t *testing.T) {
	testRetention(t, nil, func(e *env) ledger.Driver {
		d, err := sqlite.Open(broker.LedgerPath(e.dataDir))
		if err != nil {
			t.Fatal(err)
		}
		return d
	})
}

// TestRetentionPostgres is TestRetention on PostgreSQL, pruned while the
// broker runs.
func TestRetentionPostgres(t *testing.T) {
	u := pgtest.Start(t).NewDatabase(t)
	testRetention(t, func() (ledger.Driver, error) { return postgres.Open(u) }, nil)
}

// testRetention runs on the store openStore opens (nil: SQLite); offline,
// if set, opens the store for an operator command with the broker stopped
// (SQLite's one writer), else prune runs beside the running broker.
func testRetention(t *testing.T, openStore func() (ledger.Driver, error), offline func(*env) ledger.Driver) {
	ctx := context.Background()
	dir := t.TempDir()
	a, err := archive.Open(ctx, dir, archive.S3{}, false)
	if err != nil {
		t.Fatal(err)
	}
	e := newEnvOn(t, broker.Config{Archive: a, Ledger: ledger.Options{CheckpointEvery: 100}}, openStore)
	s, g := e.owner(t)
	for i := range 3 {
		e.store(t, s, g.Omni, fmt.Sprintf("old-%d", i), []byte("secret"), "")
	}
	generateLedger(t, e, 600)
	usage := func() []apiv1.Usage {
		t.Helper()
		l, err := s.UsageFrom(ctx, url.Values{}, 0, false)
		if err != nil {
			t.Fatal(err)
		}
		return l.Usage
	}
	before := usage()
	if len(before) != 3 {
		t.Fatalf("usage before the cut: %d rows, want 3", len(before))
	}
	head, _, _ := e.b.Storage().Head(ctx)
	cut := head.Seq - 50

	// Prune refuses before the export.
	prune := func() (archive.Pruned, error) {
		d := e.b.Storage()
		if offline != nil {
			e.b.Close()
			d = offline(e)
			defer func() { d.Close(); e.open(t) }()
		}
		return archive.Prune(ctx, a, d, cut, ledger.NewVerifier(modules.Schema(), ledger.NewMemState()), nil)
	}
	if _, err := prune(); !errors.Is(err, archive.ErrNotCovered) {
		t.Fatalf("prune before any export: %v, want ErrNotCovered", err)
	}
	exp, err := archive.Export(ctx, a, e.b.Storage(), cut, 200, nil)
	if err != nil {
		t.Fatal(err)
	}
	if exp.Before > cut || exp.Before+100 < cut {
		t.Fatalf("export: %+v for a cut at %d", exp, cut)
	}
	ch, err := archive.ChainOf(ctx, e.b.Storage())
	if err != nil {
		t.Fatal(err)
	}
	if sum, err := audit.VerifyArchive(ctx, a, ch.LedgerKey); err != nil || sum.ArchivedBefore != exp.Before {
		t.Fatalf("the archive, offline with the ledger key: %+v %v", sum, err)
	}
	pr, err := prune()
	if err != nil {
		t.Fatal(err)
	}
	if pr.Before != exp.Before {
		t.Fatalf("pruned before %d, exported before %d", pr.Before, exp.Before)
	}
	if es, _ := e.b.Storage().Entries(ctx, 1, 1); len(es) != 1 || es[0].Seq != pr.Before {
		t.Fatalf("the store still holds entries below the cut: %+v", es)
	}

	check := func(how string, wantOld bool) {
		t.Helper()
		e.store(t, s, g.Omni, "new-"+strings.ReplaceAll(how, " ", "-"), []byte("secret"), "") // appends after the cut
		rows := usage()
		old := 0
		for _, r := range rows {
			if r.Seq < pr.Before {
				old++
			}
		}
		if wantOld && old != len(before) || !wantOld && old != 0 {
			t.Fatalf("%s: usage shows %d rows from before the cut, want %v", how, old, wantOld)
		}
		sum, err := audit.VerifyStore(ctx, e.b.Storage())
		if err != nil || sum.ArchivedBefore != pr.Before {
			t.Fatalf("%s: audit verify of the store without its archive: %+v %v", how, sum, err)
		}
		full, err := audit.VerifyStoreArchive(ctx, e.b.Storage(), a)
		if err != nil || full.StateKeys == 0 || full.Segments != exp.Written {
			t.Fatalf("%s: audit verify with the archive: %+v %v", how, full, err)
		}
		pub, err := audit.VerifyServer(ctx, e.c, nil)
		if wantOld && (err != nil || pub.HeadSeq != full.HeadSeq) {
			t.Fatalf("%s: audit verify --server across the cut: %+v %v", how, pub, err)
		}
		if !wantOld {
			var p *problem.Error
			if !errors.As(err, &p) || p.Code != problem.NotFound {
				t.Fatalf("%s: audit verify --server without the archive: %v, want NOT_FOUND naming the fix", how, err)
			}
		}
	}
	check("running", true)
	e.restart(t) // from the snapshot the stop wrote
	check("restarted", true)
	withoutSnapshot := func() { // stopping writes one: remove it before the start
		t.Helper()
		e.b.Close()
		if err := os.Remove(broker.SnapshotPath(e.dataDir)); err != nil {
			t.Fatal(err)
		}
		e.open(t)
	}
	withoutSnapshot() // from the anchor, the usage index from the archive
	check("no snapshot", true)
	e.cfg.Archive = nil
	withoutSnapshot()
	check("no archive", false)

	// The anchor's governance set is not signed: altered in the store, the
	// full verification (archive, then store) finds it.
	if offline == nil {
		return
	}
	e.b.Close()
	d := offline(e)
	defer d.Close()
	an, _, err := d.(ledger.Pruner).Anchor(ctx)
	if err != nil {
		t.Fatal(err)
	}
	an.Pos.Gov = &ledger.Governance{Threshold: 1, Keys: []string{strings.Repeat("ab", 32)}}
	body, _ := json.Marshal(an)
	db, err := sql.Open("sqlite", "file:"+broker.LedgerPath(e.dataDir))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if _, err := db.Exec(`UPDATE anchor SET body = ?`, body); err != nil {
		t.Fatal(err)
	}
	var p *problem.Error
	if _, err := audit.VerifyStoreArchive(ctx, d, a); !errors.As(err, &p) || p.Code != problem.LedgerInvalid || !strings.Contains(err.Error(), "anchor") {
		t.Fatalf("audit verify with the archive, anchor's governance altered: %v", err)
	}
}
