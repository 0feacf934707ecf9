package sqlmigrate_test

import (
	"context"
	"database/sql"
	"errors"
	"path/filepath"
	"strings"
	"testing"

	_ "modernc.org/sqlite"

	"github.com/agentkeys/agentkeys/internal/ledger/sqlmigrate"
)

func exec(q string) func(context.Context, *sql.Tx) error {
	return func(ctx context.Context, tx *sql.Tx) error { _, err := tx.ExecContext(ctx, q); return err }
}

func apply(t *testing.T, db *sql.DB, ms []sqlmigrate.Migration, baseline func(context.Context, *sql.Tx) (int, error)) (int, error) {
	t.Helper()
	tx, err := db.Begin()
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback()
	v, err := sqlmigrate.Apply(context.Background(), tx, ms, baseline)
	if err == nil {
		err = tx.Commit()
	}
	return v, err
}

func count(t *testing.T, db *sql.DB, q string) int {
	t.Helper()
	var n int
	if err := db.QueryRow(q).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

// TestApply: migrations run once each, in order, and are recorded; a failing one
// leaves the store as it was; a baseline is recorded without running what it
// covers; a store from a newer version is refused.
func TestApply(t *testing.T) {
	db, err := sql.Open("sqlite", "file:"+filepath.Join(t.TempDir(), "m.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	ms := []sqlmigrate.Migration{
		{Name: "a", Up: exec(`CREATE TABLE a (x INTEGER)`)},
		{Name: "b", Up: exec(`CREATE TABLE b (x INTEGER)`)},
	}
	bad := append(ms[:2:2], sqlmigrate.Migration{Name: "broken", Up: exec(`CREATE TABLE a (x INTEGER)`)})
	if _, err := apply(t, db, bad, nil); err == nil || !strings.Contains(err.Error(), "migration 3 (broken)") {
		t.Fatalf("a failing migration: %v", err)
	}
	if n := count(t, db, `SELECT count(*) FROM sqlite_master WHERE name IN ('a', 'b', 'schema_migrations')`); n != 0 {
		t.Fatalf("a failed Apply left %d tables behind", n)
	}
	if v, err := apply(t, db, ms, nil); err != nil || v != 2 {
		t.Fatalf("Apply = %d, %v", v, err)
	}
	if v, err := apply(t, db, ms, nil); err != nil || v != 2 { // nothing left to run: CREATE TABLE a would fail
		t.Fatalf("second Apply = %d, %v", v, err)
	}
	if n := count(t, db, `SELECT count(*) FROM schema_migrations`); n != 2 {
		t.Fatalf("%d versions recorded, want 2", n)
	}
	if _, err := apply(t, db, ms[:1], nil); !errors.As(err, new(*sqlmigrate.NewerError)) {
		t.Fatalf("a store at version 2 opened by code that knows 1: %v", err)
	}

	legacy, err := sql.Open("sqlite", "file:"+filepath.Join(t.TempDir(), "legacy.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer legacy.Close()
	if _, err := legacy.Exec(`CREATE TABLE a (x INTEGER)`); err != nil {
		t.Fatal(err)
	}
	one := func(context.Context, *sql.Tx) (int, error) { return 1, nil }
	if v, err := apply(t, legacy, ms, one); err != nil || v != 2 {
		t.Fatalf("Apply on a baseline-1 store = %d, %v (migration 1 must not run again)", v, err)
	}
	if n := count(t, legacy, `SELECT count(*) FROM schema_migrations`); n != 2 {
		t.Fatalf("%d versions recorded on the legacy store, want 2", n)
	}
}
