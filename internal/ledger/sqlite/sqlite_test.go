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

// TestWriterSettings: the writer runs with the durability and checkpoint settings
// the package documents.
func TestWriterSettings(t *testing.T) {
	d, err := sqlite.Open(filepath.Join(t.TempDir(), "ledger.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	for pragma, want := range map[string]string{"journal_mode": "wal", "synchronous": "2", "wal_autocheckpoint": "250"} {
		var got string
		if err := d.DB().QueryRow("PRAGMA " + pragma).Scan(&got); err != nil || got != want {
			t.Errorf("PRAGMA %s = %q (%v), want %q", pragma, got, err, want)
		}
	}
}
