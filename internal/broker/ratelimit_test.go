package broker

import (
	"fmt"
	"runtime"
	"strings"
	"testing"
	"time"
)

func TestLimiterWindow(t *testing.T) {
	l := newLimiter(3, time.Minute)
	t0 := time.Unix(1000, 0)
	for i := range 3 {
		if ok, _ := l.allow("s", t0.Add(time.Duration(i)*time.Second)); !ok {
			t.Fatalf("read %d refused", i+1)
		}
	}
	ok, wait := l.allow("s", t0.Add(59*time.Second))
	if ok || wait != time.Second {
		t.Fatalf("4th read inside the window: ok=%v wait=%v", ok, wait)
	}
	if ok, _ := l.allow("other", t0.Add(59*time.Second)); !ok {
		t.Fatal("another session was limited")
	}
	if ok, _ := l.allow("s", t0.Add(60*time.Second)); !ok {
		t.Fatal("the first token did not come back after the window")
	}
	if ok, wait := l.allow("s", t0.Add(60*time.Second)); ok || wait != time.Second {
		t.Fatalf("second token came back early: ok=%v wait=%v", ok, wait)
	}
}

// liveHeap is the heap still reachable after a full collection.
func liveHeap() uint64 {
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapAlloc
}

// A key sprayed by a caller costs the limiter a bounded amount, however long it is:
// 60 distinct 1 MB keys (the refused pair requests of issue 16) keep nothing of
// their size.
func TestLimiterLongKeysBounded(t *testing.T) {
	l := newLimiter(10, time.Minute)
	t0 := time.Unix(1000, 0)
	before := liveHeap()
	for i := range 60 {
		key := fmt.Sprintf("owner:%08d", i) + strings.Repeat("a", 1<<20)
		l.allow(key, t0)
	}
	if grown := int64(liveHeap()) - int64(before); grown > 1<<20 {
		t.Fatalf("60 long keys grew the live heap by %d bytes; want under 1 MiB", grown)
	}
	runtime.KeepAlive(l)
}

// A spray of distinct keys never grows a limiter past maxKeys: new keys are
// refused (with the wait until the least recently used bucket is idle), keys
// already in the table keep their own tokens, and idle buckets make room.
func TestLimiterKeyCountBounded(t *testing.T) {
	l := newLimiterKeys(2, time.Minute, 100)
	t0 := time.Unix(1000, 0)
	if ok, _ := l.allow("known", t0); !ok {
		t.Fatal("first key refused")
	}
	refused := 0
	for i := range 10_000 {
		ok, wait := l.allow(fmt.Sprintf("spray-%d", i), t0.Add(time.Second))
		if !ok {
			refused++
			if wait != 59*time.Second {
				t.Fatalf("refused new key: wait %v, want 59s (until the oldest bucket is idle)", wait)
			}
		}
		if n := l.size(); n > 100 {
			t.Fatalf("%d buckets after %d keys; want at most 100", n, i+1)
		}
	}
	if refused != 10_000-99 {
		t.Fatalf("%d of 10000 new keys refused; want %d", refused, 10_000-99)
	}
	if ok, _ := l.allow("known", t0.Add(2*time.Second)); !ok {
		t.Fatal("a key already in the full table lost its second token")
	}
	if ok, _ := l.allow("known", t0.Add(2*time.Second)); ok {
		t.Fatal("a key in the full table got a third token")
	}
	// One window later the spray's buckets are idle: new keys are admitted and
	// the table shrinks to what is in use.
	later := t0.Add(time.Minute + 2*time.Second)
	for i := range 100 { // 50 keys, twice each
		if ok, _ := l.allow(fmt.Sprintf("new-%d", i%50), later); !ok {
			t.Fatalf("new key %d refused after the window", i)
		}
	}
	if n := l.size(); n > 100 {
		t.Fatalf("%d buckets; want at most 100", n)
	}
	for i := range 200 {
		l.allow("again", later.Add(2*time.Minute+time.Duration(i)))
	}
	if n := l.size(); n != 1 {
		t.Fatalf("%d buckets once every other key is idle; want 1", n)
	}
}

// A long key is kept as its 32-byte hash, and still limits as itself.
func TestLimiterLongKeyIsHashed(t *testing.T) {
	l := newLimiter(1, time.Minute)
	t0 := time.Unix(1000, 0)
	long := strings.Repeat("x", 1000)
	if ok, _ := l.allow(long, t0); !ok {
		t.Fatal("first use refused")
	}
	if ok, _ := l.allow(long, t0); ok {
		t.Fatal("a long key was not limited")
	}
	if ok, _ := l.allow(long+"y", t0); !ok {
		t.Fatal("another long key shared the bucket")
	}
	for k := range l.buckets {
		if len(k) > maxKeyLen {
			t.Fatalf("a bucket keeps a %d-byte key", len(k))
		}
	}
}

// Concurrent callers with distinct keys keep the table within maxKeys (run under
// -race in CI).
func TestLimiterConcurrentSpray(t *testing.T) {
	l := newLimiterKeys(5, time.Minute, 100)
	t0 := time.Unix(1000, 0)
	done := make(chan struct{})
	for g := range 8 {
		go func() {
			defer func() { done <- struct{}{} }()
			for i := range 1000 {
				l.allow(fmt.Sprintf("%d-%d", g, i), t0.Add(time.Duration(i)*time.Millisecond))
			}
		}()
	}
	for range 8 {
		<-done
	}
	if n := l.size(); n > 100 {
		t.Fatalf("%d buckets; want at most 100", n)
	}
}
