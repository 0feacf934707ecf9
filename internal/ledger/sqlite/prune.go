package sqlite

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/agentkeys/agentkeys/internal/ledger"
)

var _ ledger.Pruner = (*Driver)(nil)

// Anchor implements ledger.Pruner. A file from before the anchor table (opened
// read-only, not migrated) has none.
func (d *Driver) Anchor(ctx context.Context) (ledger.Anchor, bool, error) {
	return anchor(ctx, d.r)
}

func anchor(ctx context.Context, q querier) (ledger.Anchor, bool, error) {
	var a ledger.Anchor
	var n int
	if err := q.QueryRowContext(ctx, `SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = 'anchor'`).Scan(&n); err != nil || n == 0 {
		return a, false, err
	}
	var body []byte
	err := q.QueryRowContext(ctx, `SELECT body FROM anchor WHERE id = 1`).Scan(&body)
	if errors.Is(err, sql.ErrNoRows) {
		return a, false, nil
	}
	if err != nil {
		return a, false, fmt.Errorf("sqlite: anchor: %w", err)
	}
	if err := json.Unmarshal(body, &a); err != nil {
		return a, false, fmt.Errorf("sqlite: anchor: %w", err)
	}
	return a, true, nil
}

// Prune implements ledger.Pruner in one IMMEDIATE transaction: appends wait
// for it, and it sees the head they left.
func (d *Driver) Prune(ctx context.Context, a ledger.Anchor) error {
	if d.wc == nil {
		return errors.New("sqlite: ledger opened read-only")
	}
	body, err := json.Marshal(a)
	if err != nil {
		return err
	}
	d.wmu.Lock()
	defer d.wmu.Unlock()
	tx, err := d.wc.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("sqlite: begin: %w", err)
	}
	defer tx.Rollback()
	if old, ok, err := anchor(ctx, tx); err != nil {
		return err
	} else if ok && old.Entry.Seq >= a.Entry.Seq {
		return nil // already pruned this far
	}
	seq := int64(a.Entry.Seq)
	e, err := scanEntry(tx.QueryRowContext(ctx, `SELECT `+d.cols+` FROM entries WHERE seq = ?`, seq))
	if errors.Is(err, sql.ErrNoRows) {
		return fmt.Errorf("%w: the store does not hold entry %d", ledger.ErrPrune, seq)
	} else if err != nil {
		return fmt.Errorf("sqlite: prune: %w", err)
	}
	if e.Hash() != a.Entry.Hash() || a.Entry.Seq == 0 {
		return fmt.Errorf("%w: entry %d in the store is not the anchor's", ledger.ErrPrune, seq)
	}
	var after int
	if err := tx.QueryRowContext(ctx, `SELECT count(*) FROM (SELECT 1 FROM entries WHERE seq > ? LIMIT 1)`, seq).Scan(&after); err != nil {
		return fmt.Errorf("sqlite: prune: %w", err)
	}
	if after == 0 {
		return fmt.Errorf("%w: entry %d is the head; the head is never dropped", ledger.ErrPrune, seq)
	}
	if _, err := tx.ExecContext(ctx, `INSERT INTO anchor (id, body) VALUES (1, ?) ON CONFLICT(id) DO UPDATE SET body = excluded.body`, body); err != nil {
		return fmt.Errorf("sqlite: prune: %w", err)
	}
	if _, err := tx.ExecContext(ctx, `DELETE FROM entries WHERE seq > 0 AND seq <= ?`, seq); err != nil {
		return fmt.Errorf("sqlite: prune: %w", err)
	}
	return tx.Commit()
}
