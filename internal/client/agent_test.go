package client

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"testing"
	"time"
)

// TestSameSession: copies of one agent session (WithClock) are the same
// session; another key, another broker, or a key that is not P-256 is not.
func TestSameSession(t *testing.T) {
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
	if !a.SameSession(a.WithClock(time.Now)) {
		t.Error("a copy made by WithClock is not the same session")
	}
	if a.SameSession(c.WithAgent("token", key(elliptic.P256()))) {
		t.Error("another proof key is the same session")
	}
	if a.SameSession(on("http://127.0.0.1:8091").WithAgent("token", k)) {
		t.Error("another broker is the same session")
	}
	bad := c.WithAgent("token", key(elliptic.P384()))
	if bad.SameSession(bad) {
		t.Error("a session whose key is not P-256 (it cannot sign) is the same as itself")
	}
}
