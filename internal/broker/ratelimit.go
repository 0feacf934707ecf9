package broker

import (
	"fmt"
	"math"
	"sync"
	"time"

	"github.com/agentkeys/agentkeys/internal/problem"
)

// limiter gives each session a bucket of limit tokens; a read spends one, and each
// spent token comes back exactly one window after it was spent. So no session ever
// reads more than limit times in any window (the 101st read inside a minute is
// refused), and reads resume as the oldest ones leave the window.
type limiter struct {
	limit  int
	window time.Duration
	mu     sync.Mutex
	bySID  map[string]*bucket
}

// bucket holds the times its spent tokens were spent, oldest first (a ring),
// and when a refusal of its key was last audited.
type bucket struct {
	mu      sync.Mutex
	spent   []time.Time
	head    int
	audited time.Time
}

func newLimiter(limit int, window time.Duration) *limiter {
	return &limiter{limit: limit, window: window, bySID: map[string]*bucket{}}
}

// allow spends a token of sid's bucket; when none is left it says how long until one is.
func (l *limiter) allow(sid string, now time.Time) (bool, time.Duration) {
	l.mu.Lock()
	b, ok := l.bySID[sid]
	if !ok {
		if len(l.bySID) >= 100_000 {
			l.forgetIdle(now)
		}
		b = &bucket{}
		l.bySID[sid] = b
	}
	l.mu.Unlock()
	b.mu.Lock()
	defer b.mu.Unlock()
	if len(b.spent) < l.limit {
		b.spent = append(b.spent, now)
		return true, 0
	}
	back := b.spent[b.head].Add(l.window)
	if now.Before(back) {
		return false, back.Sub(now)
	}
	b.spent[b.head] = now
	b.head = (b.head + 1) % l.limit
	return true, 0
}

// firstRefusal reports whether a refusal of key at now is the first one in a
// window (since the last one it reported): the one to audit.
func (l *limiter) firstRefusal(key string, now time.Time) bool {
	l.mu.Lock()
	b, ok := l.bySID[key]
	l.mu.Unlock()
	if !ok {
		return true
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if !b.audited.IsZero() && now.Sub(b.audited) < l.window {
		return false
	}
	b.audited = now
	return true
}

// limit spends a token of key's bucket in l. Refused, it answers RATE_LIMITED
// with Retry-After, rule saying the limit (a format for the count and the
// window). The first refusal of a key in each window goes through audit, which
// records it on the ledger and returns what to answer; later ones in the window
// are answered without an entry, so a caller hammering a limit cannot grow the
// ledger by more than one entry per key per window.
func (b *Broker) limit(l *limiter, key, rule string, audit func(error) error) error {
	now := b.cfg.Now()
	ok, wait := l.allow(key, now)
	if ok {
		return nil
	}
	p := problem.Newf(problem.RateLimited, fmt.Sprintf("wait %d s and retry", retryAfterSeconds(wait)), rule, l.limit, l.window)
	p.RetryAfter = retryAfterSeconds(wait)
	if l.firstRefusal(key, now) {
		return audit(p)
	}
	return p
}

// forgetIdle drops buckets whose every token is back: they equal new ones.
func (l *limiter) forgetIdle(now time.Time) {
	for sid, b := range l.bySID {
		b.mu.Lock()
		newest := b.spent[(b.head+len(b.spent)-1)%len(b.spent)]
		b.mu.Unlock()
		if now.Sub(newest) >= l.window {
			delete(l.bySID, sid)
		}
	}
}

func retryAfterSeconds(d time.Duration) int { return max(1, int(math.Ceil(d.Seconds()))) }
