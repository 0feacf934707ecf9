package api_test

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"runtime/debug"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/agentkeys/agentkeys/internal/apiv1"
	"github.com/agentkeys/agentkeys/internal/broker"
)

// BenchmarkReadPath measures the full credential read through the broker's HTTP
// handler: token verify → rate limit → scope/lookup → durable audit entry (group
// commit, fsync) → enclave re-encryption, with 16 concurrent readers, each its
// own owner session.
// mode=session boxes the answer under the session channel
// key; mode=hpke re-encrypts to a fresh hybrid HPKE key per request.
func BenchmarkReadPath(b *testing.B) {
	for _, mode := range []string{"session", "hpke"} {
		b.Run("mode="+mode+"/readers=16", func(b *testing.B) {
			e := newEnv(b, broker.Config{ReadLimit: 1 << 20, ReadWindow: time.Minute, Anon: unlimited()})
			const readers = 16
			type reader struct {
				token string
				body  []byte
			}
			pool := make(chan reader, readers)
			for range readers {
				k := hpkeKey(b)
				_, key := newIdentity()
				l := loginFor(e, key)
				l.ChannelKey = base64.StdEncoding.EncodeToString(k.PublicKey().Bytes())
				apiv1.SignLogin(&l, key)
				g, err := e.c.CreateAccount(b.Context(), l)
				if err != nil {
					b.Fatal(err)
				}
				e.store(b, e.c.WithToken(g.Token), g.Omni, "svc", []byte("sk-bench-0123456789abcdef"), "")
				rb := apiv1.ReadBody{}
				if mode == "hpke" {
					rb.Recipient = k.PublicKey().Bytes()
				}
				body, _ := json.Marshal(rb)
				pool <- reader{g.Token, body}
			}
			loadRun(b, e, pool, "reads/s", func(r reader, _ int) (*http.Request, error) {
				req := httptest.NewRequest(http.MethodPost, "/v1/credentials/svc/read", bytes.NewReader(r.body))
				req.Header.Set("Authorization", "Bearer "+r.token)
				return req, nil
			})
		})
	}
}

// loadRun drives the handler from one goroutine per client in pool (each keeps
// its client state and builds one request per iteration; i counts them), shares
// b.N requests among them, times every ServeHTTP, and reports throughput in unit,
// p50/p99 latency, the process's CPU use and the ledger's group-commit figures
// (entries per commit, mean commit time, share of commits over slowCommit).
// Every answer must be 200. GOGC is 400 meanwhile, as cmd/agentkeys sets it.
func loadRun[T any](b *testing.B, e *env, pool chan T, unit string, next func(c T, i int) (*http.Request, error)) {
	defer debug.SetGCPercent(debug.SetGCPercent(400)) // as cmd/agentkeys sets it
	var mu sync.Mutex
	var lat []time.Duration
	var issued atomic.Int64
	c0, n0, t0, s0 := e.commits.Load(), e.entries.Load(), e.commitNanos.Load(), e.slowCommits.Load()
	clients := len(pool)
	cpu0 := cpuTime(b)
	b.ResetTimer()
	var wg sync.WaitGroup
	for range clients {
		wg.Go(func() {
			c := <-pool
			local := make([]time.Duration, 0, 2*b.N/clients+16)
			for i := 0; issued.Add(1) <= int64(b.N); i++ {
				req, err := next(c, i)
				if err != nil {
					b.Error(err)
					return
				}
				rec := httptest.NewRecorder()
				start := time.Now()
				e.handler.ServeHTTP(rec, req)
				local = append(local, time.Since(start))
				if rec.Code != http.StatusOK {
					b.Errorf("%s %s: %d %s", req.Method, req.URL.Path, rec.Code, rec.Body)
					return
				}
			}
			mu.Lock()
			lat = append(lat, local...)
			mu.Unlock()
		})
	}
	wg.Wait()
	b.StopTimer()
	cpu := cpuTime(b) - cpu0
	slices.Sort(lat)
	if len(lat) == 0 {
		return
	}
	commits := float64(max(1, e.commits.Load()-c0))
	b.ReportMetric(float64(len(lat))/b.Elapsed().Seconds(), unit)
	b.ReportMetric(ms(lat[len(lat)/2]), "p50_ms")
	b.ReportMetric(ms(lat[len(lat)*99/100]), "p99_ms")
	b.ReportMetric(float64(e.entries.Load()-n0)/commits, "entries/commit")
	b.ReportMetric(float64(e.commitNanos.Load()-t0)/1e3/commits, "us/commit")
	b.ReportMetric(100*float64(e.slowCommits.Load()-s0)/commits, "slow_commit_%")
	b.ReportMetric(100*cpu.Seconds()/b.Elapsed().Seconds(), "cpu_%")
	b.ReportMetric(float64(cpu.Microseconds())/float64(len(lat)), "cpu_us/op")
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// cpuTime is the CPU time (user + system) this process has used so far.
func cpuTime(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
