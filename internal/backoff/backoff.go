// Package backoff paces retries: each pause doubles from Initial up to Max,
// and Jitter shortens it by a random fraction so that many clients retrying
// after the same outage spread out instead of arriving together.
//
// The randomness and the sleep are fields, so a test drives a Backoff with a
// fixed source and a recording sleep and never waits on the wall clock. The
// zero values of Rand and Sleep are the real ones. A Backoff is not safe for
// concurrent use; each retry loop owns one.
package backoff

import (
	"context"
	"math/rand/v2"
	"time"
)

// Backoff is the state of one retry loop.
type Backoff struct {
	Initial time.Duration // the first pause (> 0)
	Max     time.Duration // no pause is longer (≥ Initial)
	// Jitter in [0, 1] is the largest fraction taken off a pause at random:
	// 0 keeps pauses exact, 1 draws each from (0, pause].
	Jitter float64
	// Rand returns a number in [0, 1); nil means math/rand/v2.Float64.
	Rand func() float64
	// Sleep waits d or until ctx ends (then it returns ctx.Err()); nil means
	// the package's Sleep, on a real timer.
	Sleep func(ctx context.Context, d time.Duration) error

	cur time.Duration // the pause before jitter for the next failure; 0 before the first
}

// Next returns the pause before the next try and advances the backoff.
func (b *Backoff) Next() time.Duration {
	switch {
	case b.cur == 0:
		b.cur = b.Initial
	case b.cur < b.Max:
		b.cur = min(b.cur*2, b.Max)
	}
	d := min(b.cur, b.Max)
	if b.Jitter > 0 {
		r := b.Rand
		if r == nil {
			r = rand.Float64
		}
		d -= time.Duration(min(b.Jitter, 1) * r() * float64(d))
	}
	return d
}

// Reset starts over from Initial, after a success.
func (b *Backoff) Reset() { b.cur = 0 }

// Wait sleeps for Next(), or until ctx ends (then it returns ctx.Err()).
func (b *Backoff) Wait(ctx context.Context) error {
	sleep := b.Sleep
	if sleep == nil {
		sleep = Sleep
	}
	return sleep(ctx, b.Next())
}

// Sleep waits d on a real timer, or until ctx ends (then it returns ctx.Err()).
func Sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}
