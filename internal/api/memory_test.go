package api_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/agentkeys/agentkeys/internal/apiv1"
	"github.com/agentkeys/agentkeys/internal/broker"
	"github.com/agentkeys/agentkeys/internal/client"
	"github.com/agentkeys/agentkeys/internal/daemon"
	"github.com/agentkeys/agentkeys/internal/ledger"
	"github.com/agentkeys/agentkeys/internal/seal"
	"github.com/agentkeys/agentkeys/internal/vault"
)

// memorySize is how many paired agents and stored credentials TestServerMemory
// builds: 1,000 and 10,000 by default (quick enough for CI),
// AGENTKEYS_MEMORY=AGENTS,CREDENTIALS to measure another size (issue 12's is
// 10000,100000).
func memorySize(t testing.TB) (agents, creds int) {
	agents, creds = 1_000, 10_000
	if s := os.Getenv("AGENTKEYS_MEMORY"); s != "" {
		a, c, ok := strings.Cut(s, ",")
		var err1, err2 error
		agents, err1 = strconv.Atoi(a)
		creds, err2 = strconv.Atoi(c)
		if !ok || err1 != nil || err2 != nil || agents < 10 || creds < 10 {
			t.Fatalf("AGENTKEYS_MEMORY=%q: want AGENTS,CREDENTIALS (each at least 10), e.g. 10000,100000", s)
		}
	}
	return agents, creds
}

// TestServerMemory builds a ledger with many paired agents and stored
// credentials, starts the real agentkeys binary on it, has a few agents read
// their credentials through the API, and reports the server's resident memory
// (VmRSS, and its peak VmHWM). Agents pair through the broker's real flow
// (request, signed approval, poll), many at once so group commit batches them;
// credentials are real vault.stored entries with ciphertexts sealed to the
// broker's shielding key, appended through the ledger in per-owner groups. It
// asserts counts and that the server serves, never the time or the figure
// (docs/benchmarks.md records the full-size one).
func TestServerMemory(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary and a big ledger")
	}
	nAgents, nCreds := memorySize(t)
	// The env's clock is the wall clock's second: the binary that serves the
	// ledger later reads the wall clock, and must accept the sessions issued here.
	e := newEnvAt(t, broker.Config{Anon: unlimited()}, nil, time.Now().Truncate(time.Second))
	ctx := context.Background()

	// Ten agents and ten times as many credentials per owner.
	nOwners := max(1, nAgents/10)
	type owner struct {
		s     *client.Session
		omni  string
		key   []byte
		wall  string
		creds []string
	}
	owners := make([]owner, nOwners)
	for i := range owners {
		s, g, key := e.ownerKey(t)
		owners[i] = owner{s: s, omni: g.Omni, key: key, wall: g.Wallet}
	}
	for i := range nCreds {
		o := &owners[i%nOwners]
		o.creds = append(o.creds, fmt.Sprintf("svc-%d", len(o.creds)))
	}

	// A few agents of the first owner get a daemon directory: they read through
	// the served binary below.
	const readers = 3
	var dirs []daemon.Dir
	for i := range readers {
		dirs = append(dirs, e.pairAgent(t, owners[0].s, owners[0].key, owners[0].wall, fmt.Sprintf("reader-%d", i), owners[0].creds[:min(5, len(owners[0].creds))]...))
	}

	work := func(n int, do func(i int) error) {
		t.Helper()
		const workers = 16
		var wg sync.WaitGroup
		errs := make(chan error, workers)
		for w := range workers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := w; i < n; i += workers {
					if err := do(i); err != nil {
						errs <- err
						return
					}
				}
			}()
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Fatal(err)
		}
	}

	t0 := time.Now()
	work(nAgents-readers, func(i int) error {
		o := owners[i%nOwners]
		r, dk := e.pairRequest(t, o.wall, fmt.Sprintf("agent-%d", i), o.creds[i%len(o.creds)])
		created, err := e.c.RequestPairing(ctx, r)
		if err != nil {
			return err
		}
		if _, err := o.s.ApprovePairing(ctx, created.ID, apiv1.SignDecision(o.key, e.srv.URL, created.ID, vvcHash(t, o.s, created.ID), "approve", e.now().Unix())); err != nil {
			return err
		}
		st, err := e.c.PollPairing(ctx, created.ID, dk.proof)
		if err == nil && st.Status != apiv1.PairApproved {
			err = fmt.Errorf("poll: %+v", st)
		}
		return err
	})
	t.Logf("paired %d agents in %s", nAgents, time.Since(t0))

	t0 = time.Now()
	pub, err := e.enclave(t).PublicKey(seal.ShieldingPath)
	if err != nil {
		t.Fatal(err)
	}
	shield, _ := hex.DecodeString(pub.Public)
	l, _ := e.b.Ledger()
	work(nOwners, func(i int) error {
		o := owners[i]
		reqs := make([]ledger.Req, 0, len(o.creds))
		for _, svc := range o.creds {
			ct, err := seal.To(shield, seal.CredentialInfo(o.omni, apiv1.OwnerWide, svc), []byte("sk-"+o.omni[:8]+"-"+svc))
			if err != nil {
				return err
			}
			sum := sha256.Sum256(ct)
			reqs = append(reqs, ledger.Req{Origin: ledger.AccountOrigin(o.omni), Kind: vault.KindStored, Blob: ct,
				Payload: vault.Credential{Owner: o.omni, Agent: apiv1.OwnerWide, Service: svc, CiphertextHash: hex.EncodeToString(sum[:]),
					Version: 1, Approval: apiv1.ApprovalNone, Size: len(ct)}})
		}
		_, err := l.AppendAll(ctx, reqs)
		return err
	})
	t.Logf("stored %d credentials in %s", nCreds, time.Since(t0))

	// What the broker folded: every owner's agents and credentials.
	agents, stored := 0, 0
	for _, o := range owners {
		as, err := o.s.Agents(ctx)
		if err != nil {
			t.Fatal(err)
		}
		agents += len(as)
		cs, err := o.s.List(ctx)
		if err != nil {
			t.Fatal(err)
		}
		stored += len(cs)
	}
	if agents != nAgents || stored != nCreds {
		t.Fatalf("the broker holds %d agents and %d credentials, want %d and %d", agents, stored, nAgents, nCreds)
	}
	e.b.Close()

	// The real binary on that data dir, reached at the env's URL (its --issuer,
	// which the sessions and proofs name) through a proxy: after the clean stop
	// above (state from the snapshot at the head), then with no snapshot (state
	// rebuilt by folding every entry).
	exe := buildBinary(t)
	for _, start := range []string{"after a clean stop", "with no snapshot"} {
		if start == "with no snapshot" {
			if err := os.Remove(broker.SnapshotPath(e.dataDir)); err != nil {
				t.Fatal(err)
			}
		}
		cmd, base := startBinary(t, e, exe)
		target, _ := url.Parse(base)
		proxy := http.Handler(httputil.NewSingleHostReverseProxy(target))
		e.current.Store(&proxy)
		e.clock.Set(time.Now().Add(time.Second)) // the daemons' proofs are dated by the env's clock
		for i, d := range dirs {
			for _, svc := range owners[0].creds[:min(5, len(owners[0].creds))] {
				v, err := e.source(d).Get(ctx, svc, daemon.Wait{})
				if want := "sk-" + owners[0].omni[:8] + "-" + svc; err != nil || string(v) != want {
					t.Fatalf("%s: reader %d reading %s through the binary: %q, %v", start, i, svc, v, err)
				}
			}
		}
		rss, hwm := procMemory(t, cmd.Process.Pid)
		t.Logf("agentkeys server with %d paired agents and %d stored credentials, started %s: VmRSS %s, VmHWM %s", nAgents, nCreds, start, rss, hwm)
		// Stopped cleanly (SIGTERM) for the next start, which removes the snapshot.
		if err := cmd.Process.Signal(os.Interrupt); err != nil {
			t.Fatal(err)
		}
		if err := cmd.Wait(); err != nil {
			t.Fatalf("agentkeys server after SIGINT: %v", err)
		}
	}
}

// buildBinary builds cmd/agentkeys into a temp dir and returns its path.
func buildBinary(t *testing.T) string {
	t.Helper()
	exe := filepath.Join(t.TempDir(), "agentkeys")
	if out, err := exec.Command("go", "build", "-o", exe, "github.com/agentkeys/agentkeys/cmd/agentkeys").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return exe
}

// startBinary starts `agentkeys server` (exe) on e's data dir with e's URL as
// its issuer, waits until /readyz answers 200, and returns the process (the
// test waits for it; cleanup kills it if still running) and the address it
// listens on.
func startBinary(t *testing.T, e *env, exe string) (cmd *exec.Cmd, base string) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	cmd = exec.Command(exe, "server", "--listen", addr, "--data-dir", e.dataDir, "--issuer", e.srv.URL, "--platform-key", e.platformKey)
	cmd.Env = append(os.Environ(), "AGENTKEYS_HOME="+t.TempDir())
	stderr := &syncBuffer{}
	cmd.Stderr = stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			cmd.Process.Kill()
			cmd.Wait()
		}
		if t.Failed() {
			t.Logf("server stderr:\n%s", stderr.String())
		}
	})
	base = "http://" + addr
	deadline := time.Now().Add(2 * time.Minute) // bounds the wait; nothing asserts on time
	for {
		resp, err := http.Get(base + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return cmd, base
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("agentkeys server not ready:\n%s", stderr.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// procMemory reads VmRSS and VmHWM of process pid from /proc.
func procMemory(t *testing.T, pid int) (rss, hwm string) {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		k, v, _ := strings.Cut(line, ":")
		switch k {
		case "VmRSS":
			rss = strings.TrimSpace(v)
		case "VmHWM":
			hwm = strings.TrimSpace(v)
		}
	}
	if rss == "" || hwm == "" {
		t.Fatalf("/proc/%d/status has no VmRSS or VmHWM", pid)
	}
	return rss, hwm
}
