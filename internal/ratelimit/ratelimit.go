// Package ratelimit is the seam for the broker's request limits (per session,
// per account, per source address, in all): what one broker keeps in its own
// memory by default, and what several broker processes on one store (§3) may
// share instead. It holds only the interface; the broker's in-memory limiter is
// the default implementation, and every implementation must pass
// ratelimittest.Run.
package ratelimit

import (
	"context"
	"time"
)

// Limiter admits requests by key: at most Rule.Count in any Rule.Window for each
// key, counted across every process that shares it. A spent request comes back
// one window after it was spent (a sliding window), never earlier.
//
// A key is opaque bytes the broker chose (a session id, an account id, a source
// address); an implementation keeps at most a bounded digest of it and a bounded
// number of keys, refusing new keys rather than growing without bound. Methods
// are safe for concurrent use. An error refuses the request (fail closed);
// implementations bound their own wait, since a caller may not pass a deadline.
type Limiter interface {
	// Allow spends one of key's requests at now. Refused, ok is false and wait
	// is how long until the key's next request is admitted (0 < wait ≤ Window).
	Allow(ctx context.Context, key string, now time.Time) (ok bool, wait time.Duration, err error)
	// FirstRefusal reports whether a refusal of key at now is the first one
	// within a window of the last one it reported: the refusal the broker
	// records on the ledger, so a caller hammering a limit adds at most one
	// entry per key per window.
	FirstRefusal(ctx context.Context, key string, now time.Time) (bool, error)
}

// Rule is one limit.
type Rule struct {
	// Name says what is limited, for a shared implementation to keep rules
	// apart: "read", "mint", "anon/<kind>/source", "anon/<kind>/global".
	Name   string
	Count  int
	Window time.Duration
	// MaxKeys bounds the keys one process's memory tracks at once; a shared
	// implementation bounds its own storage.
	MaxKeys int
}

// New makes the limiter for a rule.
type New func(Rule) Limiter
