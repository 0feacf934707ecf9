package ledger

import (
	"context"
	"sync"
)

// stateCache is a bounded write-through cache of committed state. The committer
// applies every durable batch's writes to it, so a hit is never staler than the
// last acknowledged append. A miss reads storage; the value is cached only if no
// commit happened meanwhile (gen), so a slow reader cannot resurrect an old value.
type stateCache struct {
	mu  sync.RWMutex
	gen uint64
	m   map[string]cached
	max int
}

type cached struct {
	v  []byte
	ok bool // false: known to be absent
}

func newStateCache(max int) *stateCache { return &stateCache{m: make(map[string]cached), max: max} }

func (c *stateCache) get(ctx context.Context, r Reader, key string) ([]byte, bool, error) {
	c.mu.RLock()
	e, hit := c.m[key]
	gen := c.gen
	c.mu.RUnlock()
	if hit {
		return e.v, e.ok, nil
	}
	v, ok, err := r.Get(ctx, key)
	if err != nil {
		return nil, false, err
	}
	c.mu.Lock()
	if c.gen == gen {
		c.makeRoom()
		c.m[key] = cached{v, ok}
	}
	c.mu.Unlock()
	return v, ok, nil
}

// apply records a durable commit's writes.
func (c *stateCache) apply(writes []Write) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.gen++
	for _, w := range writes {
		if _, present := c.m[w.Key]; !present {
			c.makeRoom()
		}
		c.m[w.Key] = cached{w.Value, w.Value != nil}
	}
}

// reset forgets everything: another process committed writes this one did not
// see (Ledger.follow). A read in flight is not cached (gen).
func (c *stateCache) reset() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.gen++
	clear(c.m)
}

// makeRoom drops about a quarter of the entries when the cache is full.
func (c *stateCache) makeRoom() {
	if len(c.m) < c.max {
		return
	}
	n := len(c.m) / 4
	for k := range c.m { // map order is random enough
		if n--; n < 0 {
			break
		}
		delete(c.m, k)
	}
}

// cachedReader reads committed state through the cache; scans go to storage.
type cachedReader struct {
	c *stateCache
	d Reader
}

func (r cachedReader) Get(ctx context.Context, key string) ([]byte, bool, error) {
	return r.c.get(ctx, r.d, key)
}

func (r cachedReader) Scan(ctx context.Context, prefix string, fn func(string, []byte) error) error {
	return r.d.Scan(ctx, prefix, fn)
}
