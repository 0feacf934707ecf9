package broker

import (
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
