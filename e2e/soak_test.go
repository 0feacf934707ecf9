package e2e

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/agentkeys/agentkeys/internal/apiv1"
	"github.com/agentkeys/agentkeys/internal/client"
	"github.com/agentkeys/agentkeys/internal/daemon"
	"github.com/agentkeys/agentkeys/internal/ledger/postgres/pgtest"
	"github.com/agentkeys/agentkeys/internal/problem"
	"github.com/agentkeys/agentkeys/internal/seal"
)

// rssKB is the resident set of process pid in KiB, from /proc.
func rssKB(t *testing.T, pid int) int {
	t.Helper()
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		t.Fatal(err)
	}
	for line := range strings.Lines(string(b)) {
		if f := strings.Fields(line); len(f) >= 2 && f[0] == "VmRSS:" {
			n, err := strconv.Atoi(f[1])
			if err != nil {
				t.Fatalf("VmRSS line %q: %v", line, err)
			}
			return n
		}
	}
	t.Fatalf("no VmRSS in /proc/%d/status", pid)
	return 0
}

// envDuration is the duration in the environment variable name, or def.
func envDuration(t *testing.T, name string, def time.Duration) time.Duration {
	t.Helper()
	v := os.Getenv(name)
	if v == "" {
		return def
	}
	d, err := time.ParseDuration(v)
	if err != nil || d <= 0 {
		t.Fatalf("%s=%q: want a positive duration, e.g. 3m", name, v)
	}
	return d
}

// soakAgent is one paired agent of the soak: its session, and what it was
// answered.
type soakAgent struct {
	alias   string
	clients []*client.AgentSession // one per broker
	channel []byte
	since   time.Time // when it started making requests
	// reads and mints admitted, and RATE_LIMITED answers
	reads, mints, limited atomic.Int64
}

// soakLimits are the soak's per-session read and per-agent mint limits, one
// minute windows, exact across brokers.
const (
	soakReadLimit = 120
	soakMintLimit = 40
)

// TestSoakTwoBrokers: AGENTKEYS_SOAK_AGENTS agents (10 by default) read a
// credential and mint identity tokens through two brokers on one PostgreSQL
// for AGENTKEYS_SOAK_DURATION (20 s by default), each request to either broker
// at random, while the owner pairs one more agent every sampling period,
// alternately through each broker. Every answer is a correct value, a token,
// or the expected RATE_LIMITED (never more admitted per agent than the limits,
// summed over both brokers, allow); nothing else. Each broker's RSS is sampled
// throughout and logged; the last sample must be under twice the one after
// warm-up (a loose bound: a leak that grows with requests fails, GC noise does
// not). `audit verify --ledger` passes at the end.
func TestSoakTwoBrokers(t *testing.T) {
	nAgents := envInt(t, "AGENTKEYS_SOAK_AGENTS", 10)
	duration := envDuration(t, "AGENTKEYS_SOAK_DURATION", 20*time.Second)
	const samples = 20
	c := pgtest.Start(t)
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("PostgreSQL log:\n%s", c.Log())
		}
	})
	h := newHarness(t)
	h.plant("PostgreSQL password", c.Password())
	t.Setenv("PGPASSWORD", c.Password())
	ledgerURL := withoutPassword(t, c.NewDatabase(t))
	const audience = "soak.example"
	a, b, oa := twoBrokers(t, h, ledgerURL, "--oidc-audience", audience,
		"--read-rate", fmt.Sprintf("%d/1m", soakReadLimit), "--mint-rate", fmt.Sprintf("%d/1m", soakMintLimit),
		"--pair-rate", "100000/1m,100000/1m", "--poll-rate", "100000/1m,100000/1m")
	brokers := []*server{a, b}
	o := h.akNewOwner(a)
	const service = "soaksvc"
	secret := "sk-soak-" + randomHex(16)
	h.akStore(o, service, secret)

	pair := func(i int) *soakAgent {
		t.Helper()
		ag := &soakAgent{alias: fmt.Sprintf("soak%d", i)}
		dh := h.pairAgent(brokers[i%2], o, ag.alias, service+",oidc:"+audience)
		ds, err := daemon.DirOf(dh).LoadSession()
		if err != nil {
			t.Fatal(err)
		}
		key, err := daemon.DecodeKey(ds.ProofKey)
		if err != nil {
			t.Fatal(err)
		}
		if ag.channel, err = base64.StdEncoding.DecodeString(ds.ChannelKey); err != nil {
			t.Fatal(err)
		}
		for _, s := range brokers {
			cl, err := client.New(s.url)
			if err != nil {
				t.Fatal(err)
			}
			ag.clients = append(ag.clients, cl.WithAgent(ds.Token, key))
		}
		return ag
	}

	var (
		stop     atomic.Bool
		wg       sync.WaitGroup
		mu       sync.Mutex
		agents   []*soakAgent
		errCount atomic.Int64
	)
	// run makes requests as ag until stop: a read or a mint, to either broker.
	run := func(ag *soakAgent) {
		ag.since = time.Now()
		mu.Lock()
		agents = append(agents, ag)
		mu.Unlock()
		wg.Go(func() {
			for !stop.Load() {
				i := rand.IntN(2)
				ctx, cancel := context.WithTimeout(context.Background(), stopTimeout)
				var err error
				if rand.IntN(2) == 0 {
					var res *apiv1.ReadResult
					res, err = ag.clients[i].Read(ctx, service)
					if err == nil {
						v, oerr := seal.OpenBox(ag.channel, []byte(res.Info), res.Sealed)
						if oerr != nil || string(v) != secret {
							t.Errorf("%s read through %s: not the stored value (%v)", ag.alias, brokers[i].url, oerr)
						}
						ag.reads.Add(1)
					}
				} else {
					var tok *apiv1.OIDCToken
					tok, err = ag.clients[i].OIDCToken(ctx, audience, 300)
					if err == nil {
						if strings.Count(tok.Token, ".") != 2 {
							t.Errorf("%s mint through %s: not a JWS", ag.alias, brokers[i].url)
						}
						ag.mints.Add(1)
					}
				}
				cancel()
				if err != nil {
					if p := (*problem.Error)(nil); errors.As(err, &p) && p.Code == problem.RateLimited {
						ag.limited.Add(1)
					} else if errCount.Add(1) <= 10 {
						t.Errorf("%s through %s: %v", ag.alias, brokers[i].url, err)
					}
				}
				time.Sleep(time.Duration(20+rand.IntN(60)) * time.Millisecond)
			}
		})
	}
	for i := range nAgents {
		run(pair(i))
	}
	started := time.Now()
	// The owner pairs one more agent each period, alternately through each
	// broker; each broker's RSS is sampled after it.
	period := duration / samples
	rss := [2][]int{}
	paired := nAgents
	for time.Since(started) < duration {
		next := time.Now().Add(period)
		run(pair(paired))
		paired++
		for i, s := range brokers {
			rss[i] = append(rss[i], rssKB(t, s.cmd.Process.Pid))
		}
		time.Sleep(time.Until(next)) // pacing, not an assertion
	}
	stop.Store(true)
	wg.Wait()
	stopped := time.Now()
	elapsed := stopped.Sub(started)

	var reads, mints, limited int64
	for _, ag := range agents {
		// Any span of d holds at most d/W+1 disjoint windows of W.
		span := stopped.Sub(ag.since)
		windows := int64(span/time.Minute) + 1
		reads += ag.reads.Load()
		mints += ag.mints.Load()
		limited += ag.limited.Load()
		if n := ag.reads.Load(); n > soakReadLimit*windows {
			t.Errorf("%s: %d reads admitted across both brokers in %s, the limit allows %d", ag.alias, n, span, soakReadLimit*windows)
		}
		if n := ag.mints.Load(); n > soakMintLimit*windows {
			t.Errorf("%s: %d mints admitted across both brokers in %s, the limit allows %d", ag.alias, n, span, soakMintLimit*windows)
		}
	}
	if reads == 0 || mints == 0 || limited == 0 {
		t.Errorf("reads %d, mints %d, rate-limited %d: the soak did not exercise each", reads, mints, limited)
	}
	for i, s := range brokers {
		curve := rss[i]
		t.Logf("broker %s RSS (MiB, every %s): %s", s.url, period, mibs(curve))
		warm := curve[len(curve)/4]
		if last := curve[len(curve)-1]; last >= 2*warm {
			t.Errorf("broker %s: RSS grew from %d KiB after warm-up to %d KiB", s.url, warm, last)
		}
	}
	for _, s := range brokers {
		if code, body := s.get("/readyz"); code != http.StatusOK {
			t.Errorf("%s /readyz: %d %s", s.url, code, body)
		}
	}
	t.Logf("soak: %d agents at the start, %d paired during %s over two brokers; %d reads, %d mints admitted, %d RATE_LIMITED answers, %d other errors",
		nAgents, paired-nAgents, elapsed.Round(time.Second), reads, mints, limited, errCount.Load())
	// Verifying every entry takes longer than cliTimeout on a full-length run
	// (~100,000 entries in 10 minutes on a loaded 2-core machine): the bound
	// grows with the run, as the ledger does.
	t.Log(soakVerify(t, h, oa.home, max(cliTimeout, duration), "--ledger", ledgerURL))
}

// soakVerify runs `audit verify` with args, bounded by limit, and checks it
// passes with one summary line (h.auditOK, with a longer bound).
func soakVerify(t *testing.T, h *harness, home string, limit time.Duration, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), limit)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, append([]string{"audit", "verify"}, args...)...)
	cmd.Env = childEnv("AGENTKEYS_HOME=" + home)
	stdout, stderr := h.newOutput(), h.newOutput()
	cmd.Stdout, cmd.Stderr = stdout, stderr
	err := cmd.Run()
	if ctx.Err() != nil {
		t.Fatalf("audit verify %v did not finish within %s", args, limit)
	}
	out := stdout.String()
	if err != nil || stderr.String() != "" || !strings.HasPrefix(out, "ledger valid: ") || strings.Count(out, "\n") != 1 {
		t.Fatalf("audit verify %v: %v, stderr %q, stdout %q", args, err, stderr.String(), out)
	}
	return strings.TrimSpace(out)
}

// mibs formats KiB samples as MiB with one decimal.
func mibs(kb []int) string {
	var b strings.Builder
	for i, k := range kb {
		if i > 0 {
			b.WriteString(" ")
		}
		fmt.Fprintf(&b, "%.1f", float64(k)/1024)
	}
	return b.String()
}
