package coalesce

import (
	"context"
	"errors"
	"slices"
	"sync"
	"testing"
	"time"
)

// gated is a coalescer whose batches each wait for the test to release them,
// recording what each carried.
type gated struct {
	c       Coalescer[int, int]
	started chan []int // each batch, as it starts
	release chan error // one per batch: nil answers in*10, else fails it
	answers chan answer
	mu      sync.Mutex
	batches [][]int
}

func newGated(max int) *gated {
	g := &gated{started: make(chan []int, 64), release: make(chan error), answers: make(chan answer, 16)}
	g.c = Coalescer[int, int]{Max: max, Timeout: time.Minute, Run: func(_ context.Context, in []int) ([]int, error) {
		g.mu.Lock()
		g.batches = append(g.batches, slices.Clone(in))
		g.mu.Unlock()
		g.started <- slices.Clone(in)
		if err := <-g.release; err != nil {
			return nil, err
		}
		out := make([]int, len(in))
		for i, v := range in {
			out[i] = v * 10
		}
		return out, nil
	}}
	return g
}

type answer struct {
	in, out int
	err     error
}

// call makes a call with v in its own goroutine; its answer goes to g.answers.
func (g *gated) call(ctx context.Context, v int) {
	go func() {
		out, err := g.c.Do(ctx, v)
		g.answers <- answer{v, out, err}
	}()
}

// queued reports whether n calls wait in g's queue.
func (g *gated) queued(n int) bool {
	g.c.mu.Lock()
	defer g.c.mu.Unlock()
	return len(g.c.queue) == n
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for range 5000 {
		if cond() {
			return
		}
		time.Sleep(time.Millisecond)
	}
	t.Fatalf("timed out waiting for %s", what)
}

// TestCoalescerBatches: a call on an idle coalescer goes alone and at once;
// the calls that arrive while it is in flight go together in the next batch
// (at most max of them), each answered with its own output.
func TestCoalescerBatches(t *testing.T) {
	g := newGated(4)
	call := func(v int) { g.call(context.Background(), v) }
	answers := g.answers
	call(1)
	if b := <-g.started; !slices.Equal(b, []int{1}) {
		t.Fatalf("first batch %v, want [1]", b)
	}
	for v := 2; v <= 7; v++ {
		call(v)
	}
	waitFor(t, "6 queued calls", func() bool { return g.queued(6) })
	g.release <- nil // batch [1]
	second := <-g.started
	if len(second) != 4 {
		t.Fatalf("second batch %v: want the 4 (max) first queued", second)
	}
	g.release <- nil
	third := <-g.started
	if len(third) != 2 {
		t.Fatalf("third batch %v: want the 2 left", third)
	}
	g.release <- nil
	got := map[int]int{}
	for range 7 {
		a := <-answers
		if a.err != nil {
			t.Fatalf("call %d: %v", a.in, a.err)
		}
		got[a.in] = a.out
	}
	for v := 1; v <= 7; v++ {
		if got[v] != v*10 {
			t.Fatalf("call %d answered %d, want %d: answers went to the wrong callers", v, got[v], v*10)
		}
	}
	all := slices.Concat(second, third)
	slices.Sort(all)
	if !slices.Equal(all, []int{2, 3, 4, 5, 6, 7}) {
		t.Fatalf("batches after the first carried %v, want each of 2..7 once", all)
	}
	// Idle again: the next call goes at once, alone.
	call(8)
	if b := <-g.started; !slices.Equal(b, []int{8}) {
		t.Fatalf("a call on an idle coalescer went as %v", b)
	}
	g.release <- nil
	if a := <-answers; a.out != 80 || a.err != nil {
		t.Fatalf("call 8: %+v", a)
	}
}

// TestCoalescerErrorReachesEveryCaller: a batch that fails fails every call in
// it, and only those.
func TestCoalescerErrorReachesEveryCaller(t *testing.T) {
	g := newGated(64)
	call := func(v int) { g.call(context.Background(), v) }
	answers := g.answers
	call(0)
	<-g.started
	for v := 1; v <= 5; v++ {
		call(v)
	}
	waitFor(t, "5 queued calls", func() bool { return g.queued(5) })
	g.release <- nil
	if a := <-answers; a.in != 0 || a.err != nil || a.out != 0 {
		t.Fatalf("the first batch's call: %+v", a)
	}
	<-g.started
	boom := errors.New("the statement failed")
	g.release <- boom
	for range 5 {
		if a := <-answers; !errors.Is(a.err, boom) || a.out != 0 {
			t.Fatalf("call %d of the failed batch: out=%d err=%v, want the batch's error", a.in, a.out, a.err)
		}
	}
}

// TestCoalescerCancel: a caller that gives up while queued returns its
// context's error at once and is dropped from the next batch; one that gives
// up in flight returns at once too, and the others of its batch still get
// their answers.
func TestCoalescerCancel(t *testing.T) {
	g := newGated(64)
	call, answers := g.call, g.answers
	inFlight, cancelInFlight := context.WithCancel(context.Background())
	call(inFlight, 1)
	<-g.started
	queued, cancelQueued := context.WithCancel(context.Background())
	call(queued, 2)
	call(context.Background(), 3)
	waitFor(t, "2 queued calls", func() bool { return g.queued(2) })
	cancelQueued()
	if a := <-answers; a.in != 2 || !errors.Is(a.err, context.Canceled) {
		t.Fatalf("the cancelled queued call: %+v, want context.Canceled", a)
	}
	cancelInFlight()
	if a := <-answers; a.in != 1 || !errors.Is(a.err, context.Canceled) {
		t.Fatalf("the cancelled call in flight: %+v, want context.Canceled at once", a)
	}
	g.release <- nil // batch [1] completes with nobody waiting
	if b := <-g.started; !slices.Equal(b, []int{3}) {
		t.Fatalf("the next batch carried %v, want [3] (the cancelled call dropped)", b)
	}
	g.release <- nil
	if a := <-answers; a.in != 3 || a.err != nil || a.out != 30 {
		t.Fatalf("the call left: %+v", a)
	}
}

// TestCoalescerFlights: with two flights, a call that finds one batch in
// flight goes at once in a second; calls that find both in flight queue and
// go together when one lands.
func TestCoalescerFlights(t *testing.T) {
	g := newGated(64)
	g.c.Flights = 2
	call := func(v int) { g.call(context.Background(), v) }
	answers := g.answers
	call(1)
	<-g.started
	call(2)
	if b := <-g.started; !slices.Equal(b, []int{2}) {
		t.Fatalf("with one batch in flight, the next call went as %v, want [2] at once", b)
	}
	call(3)
	call(4)
	waitFor(t, "2 queued calls", func() bool { return g.queued(2) })
	g.release <- nil // one of [1], [2] lands
	if b := <-g.started; len(b) != 2 {
		t.Fatalf("after a batch landed, the next carried %v, want the 2 queued", b)
	}
	g.release <- nil
	g.release <- nil
	for range 4 {
		if a := <-answers; a.err != nil || a.out != a.in*10 {
			t.Fatalf("call %d: %+v", a.in, a)
		}
	}
}

// TestCoalescerTimeout: a batch's Run has the Timeout as its deadline, and
// none when Timeout is 0.
func TestCoalescerTimeout(t *testing.T) {
	for _, timeout := range []time.Duration{0, time.Minute} {
		c := Coalescer[int, bool]{Max: 1, Timeout: timeout, Run: func(ctx context.Context, in []int) ([]bool, error) {
			_, ok := ctx.Deadline()
			return []bool{ok}, nil
		}}
		if has, err := c.Do(context.Background(), 1); err != nil || has != (timeout > 0) {
			t.Errorf("Timeout %v: the batch had a deadline: %v (%v)", timeout, has, err)
		}
	}
}
