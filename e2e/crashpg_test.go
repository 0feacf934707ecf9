package e2e

import (
	"os"
	"path/filepath"
	"strconv"
	"testing"

	"github.com/agentkeys/agentkeys/internal/ledger/postgres/pgtest"
)

// envInt is the positive integer in the environment variable name, or def.
func envInt(t *testing.T, name string, def int) int {
	t.Helper()
	v := os.Getenv(name)
	if v == "" {
		return def
	}
	n, err := strconv.Atoi(v)
	if err != nil || n <= 0 {
		t.Fatalf("%s=%q: want a positive integer", name, v)
	}
	return n
}

// TestCrashConsistencyPostgres is TestCrashConsistency with the ledger on a
// throwaway PostgreSQL: the broker is killed (kill -9) at a random moment of
// each round while four writers append governance entries and an owner and its
// agent read a credential; in the middle round PostgreSQL itself is killed
// (kill -9 of the server and every backend) under that load instead, restarted
// on the same data dir, and the same broker must serve again before it is
// killed in turn. Afterwards every acknowledged entry is there with its hash,
// `audit verify --ledger` passes, and every read answered has its durable
// credential.read entry. AGENTKEYS_CRASH_ROUNDS sets the number of rounds
// (15 by default; docs/scale-out.md records a 100-round run).
func TestCrashConsistencyPostgres(t *testing.T) {
	c := pgtest.Start(t)
	t.Setenv("PGPASSWORD", c.Password()) // inherited by every process this test starts
	store := withoutPassword(t, c.NewDatabase(t))
	rounds := envInt(t, "AGENTKEYS_CRASH_ROUNDS", 15)
	crashRounds(t, crashConfig{rounds: rounds, dataDir: filepath.Join(t.TempDir(), "data"),
		args: []string{"--ledger", store}, store: store, audit: []string{"--ledger", store},
		storeCrash: func() { c.Kill(t); c.Restart(t) }, storeCrashAt: rounds / 2})
}
