package ledger

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// Following another process's appends (several brokers on one store, §3).
//
// The committer goroutine owns the local head: it advances it past the
// entries it commits itself and, here, past entries another process committed
// to the same store. Both paths run on that one goroutine, so every entry
// reaches OnCommit exactly once and in seq order, whoever wrote it.
//
// The preparer builds batches on the local head (never on the store's head read
// directly), and the store refuses a batch whose first entry does not link to
// its head (ErrConflict). So a batch prepared before foreign entries were
// followed cannot commit: it fails, the committer follows the store, and the
// appends are prepared again on top of what it found (retryable, await), folded
// against state that includes the foreign entries. The state cache is cleared
// when foreign entries are followed: the store already holds their writes.

// followBatch is how many entries one store read brings while following.
const followBatch = 512

// maxRetries bounds how often one append is prepared again after its batch
// lost a race with another process's commit (or was voided by a failed one).
const maxRetries = 64

// ErrDiverged means the store is not the chain this ledger committed: the entry
// after the local head does not link to it, or the store's head moved and no
// entry continues the local head (the store lost it).
var ErrDiverged = errors.New("ledger: the store's chain does not continue the local head")

// Follow reads the entries another process committed to the store after the
// local head, feeds them to OnCommit in seq order and moves the head past
// them. It returns the head. The ledger also follows on its own: every
// Options.FollowEvery, when woken (Wake), and whenever a commit finds that the
// store's head moved.
func (l *Ledger) Follow(ctx context.Context) (Head, error) {
	reply := make(chan error, 1)
	select {
	case l.follows <- reply:
	case <-l.done:
		return l.Head(), ErrClosed
	case <-ctx.Done():
		return l.Head(), ctx.Err()
	}
	select {
	case err := <-reply:
		return l.Head(), err
	case <-ctx.Done():
		return l.Head(), ctx.Err()
	}
}

// Wake asks the ledger to follow the store soon, without waiting: a
// notification that another process committed (PostgreSQL LISTEN/NOTIFY) calls
// it. It never blocks; wakes while one is pending merge into it.
func (l *Ledger) Wake() {
	select {
	case l.wake <- struct{}{}:
	default:
	}
}

// Notifier is implemented by drivers that hear when another process commits
// (PostgreSQL LISTEN/NOTIFY). Open hands it the ledger's Wake. A notification
// only wakes the follower, which reads the store by seq after its own head:
// what a notification says is never trusted, and one that is lost or
// duplicated costs only latency (FollowEvery still polls).
type Notifier interface {
	Notify(wake func())
}

// followTicker is the poll of Options.FollowEvery; nil channel when it is off.
func (l *Ledger) followTicker() (<-chan time.Time, func()) {
	if l.opts.FollowEvery <= 0 {
		return nil, func() {}
	}
	t := time.NewTicker(l.opts.FollowEvery)
	return t.C, t.Stop
}

// follow runs on the committer goroutine (or in Open before it starts): it
// delivers every stored entry after the local head. Entries must continue the
// local head link by link; the first one that does not stops it with
// ErrDiverged, leaving the head at the last good entry. Batches prepared on
// the old head are voided, so their appends are prepared again on the new one.
func (l *Ledger) follow(ctx context.Context) (n int, err error) {
	moved := false
	since := -1 // entries followed after the last checkpoint among them; -1: none was one
	defer func() {
		if moved {
			l.mu.Lock()
			l.gen++ // batches prepared before these entries are void
			// What the preparer counts toward its next checkpoint. A followed
			// checkpoint vouches for what it follows: counting it as unvouched
			// would make two idle brokers answer each other's checkpoints forever.
			l.resetSince = max(since, 0)
			if since < 0 {
				l.resetSince = 1
			}
			l.mu.Unlock()
		}
	}()
	for {
		h := *l.head.Load()
		began := l.opts.Now().UnixNano()
		es, err := l.d.Entries(ctx, h.Seq+1, followBatch)
		if err != nil {
			return n, fmt.Errorf("ledger: following the store: %w", err)
		}
		var bad error
		for i := range es {
			e := &es[i]
			if e.Seq != h.Seq+1 || e.PrevHash != h.Hash {
				bad = fmt.Errorf("%w: entry %d does not link to the local head %d", ErrDiverged, e.Seq, h.Seq)
				es = es[:i]
				break
			}
			h = Head{Seq: e.Seq, Hash: e.Hash(), Time: e.Time}
			if e.Kind == KindCheckpoint {
				since = 0
			} else if since >= 0 {
				since++
			}
		}
		if len(es) > 0 {
			moved, n = true, n+len(es)
			l.cache.reset()
			l.head.Store(&h)
			l.opts.OnCommit(es)
		}
		if bad != nil || len(es) < followBatch {
			if bad == nil {
				l.caughtUp.Store(began) // the store held nothing newer when this read began
			}
			return n, bad
		}
	}
}

// retryable reports whether an append's failure left nothing behind and its
// request may be prepared again: its batch lost the store to another process's
// commit, or was voided by an earlier failed commit.
func retryable(err error) bool { return errors.Is(err, ErrConflict) || errors.Is(err, errVoid) }
