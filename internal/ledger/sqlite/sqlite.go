// Package sqlite is the embedded ledger driver: one SQLite file in WAL mode with
// synchronous=FULL, so a committed transaction survives power loss. One connection
// writes; a pool of read-only connections serves reads concurrently.
package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net/url"

	"github.com/agentkeys/agentkeys/internal/ledger"

	_ "modernc.org/sqlite" // database/sql driver "sqlite"
)

const schema = `
CREATE TABLE IF NOT EXISTS entries (
	seq       INTEGER PRIMARY KEY,
	prev_hash BLOB    NOT NULL,
	time      INTEGER NOT NULL,
	kind      TEXT    NOT NULL,
	origin    TEXT    NOT NULL,
	payload   BLOB    NOT NULL,
	signer    TEXT    NOT NULL,
	sig       BLOB    NOT NULL
);
CREATE TABLE IF NOT EXISTS state (
	key   TEXT PRIMARY KEY,
	value BLOB NOT NULL
) WITHOUT ROWID;`

// Driver is a ledger.Driver on one SQLite file.
type Driver struct {
	w *sql.DB // exactly one connection: the writer
	r *sql.DB // read-only pool
}

var _ ledger.Driver = (*Driver)(nil)

// Open opens (creating if needed) the ledger database at path.
func Open(path string) (*Driver, error) {
	dsn := func(extra string) string {
		q := url.Values{}
		for _, p := range []string{"journal_mode(WAL)", "synchronous(FULL)", "busy_timeout(10000)", "foreign_keys(ON)"} {
			q.Add("_pragma", p)
		}
		if extra != "" {
			q.Add("_pragma", extra)
		} else {
			q.Set("_txlock", "immediate")
		}
		return "file:" + path + "?" + q.Encode()
	}
	w, err := sql.Open("sqlite", dsn(""))
	if err != nil {
		return nil, fmt.Errorf("sqlite: open %s: %w", path, err)
	}
	w.SetMaxOpenConns(1)
	if _, err := w.Exec(schema); err != nil {
		w.Close()
		return nil, fmt.Errorf("sqlite: create schema in %s: %w", path, err)
	}
	r, err := sql.Open("sqlite", dsn("query_only(1)"))
	if err != nil {
		w.Close()
		return nil, err
	}
	r.SetMaxOpenConns(8)
	return &Driver{w: w, r: r}, nil
}

// Close closes both connection pools.
func (d *Driver) Close() error { return errors.Join(d.r.Close(), d.w.Close()) }

// DB exposes the writer handle for fault and tamper tests.
func (d *Driver) DB() *sql.DB { return d.w }

const entryCols = `seq, prev_hash, time, kind, origin, payload, signer, sig`

func scanEntry(s interface{ Scan(...any) error }) (ledger.Entry, error) {
	var e ledger.Entry
	var seq int64
	var prev []byte
	if err := s.Scan(&seq, &prev, &e.Time, &e.Kind, &e.Origin, &e.Payload, &e.Signer, &e.Sig); err != nil {
		return e, err
	}
	e.Seq = uint64(seq)
	if len(prev) != len(e.PrevHash) {
		return e, fmt.Errorf("sqlite: entry %d: prev_hash has %d bytes", seq, len(prev))
	}
	copy(e.PrevHash[:], prev)
	return e, nil
}

// Head implements ledger.Driver; the hash is computed from the stored entry.
func (d *Driver) Head(ctx context.Context) (ledger.Head, bool, error) {
	return head(ctx, d.r)
}

type querier interface {
	QueryRowContext(ctx context.Context, q string, args ...any) *sql.Row
}

func head(ctx context.Context, q querier) (ledger.Head, bool, error) {
	e, err := scanEntry(q.QueryRowContext(ctx, `SELECT `+entryCols+` FROM entries ORDER BY seq DESC LIMIT 1`))
	if errors.Is(err, sql.ErrNoRows) {
		return ledger.Head{}, false, nil
	}
	if err != nil {
		return ledger.Head{}, false, fmt.Errorf("sqlite: head: %w", err)
	}
	return ledger.Head{Seq: e.Seq, Hash: e.Hash(), Time: e.Time}, true, nil
}

// Entries implements ledger.Driver.
func (d *Driver) Entries(ctx context.Context, from uint64, limit int) ([]ledger.Entry, error) {
	rows, err := d.r.QueryContext(ctx, `SELECT `+entryCols+` FROM entries WHERE seq >= ? ORDER BY seq LIMIT ?`, int64(from), limit)
	if err != nil {
		return nil, fmt.Errorf("sqlite: entries: %w", err)
	}
	defer rows.Close()
	var out []ledger.Entry
	for rows.Next() {
		e, err := scanEntry(rows)
		if err != nil {
			return nil, fmt.Errorf("sqlite: entries: %w", err)
		}
		out = append(out, e)
	}
	return out, rows.Err()
}

// Get implements ledger.Reader.
func (d *Driver) Get(ctx context.Context, key string) ([]byte, bool, error) {
	var v []byte
	err := d.r.QueryRowContext(ctx, `SELECT value FROM state WHERE key = ?`, key).Scan(&v)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, fmt.Errorf("sqlite: get %q: %w", key, err)
	}
	return v, true, nil
}

// Scan implements ledger.Reader.
func (d *Driver) Scan(ctx context.Context, prefix string, fn func(string, []byte) error) error {
	q, args := `SELECT key, value FROM state WHERE key >= ?`, []any{prefix}
	if end, ok := prefixEnd(prefix); ok {
		q += ` AND key < ?`
		args = append(args, end)
	}
	rows, err := d.r.QueryContext(ctx, q+` ORDER BY key`, args...)
	if err != nil {
		return fmt.Errorf("sqlite: scan %q: %w", prefix, err)
	}
	defer rows.Close()
	for rows.Next() {
		var k string
		var v []byte
		if err := rows.Scan(&k, &v); err != nil {
			return err
		}
		if err := fn(k, v); err != nil {
			return err
		}
	}
	return rows.Err()
}

// prefixEnd returns the smallest string greater than every string with prefix p.
func prefixEnd(p string) (string, bool) {
	b := []byte(p)
	for i := len(b) - 1; i >= 0; i-- {
		if b[i] < 0xff {
			b[i]++
			return string(b[:i+1]), true
		}
	}
	return "", false
}

// Commit implements ledger.Driver in one IMMEDIATE transaction.
func (d *Driver) Commit(ctx context.Context, entries []ledger.Entry, writes []ledger.Write) error {
	if len(entries) == 0 {
		return errors.New("sqlite: commit without entries")
	}
	tx, err := d.w.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("sqlite: begin: %w", err)
	}
	defer tx.Rollback()
	h, ok, err := head(ctx, tx)
	if err != nil {
		return err
	}
	first := entries[0]
	if ok && (first.Seq != h.Seq+1 || first.PrevHash != h.Hash) || !ok && (first.Seq != 0 || first.PrevHash != ledger.Hash{}) {
		return ledger.ErrConflict
	}
	ins, err := tx.PrepareContext(ctx, `INSERT INTO entries (`+entryCols+`) VALUES (?, ?, ?, ?, ?, ?, ?, ?)`)
	if err != nil {
		return err
	}
	defer ins.Close()
	for i, e := range entries {
		if i > 0 && (e.Seq != entries[i-1].Seq+1) {
			return fmt.Errorf("sqlite: entries are not contiguous at seq %d", e.Seq)
		}
		if _, err := ins.ExecContext(ctx, int64(e.Seq), e.PrevHash[:], e.Time, e.Kind, e.Origin, e.Payload, e.Signer, e.Sig); err != nil {
			return fmt.Errorf("sqlite: insert seq %d: %w", e.Seq, err)
		}
	}
	if len(writes) > 0 {
		put, err := tx.PrepareContext(ctx, `INSERT INTO state (key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value`)
		if err != nil {
			return err
		}
		defer put.Close()
		del, err := tx.PrepareContext(ctx, `DELETE FROM state WHERE key = ?`)
		if err != nil {
			return err
		}
		defer del.Close()
		for _, w := range writes {
			if w.Value == nil {
				_, err = del.ExecContext(ctx, w.Key)
			} else {
				_, err = put.ExecContext(ctx, w.Key, w.Value)
			}
			if err != nil {
				return fmt.Errorf("sqlite: state %q: %w", w.Key, err)
			}
		}
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("sqlite: commit: %w", err)
	}
	return nil
}
