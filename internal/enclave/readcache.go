package enclave

import (
	"container/list"
	"crypto/rand"
	"errors"
	"fmt"
	"sync"
	"time"
)

// Sealed read cache.
//
// Opening a stored credential costs a hybrid ML-KEM-768 + X25519
// decapsulation (~0.17 ms), and a busy credential is read many times. The
// enclave keeps no plaintext between operations, so instead it keeps, for each
// stored ciphertext it has opened, a sealed copy: AES-256-GCM of the plaintext
// under a 32-byte cache key drawn from crypto/rand at Open. That key is not
// derived from the seed, is never written, returned or printed, and is zeroed
// by Close, which makes every copy unreadable. The additional data of a copy is
// the shielding key path, the ciphertext's HPKE info (owner|agent-or-*|service)
// and the SHA-256 of the ciphertext, which is also the copy's map key. A read
// opens the copy (~1 µs) into a buffer it zeroes once the result is
// re-encrypted; a miss opens the HPKE ciphertext once and seals the copy. A
// copy that does not open for the ciphertext, path and info asked for —
// modified, or moved under another credential or another version of the same
// credential — is dropped and the operation refused: a copy releases its
// plaintext only for the exact ciphertext and binding it was made from.
//
// What this protects against: a disclosure of the cache alone (its entries,
// say through a bug that dumps a data structure) reveals no credential. It does
// not protect against whoever reads the whole process memory (root on the
// broker host): they read the cache key too, and the shielding key, which
// opens every stored credential anyway.
//
// Bounds, those of the plaintext cache it replaces plus a byte budget: at most
// readCacheMax copies holding at most readCacheBytes of ciphertext, none older
// than readCacheTTL. Every copy lives equally long, so insertion order is
// expiry order: the oldest copies go first, expired or to make room.
const (
	readCacheTTL   = 5 * time.Minute
	readCacheMax   = 4096
	readCacheBytes = 32 << 20
	readCacheLabel = "agentkeys/read-cache/v1"
)

// errCacheRefused: a sealed copy did not open for the ciphertext and binding
// asked for.
var errCacheRefused = errors.New("the enclave's sealed copy of it was made for another key path, info or ciphertext, or was modified: refused, and the copy dropped")

type readCache struct {
	mu      sync.Mutex
	key     [32]byte
	entries map[[32]byte]*list.Element // of *readEntry
	order   list.List                  // of *readEntry, oldest first
	bytes   int
}

type readEntry struct {
	id    [32]byte
	box   []byte // nonce || AES-256-GCM(plaintext); never modified once stored
	added time.Time
}

func newReadCache() *readCache {
	c := &readCache{entries: make(map[[32]byte]*list.Element)}
	rand.Read(c.key[:]) // never fails (crypto/rand)
	return c
}

// cacheAAD binds a copy to the shielding key path, the HPKE info and the
// ciphertext's hash.
func cacheAAD(id [32]byte, path string, info []byte) []byte {
	aad := appendLP(nil, []byte(readCacheLabel))
	aad = appendLP(aad, []byte(path))
	aad = appendLP(aad, info)
	return appendLP(aad, id[:])
}

// open returns the plaintext of the copy of id for path and info, and whether
// there was an unexpired one. The caller zeroes the plaintext. A copy that
// does not open is dropped and reported as errCacheRefused.
func (c *readCache) open(id [32]byte, path string, info []byte, now time.Time) ([]byte, bool, error) {
	c.mu.Lock()
	c.expire(now)
	el, ok := c.entries[id]
	var box []byte
	if ok {
		box = el.Value.(*readEntry).box
	}
	c.mu.Unlock()
	if !ok {
		return nil, false, nil
	}
	gcm, err := newGCM(c.key[:])
	if err != nil {
		return nil, false, err
	}
	n := gcm.NonceSize()
	if len(box) >= n+gcm.Overhead() {
		if pt, err := gcm.Open(nil, box[:n], box[n:], cacheAAD(id, path, info)); err == nil {
			return pt, true, nil
		}
	}
	c.mu.Lock()
	if c.entries[id] == el {
		c.remove(el)
	}
	c.mu.Unlock()
	return nil, false, errCacheRefused
}

// put seals a copy of pt for id, path and info. It never fails: without a
// copy the next operation opens the ciphertext again.
func (c *readCache) put(id [32]byte, path string, info, pt []byte, now time.Time) {
	gcm, err := newGCM(c.key[:])
	if err != nil {
		return
	}
	box := make([]byte, gcm.NonceSize(), gcm.NonceSize()+len(pt)+gcm.Overhead())
	rand.Read(box) // never fails (crypto/rand)
	box = gcm.Seal(box, box, pt, cacheAAD(id, path, info))
	if len(box) > readCacheBytes {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if el, ok := c.entries[id]; ok {
		c.remove(el)
	}
	c.expire(now)
	for c.order.Len() >= readCacheMax || c.bytes+len(box) > readCacheBytes {
		c.remove(c.order.Front())
	}
	c.entries[id] = c.order.PushBack(&readEntry{id: id, box: box, added: now})
	c.bytes += len(box)
}

// expire drops the copies older than readCacheTTL. c.mu is held.
func (c *readCache) expire(now time.Time) {
	for el := c.order.Front(); el != nil && now.Sub(el.Value.(*readEntry).added) >= readCacheTTL; el = c.order.Front() {
		c.remove(el)
	}
}

// remove drops one copy. c.mu is held.
func (c *readCache) remove(el *list.Element) {
	ent := c.order.Remove(el).(*readEntry)
	delete(c.entries, ent.id)
	c.bytes -= len(ent.box)
}

// Format prints the number of copies only, for every verb: no fmt verb
// reaches the key.
func (c *readCache) Format(f fmt.State, verb rune) {
	c.mu.Lock()
	n := c.order.Len()
	c.mu.Unlock()
	fmt.Fprintf(f, "readcache(copies=%d)", n)
}

// close zeroes the cache key and drops every copy.
func (c *readCache) close() {
	c.mu.Lock()
	defer c.mu.Unlock()
	clear(c.key[:])
	clear(c.entries)
	c.order.Init()
	c.bytes = 0
}
