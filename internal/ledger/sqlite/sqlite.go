// Package sqlite is the embedded ledger driver: one SQLite file in WAL mode with
// synchronous=FULL, so a committed transaction survives power loss. One connection
// writes; a pool of read-only connections serves reads concurrently. One process
// opens a file for writing (a lock file keeps others out); several handles in it
// are several writers on one chain.
package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"math"
	"net/url"
	"os"
	"sync"

	"github.com/agentkeys/agentkeys/internal/ledger"
	"github.com/agentkeys/agentkeys/internal/ledger/sqlmigrate"

	_ "modernc.org/sqlite" // database/sql driver "sqlite"
)

// migrations are the schema, one numbered step each (package sqlmigrate records
// them in schema_migrations). Version 1, the first layout, had no salt column:
// its entries are all format 1 and keep it (a NULL salt).
var migrations = []sqlmigrate.Migration{
	{Name: "entries and state", Up: execUp(`
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
) WITHOUT ROWID;`)},
	{Name: "entries.salt: payload commitments", Up: execUp(`ALTER TABLE entries ADD COLUMN salt BLOB`)},
	{Name: "anchor: where a pruned chain resumes", Up: execUp(`
CREATE TABLE IF NOT EXISTS anchor (
	id   INTEGER PRIMARY KEY CHECK (id = 1),
	body BLOB    NOT NULL
)`)},
}

func execUp(q string) func(context.Context, *sql.Tx) error {
	return func(ctx context.Context, tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx, q)
		return err
	}
}

// Before schema_migrations, a file recorded its layout in PRAGMA user_version:
// 0 (version 1 here) or 1 (the salt column, version 2). migrate still writes it,
// as the version minus one, in the same transaction: an agentkeys from before
// schema_migrations opens a file it can read (user_version 1) and refuses one
// from version 3 on as newer.

// migrate brings the file to the latest version in one IMMEDIATE transaction,
// its rows untouched.
func migrate(w *sql.DB) error {
	ctx := context.Background()
	tx, err := w.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer tx.Rollback()
	v, err := sqlmigrate.Apply(ctx, tx, migrations, func(ctx context.Context, tx *sql.Tx) (int, error) { return legacyVersion(ctx, tx) })
	if err != nil {
		return err
	}
	if _, err := tx.ExecContext(ctx, fmt.Sprintf(`PRAGMA user_version = %d`, v-1)); err != nil {
		return err
	}
	return tx.Commit()
}

type queryer interface {
	QueryRowContext(ctx context.Context, q string, args ...any) *sql.Row
}

// legacyVersion is the version of a file without schema_migrations, from its
// layout: 0 (new, no tables), 1 (no salt column) or 2.
func legacyVersion(ctx context.Context, q queryer) (int, error) {
	var uv, tables, salt int
	if err := q.QueryRowContext(ctx, `SELECT (SELECT user_version FROM pragma_user_version),
		(SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = 'entries'),
		(SELECT count(*) FROM pragma_table_info('entries') WHERE name = 'salt')`).Scan(&uv, &tables, &salt); err != nil {
		return 0, err
	}
	switch {
	case uv > 1:
		return uv + 1, nil // from a later agentkeys: refused as newer
	case tables == 0:
		return 0, nil
	case salt == 0:
		return 1, nil
	}
	return 2, nil
}

// version is the file's schema version, read without changing anything.
func version(ctx context.Context, q queryer) (int, error) {
	var n int
	if err := q.QueryRowContext(ctx, `SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = ?`, sqlmigrate.Table).Scan(&n); err != nil {
		return 0, err
	}
	if n == 0 {
		return legacyVersion(ctx, q)
	}
	return sqlmigrate.Version(ctx, q)
}

// Driver is a ledger.Driver on one SQLite file.
type Driver struct {
	w *sql.DB // exactly one connection: the writer, held as wc while open
	r *sql.DB // read-only pool

	// wc is the writer connection. Commit runs its transaction on it with
	// BEGIN IMMEDIATE and COMMIT statements: a database/sql Tx would start a
	// goroutine to watch its context and re-bind each statement, a third of a
	// small commit's CPU. wmu keeps one write transaction on it at a time.
	wc  *sql.Conn
	wmu sync.Mutex
	// statements prepared once on wc
	insEntry, putState, delState, newestSeq *sql.Stmt
	getState                                *sql.Stmt // on the read pool

	lock *fileLock // held while open: one writer process per file
	cols string    // entry columns to select (entryCols, or entryColsV0 read-only)

	// last is the head as of the last commit through this driver (valid when
	// known). Another handle may have moved it since: Commit checks it against the
	// newest seq inside its write transaction.
	last      ledger.Head
	lastOK    bool
	lastKnown bool
}

var _ ledger.Driver = (*Driver)(nil)

// ErrLocked means another process has the ledger open for writing.
var ErrLocked = errors.New("sqlite: the ledger is open in another process (is another agentkeys server using this data dir?)")

// Open opens (creating if needed) the ledger database at path for reading and
// writing. It takes an exclusive lock on path+".lock" for as long as it is open,
// shared by the handles of this process: another process gets ErrLocked.
func Open(path string) (*Driver, error) {
	lock, err := lockFile(path + ".lock")
	if err != nil {
		return nil, err
	}
	// The WAL and shm files take the database file's mode: create it 0600 first.
	if f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600); err == nil {
		f.Close()
	}
	d, err := open(path, false)
	if err != nil {
		lock.release()
		return nil, err
	}
	d.lock = lock
	return d, nil
}

// OpenReadOnly opens an existing ledger database for reading only (audit), even
// while a server has it open. Commit fails.
func OpenReadOnly(path string) (*Driver, error) {
	if _, err := os.Stat(path); err != nil {
		return nil, fmt.Errorf("sqlite: %w", err)
	}
	return open(path, true)
}

func open(path string, readOnly bool) (*Driver, error) {
	dsn := func(extra string) string {
		q := url.Values{}
		// A checkpoint runs inside the commit that fills the WAL past
		// wal_autocheckpoint pages, and every append waiting on that commit waits
		// for it too: 250 pages (SQLite's default is 1000) keeps each one short.
		// OIDC mint, 16 agents: p99 ~9.6 -> ~8.3 ms, same throughput
		// (docs/benchmarks.md).
		for _, p := range []string{"journal_mode(WAL)", "synchronous(FULL)", "wal_autocheckpoint(250)", "busy_timeout(10000)", "foreign_keys(ON)"} {
			q.Add("_pragma", p)
		}
		if extra != "" {
			q.Add("_pragma", extra)
		} else {
			q.Set("_txlock", "immediate")
		}
		return "file:" + path + "?" + q.Encode()
	}
	if readOnly {
		r, err := sql.Open("sqlite", dsn("query_only(1)"))
		if err != nil {
			return nil, err
		}
		d := &Driver{r: r, cols: entryCols}
		// A ledger not yet migrated (no server of this version opened it) is read
		// as it is: at version 1, every entry format 1.
		if v, err := version(context.Background(), r); err != nil {
			r.Close()
			return nil, fmt.Errorf("sqlite: %s: %w", path, err)
		} else if v > len(migrations) {
			r.Close()
			return nil, fmt.Errorf("sqlite: %s: %w", path, &sqlmigrate.NewerError{Have: v, Know: len(migrations)})
		} else if v < 2 {
			d.cols = entryColsV0
		}
		if d.getState, err = r.Prepare(getStateSQL); err != nil {
			r.Close()
			return nil, fmt.Errorf("sqlite: prepare: %w", err)
		}
		return d, nil
	}
	w, err := sql.Open("sqlite", dsn(""))
	if err != nil {
		return nil, fmt.Errorf("sqlite: open %s: %w", path, err)
	}
	w.SetMaxOpenConns(1)
	if err := migrate(w); err != nil {
		w.Close()
		return nil, fmt.Errorf("sqlite: create or migrate the schema in %s: %w", path, err)
	}
	r, err := sql.Open("sqlite", dsn("query_only(1)"))
	if err != nil {
		w.Close()
		return nil, err
	}
	r.SetMaxOpenConns(8)
	d := &Driver{w: w, r: r, cols: entryCols}
	if d.getState, err = r.Prepare(getStateSQL); err != nil {
		d.Close()
		return nil, fmt.Errorf("sqlite: prepare: %w", err)
	}
	if d.wc, err = w.Conn(context.Background()); err != nil {
		d.Close()
		return nil, fmt.Errorf("sqlite: open %s: %w", path, err)
	}
	for _, p := range []struct {
		s **sql.Stmt
		q string
	}{
		{&d.insEntry, `INSERT INTO entries (` + entryCols + `) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)`},
		{&d.putState, `INSERT INTO state (key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value`},
		{&d.delState, `DELETE FROM state WHERE key = ?`},
		{&d.newestSeq, `SELECT max(seq) FROM entries`},
	} {
		if *p.s, err = d.wc.PrepareContext(context.Background(), p.q); err != nil {
			d.Close()
			return nil, fmt.Errorf("sqlite: prepare: %w", err)
		}
	}
	return d, nil
}

// Close closes both connection pools.
func (d *Driver) Close() error {
	for _, s := range []*sql.Stmt{d.insEntry, d.putState, d.delState, d.newestSeq, d.getState} {
		if s != nil {
			s.Close()
		}
	}
	var errs []error
	if d.wc != nil {
		errs = append(errs, d.wc.Close())
	}
	for _, db := range []*sql.DB{d.r, d.w} {
		if db != nil {
			errs = append(errs, db.Close())
		}
	}
	if d.lock != nil {
		errs = append(errs, d.lock.release())
		d.lock = nil
	}
	return errors.Join(errs...)
}

const getStateSQL = `SELECT value FROM state WHERE key = ?`

// entryCols are the columns an entry is read from; entryColsV0 reads a version-1
// file (opened read-only before any migration).
const (
	entryCols   = `seq, prev_hash, time, kind, origin, payload, signer, sig, salt`
	entryColsV0 = `seq, prev_hash, time, kind, origin, payload, signer, sig, NULL`
)

func scanEntry(s interface{ Scan(...any) error }) (ledger.Entry, error) {
	var e ledger.Entry
	var seq int64
	var prev []byte
	if err := s.Scan(&seq, &prev, &e.Time, &e.Kind, &e.Origin, &e.Payload, &e.Signer, &e.Sig, &e.Salt); err != nil {
		return e, err
	}
	if len(e.Salt) == 0 {
		e.Salt = nil // format 1
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
	return head(ctx, d.r, d.cols)
}

type querier interface {
	QueryRowContext(ctx context.Context, q string, args ...any) *sql.Row
}

func head(ctx context.Context, q querier, cols string) (ledger.Head, bool, error) {
	e, err := scanEntry(q.QueryRowContext(ctx, `SELECT `+cols+` FROM entries ORDER BY seq DESC LIMIT 1`))
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
	if from > math.MaxInt64 {
		return nil, nil // seqs are signed 64-bit in the table: none is that large (int64(from) would wrap to the start)
	}
	rows, err := d.r.QueryContext(ctx, `SELECT `+d.cols+` FROM entries WHERE seq >= ? ORDER BY seq LIMIT ?`, int64(from), limit)
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
	err := d.getState.QueryRowContext(ctx, key).Scan(&v)
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
	if d.wc == nil {
		return errors.New("sqlite: ledger opened read-only")
	}
	d.wmu.Lock()
	defer d.wmu.Unlock()
	if _, err := d.wc.ExecContext(ctx, "BEGIN IMMEDIATE"); err != nil {
		return fmt.Errorf("sqlite: begin: %w", err)
	}
	done := false
	defer func() {
		if !done {
			d.wc.ExecContext(context.Background(), "ROLLBACK")
		}
	}()
	// Under the write lock: if another handle committed since this one did, the
	// head is read again.
	var newest sql.NullInt64
	if err := d.newestSeq.QueryRowContext(ctx).Scan(&newest); err != nil {
		return fmt.Errorf("sqlite: head: %w", err)
	}
	if !d.lastKnown || newest.Valid != d.lastOK || newest.Valid && uint64(newest.Int64) != d.last.Seq {
		var err error
		if d.last, d.lastOK, err = head(ctx, d.wc, d.cols); err != nil {
			return err
		}
		d.lastKnown = true
	}
	h, ok, first := d.last, d.lastOK, entries[0]
	if ok && (first.Seq != h.Seq+1 || first.PrevHash != h.Hash) || !ok && (first.Seq != 0 || first.PrevHash != ledger.Hash{}) {
		return ledger.ErrConflict
	}
	for i, e := range entries {
		if i > 0 && (e.Seq != entries[i-1].Seq+1) {
			return fmt.Errorf("sqlite: entries are not contiguous at seq %d", e.Seq)
		}
		if _, err := d.insEntry.ExecContext(ctx, int64(e.Seq), e.PrevHash[:], e.Time, e.Kind, e.Origin, e.Payload, e.Signer, e.Sig, e.Salt); err != nil {
			return fmt.Errorf("sqlite: insert seq %d: %w", e.Seq, err)
		}
	}
	for _, w := range writes {
		var err error
		if w.Value == nil {
			_, err = d.delState.ExecContext(ctx, w.Key)
		} else {
			_, err = d.putState.ExecContext(ctx, w.Key, w.Value)
		}
		if err != nil {
			return fmt.Errorf("sqlite: state %q: %w", w.Key, err)
		}
	}
	if _, err := d.wc.ExecContext(ctx, "COMMIT"); err != nil {
		d.lastKnown = false                          // the outcome is unknown: read it back next time
		return fmt.Errorf("sqlite: commit: %w", err) // the deferred ROLLBACK ends a transaction COMMIT left open
	}
	done = true
	last := entries[len(entries)-1]
	d.last, d.lastOK = ledger.Head{Seq: last.Seq, Hash: last.Hash(), Time: last.Time}, true
	return nil
}
