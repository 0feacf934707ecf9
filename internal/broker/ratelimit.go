package broker

import (
	"math"
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// limiter is a token bucket per session: limit reads per window, refilled evenly.
type limiter struct {
	limit  int
	window time.Duration
	mu     sync.Mutex
	bySID  map[string]*rate.Limiter
}

func newLimiter(limit int, window time.Duration) *limiter {
	return &limiter{limit: limit, window: window, bySID: map[string]*rate.Limiter{}}
}

// allow takes one token for sid; when none is left it returns how long until one is.
func (l *limiter) allow(sid string, now time.Time) (bool, time.Duration) {
	l.mu.Lock()
	lim, ok := l.bySID[sid]
	if !ok {
		if len(l.bySID) > 100_000 { // forget idle sessions: a full bucket equals a new one
			for k, v := range l.bySID {
				if v.TokensAt(now) >= float64(l.limit) {
					delete(l.bySID, k)
				}
			}
		}
		lim = rate.NewLimiter(rate.Every(l.window/time.Duration(l.limit)), l.limit)
		l.bySID[sid] = lim
	}
	l.mu.Unlock()
	r := lim.ReserveN(now, 1)
	if d := r.DelayFrom(now); d > 0 {
		r.CancelAt(now)
		return false, d
	}
	return true, 0
}

func retryAfterSeconds(d time.Duration) int { return int(math.Ceil(d.Seconds())) }
