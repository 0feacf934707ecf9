// Package sqlmigrate brings a SQL ledger store's schema up to date: a driver lists
// its migrations, numbered from 1, and Apply runs the ones not yet recorded in the
// store's schema_migrations table, in the caller's transaction, so that a store is
// at one version or the next and never in between. The SQLite driver uses it; a
// PostgreSQL driver passes its own list and transaction. It only changes the
// schema it is given; it never reads or rewrites entries.
package sqlmigrate

import (
	"context"
	"database/sql"
	"fmt"
)

// Migration is one numbered step of a schema.
type Migration struct {
	Name string // what it changes, for errors
	Up   func(ctx context.Context, tx *sql.Tx) error
}

// Table is the table that records applied migrations, one row per version.
const Table = "schema_migrations"

// NewerError means the store was migrated by a newer agentkeys: this one does not
// know its schema and must not write to it.
type NewerError struct{ Have, Know int }

func (e *NewerError) Error() string {
	return fmt.Sprintf("the ledger has schema version %d, newer than this agentkeys knows (%d): run a newer agentkeys", e.Have, e.Know)
}

// Apply records and runs, in tx, the migrations (ms[i] is version i+1) after the
// store's current version, and returns the version it is now at. A store with no
// recorded version (new, or from before schema_migrations) is first given the
// version baseline reports for it; baseline may be nil (0: a new store).
func Apply(ctx context.Context, tx *sql.Tx, ms []Migration, baseline func(context.Context, *sql.Tx) (int, error)) (int, error) {
	if _, err := tx.ExecContext(ctx, `CREATE TABLE IF NOT EXISTS `+Table+` (version INTEGER PRIMARY KEY)`); err != nil {
		return 0, fmt.Errorf("creating %s: %w", Table, err)
	}
	v, err := Version(ctx, tx)
	if err != nil {
		return 0, err
	}
	if v == 0 && baseline != nil {
		if v, err = baseline(ctx, tx); err != nil {
			return 0, err
		}
		for i := 1; i <= v && i <= len(ms); i++ {
			if err := record(ctx, tx, i); err != nil {
				return 0, err
			}
		}
	}
	if v > len(ms) {
		return v, &NewerError{Have: v, Know: len(ms)}
	}
	for ; v < len(ms); v++ {
		m := ms[v]
		if err := m.Up(ctx, tx); err != nil {
			return v, fmt.Errorf("migration %d (%s): %w", v+1, m.Name, err)
		}
		if err := record(ctx, tx, v+1); err != nil {
			return v, err
		}
	}
	return v, nil
}

// Version is the highest recorded migration; the table must exist.
func Version(ctx context.Context, q interface {
	QueryRowContext(ctx context.Context, q string, args ...any) *sql.Row
}) (int, error) {
	var v int
	if err := q.QueryRowContext(ctx, `SELECT COALESCE(MAX(version), 0) FROM `+Table).Scan(&v); err != nil {
		return 0, fmt.Errorf("reading %s: %w", Table, err)
	}
	return v, nil
}

// record marks version v applied. The number is formatted into the statement so
// that it needs no driver-specific placeholder.
func record(ctx context.Context, tx *sql.Tx, v int) error {
	if _, err := tx.ExecContext(ctx, fmt.Sprintf(`INSERT INTO %s (version) VALUES (%d)`, Table, v)); err != nil {
		return fmt.Errorf("recording migration %d: %w", v, err)
	}
	return nil
}
