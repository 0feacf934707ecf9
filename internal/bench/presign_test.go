package bench

import (
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"
)

// maker makes values "v<n>@<seconds>" on an injected clock and counts them.
type maker struct {
	mu    sync.Mutex
	n     int
	fail  bool
	clock time.Time
}

func (m *maker) now() time.Time { m.mu.Lock(); defer m.mu.Unlock(); return m.clock }
func (m *maker) advance(d time.Duration) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.clock = m.clock.Add(d)
}
func (m *maker) make(now time.Time) (string, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.fail {
		return "", errors.New("no key")
	}
	m.n++
	return fmt.Sprintf("v%d@%d", m.n, now.Unix()), nil
}

func TestStockHandsOutEachValueOnceOldestFirst(t *testing.T) {
	m := &maker{clock: time.Unix(1000, 0)}
	s, err := NewStock(3, 30*time.Second, m.now, m.make)
	if err != nil || m.n != 3 || s.Left() != 3 {
		t.Fatalf("NewStock: %v, made %d, left %d; want 3 made before any Next", err, m.n, s.Left())
	}
	m.advance(10 * time.Second)
	for _, want := range []string{"v1@1000", "v2@1000", "v3@1000", "v4@1010", "v5@1010"} {
		if got, _, err := s.Next(); err != nil || got != want {
			t.Fatalf("Next = %q, %v; want %q (stock first, then made now)", got, err, want)
		}
	}
	if s.Left() != 0 {
		t.Fatalf("left %d, want 0", s.Left())
	}
}

func TestStockThrowsAwayStaleValues(t *testing.T) {
	m := &maker{clock: time.Unix(1000, 0)}
	s, err := NewStock(2, 30*time.Second, m.now, m.make)
	if err != nil {
		t.Fatal(err)
	}
	m.advance(30 * time.Second) // exactly maxAge old: still fresh
	if got, at, _ := s.Next(); got != "v1@1000" || at.Unix() != 1000 {
		t.Fatalf("at maxAge: %q, want the stock's v1@1000", got)
	}
	m.advance(time.Second) // now older than maxAge: thrown away, a new one made
	if got, at, _ := s.Next(); got != "v3@1031" || at.Unix() != 1031 || s.Left() != 0 {
		t.Fatalf("past maxAge: %q (left %d), want a new value v3@1031 and the stale one dropped", got, s.Left())
	}
}

func TestStockErrors(t *testing.T) {
	m := &maker{clock: time.Unix(1000, 0), fail: true}
	if _, err := NewStock(1, time.Minute, m.now, m.make); err == nil {
		t.Fatal("NewStock with a failing maker: no error")
	}
	s, err := NewStock(0, time.Minute, m.now, m.make)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := s.Next(); err == nil {
		t.Fatal("Next with an empty stock and a failing maker: no error")
	}
}

// Concurrent workers never get the same value (run with -race).
func TestStockConcurrentNext(t *testing.T) {
	m := &maker{clock: time.Unix(1000, 0)}
	s, err := NewStock(500, time.Minute, m.now, m.make)
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	seen := map[string]bool{}
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for range 100 {
				v, _, err := s.Next()
				mu.Lock()
				if err != nil || seen[v] {
					t.Errorf("Next = %q, %v: handed out twice or failed", v, err)
				}
				seen[v] = true
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if len(seen) != 800 || m.n != 800 {
		t.Fatalf("%d distinct values, %d made; want 800 (500 from the stock)", len(seen), m.n)
	}
}

// DropThrough throws away the values of a second a server refused, and those
// before it, keeping later ones.
func TestStockDropThrough(t *testing.T) {
	m := &maker{clock: time.Unix(1000, 0)}
	s, err := NewStock(2, time.Minute, m.now, m.make)
	if err != nil {
		t.Fatal(err)
	}
	m.advance(time.Second)
	s.vals = append(s.vals, stamped{"late@1001", m.now()}) // one made a second later
	m.advance(500 * time.Millisecond)
	s.DropThrough(time.Unix(1000, 999_000_000))
	if got, _, _ := s.Next(); got != "late@1001" || s.Left() != 0 {
		t.Fatalf("after DropThrough(second 1000): %q, left %d; want late@1001 kept and the two of second 1000 dropped", got, s.Left())
	}
}
