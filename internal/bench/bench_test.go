package bench

import (
	"context"
	"crypto/sha256"
	"errors"
	"math"
	"testing"
	"testing/synctest"
	"time"

	"github.com/agentkeys/agentkeys/internal/problem"
)

// In a synctest bubble time moves only when every goroutine waits, so an
// operation that sleeps 10ms takes exactly 10ms and the counts are exact.
func TestRunCountsAndLatency(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		calls := make([]int, 2)
		s := Run(t.Context(), Config{Concurrency: 2, Duration: time.Second, Op: func(ctx context.Context, w int) error {
			calls[w]++
			if w == 1 && calls[w]%10 == 0 {
				time.Sleep(time.Millisecond)
				return problem.New(problem.RateLimited, "slow down", "wait")
			}
			time.Sleep(10 * time.Millisecond)
			return nil
		}})
		if s.Elapsed != time.Second {
			t.Errorf("elapsed %v, want 1s", s.Elapsed)
		}
		// Worker 0: 100 ops of 10ms. Worker 1: cycles of 9×10ms + 1×1ms = 91ms.
		if calls[0] != 100 || s.OK+s.Failed() != calls[0]+calls[1] {
			t.Fatalf("calls %v, ok %d, failed %d", calls, s.OK, s.Failed())
		}
		if s.Errors[string(problem.RateLimited)] != calls[1]/10 || len(s.Errors) != 1 {
			t.Errorf("errors %v, worker 1 made %d calls", s.Errors, calls[1])
		}
		if s.Latency != (Latency{P50: 10, P90: 10, P99: 10, Max: 10}) {
			t.Errorf("latency %+v: failed calls must not count", s.Latency)
		}
		if s.Throughput != float64(s.OK) {
			t.Errorf("throughput %v, want %d/s", s.Throughput, s.OK)
		}
	})
}

func TestRunStopsOnCancelWithoutCountingIt(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ctx, cancel := context.WithCancel(t.Context())
		go func() { time.Sleep(25 * time.Millisecond); cancel() }()
		s := Run(ctx, Config{Concurrency: 1, Duration: time.Hour, Op: func(ctx context.Context, _ int) error {
			select {
			case <-time.After(10 * time.Millisecond):
				return nil
			case <-ctx.Done():
				return errors.New("canceled")
			}
		}})
		if s.OK != 2 || s.Failed() != 0 || s.Elapsed != 25*time.Millisecond {
			t.Fatalf("ok %d, errors %v, elapsed %v; want 2 ok, none failed, 25ms", s.OK, s.Errors, s.Elapsed)
		}
	})
}

func TestRunReportsProgress(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var seen []int64
		Run(t.Context(), Config{Concurrency: 1, Duration: 1200 * time.Millisecond,
			Op:       func(context.Context, int) error { time.Sleep(70 * time.Millisecond); return nil },
			Progress: func(ok, _ int64, _ time.Duration) { seen = append(seen, ok) }})
		if len(seen) != 2 || seen[0] != 7 || seen[1] != 14 {
			t.Fatalf("progress %v, want [7 14]", seen)
		}
	})
}

func TestHistogramNearestRank(t *testing.T) {
	var h Histogram
	for i := 100; i >= 1; i-- {
		h.Add(time.Duration(i) * time.Millisecond)
	}
	got := h.Latency()
	for _, c := range []struct{ got, want float64 }{{got.P50, 50}, {got.P90, 90}, {got.P99, 99}} {
		if math.Abs(c.got-c.want) > c.want/128 {
			t.Errorf("got %+v, want p50 50, p90 90, p99 99 within 1/128", got)
		}
	}
	if got.Max != 100 || h.Count() != 100 {
		t.Errorf("max %v, count %d; want exactly 100 and 100", got.Max, h.Count())
	}
	var one Histogram
	one.Add(150 * time.Microsecond) // exact below 256µs
	if got := one.Latency(); got != (Latency{0.15, 0.15, 0.15, 0.15}) {
		t.Fatalf("one sample: %+v", got)
	}
	if got := (&Histogram{}).Latency(); got != (Latency{}) {
		t.Fatalf("none: %+v", got)
	}
	var merged Histogram
	merged.Merge(&h)
	merged.Merge(&one)
	if merged.Count() != 101 || merged.Latency().Max != 100 || merged.Latency().P50 != h.Latency().P50 {
		t.Fatalf("merged: %d, %+v", merged.Count(), merged.Latency())
	}
}

// Every latency lands in a bucket whose middle is within 1/128 of it (or 1µs),
// buckets are ordered like the latencies, and huge ones stay in range.
func TestHistogramBuckets(t *testing.T) {
	prev := 0
	for d := time.Duration(0); d < 100*time.Second; d = d*17/16 + time.Microsecond {
		b := bucket(d)
		if b < prev || b >= histBuckets {
			t.Fatalf("bucket(%v) = %d after %d", d, b, prev)
		}
		prev = b
		if diff := (middle(b) - d).Abs(); diff > d/128+time.Microsecond {
			t.Fatalf("bucket(%v) middle %v is %v off", d, middle(b), diff)
		}
	}
	if b := bucket(time.Duration(math.MaxInt64)); b != histBuckets-1 {
		t.Fatalf("the longest duration lands in bucket %d", b)
	}
	if bucket(-time.Second) != 0 {
		t.Fatal("a negative latency must land in bucket 0")
	}
}

// The run's CPU time is the process's, measured around the run: an operation
// that computes shows in it.
func TestRunMeasuresCPU(t *testing.T) {
	var sink [32]byte
	s := Run(t.Context(), Config{Concurrency: 1, Duration: 100 * time.Millisecond, Op: func(context.Context, int) error {
		for range 200 {
			sink = sha256.Sum256(sink[:])
		}
		return nil
	}})
	if s.OK == 0 || s.CPU <= 0 {
		t.Fatalf("ok %d, CPU %v: want the run's CPU time measured", s.OK, s.CPU)
	}
}
