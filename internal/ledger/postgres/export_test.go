package postgres

import (
	"context"

	"github.com/jackc/pgx/v5"
)

// QueryRowForTest runs q on the driver's pool (tests inspect the tables).
func (d *Driver) QueryRowForTest(ctx context.Context, q string, args ...any) pgx.Row {
	return d.pool.QueryRow(ctx, q, args...)
}

// DigestForTest is the digest a limiter stores of key.
func DigestForTest(key string) []byte { return digest(key) }
