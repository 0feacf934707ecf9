package sqlite_test

import (
	"context"
	"database/sql"
	"errors"
	"os"
	osexec "os/exec"
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
		if err := sqlite.WriterConn(d).QueryRowContext(context.Background(), "PRAGMA "+pragma).Scan(&got); err != nil || got != want {
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
	if err := sqlite.WriterConn(d).QueryRowContext(context.Background(), `PRAGMA user_version`).Scan(&v); err != nil || v != 2 {
		t.Fatalf("user_version %d %v after migration", v, err)
	}
	if got := migrationsOf(t, path); got != "1,2,3" {
		t.Fatalf("schema_migrations holds %q after migration, want 1,2,3", got)
	}
	next := ledger.Entry{Seq: 1, PrevHash: want, Time: 2, Kind: "k", Origin: ledger.OriginEnclave, Payload: []byte(`{"a":2}`),
		Salt: make([]byte, ledger.SaltSize), Signer: "s", Sig: []byte{2}}
	if err := d.Commit(context.Background(), []ledger.Entry{next}, nil); err != nil {
		t.Fatal(err)
	}
	d.Close()
	exec(t, path, `INSERT INTO schema_migrations (version) VALUES (7)`)
	if _, err := sqlite.Open(path); err == nil || !strings.Contains(err.Error(), "newer") {
		t.Fatalf("opening a newer file: %v", err)
	}
	if _, err := sqlite.OpenReadOnly(path); err == nil || !strings.Contains(err.Error(), "newer") {
		t.Fatalf("opening a newer file read-only: %v", err)
	}
}

// exec runs q on the file at path through a connection of its own (tampering,
// or writing as another version would).
func exec(t *testing.T, path, q string, args ...any) {
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

// migrationsOf lists the versions recorded in the file's schema_migrations.
func migrationsOf(t *testing.T, path string) string {
	t.Helper()
	db, err := sql.Open("sqlite", "file:"+path)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var got string
	if err := db.QueryRow(`SELECT COALESCE(group_concat(version, ','), '') FROM (SELECT version FROM schema_migrations ORDER BY version)`).Scan(&got); err != nil {
		t.Fatal(err)
	}
	return got
}

// TestMigrationFromUserVersion: a file as written before schema_migrations, at
// PRAGMA user_version 1 (the salt column), is recorded at version 2 without
// running anything again (then migrated to 3), rows untouched; a new file gets every migration; a
// user_version from a later agentkeys is refused as newer.
func TestMigrationFromUserVersion(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "v1.db")
	exec(t, path, `CREATE TABLE entries (seq INTEGER PRIMARY KEY, prev_hash BLOB NOT NULL, time INTEGER NOT NULL, kind TEXT NOT NULL,
		origin TEXT NOT NULL, payload BLOB NOT NULL, signer TEXT NOT NULL, sig BLOB NOT NULL, salt BLOB)`)
	exec(t, path, `CREATE TABLE state (key TEXT PRIMARY KEY, value BLOB NOT NULL) WITHOUT ROWID`)
	e := ledger.Entry{Seq: 0, Time: 1, Kind: "k", Origin: ledger.OriginEnclave, Payload: []byte(`{"a":1}`),
		Salt: make([]byte, ledger.SaltSize), Signer: "s", Sig: []byte{1}}
	exec(t, path, `INSERT INTO entries VALUES (0, ?, 1, 'k', 'enclave', ?, 's', ?, ?)`, e.PrevHash[:], e.Payload, e.Sig, e.Salt)
	exec(t, path, `INSERT INTO state VALUES ('k', X'01')`)
	exec(t, path, `PRAGMA user_version = 1`)
	for _, open := range []func(string) (*sqlite.Driver, error){sqlite.OpenReadOnly, sqlite.Open} {
		d, err := open(path)
		if err != nil {
			t.Fatal(err)
		}
		h, ok, err := d.Head(context.Background())
		if err != nil || !ok || h.Hash != e.Hash() {
			t.Fatalf("head %+v %v %v, want the stored entry's hash (salt included)", h, ok, err)
		}
		if v, ok, err := d.Get(context.Background(), "k"); err != nil || !ok || string(v) != "\x01" {
			t.Fatalf("state k = %q %v %v", v, ok, err)
		}
		d.Close()
	}
	if got := migrationsOf(t, path); got != "1,2,3" {
		t.Fatalf("schema_migrations %q, want 1,2,3", got)
	}

	fresh := filepath.Join(dir, "new.db")
	d, err := sqlite.Open(fresh)
	if err != nil {
		t.Fatal(err)
	}
	d.Close()
	if got := migrationsOf(t, fresh); got != "1,2,3" {
		t.Fatalf("a new file's schema_migrations %q, want 1,2,3", got)
	}

	later := filepath.Join(dir, "later.db")
	exec(t, later, `CREATE TABLE entries (seq INTEGER PRIMARY KEY)`)
	exec(t, later, `PRAGMA user_version = 3`)
	for name, open := range map[string]func(string) (*sqlite.Driver, error){"read-only": sqlite.OpenReadOnly, "read-write": sqlite.Open} {
		if _, err := open(later); err == nil || !strings.Contains(err.Error(), "newer") {
			t.Fatalf("%s: a file at user_version 3 (from a later agentkeys): %v", name, err)
		}
	}
}

// TestLockKeepsOtherProcessesOut: the handles of one process share the file's
// lock; another process gets ErrLocked until the last of them is closed.
func TestLockKeepsOtherProcessesOut(t *testing.T) {
	if path := os.Getenv("AGENTKEYS_TEST_OPEN_LEDGER"); path != "" {
		d, err := sqlite.Open(path) // in the child process
		if errors.Is(err, sqlite.ErrLocked) {
			os.Exit(3)
		} else if err != nil {
			os.Exit(1)
		}
		d.Close()
		os.Exit(0)
	}
	path := filepath.Join(t.TempDir(), "ledger.db")
	child := func() int {
		t.Helper()
		cmd := osexec.Command(os.Args[0], "-test.run=^TestLockKeepsOtherProcessesOut$")
		cmd.Env = append(os.Environ(), "AGENTKEYS_TEST_OPEN_LEDGER="+path)
		err := cmd.Run()
		var ee *osexec.ExitError
		if err != nil && !errors.As(err, &ee) {
			t.Fatal(err)
		}
		return cmd.ProcessState.ExitCode()
	}
	a, err := sqlite.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	b, err := sqlite.Open(path)
	if err != nil {
		t.Fatalf("a second handle in the same process: %v", err)
	}
	if code := child(); code != 3 {
		t.Fatalf("another process opened the ledger while two handles held it (exit %d, want 3: ErrLocked)", code)
	}
	a.Close()
	if code := child(); code != 3 {
		t.Fatalf("another process opened the ledger while one handle held it (exit %d, want 3: ErrLocked)", code)
	}
	b.Close()
	if code := child(); code != 0 {
		t.Fatalf("another process cannot open the ledger after every handle closed (exit %d)", code)
	}
}
