// Package coalesce runs concurrent calls in batches, group-commit style, so
// that calls arriving together share one round trip (a statement, an HTTP
// request) instead of taking one each. The PostgreSQL driver's shared tables
// and the daemon's credential reads use it.
package coalesce

import (
	"context"
	"sync"
	"time"
)

// Coalescer runs calls in batches, group-commit style: while Flights batches
// are in flight, the calls that arrive queue, and the next batch carries all
// of them (up to Max) in one Run. A call on an idle coalescer goes
// at once, alone: nothing waits for company.
//
// Run gets the calls' inputs in arrival order and returns one output for each,
// or an error, which every call of the batch gets. A batch runs in a goroutine
// of its own, under its own deadline (never a caller's), so a caller that gives
// up does not fail the others; it returns its context's error at once, and its
// input is dropped if its batch has not left yet.
//
// The fields are set before the first call and not changed after it.
type Coalescer[In, Out any] struct {
	Run     func(ctx context.Context, in []In) ([]Out, error)
	Max     int           // calls in one batch (at least 1)
	Flights int           // batches in flight at once (at least 1)
	Timeout time.Duration // the deadline of one batch's Run (0: none)

	mu     sync.Mutex
	flying int // flusher goroutines running
	queue  []*call[In, Out]
}

type call[In, Out any] struct {
	in   In
	out  Out
	err  error
	done chan struct{} // closed when out or err is set
}

// Do queues in and waits for its batch's answer or ctx.
func (c *Coalescer[In, Out]) Do(ctx context.Context, in In) (Out, error) {
	cl := &call[In, Out]{in: in, done: make(chan struct{})}
	c.mu.Lock()
	c.queue = append(c.queue, cl)
	if c.flying < max(c.Flights, 1) {
		c.flying++
		go c.flush()
	}
	c.mu.Unlock()
	select {
	case <-cl.done:
		return cl.out, cl.err
	case <-ctx.Done():
		c.mu.Lock()
		for i, q := range c.queue {
			if q == cl { // not sent yet: drop it
				c.queue = append(c.queue[:i], c.queue[i+1:]...)
				break
			}
		}
		c.mu.Unlock()
		var zero Out
		return zero, ctx.Err()
	}
}

// flush sends batches until the queue is empty.
func (c *Coalescer[In, Out]) flush() {
	for {
		c.mu.Lock()
		n := min(len(c.queue), max(c.Max, 1))
		if n == 0 {
			c.flying--
			c.mu.Unlock()
			return
		}
		batch := make([]*call[In, Out], n)
		copy(batch, c.queue)
		c.queue = append(c.queue[:0], c.queue[n:]...)
		c.mu.Unlock()

		in := make([]In, n)
		for i, cl := range batch {
			in[i] = cl.in
		}
		ctx, cancel := context.Background(), context.CancelFunc(func() {})
		if c.Timeout > 0 {
			ctx, cancel = context.WithTimeout(ctx, c.Timeout)
		}
		out, err := c.Run(ctx, in)
		cancel()
		for i, cl := range batch {
			if err != nil {
				cl.err = err
			} else {
				cl.out = out[i]
			}
			close(cl.done)
		}
	}
}
