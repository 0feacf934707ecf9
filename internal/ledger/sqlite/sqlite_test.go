package sqlite_test

import (
	"path/filepath"
	"testing"

	"github.com/agentkeys/agentkeys/internal/ledger"
	"github.com/agentkeys/agentkeys/internal/ledger/ledgertest"
	"github.com/agentkeys/agentkeys/internal/ledger/sqlite"
)

func TestConformance(t *testing.T) {
	ledgertest.Run(t, func(t *testing.T) ledgertest.Opener {
		path := filepath.Join(t.TempDir(), "ledger.db")
		return func() (ledger.Driver, error) { return sqlite.Open(path) }
	})
}
