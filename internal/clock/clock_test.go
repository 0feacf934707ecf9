package clock

import (
	"sync"
	"testing"
	"time"
)

func TestFake(t *testing.T) {
	start := time.Date(2026, 1, 2, 3, 4, 5, 6, time.UTC)
	f := NewFake(start)
	if !f.Now().Equal(start) || !f.Now().Equal(f.Now()) {
		t.Fatalf("a new clock shows %v, want %v and to stand still", f.Now(), start)
	}
	var wg sync.WaitGroup
	for range 10 {
		wg.Go(func() { f.Advance(time.Second) })
	}
	wg.Wait()
	if got := f.Now().Sub(start); got != 10*time.Second {
		t.Fatalf("10 concurrent one-second moves moved it %v", got)
	}
	f.Set(start.Add(-time.Hour))
	if !f.Now().Equal(start.Add(-time.Hour)) {
		t.Fatalf("Set: %v", f.Now())
	}
}
