// Package bench is the load engine of `agentkeys bench`: it runs one operation
// from a number of workers for a fixed time, records the latency of each
// successful call and the stable code of each failed one, and summarises them as
// throughput, latency percentiles and errors by code. It knows nothing of the
// broker (the CLI hands it the operation) and never sees a request or answer
// body, so it can log nothing secret.
package bench

import (
	"context"
	"math"
	"math/bits"
	"sync"
	"sync/atomic"
	"time"

	"github.com/agentkeys/agentkeys/internal/problem"
)

// Op is one timed operation, run by worker (0 ≤ worker < Concurrency). Its error
// is counted by its problem code.
type Op func(ctx context.Context, worker int) error

// Config is one run.
type Config struct {
	Concurrency int           // workers, ≥ 1
	Duration    time.Duration // no worker starts an operation after it; started ones finish
	Op          Op
	// Progress, if set, is called about twice a second with the counts so far.
	Progress func(ok, failed int64, elapsed time.Duration)
}

// Latency holds latency figures in milliseconds.
type Latency struct {
	P50 float64 `json:"p50"`
	P90 float64 `json:"p90"`
	P99 float64 `json:"p99"`
	Max float64 `json:"max"`
}

// Stats summarises a run (in memory bounded by Concurrency, not by the number of
// requests). Latency covers the successful operations only (a
// refusal such as RATE_LIMITED is fast and would flatter it); Throughput is
// successful operations per second of the run.
type Stats struct {
	Elapsed    time.Duration
	OK         int
	Errors     map[string]int // by problem code
	Throughput float64
	Latency    Latency
	// CPU is the CPU time this whole process (the load client, and anything
	// else it runs, such as bench's daemons) used during the run; 0 where it
	// is not measured.
	CPU time.Duration
}

// Failed is the number of failed operations.
func (s Stats) Failed() int {
	n := 0
	for _, v := range s.Errors {
		n += v
	}
	return n
}

// Run runs cfg until its duration is over or ctx ends. An operation that fails
// because ctx ended is not counted.
func Run(ctx context.Context, cfg Config) Stats {
	if cfg.Concurrency < 1 {
		cfg.Concurrency = 1
	}
	cpu0 := processCPU()
	start := time.Now()
	deadline := start.Add(cfg.Duration)
	var ok, failed atomic.Int64
	lat := make([]Histogram, cfg.Concurrency)
	errs := make([]map[string]int, cfg.Concurrency)
	var wg sync.WaitGroup
	for w := range cfg.Concurrency {
		errs[w] = map[string]int{}
		wg.Go(func() {
			for ctx.Err() == nil && time.Now().Before(deadline) {
				t0 := time.Now()
				err := cfg.Op(ctx, w)
				d := time.Since(t0)
				switch {
				case err == nil:
					lat[w].Add(d)
					ok.Add(1)
				case ctx.Err() != nil:
					return // stopped from outside (Ctrl-C): not the broker's failure
				default:
					errs[w][string(problem.As(err).Code)]++
					failed.Add(1)
				}
			}
		})
	}
	done := make(chan struct{})
	var progress sync.WaitGroup // joined before Run returns: no report after it
	if cfg.Progress != nil {
		progress.Go(func() {
			t := time.NewTicker(500 * time.Millisecond)
			defer t.Stop()
			for {
				select {
				case <-done:
					return
				case <-t.C:
					cfg.Progress(ok.Load(), failed.Load(), time.Since(start))
				}
			}
		})
	}
	wg.Wait()
	close(done)
	progress.Wait()
	elapsed := time.Since(start)
	cpu := max(processCPU()-cpu0, 0)
	var all Histogram
	for i := range lat {
		all.Merge(&lat[i])
	}
	s := Stats{Elapsed: elapsed, OK: all.Count(), Errors: map[string]int{}, Latency: all.Latency(), CPU: cpu}
	for _, m := range errs {
		for k, v := range m {
			s.Errors[k] += v
		}
	}
	if elapsed > 0 {
		s.Throughput = float64(s.OK) / elapsed.Seconds()
	}
	return s
}

// Histogram records latencies in bounded memory: exact to the microsecond below
// 256µs, then in buckets 1/128 of their value wide (so a percentile is within
// 0.8% of the true one), up to 2^41µs; the maximum is kept exactly.
type Histogram struct {
	counts [histBuckets]uint64
	n      uint64
	max    time.Duration
}

const (
	histExact   = 256
	histSub     = 128
	histBuckets = histExact + 34*histSub
)

// bucket returns the bucket of d.
func bucket(d time.Duration) int {
	v := uint64(max(d, 0) / time.Microsecond)
	if v < histExact {
		return int(v)
	}
	e := bits.Len64(v) - 8 // v>>e is in [128, 256)
	return min(histExact+(e-1)*histSub+int(v>>e)-histSub, histBuckets-1)
}

// middle returns the middle of bucket i.
func middle(i int) time.Duration {
	if i < histExact {
		return time.Duration(i) * time.Microsecond
	}
	e := (i-histExact)/histSub + 1
	m := uint64((i-histExact)%histSub + histSub)
	return time.Duration(m<<e+(1<<e)/2) * time.Microsecond
}

// Add records one latency.
func (h *Histogram) Add(d time.Duration) {
	h.counts[bucket(d)]++
	h.n++
	h.max = max(h.max, d)
}

// Merge adds o's records to h.
func (h *Histogram) Merge(o *Histogram) {
	for i, c := range o.counts {
		h.counts[i] += c
	}
	h.n += o.n
	h.max = max(h.max, o.max)
}

// Count is the number of records.
func (h *Histogram) Count() int { return int(h.n) }

// Latency returns the nearest-rank p50, p90 and p99 (each the middle of its
// bucket, at most the maximum) and the maximum; zero for no records.
func (h *Histogram) Latency() Latency {
	if h.n == 0 {
		return Latency{}
	}
	rank := func(p float64) float64 {
		want := max(uint64(math.Ceil(p*float64(h.n))), 1)
		var seen uint64
		for i, c := range h.counts {
			if seen += c; seen >= want {
				return ms(min(middle(i), h.max))
			}
		}
		return ms(h.max)
	}
	return Latency{P50: rank(0.50), P90: rank(0.90), P99: rank(0.99), Max: ms(h.max)}
}

func ms(d time.Duration) float64 { return math.Round(float64(d)/1e3) / 1e3 }
