// Package ratelimittest is the conformance suite every ratelimit.Limiter must
// pass: the broker's in-memory limiter runs it, and so must one that several
// broker processes share.
package ratelimittest

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/agentkeys/agentkeys/internal/ratelimit"
)

// Opener opens a handle on the limiter of rule r in one store; opening the
// same rule again gives another handle on the same limiter (another broker
// process). In memory, that is the same limiter.
type Opener func(r ratelimit.Rule) ratelimit.Limiter

// Run runs the suite. newStore returns an Opener on a fresh, empty store.
func Run(t *testing.T, newStore func(t *testing.T) Opener) {
	tests := []struct {
		name string
		fn   func(t *testing.T, open Opener)
	}{
		{"SlidingWindow", testSlidingWindow},
		{"KeysApart", testKeysApart},
		{"AcrossHandles", testAcrossHandles},
		{"Concurrent", testConcurrent},
		{"FirstRefusal", testFirstRefusal},
		{"LongKeys", testLongKeys},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) { tc.fn(t, newStore(t)) })
	}
}

var t0 = time.Unix(1_800_000_000, 0)

func rule(name string, count int) ratelimit.Rule {
	return ratelimit.Rule{Name: name, Count: count, Window: time.Minute, MaxKeys: 1000}
}

func allow(t *testing.T, l ratelimit.Limiter, key string, at time.Duration) (bool, time.Duration) {
	t.Helper()
	ok, wait, err := l.Allow(context.Background(), key, t0.Add(at))
	if err != nil {
		t.Fatalf("Allow(%q) at %v: %v", key, at, err)
	}
	if ok && wait != 0 || !ok && (wait <= 0 || wait > time.Minute) {
		t.Fatalf("Allow(%q) at %v: ok=%v wait=%v: a refusal waits (0, window], an admission not at all", key, at, ok, wait)
	}
	return ok, wait
}

// testSlidingWindow: Count requests in a window, then refusals until the oldest
// comes back one window after it was spent, and no earlier.
func testSlidingWindow(t *testing.T, open Opener) {
	l := open(rule("read", 3))
	for i := range 3 {
		if ok, _ := allow(t, l, "s", time.Duration(i)*time.Second); !ok {
			t.Fatalf("request %d of 3 refused", i+1)
		}
	}
	if ok, wait := allow(t, l, "s", 30*time.Second); ok || wait > 30*time.Second {
		t.Fatalf("4th request inside the window: ok=%v wait=%v (the first comes back at 60 s)", ok, wait)
	}
	if ok, _ := allow(t, l, "s", 60*time.Second-time.Millisecond); ok {
		t.Fatal("a request came back before one window passed")
	}
	if ok, _ := allow(t, l, "s", 60*time.Second); !ok {
		t.Fatal("the first request did not come back one window after it was spent")
	}
	if ok, _ := allow(t, l, "s", 60*time.Second); ok {
		t.Fatal("more requests came back than were spent a window ago")
	}
	if ok, _ := allow(t, l, "s", 10*time.Minute); !ok {
		t.Fatal("an idle key was refused")
	}
}

// testKeysApart: one key's spending leaves another's alone, and rules with
// different names on one store are apart too.
func testKeysApart(t *testing.T, open Opener) {
	l := open(rule("read", 1))
	if ok, _ := allow(t, l, "a", 0); !ok {
		t.Fatal("first request refused")
	}
	if ok, _ := allow(t, l, "b", 0); !ok {
		t.Fatal("another key was limited by the first")
	}
	other := open(rule("mint", 1))
	if ok, _ := allow(t, other, "a", 0); !ok {
		t.Fatal("another rule was limited by the first")
	}
}

// testAcrossHandles: requests spent through one handle count against another:
// the limit holds across brokers.
func testAcrossHandles(t *testing.T, open Opener) {
	a, b := open(rule("read", 4)), open(rule("read", 4))
	for i := range 4 {
		if ok, _ := allow(t, []ratelimit.Limiter{a, b}[i%2], "s", time.Second); !ok {
			t.Fatalf("request %d of 4 refused", i+1)
		}
	}
	for _, l := range []ratelimit.Limiter{a, b} {
		if ok, _ := allow(t, l, "s", 2*time.Second); ok {
			t.Fatal("a 5th request in the window was admitted through the other handle")
		}
	}
}

// testConcurrent: of many concurrent requests through two handles, exactly
// Count are admitted.
func testConcurrent(t *testing.T, open Opener) {
	const count, users, each = 25, 8, 10
	handles := []ratelimit.Limiter{open(rule("read", count)), open(rule("read", count))}
	var admitted atomic.Int32
	var wg sync.WaitGroup
	errs := make(chan error, users)
	for u := range users {
		l := handles[u%2]
		wg.Go(func() {
			for range each {
				ok, _, err := l.Allow(context.Background(), "s", t0)
				if err != nil {
					errs <- err
					return
				}
				if ok {
					admitted.Add(1)
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if n := admitted.Load(); n != count {
		t.Fatalf("%d of %d concurrent requests admitted, want exactly %d", n, users*each, count)
	}
}

// testFirstRefusal: the first refusal in a window is reported, later ones in
// that window are not, and the next window's first is again — through any handle.
func testFirstRefusal(t *testing.T, open Opener) {
	a, b := open(rule("read", 1)), open(rule("read", 1))
	first := func(l ratelimit.Limiter, at time.Duration) bool {
		t.Helper()
		ok, err := l.FirstRefusal(context.Background(), "s", t0.Add(at))
		if err != nil {
			t.Fatal(err)
		}
		return ok
	}
	allow(t, a, "s", 0)
	if ok, _ := allow(t, a, "s", time.Second); ok {
		t.Fatal("second request admitted")
	}
	if !first(a, time.Second) {
		t.Fatal("the first refusal was not reported")
	}
	if first(a, 2*time.Second) || first(b, 30*time.Second) {
		t.Fatal("a later refusal in the same window was reported")
	}
	if !first(b, 61*time.Second) {
		t.Fatal("the first refusal of the next window was not reported")
	}
}

// testLongKeys: keys of any length work and stay apart.
func testLongKeys(t *testing.T, open Opener) {
	l := open(rule("read", 1))
	long := strings.Repeat("k", 1<<20)
	for i := range 3 {
		key := fmt.Sprintf("%s%d", long, i)
		if ok, _ := allow(t, l, key, 0); !ok {
			t.Fatalf("long key %d refused on its first request", i)
		}
		if ok, _ := allow(t, l, key, 0); ok {
			t.Fatalf("long key %d admitted twice", i)
		}
	}
}
