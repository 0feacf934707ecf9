package token

import "sync"

// cache holds the checked claims of tokens whose signature verified, keyed
// by SHA-256 of the exact token text. It is bounded: when full, a quarter of
// the entries (whichever map iteration yields first, which is effectively
// random) is dropped. A nil *cache caches nothing. Entries are never handed
// out directly; Verify returns clones.
type cache struct {
	max int
	mu  sync.RWMutex
	m   map[[32]byte]*Claims
}

// newCache returns a cache of size entries: 0 means the default, negative
// means no cache (nil).
func newCache(size int) *cache {
	switch {
	case size < 0:
		return nil
	case size == 0:
		size = defaultCacheSize
	}
	return &cache{max: size, m: make(map[[32]byte]*Claims)}
}

// get returns the cached claims for a token hash.
func (c *cache) get(sum [32]byte) (*Claims, bool) {
	if c == nil {
		return nil, false
	}
	c.mu.RLock()
	v, ok := c.m[sum]
	c.mu.RUnlock()
	return v, ok
}

// put caches claims for a token hash, evicting first if the cache is full.
func (c *cache) put(sum [32]byte, claims *Claims) {
	if c == nil {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, ok := c.m[sum]; ok {
		return
	}
	if len(c.m) >= c.max {
		c.evict()
	}
	c.m[sum] = claims.clone()
}

// evict drops a quarter of the entries (at least one). c.mu is held.
func (c *cache) evict() {
	n := max(len(c.m)/4, 1)
	for k := range c.m {
		if n == 0 {
			break
		}
		delete(c.m, k)
		n--
	}
}

// len returns the number of cached entries.
func (c *cache) len() int {
	if c == nil {
		return 0
	}
	c.mu.RLock()
	defer c.mu.RUnlock()
	return len(c.m)
}
