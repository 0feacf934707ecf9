package mailedge

import (
	"context"
	"errors"
	"net"
	"slices"
	"strings"
	"sync"
	"time"
)

// DNS cache bounds. net.Resolver does not expose a record's TTL, so an answer
// is kept for dnsCacheTTL: at or below the TTL almost every SPF, DKIM and
// DMARC record is published with, so a change is seen within a minute, as
// with a resolver that honours a 60-second TTL.
const (
	dnsCacheTTL  = time.Minute
	dnsCacheSize = 10_000 // names (of each query type together)
)

// dnsCache is a Resolver that remembers answers, "no such name" ones too, for
// dnsCacheTTL, at most size of them, so a flood of mail from one domain asks
// DNS once per name a minute instead of once per message. Queries for a name
// already being asked wait for that answer instead of asking again. A
// temporary failure is not kept. Answers are copied out, so callers cannot
// change what the cache holds.
type dnsCache struct {
	r    Resolver
	size int
	now  func() time.Time
	mu   sync.Mutex
	m    map[string]*dnsEntry
}

type dnsEntry struct {
	done    chan struct{} // closed once val and err are set
	val     any
	err     error
	expires time.Time
}

func newDNSCache(r Resolver, size int, now func() time.Time) *dnsCache {
	return &dnsCache{r: r, size: size, now: now, m: map[string]*dnsEntry{}}
}

func (c *dnsCache) len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.m)
}

// do answers key from the cache, or with ask (once, however many callers).
// ask runs with ctx's deadline but not its cancellation: one caller leaving
// does not fail the others waiting for the same answer.
func (c *dnsCache) do(ctx context.Context, key string, ask func(context.Context) (any, error)) (any, error) {
	key = strings.ToLower(key)
	c.mu.Lock()
	e := c.m[key]
	if e != nil {
		select {
		case <-e.done:
			if !c.now().Before(e.expires) {
				e = nil
			}
		default: // being asked
		}
	}
	if e != nil {
		c.mu.Unlock()
		select {
		case <-e.done:
			return e.val, e.err
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	e = &dnsEntry{done: make(chan struct{})}
	c.put(key, e)
	c.mu.Unlock()

	dl, ok := ctx.Deadline()
	if !ok {
		dl = time.Now().Add(dnsTimeout)
	}
	actx, cancel := context.WithDeadline(context.WithoutCancel(ctx), dl)
	val, err := ask(actx)
	cancel()
	c.mu.Lock()
	e.val, e.err, e.expires = val, err, c.now().Add(dnsCacheTTL)
	var dnsErr *net.DNSError
	if err != nil && !(errors.As(err, &dnsErr) && dnsErr.IsNotFound) && c.m[key] == e {
		delete(c.m, key) // only answers and "no such name" are kept
	}
	close(e.done)
	c.mu.Unlock()
	return val, err
}

// put adds e, making room first: expired entries go, and if that frees less
// than a tenth of the cache, all of it goes. A sweep then frees at least a
// tenth, so a flood of new names (a sender can name any domain) costs O(1)
// per name amortised, not a scan of the whole cache each.
func (c *dnsCache) put(key string, e *dnsEntry) {
	if len(c.m) >= c.size {
		now := c.now()
		for k, old := range c.m {
			select {
			case <-old.done:
				if !now.Before(old.expires) {
					delete(c.m, k)
				}
			default:
			}
		}
		if len(c.m) > c.size-max(c.size/10, 1) {
			clear(c.m) // waiters keep their entry; only later callers ask again
		}
	}
	c.m[key] = e
}

func (c *dnsCache) LookupTXT(ctx context.Context, name string) ([]string, error) {
	v, err := c.do(ctx, "TXT "+name, func(ctx context.Context) (any, error) { return c.r.LookupTXT(ctx, name) })
	s, _ := v.([]string)
	return slices.Clone(s), err
}

func (c *dnsCache) LookupMX(ctx context.Context, name string) ([]*net.MX, error) {
	v, err := c.do(ctx, "MX "+name, func(ctx context.Context) (any, error) { return c.r.LookupMX(ctx, name) })
	mx, _ := v.([]*net.MX)
	out := make([]*net.MX, len(mx))
	for i, m := range mx {
		out[i] = &net.MX{Host: m.Host, Pref: m.Pref}
	}
	return out, err
}

func (c *dnsCache) LookupIPAddr(ctx context.Context, host string) ([]net.IPAddr, error) {
	v, err := c.do(ctx, "A "+host, func(ctx context.Context) (any, error) { return c.r.LookupIPAddr(ctx, host) })
	a, _ := v.([]net.IPAddr)
	return slices.Clone(a), err
}

func (c *dnsCache) LookupAddr(ctx context.Context, addr string) ([]string, error) {
	v, err := c.do(ctx, "PTR "+addr, func(ctx context.Context) (any, error) { return c.r.LookupAddr(ctx, addr) })
	s, _ := v.([]string)
	return slices.Clone(s), err
}
