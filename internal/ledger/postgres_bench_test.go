package ledger_test

import (
	"testing"

	"github.com/agentkeys/agentkeys/internal/ledger"
	"github.com/agentkeys/agentkeys/internal/ledger/postgres"
	"github.com/agentkeys/agentkeys/internal/ledger/postgres/pgtest"
)

// BenchmarkAppendPostgres is BenchmarkAppend on the PostgreSQL driver, against a
// throwaway cluster on this machine (fsync on, a Unix socket): each case on a
// fresh database.
func BenchmarkAppendPostgres(b *testing.B) {
	c := pgtest.Start(b)
	benchAppend(b, func(b *testing.B) *fixture {
		u := c.NewDatabase(b)
		return newFixtureOn(b, ledger.Options{}, 1, func() (ledger.Driver, error) { return postgres.Open(u) })
	})
}
