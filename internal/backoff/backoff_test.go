package backoff

import (
	"context"
	"errors"
	"slices"
	"testing"
	"testing/synctest"
	"time"
)

func TestDoublesUpToMaxAndResets(t *testing.T) {
	b := Backoff{Initial: time.Second, Max: 10 * time.Second}
	var got []time.Duration
	for range 6 {
		got = append(got, b.Next())
	}
	want := []time.Duration{1, 2, 4, 8, 10, 10}
	for i := range want {
		want[i] *= time.Second
	}
	if !slices.Equal(got, want) {
		t.Fatalf("pauses %v, want %v", got, want)
	}
	b.Reset()
	if d := b.Next(); d != time.Second {
		t.Fatalf("after Reset the pause is %v, want 1s", d)
	}
}

func TestJitterShortensWithinBounds(t *testing.T) {
	for _, tc := range []struct {
		jitter, r float64
		want      time.Duration
	}{
		{0.5, 0, 8 * time.Second},
		{0.5, 0.5, 6 * time.Second},
		{0.5, 0.999999, 4*time.Second + 4*time.Microsecond},
		{1, 0.75, 2 * time.Second},
		{3, 0.5, 4 * time.Second}, // Jitter above 1 counts as 1: never negative
	} {
		b := Backoff{Initial: 8 * time.Second, Max: time.Minute, Jitter: tc.jitter, Rand: func() float64 { return tc.r }}
		if d := b.Next(); d != tc.want {
			t.Errorf("jitter %v, rand %v: pause %v, want %v", tc.jitter, tc.r, d, tc.want)
		}
	}
	// With the real source every pause stays in ((1-Jitter)·p, p].
	b := Backoff{Initial: time.Second, Max: time.Second, Jitter: 0.2}
	for range 1000 {
		if d := b.Next(); d <= 800*time.Millisecond || d > time.Second {
			t.Fatalf("pause %v outside (0.8s, 1s]", d)
		}
	}
}

func TestNoOverflowAfterManyFailures(t *testing.T) {
	b := Backoff{Initial: time.Millisecond, Max: time.Hour}
	for range 200 {
		if d := b.Next(); d <= 0 || d > time.Hour {
			t.Fatalf("pause %v outside (0, 1h]", d)
		}
	}
}

func TestWaitUsesInjectedSleep(t *testing.T) {
	var slept []time.Duration
	b := Backoff{Initial: time.Second, Max: 3 * time.Second,
		Sleep: func(_ context.Context, d time.Duration) error { slept = append(slept, d); return nil }}
	for range 3 {
		if err := b.Wait(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
	if want := []time.Duration{time.Second, 2 * time.Second, 3 * time.Second}; !slices.Equal(slept, want) {
		t.Fatalf("slept %v, want %v", slept, want)
	}
}

// TestSleep runs in a synctest bubble: its clock is fake, so the test waits
// for no real time.
func TestSleep(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		start := time.Now()
		if err := Sleep(context.Background(), time.Minute); err != nil {
			t.Fatal(err)
		}
		if d := time.Since(start); d != time.Minute {
			t.Fatalf("slept %v, want 1m", d)
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		start = time.Now()
		if err := Sleep(ctx, time.Hour); !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("Sleep past the context returned %v, want DeadlineExceeded", err)
		}
		if d := time.Since(start); d != time.Second {
			t.Fatalf("Sleep returned after %v, want 1s (when ctx ended)", d)
		}
	})
}
