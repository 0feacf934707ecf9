package ledger

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"slices"
	"time"
)

// run is the preparer: it groups waiting requests into batches and hands them to
// the committer, so the next batch is validated and signed while the previous one
// is being written and fsynced.
func (l *Ledger) run(committed chan struct{}) {
	defer close(l.done)
	defer close(l.signq)
	defer func() { <-committed }()
	defer close(l.commits)
	tick := time.NewTicker(l.opts.CheckpointInterval)
	defer tick.Stop()
	reqs := make([]*request, 0, l.opts.MaxBatch)
	for {
		var b *batch
		select {
		case r := <-l.reqs:
			reqs = r.unbundle(reqs[:0])
		drain:
			for len(reqs) < l.opts.MaxBatch {
				select {
				case r := <-l.reqs:
					reqs = r.unbundle(reqs) // a bundle is not split: it may pass MaxBatch
				default:
					break drain
				}
			}
			b = l.prepare(reqs, false)
		case <-tick.C:
			if l.opts.Now().Sub(l.lastCheckpoint) >= l.opts.CheckpointInterval {
				b = l.prepare(nil, true)
			}
		case <-l.quit:
			for {
				select {
				case r := <-l.reqs:
					for _, r := range r.unbundle(nil) {
						r.done <- result{err: ErrClosed}
					}
				default:
					return
				}
			}
		}
		if b != nil {
			l.commits <- b
		}
	}
}

// commitLoop is the committer: it writes prepared batches in order, merging all
// that are waiting into one transaction, and answers their requests only once that
// transaction is durable. Between commits it follows the store when asked
// (follow.go).
func (l *Ledger) commitLoop(committed chan struct{}) {
	defer close(committed)
	tick, stop := l.followTicker()
	defer stop()
	for {
		var b *batch
		select {
		case next, ok := <-l.commits:
			if !ok {
				return
			}
			b = next
		case reply := <-l.follows:
			_, err := l.follow(context.Background())
			reply <- err
			continue
		case <-l.wake:
			l.follow(context.Background()) // a failure shows at the next Follow or commit
			continue
		case <-tick:
			l.follow(context.Background())
			continue
		}
		group := []*batch{b}
	more:
		for {
			select {
			case b, ok := <-l.commits:
				if !ok {
					break more
				}
				group = append(group, b)
			default:
				break more
			}
		}
		l.commit(group)
	}
}

var errVoid = errors.New("ledger: an earlier commit in the pipeline failed; retry")

// commit writes a group of consecutive batches in one transaction. Batches prepared
// on top of a failed commit are void and fail without touching storage.
func (l *Ledger) commit(group []*batch) {
	l.mu.Lock()
	gen := l.gen
	l.mu.Unlock()
	var live []*batch
	for _, b := range group {
		if b.gen == gen {
			live = append(live, b)
		} else {
			l.failAll(b.owners, errVoid)
		}
	}
	var err error
	if len(live) > 0 {
		entries, writes := live[0].entries, live[0].writes
		if len(live) > 1 {
			writes = newOverlay(nil)
			entries = nil
			for _, b := range live {
				entries = append(entries, b.entries...)
				b.writes.mergeInto(writes)
			}
		}
		list := writes.list()
		start := l.opts.Now()
		err = l.d.Commit(context.Background(), entries, list)
		if l.opts.CommitTook != nil {
			l.opts.CommitTook(l.opts.Now().Sub(start))
		}
		if err == nil {
			l.cache.apply(list)
			l.caughtUp.Store(start.UnixNano()) // the store's head was the local head
		} else if errors.Is(err, ErrConflict) && l.head.Load() != nil {
			// Another process committed first: follow it now, so that these
			// appends, prepared again (retryable), build on its entries. If
			// the store cannot be followed, retrying is futile: say why.
			// (Without a local head this was genesis, and another process
			// wrote one first: Open answers ErrConflict, its caller starts
			// again on that chain.)
			switch n, ferr := l.follow(context.Background()); {
			case ferr != nil:
				err = ferr
			case n == 0: // the store's head moved, yet nothing continues the local head
				err = fmt.Errorf("%w: the store's head is not the local head (seq %d), and no entry follows it", ErrDiverged, l.Head().Seq)
			}
		}
	}
	l.mu.Lock()
	if err != nil {
		// Every batch prepared on top of these is void. After a conflict,
		// follow has set what the new tip counts toward its checkpoint.
		l.gen++
		if !errors.Is(err, ErrConflict) {
			l.resetSince = 1
		}
	}
	l.pending = slices.DeleteFunc(l.pending, func(p *batch) bool { return slices.Contains(group, p) })
	l.mu.Unlock()
	for _, b := range live {
		if err != nil {
			l.failAll(b.owners, fmt.Errorf("ledger: commit: %w", err))
			continue
		}
		last := b.entries[len(b.entries)-1]
		l.head.Store(&Head{Seq: last.Seq, Hash: b.hashes[len(b.hashes)-1], Time: last.Time})
		l.opts.OnCommit(b.entries)
		for i, r := range b.owners {
			if r != nil {
				n := max(1, len(r.group))
				r.done <- result{es: b.entries[i+1-n : i+1]}
			}
		}
	}
	for _, b := range group { // refused on top of these entries: now they are durable (or failed)
		if err != nil || b.gen != gen {
			answerVoid(b.refused)
		} else {
			answer(b.refused)
		}
	}
	// The appenders just answered were made runnable on this goroutine's P. If the
	// committer went straight on to the next commit, that P would sit in fsync
	// with them queued until the runtime takes it back (a sysmon tick, 20 µs to
	// 10 ms); yielding lets them run first, and the next group grows meanwhile
	// (docs/benchmarks.md, OIDC mint: ~3.0k -> ~3.8k tokens/s on 2 cores).
	runtime.Gosched()
}

// base returns the state that the next batch builds on: committed state plus every
// pending batch's writes. After a failed commit it first resets the tip to storage.
func (l *Ledger) base(ctx context.Context) (*overlay, uint64, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.tipGen != l.gen {
		// The local head, not the store's: entries another process committed
		// are built on only once the committer has followed them (follow.go).
		// An entry whose commit failed but reached the store anyway is found
		// the same way, by the conflict the next commit meets.
		l.tip, l.empty, l.tipGen, l.sinceCheckpoint = *l.head.Load(), false, l.gen, l.resetSince
		l.pending = nil // the committer voids them
	}
	var st State = View(ctx, l.reader())
	for _, p := range l.pending {
		st = &overlay{base: st, writes: p.writes.writes}
	}
	return newOverlay(st), l.gen, nil
}

// answer tells refused requests why.
func answer(refused []refusal) {
	for _, f := range refused {
		f.r.done <- result{err: f.err}
	}
}

// answerVoid answers requests refused on top of entries that were never
// committed: what refused them may not hold, so appends are prepared again
// (retryable); a submitted entry keeps its refusal (its signer decides).
func answerVoid(refused []refusal) {
	for _, f := range refused {
		if f.r.external == nil {
			f.err = errVoid
		}
		f.r.done <- result{err: f.err}
	}
}

// answerRefused answers requests refused on top of the tip once every entry they
// were judged against is durable: with the newest pending batch, or now if none
// is pending. So a caller that looks at state again after a refusal (a read that
// lost a race for a grant, a store that lost one for a version) sees what
// refused it, instead of the state before it.
func (l *Ledger) answerRefused(refused []refusal) {
	if len(refused) == 0 {
		return
	}
	l.mu.Lock()
	if n := len(l.pending); n > 0 {
		l.pending[n-1].refused = append(l.pending[n-1].refused, refused...)
		l.mu.Unlock()
		return
	}
	l.mu.Unlock()
	answer(refused)
}
