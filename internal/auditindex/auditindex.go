// Package auditindex keeps each owner's usage trail queryable: it follows the
// ledger and files every credential entry's usage row under its owner in a
// separate SQLite file. It is a cache: the ledger is the truth, the file can be
// deleted at any time and is rebuilt from the entries, so it is written without
// fsync and never slows an append (per-owner rows would scatter over many pages
// of the ledger's own transaction).
package auditindex

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"sync"
	"time"

	"github.com/agentkeys/agentkeys/internal/agent"
	"github.com/agentkeys/agentkeys/internal/ledger"
	"github.com/agentkeys/agentkeys/internal/oidc"
	"github.com/agentkeys/agentkeys/internal/vault"

	_ "modernc.org/sqlite"
)

const schema = `
CREATE TABLE IF NOT EXISTS usage (owner TEXT NOT NULL, seq INTEGER NOT NULL, row BLOB NOT NULL, PRIMARY KEY (owner, seq)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS meta (k TEXT PRIMARY KEY, v BLOB NOT NULL);`

// Index is the usage index of one ledger.
type Index struct {
	db   *sql.DB
	src  Source
	log  *slog.Logger
	kick chan struct{}

	mu   sync.Mutex
	cond *sync.Cond
	next uint64 // first seq not yet indexed
}

// Source is where entries come from (the ledger driver).
type Source interface {
	Entries(ctx context.Context, from uint64, limit int) ([]ledger.Entry, error)
}

// Open opens (or creates) the index file at path over src.
func Open(path string, src Source, log *slog.Logger) (*Index, error) {
	q := url.Values{}
	for _, p := range []string{"journal_mode(WAL)", "synchronous(OFF)", "busy_timeout(10000)"} {
		q.Add("_pragma", p)
	}
	db, err := sql.Open("sqlite", "file:"+path+"?"+q.Encode())
	if err != nil {
		return nil, err
	}
	db.SetMaxOpenConns(1)
	if _, err := db.Exec(schema); err != nil {
		db.Close()
		return nil, fmt.Errorf("auditindex: %s: %w", path, err)
	}
	x := &Index{db: db, src: src, log: log, kick: make(chan struct{}, 1)}
	x.cond = sync.NewCond(&x.mu)
	var next int64
	if err := db.QueryRow(`SELECT v FROM meta WHERE k = 'next'`).Scan(&next); err != nil && !errors.Is(err, sql.ErrNoRows) {
		db.Close()
		return nil, err
	}
	x.next = uint64(next)
	return x, nil
}

// Bind ties the index to a chain: if it was built from another chain (other
// genesis) or from entries the ledger no longer has (a restore), it starts over.
func (x *Index) Bind(genesis ledger.Hash, head uint64) error {
	var g []byte
	err := x.db.QueryRow(`SELECT v FROM meta WHERE k = 'genesis'`).Scan(&g)
	if err != nil && !errors.Is(err, sql.ErrNoRows) {
		return err
	}
	x.mu.Lock()
	defer x.mu.Unlock()
	if string(g) == string(genesis[:]) && x.next <= head+1 {
		return nil
	}
	if _, err := x.db.Exec(`DELETE FROM usage; DELETE FROM meta`); err != nil {
		return err
	}
	if _, err := x.db.Exec(`INSERT INTO meta (k, v) VALUES ('genesis', ?), ('next', 0)`, genesis[:]); err != nil {
		return err
	}
	x.next = 0
	return nil
}

// Close closes the file.
func (x *Index) Close() error { return x.db.Close() }

// Notify tells the follower that entries were committed (ledger OnCommit).
func (x *Index) Notify([]ledger.Entry) {
	select {
	case x.kick <- struct{}{}:
	default:
	}
}

// Follow indexes entries as they are committed until ctx ends.
func (x *Index) Follow(ctx context.Context) {
	for {
		if err := x.catchUp(ctx); err != nil && ctx.Err() == nil {
			x.log.Error("usage index: catching up failed; will retry", "err", err.Error())
		}
		select {
		case <-ctx.Done():
			return
		case <-x.kick:
		case <-time.After(time.Second):
		}
	}
}

func (x *Index) catchUp(ctx context.Context) error {
	for {
		x.mu.Lock()
		from := x.next
		x.mu.Unlock()
		es, err := x.src.Entries(ctx, from, 1000)
		if err != nil || len(es) == 0 {
			return err
		}
		if err := x.add(ctx, es); err != nil {
			return err
		}
		x.mu.Lock()
		x.next = es[len(es)-1].Seq + 1
		x.cond.Broadcast()
		x.mu.Unlock()
	}
}

func (x *Index) add(ctx context.Context, es []ledger.Entry) error {
	tx, err := x.db.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer tx.Rollback()
	for i := range es {
		owner, u, ok := vault.UsageOf(&es[i])
		if !ok {
			if owner, u, ok = agent.UsageOf(&es[i]); !ok {
				if owner, u, ok = oidc.UsageOf(&es[i]); !ok {
					continue
				}
			}
		}
		row, _ := json.Marshal(u)
		if _, err := tx.ExecContext(ctx, `INSERT OR REPLACE INTO usage (owner, seq, row) VALUES (?, ?, ?)`, owner, int64(u.Seq), row); err != nil {
			return err
		}
	}
	if _, err := tx.ExecContext(ctx, `INSERT OR REPLACE INTO meta (k, v) VALUES ('next', ?)`, int64(es[len(es)-1].Seq+1)); err != nil {
		return err
	}
	return tx.Commit()
}

// WaitFor blocks until every entry up to seq is indexed (or ctx ends).
func (x *Index) WaitFor(ctx context.Context, seq uint64) error {
	stop := context.AfterFunc(ctx, func() {
		x.mu.Lock()
		x.cond.Broadcast()
		x.mu.Unlock()
	})
	defer stop()
	x.Notify(nil)
	x.mu.Lock()
	defer x.mu.Unlock()
	for x.next <= seq {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		x.cond.Wait()
	}
	return nil
}

// Usage returns an owner's rows matching f, oldest first.
func (x *Index) Usage(ctx context.Context, owner string, f vault.UsageFilter) ([]vault.Usage, error) {
	rows, err := x.db.QueryContext(ctx, `SELECT row FROM usage WHERE owner = ? ORDER BY seq`, owner)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := []vault.Usage{}
	for rows.Next() {
		var b []byte
		var u vault.Usage
		if err := rows.Scan(&b); err != nil {
			return nil, err
		}
		if json.Unmarshal(b, &u) == nil && f.Match(u) {
			out = append(out, u)
		}
	}
	return out, rows.Err()
}
