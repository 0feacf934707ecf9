// Package replaytest is the conformance suite every dpop.ReplayStore must pass,
// as ledgertest is for ledger drivers: the in-memory store runs it, and so must
// any store several broker processes share.
package replaytest

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/agentkeys/agentkeys/internal/dpop"
)

// Opener opens a handle on one store; calling it again opens another handle on
// the same store (another broker process). An in-memory store returns itself.
type Opener func() dpop.ReplayStore

// Run runs the suite. newStore returns an Opener for a fresh, empty store.
// Times are whole seconds, as the verifier's are.
func Run(t *testing.T, newStore func(t *testing.T) Opener) {
	tests := []struct {
		name string
		fn   func(t *testing.T, open Opener)
	}{
		{"FirstUseOnly", testFirstUseOnly},
		{"Expiry", testExpiry},
		{"AcrossHandles", testAcrossHandles},
		{"Concurrent", testConcurrent},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) { tc.fn(t, newStore(t)) })
	}
}

var t0 = time.Unix(1_800_000_000, 0)

func id(n int) dpop.ProofID {
	var p dpop.ProofID
	copy(p[:], fmt.Sprintf("proof-%010d", n))
	return p
}

func first(t *testing.T, s dpop.ReplayStore, p dpop.ProofID, now, expiry time.Time) bool {
	t.Helper()
	ok, err := s.First(context.Background(), p, now, expiry)
	if err != nil {
		t.Fatalf("First at %v: %v", now.Sub(t0), err)
	}
	return ok
}

// testFirstUseOnly: the first use of an id is fresh, every later one before it
// expires is not, and ids do not disturb each other.
func testFirstUseOnly(t *testing.T, open Opener) {
	s := open()
	exp := t0.Add(dpop.Skew)
	if !first(t, s, id(1), t0, exp) {
		t.Fatal("the first use of a proof was refused")
	}
	if first(t, s, id(1), t0, exp) {
		t.Fatal("a replayed proof was accepted")
	}
	if first(t, s, id(1), t0.Add(time.Second), exp.Add(time.Second)) {
		t.Fatal("a replay with a later expiry was accepted")
	}
	if !first(t, s, id(2), t0, exp) {
		t.Fatal("another proof was refused")
	}
}

// testExpiry: an id is refused until its expiry and forgotten from it on; a
// record with a later expiry outlives one with an earlier expiry.
func testExpiry(t *testing.T, open Opener) {
	s := open()
	short, long := t0.Add(dpop.Skew), t0.Add(2*dpop.Skew)
	if !first(t, s, id(1), t0, short) || !first(t, s, id(2), t0, long) {
		t.Fatal("first uses refused")
	}
	if first(t, s, id(1), short.Add(-time.Second), short) {
		t.Fatal("a proof was forgotten a second before its expiry")
	}
	if !first(t, s, id(1), short, short.Add(dpop.Skew)) {
		t.Fatal("a proof was still remembered at its expiry")
	}
	if first(t, s, id(2), short, long) {
		t.Fatal("a proof with a later expiry was forgotten with an earlier one")
	}
	if first(t, s, id(1), short.Add(time.Second), short.Add(dpop.Skew)) {
		t.Fatal("a proof recorded again after it expired was not remembered")
	}
	if !first(t, s, id(2), long, long.Add(dpop.Skew)) {
		t.Fatal("a proof was still remembered at its (later) expiry")
	}
}

// testAcrossHandles: a proof used through one handle is refused through another.
func testAcrossHandles(t *testing.T, open Opener) {
	a, b := open(), open()
	exp := t0.Add(dpop.Skew)
	if !first(t, a, id(1), t0, exp) {
		t.Fatal("the first use of a proof was refused")
	}
	if first(t, b, id(1), t0, exp) {
		t.Fatal("a proof used through one handle was accepted through another: a replay across brokers")
	}
	if !first(t, b, id(2), t0, exp) || first(t, a, id(2), t0, exp) {
		t.Fatal("a proof used first through the second handle")
	}
}

// testConcurrent: of concurrent uses of one id through two handles, exactly one
// is fresh.
func testConcurrent(t *testing.T, open Opener) {
	handles := []dpop.ReplayStore{open(), open()}
	exp := t0.Add(dpop.Skew)
	const ids, users = 50, 8
	var fresh [ids]atomic.Int32
	var wg sync.WaitGroup
	errs := make(chan error, users)
	for u := range users {
		s := handles[u%2]
		wg.Go(func() {
			for i := range ids {
				ok, err := s.First(context.Background(), id(i), t0, exp)
				if err != nil {
					errs <- err
					return
				}
				if ok {
					fresh[i].Add(1)
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	for i := range fresh {
		if n := fresh[i].Load(); n != 1 {
			t.Fatalf("proof %d was fresh for %d of %d concurrent users, want exactly 1", i, n, users)
		}
	}
}
