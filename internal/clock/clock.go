// Package clock is the test side of the one clock that the broker and the
// daemon read. Each takes its clock from its configuration as a
// func() time.Time (broker.Config.Now, daemon.Source.Now, client.WithClock; nil
// means time.Now) and decides every expiry, window, limit and timestamp by it,
// so a test moves a Fake forward instead of waiting on the wall clock.
//
// Pauses (timers, backoff, polling) stay on the runtime's timers: a test of
// them runs in a testing/synctest bubble, or, against a real server on
// loopback (which synctest cannot hold), replaces the pause with one that
// moves its Fake (backoff.Backoff.Sleep, the client's retry pause). Durations
// measured for metrics and logs stay on the wall clock. Production code never
// imports this package.
package clock

import (
	"sync/atomic"
	"time"
)

// Fake is a clock that stands still until it is moved. It is safe for
// concurrent use.
type Fake struct{ ns atomic.Int64 }

// NewFake returns a clock showing t.
func NewFake(t time.Time) *Fake {
	f := &Fake{}
	f.Set(t)
	return f
}

// Now returns the time the clock shows; its method value is the clock to
// configure (cfg.Now = f.Now).
func (f *Fake) Now() time.Time { return time.Unix(0, f.ns.Load()) }

// Advance moves the clock forward by d.
func (f *Fake) Advance(d time.Duration) { f.ns.Add(int64(d)) }

// Set makes the clock show t.
func (f *Fake) Set(t time.Time) { f.ns.Store(t.UnixNano()) }
