package daemon

import (
	"sync"
	"time"
)

// DefaultCloudTokens bounds a daemon's cache of GCP, Azure and Alibaba Cloud
// credentials: an agent uses a few roles, and a caller varying the request
// cannot grow the daemon past this.
const DefaultCloudTokens = 64

// CloudTokens keeps the short-lived credentials cloud_credentials got from
// GCP, Azure and Alibaba Cloud in memory, keyed by agent, provider, endpoint
// and every field of the request, until refreshMargin before they expire. It
// holds at most max entries: a full cache drops the expired ones, then the one
// expiring soonest. Nothing of it is written to disk: only long-running
// daemons (daemon serve, daemon mcp) serve these clouds, unlike AWS's
// credential_process, a new process per call, whose cache is files.
type CloudTokens struct {
	mu  sync.Mutex
	max int
	m   map[string]cloudEntry
}

type cloudEntry struct {
	tok    CloudToken
	issued time.Time // when the exchange started
}

// NewCloudTokens returns an empty cache of at most max credentials.
func NewCloudTokens(max int) *CloudTokens {
	return &CloudTokens{max: max, m: map[string]cloudEntry{}}
}

// get returns the credential under key while it is fresh at now; a stale one
// is dropped.
func (c *CloudTokens) get(key string, now time.Time) (*CloudToken, bool) {
	if c == nil {
		return nil, false
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.m[key]
	if !ok {
		return nil, false
	}
	if !fresh(e, now) {
		delete(c.m, key)
		return nil, false
	}
	t := e.tok
	return &t, true
}

// fresh reports whether e is further from its expiry than refreshMargin.
func fresh(e cloudEntry, now time.Time) bool {
	return e.tok.Expiration.Sub(now) > refreshMargin(e.tok.Expiration.Sub(e.issued))
}

// put remembers t under key if it has an expiry still fresh at now.
func (c *CloudTokens) put(key string, t CloudToken, issued, now time.Time) {
	e := cloudEntry{tok: t, issued: issued}
	if c == nil || c.max <= 0 || t.Expiration.IsZero() || !fresh(e, now) {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, ok := c.m[key]; !ok && len(c.m) >= c.max {
		for k, old := range c.m {
			if !fresh(old, now) {
				delete(c.m, k)
			}
		}
		for len(c.m) >= c.max {
			var soonest string
			for k, old := range c.m {
				if soonest == "" || old.tok.Expiration.Before(c.m[soonest].tok.Expiration) {
					soonest = k
				}
			}
			delete(c.m, soonest)
		}
	}
	c.m[key] = e
}

// drop forgets the credential under key.
func (c *CloudTokens) drop(key string) {
	if c == nil {
		return
	}
	c.mu.Lock()
	delete(c.m, key)
	c.mu.Unlock()
}

// size is how many credentials c holds.
func (c *CloudTokens) size() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.m)
}
