package api_test

import (
	"context"
	"fmt"
	"os"
	"runtime/pprof"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/agentkeys/agentkeys/internal/broker"
	"github.com/agentkeys/agentkeys/internal/ledger"
	"github.com/agentkeys/agentkeys/internal/oidc"
)

// bigLedgerSize is how many entries the start-up tests generate: 20,000 by
// default (quick enough for CI), AGENTKEYS_BIG_LEDGER to measure a full-size
// ledger (e.g. 1000000).
func bigLedgerSize(t testing.TB) int {
	if s := os.Getenv("AGENTKEYS_BIG_LEDGER"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 {
			t.Fatalf("AGENTKEYS_BIG_LEDGER=%q: want a positive entry count", s)
		}
		return n
	}
	return 20_000
}

// generateLedger appends about n entries (oidc.minted, the kind a busy broker
// writes most, signed by owners' wallets, filed in their usage trails) to e's
// ledger through the ledger itself: many appends in flight, so group commit
// writes them a batch per transaction. It returns the owners' omnis.
func generateLedger(t testing.TB, e *env, n int) []string {
	t.Helper()
	owners := make([]string, 4)
	for i := range owners {
		_, g := e.owner(t)
		owners[i] = g.Omni
	}
	l, err := e.b.Ledger()
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	start := l.Head().Seq
	const workers = 8
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			const inFlight = 256
			waits := make([]func() (ledger.Entry, error), 0, inFlight)
			flush := func() error {
				for _, wait := range waits {
					if _, err := wait(); err != nil {
						return err
					}
				}
				waits = waits[:0]
				return nil
			}
			for i := w; i < n; i += workers {
				owner := owners[i%len(owners)]
				m := oidc.Mint{Owner: owner, Actor: owner, ActorRole: "owner", SID: "s", Audience: "sts.amazonaws.com",
					Kid: "k1", JTI: fmt.Sprintf("jti-%d", i), Exp: 1_900_000_000, OwnerSelf: true}
				waits = append(waits, l.Begin(ctx, ledger.AccountOrigin(owner), oidc.KindMinted, m))
				if len(waits) == inFlight {
					if err := flush(); err != nil {
						errs <- err
						return
					}
				}
			}
			if err := flush(); err != nil {
				errs <- err
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	t.Logf("generated %d entries (head %d → %d)", n, start, l.Head().Seq)
	return owners
}

// TestBigLedgerStart generates a big ledger, restarts the broker on it and
// reports how long Start took (no bound on the wall clock here: see the e2e
// test and docs/benchmarks.md).
func TestBigLedgerStart(t *testing.T) {
	e := newEnv(t, broker.Config{})
	n := bigLedgerSize(t)
	t0 := time.Now()
	generateLedger(t, e, n)
	t.Logf("generation took %s", time.Since(t0))
	if f := os.Getenv("AGENTKEYS_START_PROFILE"); f != "" {
		out, err := os.Create(f)
		if err != nil {
			t.Fatal(err)
		}
		pprof.StartCPUProfile(out)
		defer pprof.StopCPUProfile()
	}
	t0 = time.Now()
	e.restart(t)
	t.Logf("start on %d entries took %s (with the start-up snapshot written at the last stop)", n, time.Since(t0))
	e.b.Close()
	if err := os.Remove(broker.SnapshotPath(e.dataDir)); err != nil {
		t.Fatal(err)
	}
	t0 = time.Now()
	e.open(t)
	t.Logf("start on %d entries took %s (no snapshot: as after a first start or a lost snapshot)", n, time.Since(t0))
}
