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
	"slices"
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

// Stats summarises a run. Latency covers the successful operations only (a
// refusal such as RATE_LIMITED is fast and would flatter it); Throughput is
// successful operations per second of the run.
type Stats struct {
	Elapsed    time.Duration
	OK         int
	Errors     map[string]int // by problem code
	Throughput float64
	Latency    Latency
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
	start := time.Now()
	deadline := start.Add(cfg.Duration)
	var ok, failed atomic.Int64
	lat := make([][]time.Duration, cfg.Concurrency)
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
					lat[w] = append(lat[w], d)
					ok.Add(1)
				case ctx.Err() != nil:
					return // stopped from outside (Ctrl-C): not the broker's failure
				default:
					errs[w][problem.As(err).Code]++
					failed.Add(1)
				}
			}
		})
	}
	done := make(chan struct{})
	if cfg.Progress != nil {
		go func() {
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
		}()
	}
	wg.Wait()
	close(done)
	elapsed := time.Since(start)
	all := slices.Concat(lat...)
	s := Stats{Elapsed: elapsed, OK: len(all), Errors: map[string]int{}, Latency: Summarise(all)}
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

// Summarise returns the nearest-rank p50, p90, p99 and the maximum of d (zero
// for none). It sorts d.
func Summarise(d []time.Duration) Latency {
	if len(d) == 0 {
		return Latency{}
	}
	slices.Sort(d)
	rank := func(p float64) float64 {
		i := int(math.Ceil(p*float64(len(d)))) - 1
		return ms(d[max(i, 0)])
	}
	return Latency{P50: rank(0.50), P90: rank(0.90), P99: rank(0.99), Max: ms(d[len(d)-1])}
}

func ms(d time.Duration) float64 { return math.Round(float64(d)/1e3) / 1e3 }
