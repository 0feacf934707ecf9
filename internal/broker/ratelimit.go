package broker

import (
	"context"
	"crypto/sha256"
	"fmt"
	"math"
	"strings"
	"sync"
	"time"

	"github.com/agentkeys/agentkeys/internal/problem"
	"github.com/agentkeys/agentkeys/internal/ratelimit"
)

// limiter is the in-memory ratelimit.Limiter, each broker's own unless
// Config.Limiters shares one (§3); NewMemoryLimiter makes one. It gives each key a bucket of limit tokens; a request spends one, and each
// spent token comes back exactly one window after it was spent. So no key is ever
// admitted more than limit times in any window (the 101st read inside a minute is
// refused), and requests resume as the oldest ones leave the window.
//
// Its memory is bounded whatever callers send. A key longer than maxKeyLen is
// replaced by its SHA-256, so a bucket never keeps a caller's long string. At most
// maxKeys buckets exist: they sit in a list ordered by their last spend, so the
// least recently used bucket is the first to go idle (all its tokens back; it then
// equals a new one and is dropped). When the table is full and even that bucket is
// busy, a new key is refused until it is idle: a flood of distinct keys is refused
// rather than grown into memory, while keys already in the table keep working.
type limiter struct {
	limit   int
	window  int64 // nanoseconds
	maxKeys int
	mu      sync.Mutex
	buckets map[string]*bucket
	lru     bucket // sentinel of the ring: lru.next is the most recently used bucket
}

// bucket holds the times its spent tokens were spent (unix nanos), oldest first,
// as a ring, and when a refusal of its key was last audited; prev and next link
// it into the limiter's list.
type bucket struct {
	key        string
	spent      []int64
	head       int
	audited    int64
	prev, next *bucket
}

const (
	// maxKeyLen bounds the bytes a limiter keeps of one key.
	maxKeyLen = sha256.Size
	// defaultMaxKeys bounds the buckets of one limiter.
	defaultMaxKeys = 100_000
)

func newLimiter(limit int, window time.Duration) *limiter {
	return newLimiterKeys(limit, window, defaultMaxKeys)
}

// newLimiterKeys is newLimiter with at most maxKeys buckets.
func newLimiterKeys(limit int, window time.Duration, maxKeys int) *limiter {
	l := &limiter{limit: max(limit, 1), window: int64(window), maxKeys: max(maxKeys, 1), buckets: map[string]*bucket{}}
	l.lru.prev, l.lru.next = &l.lru, &l.lru
	return l
}

// allow spends a token of key's bucket; when none is left it says how long until one is.
func (l *limiter) allow(key string, now time.Time) (bool, time.Duration) {
	t := now.UnixNano()
	key = boundKey(key)
	l.mu.Lock()
	defer l.mu.Unlock()
	// Drop up to two idle buckets per call: each bucket is created once, so this
	// keeps the table as small as the keys in use.
	for range 2 {
		if b := l.lru.prev; b != &l.lru && t-b.newest() >= l.window {
			l.remove(b)
		}
	}
	b := l.buckets[key]
	if b == nil {
		if len(l.buckets) >= l.maxKeys {
			return false, time.Duration(l.lru.prev.newest() + l.window - t)
		}
		b = &bucket{key: strings.Clone(key), spent: make([]int64, 0, min(l.limit, 4))}
		l.buckets[b.key] = b
	} else if len(b.spent) == l.limit {
		back := b.spent[b.head] + l.window
		if t < back {
			return false, time.Duration(back - t)
		}
		b.spent[b.head] = t
		b.head = (b.head + 1) % l.limit
		l.toFront(b)
		return true, 0
	}
	b.spent = append(b.spent, t)
	l.toFront(b)
	return true, 0
}

// Allow implements ratelimit.Limiter.
func (l *limiter) Allow(_ context.Context, key string, now time.Time) (bool, time.Duration, error) {
	ok, wait := l.allow(key, now)
	return ok, wait, nil
}

// FirstRefusal implements ratelimit.Limiter.
func (l *limiter) FirstRefusal(_ context.Context, key string, now time.Time) (bool, error) {
	return l.firstRefusal(key, now), nil
}

// NewMemoryLimiter is the default Config.Limiters: a limiter in this process's
// memory, holding at most r.MaxKeys keys.
func NewMemoryLimiter(r ratelimit.Rule) ratelimit.Limiter {
	return newLimiterKeys(r.Count, r.Window, r.MaxKeys)
}

// rule is a limit and the limiter that enforces it.
type rule struct {
	ratelimit.Rule
	lim ratelimit.Limiter
}

func newRule(mk ratelimit.New, r ratelimit.Rule) *rule {
	r.Count = max(r.Count, 1)
	if r.MaxKeys <= 0 {
		r.MaxKeys = defaultMaxKeys
	}
	return &rule{Rule: r, lim: mk(r)}
}

// errLimiter answers a request whose limiter could not: refused (fail closed).
func errLimiter(err error) error {
	return problem.Wrap(err, problem.Internal, "retry; if it persists, the operator should check the server log",
		"the rate limiter did not answer, so the request was refused")
}

// boundKey is the key a limiter keeps for key: itself, or its SHA-256 when longer.
func boundKey(key string) string {
	if len(key) > maxKeyLen {
		sum := sha256.Sum256([]byte(key))
		return string(sum[:])
	}
	return key
}

// firstRefusal reports whether a refusal of key at now is the first one in a
// window (since the last one it reported): the one to audit.
func (l *limiter) firstRefusal(key string, now time.Time) bool {
	t := now.UnixNano()
	l.mu.Lock()
	defer l.mu.Unlock()
	b, ok := l.buckets[boundKey(key)]
	if !ok {
		return true
	}
	if b.audited != 0 && t-b.audited < l.window {
		return false
	}
	b.audited = t
	return true
}

// limit spends a token of key's bucket in l. Refused, it answers RATE_LIMITED
// with Retry-After, rule saying the limit (a format for the count and the
// window). The first refusal of a key in each window goes through audit, which
// records it on the ledger and returns what to answer; later ones in the window
// are answered without an entry, so a caller hammering a limit cannot grow the
// ledger by more than one entry per key per window.
func (b *Broker) limit(l *rule, key, rule string, audit func(error) error) error {
	now, ctx := b.cfg.Now(), context.Background()
	ok, wait, err := l.lim.Allow(ctx, key, now)
	if err != nil {
		return errLimiter(err)
	}
	if ok {
		return nil
	}
	p := problem.Newf(problem.RateLimited, fmt.Sprintf("wait %d s and retry", retryAfterSeconds(wait)), rule, l.Count, l.Window)
	p.RetryAfter = retryAfterSeconds(wait)
	if first, err := l.lim.FirstRefusal(ctx, key, now); err != nil {
		return errLimiter(err)
	} else if first {
		return audit(p)
	}
	return p
}

func (b *bucket) newest() int64 { return b.spent[(b.head+len(b.spent)-1)%len(b.spent)] }

// toFront moves b (linked or new) to the front of the list.
func (l *limiter) toFront(b *bucket) {
	if b.prev != nil {
		b.prev.next, b.next.prev = b.next, b.prev
	}
	b.prev, b.next = &l.lru, l.lru.next
	l.lru.next.prev = b
	l.lru.next = b
}

func (l *limiter) remove(b *bucket) {
	b.prev.next, b.next.prev = b.next, b.prev
	delete(l.buckets, b.key)
}

// size is the number of buckets (tests).
func (l *limiter) size() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.buckets)
}

func retryAfterSeconds(d time.Duration) int { return max(1, int(math.Ceil(d.Seconds()))) }
