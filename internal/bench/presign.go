package bench

import (
	"sync"
	"time"
)

// Stock is a bounded stock of single-use values, such as DPoP proofs, made
// before a run so that making them does not compete with the server for the
// CPU while the run is measured (the load client shares the machine). Each
// value is handed out once, oldest first; one older than the stock's maximum
// age is thrown away (a proof must be fresh when the server checks it), and
// when none is left Next makes one on the spot, as a client without a stock
// would. It is safe for concurrent use.
type Stock struct {
	mu     sync.Mutex
	vals   []stamped // oldest first
	next   int       // vals[next:] are unused
	make   func(now time.Time) (string, error)
	now    func() time.Time
	maxAge time.Duration
}

type stamped struct {
	v  string
	at time.Time
}

// NewStock makes n values with mk now (n ≥ 0), to be handed out by Next while
// they are at most maxAge old; now is the clock (nil = time.Now).
func NewStock(n int, maxAge time.Duration, now func() time.Time, mk func(now time.Time) (string, error)) (*Stock, error) {
	if now == nil {
		now = time.Now
	}
	s := &Stock{make: mk, now: now, maxAge: maxAge, vals: make([]stamped, 0, max(n, 0))}
	for range n {
		t := now()
		v, err := mk(t)
		if err != nil {
			return nil, err
		}
		s.vals = append(s.vals, stamped{v, t})
	}
	return s, nil
}

// Next returns the oldest unused value made at most maxAge ago, or a value
// made now when there is none, with the time it was made.
func (s *Stock) Next() (string, time.Time, error) {
	s.mu.Lock()
	now := s.now()
	for s.next < len(s.vals) {
		v := s.vals[s.next]
		s.vals[s.next] = stamped{} // handed out once; its memory goes with it
		s.next++
		if now.Sub(v.at) <= s.maxAge {
			s.mu.Unlock()
			return v.v, v.at, nil
		}
	}
	s.mu.Unlock()
	v, err := s.make(now)
	return v, now, err
}

// DropThrough throws away the unused values made in t's second or before it
// (a server refused a value of that second as older than itself).
func (s *Stock) DropThrough(t time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for s.next < len(s.vals) && s.vals[s.next].at.Unix() <= t.Unix() {
		s.vals[s.next] = stamped{}
		s.next++
	}
}

// Left is how many values are unused (fresh or not).
func (s *Stock) Left() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.vals) - s.next
}
