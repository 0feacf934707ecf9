package sqlite_test

import (
	"context"
	"database/sql"
	"path/filepath"
	"strings"
	"testing"

	"github.com/agentkeys/agentkeys/internal/ledger"
	"github.com/agentkeys/agentkeys/internal/ledger/ledgertest"
	"github.com/agentkeys/agentkeys/internal/ledger/sqlite"
)

func TestConformance(t *testing.T) {
	ledgertest.Run(t, func(t *testing.T) ledgertest.Opener {
		path := filepath.Join(t.TempDir(), "ledger.db")
		return func() (ledger.Driver, error) { return sqlite.Open(path) }
	})
}

// TestWriterSettings: the writer runs with the durability and checkpoint settings
// the package documents.
func TestWriterSettings(t *testing.T) {
	d, err := sqlite.Open(filepath.Join(t.TempDir(), "ledger.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	for pragma, want := range map[string]string{"journal_mode": "wal", "synchronous": "2", "wal_autocheckpoint": "250"} {
		var got string
		if err := d.DB().QueryRow("PRAGMA " + pragma).Scan(&got); err != nil || got != want {
			t.Errorf("PRAGMA %s = %q (%v), want %q", pragma, got, err, want)
		}
	}
}

// TestMigration: a version-0 file (no salt column, as written before payload
// commitments) is read as it is read-only, and migrated in place when opened for
// writing, its rows untouched; a file from a newer version is refused.
func TestMigration(t *testing.T) {
	path := filepath.Join(t.TempDir(), "ledger.db")
	db, err := sql.Open("sqlite", "file:"+path)
	if err != nil {
		t.Fatal(err)
	}
	e := ledger.Entry{Seq: 0, Time: 1, Kind: "k", Origin: ledger.OriginEnclave, Payload: []byte(`{"a":1}`), Signer: "s", Sig: []byte{1}}
	for _, q := range []string{
		`CREATE TABLE entries (seq INTEGER PRIMARY KEY, prev_hash BLOB NOT NULL, time INTEGER NOT NULL, kind TEXT NOT NULL,
			origin TEXT NOT NULL, payload BLOB NOT NULL, signer TEXT NOT NULL, sig BLOB NOT NULL)`,
		`CREATE TABLE state (key TEXT PRIMARY KEY, value BLOB NOT NULL) WITHOUT ROWID`,
	} {
		if _, err := db.Exec(q); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := db.Exec(`INSERT INTO entries VALUES (0, ?, 1, 'k', 'enclave', ?, 's', ?)`, e.PrevHash[:], e.Payload, e.Sig); err != nil {
		t.Fatal(err)
	}
	db.Close()
	want := e.Hash()
	check := func(d ledger.Driver, how string) {
		t.Helper()
		h, ok, err := d.Head(context.Background())
		if err != nil || !ok || h.Hash != want {
			t.Fatalf("%s: head %+v %v %v, want the old entry's hash", how, h, ok, err)
		}
	}
	ro, err := sqlite.OpenReadOnly(path)
	if err != nil {
		t.Fatal(err)
	}
	check(ro, "read-only before migration")
	ro.Close()
	d, err := sqlite.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	check(d, "after migration")
	var v int
	if err := d.DB().QueryRow(`PRAGMA user_version`).Scan(&v); err != nil || v != 1 {
		t.Fatalf("user_version %d %v after migration", v, err)
	}
	next := ledger.Entry{Seq: 1, PrevHash: want, Time: 2, Kind: "k", Origin: ledger.OriginEnclave, Payload: []byte(`{"a":2}`),
		Salt: make([]byte, ledger.SaltSize), Signer: "s", Sig: []byte{2}}
	if err := d.Commit(context.Background(), []ledger.Entry{next}, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := d.DB().Exec(`PRAGMA user_version = 7`); err != nil {
		t.Fatal(err)
	}
	d.Close()
	if _, err := sqlite.Open(path); err == nil || !strings.Contains(err.Error(), "newer") {
		t.Fatalf("opening a newer file: %v", err)
	}
	if _, err := sqlite.OpenReadOnly(path); err == nil || !strings.Contains(err.Error(), "newer") {
		t.Fatalf("opening a newer file read-only: %v", err)
	}
}
