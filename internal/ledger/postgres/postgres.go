// Package postgres is the shared ledger driver: the entries and folded state in
// a PostgreSQL database (pgx v5), which several broker processes may open at
// once and still keep one chain. Every Commit is one transaction that first
// locks the single row of ledger_head (an UPDATE conditioned on the head the
// driver knows, else SELECT … FOR UPDATE): appends from every process
// serialise there, each checks that its entries link to the newest stored
// entry (else ledger.ErrConflict, nothing written), and the primary key on
// entries.seq refuses a duplicate even if that check were bypassed. Within a
// process the ledger's group commit still hands the driver whole batches, sent
// to the server in one pipelined round trip. PostgreSQL's defaults
// (synchronous_commit=on, fsync=on) make a returned Commit durable.
//
// The schema is versioned with package sqlmigrate, migrated under an advisory
// lock so that brokers starting together migrate once. Open fails with an error
// wrapping ledger.ErrUnreachable when the server cannot be reached; no error of
// this package contains the URL's password.
package postgres

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"math"
	"net/url"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/jackc/pgx/v5/stdlib"

	"github.com/agentkeys/agentkeys/internal/coalesce"
	"github.com/agentkeys/agentkeys/internal/ledger"
	"github.com/agentkeys/agentkeys/internal/ledger/sqlmigrate"
)

// migrations are the schema, one numbered step each. Keys are bytea so that
// Scan's prefix ranges and ORDER BY are plain byte order, whatever the key holds.
// ledger_head has one row, the newest seq (-1: empty): the lock every append
// takes.
var migrations = []sqlmigrate.Migration{
	{Name: "entries, state and the head row", Up: execUp(`
CREATE TABLE entries (
	seq       bigint PRIMARY KEY CHECK (seq >= 0),
	prev_hash bytea  NOT NULL,
	time      bigint NOT NULL,
	kind      text   NOT NULL,
	origin    text   NOT NULL,
	payload   bytea  NOT NULL,
	signer    text   NOT NULL,
	sig       bytea  NOT NULL,
	salt      bytea
);
CREATE TABLE state (
	key   bytea PRIMARY KEY,
	value bytea NOT NULL
);
CREATE TABLE ledger_head (
	id  smallint PRIMARY KEY CHECK (id = 1),
	seq bigint   NOT NULL
);
INSERT INTO ledger_head (id, seq) VALUES (1, -1);`)},
	{Name: "shared DPoP replays and rate limits", Up: execUp(sharedSchema)},
	{Name: "anchor: where a pruned chain resumes", Up: execUp(`
CREATE TABLE anchor (
	id   smallint PRIMARY KEY CHECK (id = 1),
	body bytea    NOT NULL
)`)},
	{Name: "rate limits: a count of spent requests per key", Up: execUp(rateCountSchema)},
	{Name: "rate limits: many calls in one", Up: execUp(rateManySchema)},
	{Name: "rate limits: two statements for most calls", Up: execUp(rateLazySchema)},
}

func execUp(q string) func(context.Context, *sql.Tx) error {
	return func(ctx context.Context, tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx, q)
		return err
	}
}

// migrateLock is the advisory lock key held while migrating ("agkledgr").
const migrateLock = 0x61676b6c65646772

// connectTimeout bounds connecting when the URL sets no connect_timeout.
const connectTimeout = 10 * time.Second

// maxConns is the pool size when the URL sets no pool_max_conns: the readers
// (as the SQLite driver's 8) and the committer.
const maxConns = 10

const entryCols = `seq, prev_hash, time, kind, origin, payload, signer, sig, salt`

// Driver is a ledger.Driver on one PostgreSQL database.
type Driver struct {
	pool     *pgxpool.Pool
	readOnly bool

	// last is the head as of the last commit through this driver (valid when
	// known). Another process may have moved it since: Commit compares it with
	// ledger_head under the row lock.
	mu        sync.Mutex
	last      ledger.Head
	lastOK    bool
	lastKnown bool

	listener listener // LISTEN connection, once Notify is called
	own      *backends

	// shared carries the calls of Replays and Limiters (shared.go) to
	// sharedPool, nil when read-only.
	sharedPool  *pgxpool.Pool
	shared      coalesce.Coalescer[sharedCall, sharedAnswer]
	replaySweep sweeper
}

var _ ledger.Driver = (*Driver)(nil)

// Open connects to the database at rawURL (postgres://USER:PASSWORD@HOST:PORT/DB
// and the options pgx reads, e.g. ?sslmode=verify-full, ?host=/run/postgresql,
// ?pool_max_conns=N, ?connect_timeout=S; the password also from PGPASSWORD or
// ~/.pgpass) and creates or migrates the schema.
func Open(rawURL string) (*Driver, error) { return open(rawURL, false) }

// OpenReadOnly connects for reading only (audit): every transaction is read-only,
// the schema is not migrated, and Commit fails.
func OpenReadOnly(rawURL string) (*Driver, error) { return open(rawURL, true) }

func open(rawURL string, readOnly bool) (*Driver, error) {
	scrub := scrubber(rawURL)
	cfg, err := pgxpool.ParseConfig(rawURL)
	if err != nil {
		return nil, fmt.Errorf("postgres: the URL does not parse: %s", scrub(err.Error()))
	}
	scrub = scrubber(rawURL, cfg.ConnConfig.Password)
	if cfg.ConnConfig.ConnectTimeout == 0 {
		cfg.ConnConfig.ConnectTimeout = connectTimeout
	}
	if !strings.Contains(rawURL, "pool_max_conns=") {
		cfg.MaxConns = maxConns
	}
	if cfg.ConnConfig.RuntimeParams == nil {
		cfg.ConnConfig.RuntimeParams = map[string]string{}
	}
	cfg.ConnConfig.RuntimeParams["application_name"] = "agentkeys"
	if readOnly {
		cfg.ConnConfig.RuntimeParams["default_transaction_read_only"] = "on"
	}
	own := &backends{pids: map[uint32]bool{}}
	cfg.AfterConnect = func(_ context.Context, c *pgx.Conn) error {
		own.add(c.PgConn().PID())
		return nil
	}
	cfg.BeforeClose = func(c *pgx.Conn) { own.remove(c.PgConn().PID()) }
	ctx, cancel := context.WithTimeout(context.Background(), cfg.ConnConfig.ConnectTimeout+5*time.Second)
	defer cancel()
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err == nil {
		err = pool.Ping(ctx)
	}
	if err != nil {
		if pool != nil {
			pool.Close()
		}
		return nil, &connectError{cause: oneLine(scrub(err.Error()))}
	}
	d := &Driver{pool: pool, readOnly: readOnly, own: own}
	if !readOnly {
		// The shared tables' own connections, which commit without waiting
		// for the WAL (shared.go, Durability); connected on first use.
		scfg := cfg.Copy()
		scfg.MaxConns = flights
		scfg.ConnConfig.RuntimeParams["synchronous_commit"] = "off"
		if d.sharedPool, err = pgxpool.NewWithConfig(ctx, scfg); err != nil {
			pool.Close()
			return nil, fmt.Errorf("postgres: %s", scrub(err.Error()))
		}
	}
	d.shared = coalesce.Coalescer[sharedCall, sharedAnswer]{Run: d.runShared, Max: maxBatch, Flights: flights, Timeout: sharedTimeout}
	if readOnly {
		err = d.checkVersion(ctx)
	} else {
		err = d.migrate(ctx)
	}
	if err != nil {
		d.Close()
		return nil, fmt.Errorf("postgres: %s", scrub(err.Error()))
	}
	return d, nil
}

// connectError is a failure to reach the server; it is ledger.ErrUnreachable.
type connectError struct{ cause string }

func (e *connectError) Error() string        { return "postgres: cannot connect: " + e.cause }
func (e *connectError) Is(target error) bool { return target == ledger.ErrUnreachable }

// oneLine joins the distinct lines of a message (pgx names each address it
// tried on a line of its own, often the same one twice).
func oneLine(s string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if l = strings.TrimSpace(l); l != "" && !slices.Contains(out, l) {
			out = append(out, l)
		}
	}
	return strings.Join(out, " ")
}

// scrubber returns a function that removes the URL's password (and pw, when set)
// from a message, should a library quote it.
func scrubber(rawURL string, pw ...string) func(string) string {
	var secrets []string
	if u, err := url.Parse(rawURL); err == nil {
		if p, ok := u.User.Password(); ok {
			secrets = append(secrets, p)
		}
		secrets = append(secrets, u.Query()["password"]...)
	}
	secrets = append(secrets, pw...)
	return func(s string) string {
		for _, p := range secrets {
			if p != "" {
				s = strings.ReplaceAll(s, p, "xxxxx")
			}
		}
		return s
	}
}

// migrate brings the schema up to date in one transaction, under an advisory
// lock: a second broker starting at the same time waits and finds it done.
func (d *Driver) migrate(ctx context.Context) error {
	db := stdlib.OpenDBFromPool(d.pool)
	defer db.Close()
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer tx.Rollback()
	if _, err := tx.ExecContext(ctx, fmt.Sprintf(`SELECT pg_advisory_xact_lock(%d)`, migrateLock)); err != nil {
		return fmt.Errorf("locking for migration: %w", err)
	}
	if _, err := sqlmigrate.Apply(ctx, tx, migrations, nil); err != nil {
		return fmt.Errorf("create or migrate the schema: %w", err)
	}
	return tx.Commit()
}

// checkVersion refuses, read-only, a database without the ledger's schema or
// with a newer one.
func (d *Driver) checkVersion(ctx context.Context) error {
	var exists bool
	if err := d.pool.QueryRow(ctx, `SELECT to_regclass($1) IS NOT NULL`, sqlmigrate.Table).Scan(&exists); err != nil {
		return err
	}
	if !exists {
		return errors.New("the database holds no ledger (no agentkeys server has opened it)")
	}
	db := stdlib.OpenDBFromPool(d.pool)
	defer db.Close()
	v, err := sqlmigrate.Version(ctx, db)
	if err != nil {
		return err
	}
	if v > len(migrations) {
		return &sqlmigrate.NewerError{Have: v, Know: len(migrations)}
	}
	return nil
}

// Close stops listening and closes the connection pools.
func (d *Driver) Close() error {
	d.stopListening()
	d.pool.Close()
	if d.sharedPool != nil {
		d.sharedPool.Close()
	}
	return nil
}

type row interface{ Scan(...any) error }

func scanEntry(s row) (ledger.Entry, error) {
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
		return e, fmt.Errorf("postgres: entry %d: prev_hash has %d bytes", seq, len(prev))
	}
	copy(e.PrevHash[:], prev)
	return e, nil
}

type querier interface {
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

// entryHead is the position of the entry at seq.
func entryHead(ctx context.Context, q querier, seq int64) (ledger.Head, error) {
	e, err := scanEntry(q.QueryRow(ctx, `SELECT `+entryCols+` FROM entries WHERE seq = $1`, seq))
	if err != nil {
		return ledger.Head{}, fmt.Errorf("postgres: reading the head entry %d: %w", seq, err)
	}
	return ledger.Head{Seq: e.Seq, Hash: e.Hash(), Time: e.Time}, nil
}

// Head implements ledger.Driver; the hash is computed from the stored entry.
func (d *Driver) Head(ctx context.Context) (ledger.Head, bool, error) {
	e, err := scanEntry(d.pool.QueryRow(ctx, `SELECT `+entryCols+` FROM entries ORDER BY seq DESC LIMIT 1`))
	if errors.Is(err, pgx.ErrNoRows) {
		return ledger.Head{}, false, nil
	}
	if err != nil {
		return ledger.Head{}, false, fmt.Errorf("postgres: head: %w", err)
	}
	return ledger.Head{Seq: e.Seq, Hash: e.Hash(), Time: e.Time}, true, nil
}

// Entries implements ledger.Driver.
func (d *Driver) Entries(ctx context.Context, from uint64, limit int) ([]ledger.Entry, error) {
	if from > math.MaxInt64 || limit <= 0 {
		return nil, nil // seqs are signed 64-bit in the table: none is that large
	}
	rows, err := d.pool.Query(ctx, `SELECT `+entryCols+` FROM entries WHERE seq >= $1 ORDER BY seq LIMIT $2`, int64(from), limit)
	if err != nil {
		return nil, fmt.Errorf("postgres: entries: %w", err)
	}
	defer rows.Close()
	var out []ledger.Entry
	for rows.Next() {
		e, err := scanEntry(rows)
		if err != nil {
			return nil, fmt.Errorf("postgres: entries: %w", err)
		}
		out = append(out, e)
	}
	return out, rows.Err()
}

// Get implements ledger.Reader.
func (d *Driver) Get(ctx context.Context, key string) ([]byte, bool, error) {
	var v []byte
	err := d.pool.QueryRow(ctx, `SELECT value FROM state WHERE key = $1`, []byte(key)).Scan(&v)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, fmt.Errorf("postgres: get %q: %w", key, err)
	}
	if v == nil {
		v = []byte{}
	}
	return v, true, nil
}

// Scan implements ledger.Reader, in key (byte) order.
func (d *Driver) Scan(ctx context.Context, prefix string, fn func(string, []byte) error) error {
	q, args := `SELECT key, value FROM state WHERE key >= $1`, []any{[]byte(prefix)}
	if end, ok := prefixEnd(prefix); ok {
		q += ` AND key < $2`
		args = append(args, end)
	}
	rows, err := d.pool.Query(ctx, q+` ORDER BY key`, args...)
	if err != nil {
		return fmt.Errorf("postgres: scan %q: %w", prefix, err)
	}
	defer rows.Close()
	for rows.Next() {
		var k, v []byte
		if err := rows.Scan(&k, &v); err != nil {
			return err
		}
		if v == nil {
			v = []byte{}
		}
		if err := fn(string(k), v); err != nil {
			return err
		}
	}
	return rows.Err()
}

// prefixEnd returns the smallest byte string greater than every one with prefix p.
func prefixEnd(p string) ([]byte, bool) {
	b := []byte(p)
	for i := len(b) - 1; i >= 0; i-- {
		if b[i] < 0xff {
			b[i]++
			return b[:i+1], true
		}
	}
	return nil, false
}

// Commit implements ledger.Driver: one transaction holding the ledger_head row
// lock from the link check to COMMIT.
//
// When the driver knows the head (its own last commit, or what it read), the
// commit is one round trip: one pipeline, whose statements run as one
// implicit transaction committed at its Sync, that first moves ledger_head
// from the known head to the new one — taking the row lock every append
// takes — and fails (division by zero, nothing written) if the head is no
// longer the known one; then the entries, the state writes and the
// notification. If the head moved (another process appended), the entries,
// linking to the known head, cannot link to the newest entry: ErrConflict,
// as the long way would answer after three more round trips. When the driver
// does not know the head (after a conflict, an error, or at first), or the
// entries do not link to the known head, the commit takes the long way: lock
// the head row, read the head entry, compare, write, commit (four round trips).
func (d *Driver) Commit(ctx context.Context, entries []ledger.Entry, writes []ledger.Write) error {
	if len(entries) == 0 {
		return errors.New("postgres: commit without entries")
	}
	if d.readOnly {
		return errors.New("postgres: ledger opened read-only")
	}
	for i := 1; i < len(entries); i++ {
		if entries[i].Seq != entries[i-1].Seq+1 {
			return fmt.Errorf("postgres: entries are not contiguous at seq %d", entries[i].Seq)
		}
	}
	last := entries[len(entries)-1]
	if last.Seq > math.MaxInt64 {
		return fmt.Errorf("postgres: seq %d does not fit the table", last.Seq)
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.lastKnown && links(d.last, d.lastOK, entries[0]) {
		err := d.commitKnown(ctx, entries, writes)
		if errors.Is(err, errHeadMoved) {
			// The entries link to the known head, which is no longer the
			// newest entry: they cannot link to the newest.
			return ledger.ErrConflict
		}
		return err
	}
	return d.commitLocked(ctx, entries, writes)
}

// links reports whether first links to the head h (ok false: the chain is empty).
func links(h ledger.Head, ok bool, first ledger.Entry) bool {
	if ok {
		return first.Seq == h.Seq+1 && first.PrevHash == h.Hash
	}
	return first.Seq == 0 && first.PrevHash == ledger.Hash{}
}

// errHeadMoved means commitKnown found the head row not at the known head and
// wrote nothing.
var errHeadMoved = errors.New("postgres: the head moved")

// headMovedCode is the SQLSTATE of the head check's division by zero.
const headMovedCode = "22012"

// commitKnown is the one-round-trip commit on the head the driver knows.
func (d *Driver) commitKnown(ctx context.Context, entries []ledger.Entry, writes []ledger.Write) error {
	known := int64(-1)
	if d.lastOK {
		known = int64(d.last.Seq)
	}
	first, last := entries[0], entries[len(entries)-1]
	var b pgx.Batch
	b.Queue(`WITH moved AS (UPDATE ledger_head SET seq = $1 WHERE id = 1 AND seq = $2 RETURNING 1)
SELECT 1 / count(*)::int FROM moved`, int64(last.Seq), known)
	queueWrites(&b, entries, writes)
	err := d.pool.SendBatch(ctx, &b).Close()
	var pgErr *pgconn.PgError
	switch {
	case errors.As(err, &pgErr) && pgErr.Code == headMovedCode:
		d.lastKnown = false
		return errHeadMoved
	case err != nil:
		d.lastKnown = false // the outcome may be unknown: read it back next time
		return fmt.Errorf("postgres: writing entries %d-%d: %w", first.Seq, last.Seq, err)
	}
	d.last, d.lastOK = ledger.Head{Seq: last.Seq, Hash: last.Hash(), Time: last.Time}, true
	return nil
}

// queueWrites queues the entries, the state writes and the notification.
func queueWrites(b *pgx.Batch, entries []ledger.Entry, writes []ledger.Write) {
	for _, e := range entries {
		b.Queue(`INSERT INTO entries (`+entryCols+`) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)`,
			int64(e.Seq), e.PrevHash[:], e.Time, e.Kind, e.Origin, e.Payload, e.Signer, e.Sig, e.Salt)
	}
	for _, w := range writes {
		if w.Value == nil {
			b.Queue(`DELETE FROM state WHERE key = $1`, []byte(w.Key))
		} else {
			b.Queue(`INSERT INTO state (key, value) VALUES ($1, $2) ON CONFLICT (key) DO UPDATE SET value = excluded.value`, []byte(w.Key), w.Value)
		}
	}
	// Delivered to every listener when, and only if, this transaction commits.
	b.Queue(`SELECT pg_notify('` + notifyChannel + `', '')`)
}

// commitLocked is the long way: lock the head row, check, write, commit.
func (d *Driver) commitLocked(ctx context.Context, entries []ledger.Entry, writes []ledger.Write) error {
	first, last := entries[0], entries[len(entries)-1]
	tx, err := d.pool.Begin(ctx)
	if err != nil {
		return fmt.Errorf("postgres: begin: %w", err)
	}
	defer tx.Rollback(context.Background())
	// Every writer of every process waits here for the one before to finish.
	var newest int64
	if err := tx.QueryRow(ctx, `SELECT seq FROM ledger_head WHERE id = 1 FOR UPDATE`).Scan(&newest); err != nil {
		return fmt.Errorf("postgres: locking the head: %w", err)
	}
	if !d.lastKnown || (newest >= 0) != d.lastOK || newest >= 0 && uint64(newest) != d.last.Seq {
		d.lastOK = newest >= 0
		if d.lastOK {
			if d.last, err = entryHead(ctx, tx, newest); err != nil {
				return err
			}
		}
		d.lastKnown = true
	}
	if !links(d.last, d.lastOK, first) {
		return ledger.ErrConflict
	}
	var b pgx.Batch
	b.Queue(`UPDATE ledger_head SET seq = $1 WHERE id = 1`, int64(last.Seq))
	queueWrites(&b, entries, writes)
	if err := tx.SendBatch(ctx, &b).Close(); err != nil {
		return fmt.Errorf("postgres: writing entries %d-%d: %w", first.Seq, last.Seq, err)
	}
	if err := tx.Commit(ctx); err != nil {
		d.lastKnown = false // the outcome is unknown: read it back next time
		return fmt.Errorf("postgres: commit: %w", err)
	}
	d.last, d.lastOK = ledger.Head{Seq: last.Seq, Hash: last.Hash(), Time: last.Time}, true
	return nil
}
