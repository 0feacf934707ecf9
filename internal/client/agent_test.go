package client

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"errors"
	"testing"
	"time"
)

// TestReadsCoalescePerSession: copies of one agent session (WithClock) send
// their reads together; another key's session, or the same token on another
// broker, has reads of its own; a session whose key is not P-256 (it cannot
// sign) refuses its reads with that error, batched or not.
func TestReadsCoalescePerSession(t *testing.T) {
	key := func(c elliptic.Curve) *ecdsa.PrivateKey {
		k, err := ecdsa.GenerateKey(c, rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		return k
	}
	on := func(url string) *Client {
		c, err := New(url)
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	c := on("http://127.0.0.1:8090")
	k := key(elliptic.P256())
	a := c.WithAgent("token", k)
	if a.reads != a.WithClock(time.Now).reads {
		t.Error("a copy made by WithClock does not send its reads with the session's")
	}
	if a.reads == c.WithAgent("token", key(elliptic.P256())).reads {
		t.Error("another proof key's session sends its reads with this one's")
	}
	if a.reads == on("http://127.0.0.1:8091").WithAgent("token", k).reads {
		t.Error("the session on another broker sends its reads with this one's")
	}
	bad := c.WithAgent("token", key(elliptic.P384()))
	if _, err := bad.ReadCoalesced(t.Context(), "svc"); err == nil || !errors.Is(err, bad.bad) {
		t.Errorf("a session whose key is not P-256 read: %v, want %v", err, bad.bad)
	}
}
