package api_test

import (
	"context"
	"crypto/ed25519"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/agentkeys/agentkeys/internal/broker"
	"github.com/agentkeys/agentkeys/internal/enclave"
	"github.com/agentkeys/agentkeys/internal/ledger"
	"github.com/agentkeys/agentkeys/internal/ledger/postgres"
	"github.com/agentkeys/agentkeys/internal/ledger/postgres/pgtest"
	"github.com/agentkeys/agentkeys/internal/problem"
)

// eventually polls cond until it holds or 10 s pass (an event another
// goroutine causes: a notification arriving), and reports whether it held.
func eventually(cond func() bool) bool {
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
		if cond() {
			return true
		}
	}
	return cond()
}

// readyz is the status and reason of base's /readyz.
func readyz(t *testing.T, base string) (int, string) {
	t.Helper()
	resp, err := http.Get(base + "/readyz")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var body struct{ Reason string }
	json.NewDecoder(resp.Body).Decode(&body)
	return resp.StatusCode, body.Reason
}

// TestBrokersOnPostgres: two brokers, each with its own connection pool, on one
// PostgreSQL database and nothing else configured. They share the DPoP replay
// store and the limits through the database (a proof A accepted is refused by
// B; the read limit is exact across both), B follows A's commits when PostgreSQL
// notifies it (its poll is off: an hour), and /readyz says not ready once a
// broker last caught up with the store longer ago than --max-lag.
func TestBrokersOnPostgres(t *testing.T) {
	c := pgtest.Start(t)
	u := c.NewDatabase(t)
	e := newEnvOn(t, broker.Config{ReadLimit: 3, FollowEvery: time.Hour, MaxLag: 5 * time.Second},
		func() (ledger.Driver, error) { return postgres.Open(u) })
	b := e.peer(t)
	ctx := context.Background()
	owner, g, idKey := e.ownerKey(t)
	e.store(t, owner, g.Omni, "openai", []byte("sk-on-postgres"), "")
	ag := e.loadAgent(t, e.pairAgent(t, owner, idKey, g.Wallet, "bot", "openai"))
	if !eventually(func() bool { return b.head(t) == e.ledgerHead(t) }) {
		t.Fatalf("B did not follow A's commits without a poll: B at %d, A at %d", b.head(t).Seq, e.ledgerHead(t).Seq)
	}

	// One URL behind a balancer: a proof for it is good at either broker, once.
	htu := e.srv.URL + "/v1/credentials/openai/read"
	proof := ag.proof(t, htu)
	if code := ag.read(t, e.srv.URL, "openai", proof); code != http.StatusOK {
		t.Fatalf("read through A: %d", code)
	}
	if code := ag.read(t, b.url, "openai", proof); code != http.StatusUnauthorized {
		t.Fatalf("the proof A accepted, replayed to B: %d, want 401", code)
	}
	// Read limit 3 a session: one through A, two through B, then none anywhere.
	for i := range 2 {
		if code := ag.read(t, b.url, "openai", ag.proof(t, htu)); code != http.StatusOK {
			t.Fatalf("read %d through B: %d", i+2, code)
		}
	}
	for name, base := range map[string]string{"A": e.srv.URL, "B": b.url} {
		if code := ag.read(t, base, "openai", ag.proof(t, htu)); code != http.StatusTooManyRequests {
			t.Fatalf("a 4th read in the window through %s: %d, want 429: the limit is per broker", name, code)
		}
	}

	// A revocation through A reaches B's revocation set on the notification.
	if _, err := owner.RevokeAgent(ctx, "bot"); err != nil {
		t.Fatal(err)
	}
	if !eventually(func() bool { return b.head(t) == e.ledgerHead(t) }) {
		t.Fatal("B did not follow the revocation")
	}
	e.clock.Advance(time.Minute) // past the read window: a refusal now is the revocation's
	if code := ag.read(t, b.url, "openai", ag.proof(t, htu)); code != http.StatusUnauthorized {
		t.Fatalf("the agent revoked through A read through B: %d, want 401", code)
	}

	// Lag: nothing has made B catch up for longer than --max-lag (its clock
	// moved a minute): not ready, saying why; a follow makes it ready again.
	if code, why := readyz(t, b.url); code != http.StatusServiceUnavailable || !strings.Contains(why, "behind the ledger store") {
		t.Fatalf("B's /readyz after a minute without catching up: %d %q, want 503 behind the ledger store", code, why)
	}
	b.follow(t)
	if code, why := readyz(t, b.url); code != http.StatusOK {
		t.Fatalf("B's /readyz after following: %d %q", code, why)
	}
	e.clock.Advance(4 * time.Second)
	if code, _ := readyz(t, b.url); code != http.StatusOK {
		t.Fatalf("B's /readyz 4 s after catching up (bound 5 s): %d", code)
	}
}

// TestBrokersStartTogether: brokers given copies of one sealed seed (and the
// one platform key) that start at the same moment on an empty database all
// become ready on one chain: the ones that lose the race to write genesis start
// again on the winner's. A broker with another seed is refused, naming the fix.
func TestBrokersStartTogether(t *testing.T) {
	c := pgtest.Start(t)
	base := t.TempDir()
	pk := filepath.Join(base, "platform.key")
	first := filepath.Join(base, "first")
	enc, err := enclave.Open(enclave.Config{Dir: first, PlatformKeyFile: pk})
	if err != nil {
		t.Fatal(err)
	}
	enc.Close()
	sealed, err := os.ReadFile(filepath.Join(first, "seed.sealed"))
	if err != nil {
		t.Fatal(err)
	}
	open := func(t *testing.T, u, dir string) (*broker.Broker, error) {
		d, err := postgres.Open(u)
		if err != nil {
			t.Fatal(err)
		}
		b, err := broker.Open(broker.Config{DataDir: dir, PlatformKeyFile: pk, Issuer: "http://127.0.0.1:8090", Store: d})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(b.Close)
		return b, b.Start(context.Background())
	}
	for round := range 3 {
		u := c.NewDatabase(t)
		const n = 3
		brokers, errs := make([]*broker.Broker, n), make([]error, n)
		var wg sync.WaitGroup
		for i := range n {
			dir := filepath.Join(base, fmt.Sprintf("r%d-b%d", round, i))
			if err := os.MkdirAll(dir, 0o700); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(dir, "seed.sealed"), sealed, 0o600); err != nil {
				t.Fatal(err)
			}
			wg.Go(func() { brokers[i], errs[i] = open(t, u, dir) })
		}
		wg.Wait()
		for i, err := range errs {
			if err != nil {
				t.Fatalf("round %d: broker %d of %d starting together: %v", round, i, n, err)
			}
		}
		g := genesisHash(t, brokers[0])
		for i, b := range brokers[1:] {
			if genesisHash(t, b) != g {
				t.Fatalf("round %d: broker %d is on another chain", round, i+1)
			}
		}
		// One operator key is left, the winner's, which genesis names: the
		// losers removed the ones they made (orphans no governance accepts).
		gen, err := ledger.LoadGenesis(ledger.View(context.Background(), brokers[0].Storage()))
		if err != nil {
			t.Fatal(err)
		}
		var keys []string
		for i := range n {
			k, err := broker.LoadOperatorKey(broker.OperatorKeyPath(filepath.Join(base, fmt.Sprintf("r%d-b%d", round, i))))
			if err == nil {
				keys = append(keys, hex.EncodeToString(k.Public().(ed25519.PublicKey)))
			}
		}
		if len(keys) != 1 || len(gen.Governance.Keys) != 1 || keys[0] != gen.Governance.Keys[0] {
			t.Fatalf("round %d: operator keys left in the data dirs %v, genesis governance %v: want exactly the one genesis names", round, keys, gen.Governance.Keys)
		}
		if round == 0 {
			_, err := open(t, u, filepath.Join(base, "other-seed"))
			if err == nil || !errors.Is(err, ledger.ErrForeignLedger) || !strings.Contains(err.Error(), "ledger") {
				t.Fatalf("a broker with another seed: %v, want ErrForeignLedger", err)
			}
			var p *problem.Error
			if !errors.As(err, &p) || !strings.Contains(p.Fix, "seed.sealed") {
				t.Fatalf("the refusal does not name the fix (copy seed.sealed): %v", err)
			}
		}
	}
}

func genesisHash(t *testing.T, b *broker.Broker) ledger.Hash {
	t.Helper()
	es, err := b.Storage().Entries(context.Background(), 0, 1)
	if err != nil || len(es) != 1 {
		t.Fatalf("genesis: %v", err)
	}
	return es[0].Hash()
}
