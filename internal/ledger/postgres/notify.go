package postgres

import (
	"context"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/agentkeys/agentkeys/internal/backoff"
	"github.com/agentkeys/agentkeys/internal/ledger"
)

// Waking the follower (ledger.Notifier). Every Commit sends
// pg_notify('agentkeys_ledger', '') inside its transaction, so PostgreSQL
// delivers it to every listener when, and only if, the entries are durable. A
// driver that was handed the ledger's Wake holds one connection of its own
// outside the pool, LISTENs on the channel and calls wake for each
// notification. What a notification carries is never read: it only wakes the
// follower, which reads the store by seq after its own head. Who sent it is
// read: PostgreSQL gives each notification its sender's backend process id,
// and a notification from one of the driver's own pool connections (its own
// commit, already applied) wakes nobody: it would cost a read that finds
// nothing, a round trip for every commit. The pool tells the driver each
// connection's process id when it connects and when it closes, so a process
// id is only taken for the driver's own while its connection is open, and
// PostgreSQL does not give it to another backend meanwhile.
//
// A listen connection that drops (server restart, idle timeout, a proxy) is
// reconnected with backoff, and each (re)connection wakes once, for what was
// committed while nobody listened. A notification lost any other way costs
// only latency: the ledger's FollowEvery poll is the backstop.

// notifyChannel is the channel every commit notifies.
const notifyChannel = "agentkeys_ledger"

// listenAppName names the listen connection in pg_stat_activity.
const listenAppName = "agentkeys-listen"

var _ ledger.Notifier = (*Driver)(nil)

type listener struct {
	mu      sync.Mutex
	cancel  context.CancelFunc // nil until Notify
	done    chan struct{}
	listens atomic.Int64 // LISTENs that succeeded (connections made)
	own     atomic.Int64 // notifications from the driver's own connections
}

// Notify implements ledger.Notifier: it starts listening and calls wake on every
// notification, until Close. A read-only driver commits nothing and has no
// follower: it does not listen. A second call is ignored.
func (d *Driver) Notify(wake func()) {
	if d.readOnly {
		return
	}
	l := &d.listener
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.cancel != nil {
		return
	}
	ctx, cancel := context.WithCancel(context.Background())
	l.cancel, l.done = cancel, make(chan struct{})
	go func() {
		defer close(l.done)
		bo := backoff.Backoff{Initial: 50 * time.Millisecond, Max: 5 * time.Second, Jitter: 0.5}
		for {
			if d.listenOnce(ctx, wake, &bo) == nil || ctx.Err() != nil {
				return
			}
			if bo.Wait(ctx) != nil {
				return
			}
		}
	}()
}

// Listens is how many times the driver has (re)connected its listen connection.
func (d *Driver) Listens() int64 { return d.listener.listens.Load() }

// listenOnce connects, listens and wakes on every notification until the
// connection fails (its error) or ctx ends (nil).
func (d *Driver) listenOnce(ctx context.Context, wake func(), bo *backoff.Backoff) error {
	cfg := d.pool.Config().ConnConfig.Copy()
	cfg.RuntimeParams["application_name"] = listenAppName
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		return err
	}
	defer conn.Close(context.Background())
	if _, err := conn.Exec(ctx, "LISTEN "+notifyChannel); err != nil {
		return err
	}
	bo.Reset()
	d.listener.listens.Add(1)
	wake() // whatever was committed while nobody listened
	for {
		n, err := conn.WaitForNotification(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
		if d.own.has(n.PID) {
			d.listener.own.Add(1)
			continue
		}
		wake()
	}
}

// backends are the process ids of the server backends behind the driver's
// open pool connections.
type backends struct {
	mu   sync.Mutex
	pids map[uint32]bool
}

func (b *backends) add(pid uint32) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.pids[pid] = true
}

func (b *backends) remove(pid uint32) {
	b.mu.Lock()
	defer b.mu.Unlock()
	delete(b.pids, pid)
}

func (b *backends) has(pid uint32) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.pids[pid]
}

func (d *Driver) stopListening() {
	l := &d.listener
	l.mu.Lock()
	cancel, done := l.cancel, l.done
	l.mu.Unlock()
	if cancel != nil {
		cancel()
		<-done
	}
}
