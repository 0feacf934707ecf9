package postgres

import (
	"context"

	"github.com/jackc/pgx/v5"

	"github.com/agentkeys/agentkeys/internal/dpop"
	"github.com/agentkeys/agentkeys/internal/ratelimit"
)

// QueryRowForTest runs q on the driver's pool (tests inspect the tables).
func (d *Driver) QueryRowForTest(ctx context.Context, q string, args ...any) pgx.Row {
	return d.pool.QueryRow(ctx, q, args...)
}

// DigestForTest is the digest a limiter stores of key.
func DigestForTest(key string) []byte { return digest(key) }

// RecordBatchForTest sends First calls (whole seconds) through s (from
// Driver.Replays) as one batch, as its coalescer would.
func RecordBatchForTest(s dpop.ReplayStore, ids []dpop.ProofID, nows, expiries []int64) ([]bool, error) {
	calls := make([]sharedCall, len(ids))
	for i := range ids {
		calls[i] = sharedCall{proof: proof{id: ids[i], now: nows[i], expiry: expiries[i]}}
	}
	out, err := s.(*replays).d.runShared(context.Background(), calls)
	fresh := make([]bool, len(out))
	for i, a := range out {
		fresh[i] = a.fresh
	}
	return fresh, err
}

// SpendBatchForTest sends Allow calls (unix ns) through l (from
// Driver.Limiters) as one batch, as its coalescer would; the answers are
// agentkeys_allow's (0 admitted, > 0 the wait, -1 the rule's keys full).
func SpendBatchForTest(l ratelimit.Limiter, keys []string, nows []int64) ([]int64, error) {
	lim := l.(*limiter)
	calls := make([]sharedCall, len(keys))
	for i := range keys {
		calls[i] = sharedCall{lim: lim, spend: spend{key: digest(keys[i]), now: nows[i]}}
	}
	out, err := lim.d.runShared(context.Background(), calls)
	waits := make([]int64, len(out))
	for i, a := range out {
		waits[i] = a.wait
	}
	return waits, err
}

// OwnNotificationsForTest is how many notifications of its own commits the
// driver's listener has heard (and not woken for).
func (d *Driver) OwnNotificationsForTest() int64 { return d.listener.own.Load() }
