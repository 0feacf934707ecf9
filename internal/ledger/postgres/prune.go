package postgres

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"

	"github.com/agentkeys/agentkeys/internal/ledger"
)

var _ ledger.Pruner = (*Driver)(nil)

// pruneLock is the advisory lock key one Prune holds at a time ("agkprune").
const pruneLock = 0x61676b7072756e65

// Anchor implements ledger.Pruner. A database from before the anchor table
// (read-only, not migrated) has none.
func (d *Driver) Anchor(ctx context.Context) (ledger.Anchor, bool, error) {
	return anchor(ctx, d.pool)
}

func anchor(ctx context.Context, q querier) (ledger.Anchor, bool, error) {
	var a ledger.Anchor
	var exists bool
	if err := q.QueryRow(ctx, `SELECT to_regclass('anchor') IS NOT NULL`).Scan(&exists); err != nil || !exists {
		return a, false, err
	}
	var body []byte
	err := q.QueryRow(ctx, `SELECT body FROM anchor WHERE id = 1`).Scan(&body)
	if errors.Is(err, pgx.ErrNoRows) {
		return a, false, nil
	}
	if err != nil {
		return a, false, fmt.Errorf("postgres: anchor: %w", err)
	}
	if err := json.Unmarshal(body, &a); err != nil {
		return a, false, fmt.Errorf("postgres: anchor: %w", err)
	}
	return a, true, nil
}

// Prune implements ledger.Pruner. It does not take the head row's lock:
// brokers keep appending at the head while it deletes old rows, which none of
// them writes (they read them only to serve history, from the archive once gone).
func (d *Driver) Prune(ctx context.Context, a ledger.Anchor) error {
	if d.readOnly {
		return errors.New("postgres: ledger opened read-only")
	}
	body, err := json.Marshal(a)
	if err != nil {
		return err
	}
	tx, err := d.pool.Begin(ctx)
	if err != nil {
		return fmt.Errorf("postgres: begin: %w", err)
	}
	defer tx.Rollback(context.Background())
	if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock($1)`, int64(pruneLock)); err != nil {
		return fmt.Errorf("postgres: prune: %w", err)
	}
	if old, ok, err := anchor(ctx, tx); err != nil {
		return err
	} else if ok && old.Entry.Seq >= a.Entry.Seq {
		return nil // already pruned this far
	}
	seq := int64(a.Entry.Seq)
	e, err := scanEntry(tx.QueryRow(ctx, `SELECT `+entryCols+` FROM entries WHERE seq = $1`, seq))
	if errors.Is(err, pgx.ErrNoRows) {
		return fmt.Errorf("%w: the store does not hold entry %d", ledger.ErrPrune, seq)
	} else if err != nil {
		return fmt.Errorf("postgres: prune: %w", err)
	}
	if e.Hash() != a.Entry.Hash() || a.Entry.Seq == 0 {
		return fmt.Errorf("%w: entry %d in the store is not the anchor's", ledger.ErrPrune, seq)
	}
	var after bool
	if err := tx.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM entries WHERE seq > $1)`, seq).Scan(&after); err != nil {
		return fmt.Errorf("postgres: prune: %w", err)
	}
	if !after {
		return fmt.Errorf("%w: entry %d is the head; the head is never dropped", ledger.ErrPrune, seq)
	}
	if _, err := tx.Exec(ctx, `INSERT INTO anchor (id, body) VALUES (1, $1) ON CONFLICT (id) DO UPDATE SET body = excluded.body`, body); err != nil {
		return fmt.Errorf("postgres: prune: %w", err)
	}
	if _, err := tx.Exec(ctx, `DELETE FROM entries WHERE seq > 0 AND seq <= $1`, seq); err != nil {
		return fmt.Errorf("postgres: prune: %w", err)
	}
	return tx.Commit(ctx)
}
