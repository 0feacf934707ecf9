package enclave

import (
	"bytes"
	"crypto/sha256"
	"fmt"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/agentkeys/agentkeys/internal/seal"
)

// cachedBox returns the sealed copy held for ciphertext ct.
func cachedBox(t *testing.T, e *Enclave, ct []byte) *readEntry {
	t.Helper()
	e.reads.mu.Lock()
	defer e.reads.mu.Unlock()
	el, ok := e.reads.entries[sha256.Sum256(ct)]
	if !ok {
		t.Fatal("no sealed copy for the ciphertext")
	}
	return el.Value.(*readEntry)
}

// TestReadCacheServesReads: a store check leaves a sealed copy that the
// following reads use, and that copy holds no plaintext.
func TestReadCacheServesReads(t *testing.T) {
	e := mustOpen(t, testConfig(t))
	pt := []byte("sk-live-read-cache-plaintext-91c0")
	info := []byte("agentkeys/credential/v1|owner|*|svc")
	ct, err := seal.To(publicBytes(t, e, "shielding/v1"), info, pt)
	if err != nil {
		t.Fatal(err)
	}
	if err := e.CheckSealed("shielding/v1", info, ct); err != nil {
		t.Fatal(err)
	}
	ent := cachedBox(t, e, ct)
	if bytes.Contains(ent.box, pt) {
		t.Fatal("the sealed copy holds the plaintext")
	}
	// Make the HPKE ciphertext unusable for the enclave: only the copy can
	// answer now.
	shield, done, err := e.key("shielding/v1", kindShielding)
	if err != nil {
		t.Fatal(err)
	}
	real := shield.shield
	other := mustClientKey(t)
	shield.shield = other
	for range 2 {
		client := mustClientKey(t)
		out, err := e.Reseal("shielding/v1", info, ct, client.PublicKey().Bytes(), []byte("r"))
		if err != nil {
			t.Fatalf("a read with a sealed copy needed the shielding key: %v", err)
		}
		if got, err := seal.Open(client, []byte("r"), out); err != nil || !bytes.Equal(got, pt) {
			t.Fatalf("read gave %q, %v", got, err)
		}
	}
	shield.shield = real
	done()
	if n := e.reads.order.Len(); n != 1 {
		t.Errorf("%d sealed copies for one ciphertext", n)
	}
}

// TestReadCacheRefusesForeignCopy: a sealed copy that was modified, or moved
// under another credential's ciphertext (another binding, or another version
// of the same binding), is refused, never released, and dropped so that the
// next read opens the ciphertext itself.
func TestReadCacheRefusesForeignCopy(t *testing.T) {
	e := mustOpen(t, testConfig(t))
	pub := publicBytes(t, e, "shielding/v1")
	infoA := []byte("agentkeys/credential/v1|ownerA|*|github")
	infoB := []byte("agentkeys/credential/v1|ownerB|agent1|openai")
	ptA := []byte("sk-credential-A-version-1-3e8d1f")
	ptA2 := []byte("sk-credential-A-version-2-77b0c4")
	ptB := []byte("sk-credential-B-version-1-c01d5a")
	sealFor := func(info, pt []byte) []byte {
		ct, err := seal.To(pub, info, pt)
		if err != nil {
			t.Fatal(err)
		}
		if err := e.CheckSealed("shielding/v1", info, ct); err != nil { // fills the copy
			t.Fatal(err)
		}
		return ct
	}
	ctA, ctA2, ctB := sealFor(infoA, ptA), sealFor(infoA, ptA2), sealFor(infoB, ptB)
	plaintexts := [][]byte{ptA, ptA2, ptB}

	client := mustClientKey(t)
	wrapped, err := e.SessionKeyTo("sid-1", client.PublicKey().Bytes(), []byte("ch"))
	if err != nil {
		t.Fatal(err)
	}
	ck, err := seal.Open(client, []byte("ch"), wrapped)
	if err != nil {
		t.Fatal(err)
	}
	read := func(info, ct []byte) ([]byte, error) {
		box, err := e.ResealToSession("shielding/v1", info, ct, "sid-1", nil)
		if err != nil {
			return nil, err
		}
		return seal.OpenBox(ck, nil, box)
	}

	for _, tc := range []struct {
		name     string
		info, ct []byte
		want     []byte
		corrupt  func(box []byte) []byte
	}{
		{"B's ciphertext given A's copy (another binding)", infoB, ctB, ptB,
			func([]byte) []byte { return bytes.Clone(cachedBox(t, e, ctA).box) }},
		{"A's version 2 given version 1's copy (same binding)", infoA, ctA2, ptA2,
			func([]byte) []byte { return bytes.Clone(cachedBox(t, e, ctA).box) }},
		{"a copy with one bit flipped", infoA, ctA, ptA,
			func(b []byte) []byte { b = bytes.Clone(b); b[len(b)-20] ^= 1; return b }},
		{"a truncated copy", infoA, ctA, ptA,
			func(b []byte) []byte { return bytes.Clone(b[:10]) }},
	} {
		ent := cachedBox(t, e, tc.ct)
		ent.box = tc.corrupt(ent.box)
		got, err := read(tc.info, tc.ct)
		if err == nil {
			t.Errorf("%s: released %q", tc.name, got)
			continue
		}
		for _, p := range plaintexts {
			if strings.Contains(err.Error(), string(p)) {
				t.Errorf("%s: the error holds a plaintext: %v", tc.name, err)
			}
		}
		if !strings.Contains(err.Error(), "refused") {
			t.Errorf("%s: error does not say the copy was refused: %v", tc.name, err)
		}
		// The copy was dropped: the next read opens the ciphertext itself.
		if got, err = read(tc.info, tc.ct); err != nil || !bytes.Equal(got, tc.want) {
			t.Errorf("%s: read after the refusal gave %q, %v", tc.name, got, err)
		}
	}

	// Asking for a cached ciphertext under another binding is refused, as
	// the HPKE open itself would refuse it.
	if _, err := read(infoB, ctA); err == nil {
		t.Error("A's ciphertext was released under B's binding")
	}
	if err := e.CheckSealed("shielding/v2", infoA, ctA2); err == nil {
		t.Error("a copy made under shielding/v1 opened for shielding/v2")
	}
}

// TestReadCacheKeyStaysInside: the cache key is drawn per enclave, is not
// reachable from any output (see TestNoSecretInAnyOutput), prints as nothing,
// and Close zeroes it and drops every copy.
func TestReadCacheKeyStaysInside(t *testing.T) {
	e1, e2 := mustOpen(t, testConfig(t)), mustOpen(t, testConfig(t))
	key := e1.reads.key
	if key == ([32]byte{}) || key == e2.reads.key {
		t.Fatal("the cache key is zero or shared between enclaves")
	}
	info := []byte("owner|*|svc")
	ct, err := seal.To(publicBytes(t, e1, "shielding/v1"), info, []byte("sk-some-credential-value"))
	if err != nil {
		t.Fatal(err)
	}
	if err := e1.CheckSealed("shielding/v1", info, ct); err != nil {
		t.Fatal(err)
	}
	c := &leakChecker{t: t, secrets: map[string][]byte{}}
	c.addSecret("read cache key", key[:])
	out := fmt.Sprintf("%v %+v %#v %s %x %d %q", e1.reads, e1.reads, e1.reads, e1.reads, e1.reads, e1.reads, e1.reads)
	if found := c.leaks([]byte(out)); len(found) > 0 {
		t.Errorf("formatting the cache shows %v: %s", found, out)
	}
	if !strings.Contains(out, "readcache(copies=1)") {
		t.Errorf("the cache prints as %q", out)
	}
	for i := range reflect.TypeFor[*Enclave]().NumMethod() {
		m := reflect.TypeFor[*Enclave]().Method(i)
		for j := range m.Type.NumOut() {
			if m.Type.Out(j) == reflect.TypeFor[*readCache]() || m.Type.Out(j) == reflect.TypeFor[[32]byte]() {
				t.Errorf("%s returns a %v", m.Name, m.Type.Out(j))
			}
		}
	}
	e1.Close()
	if e1.reads.key != ([32]byte{}) || len(e1.reads.entries) != 0 || e1.reads.order.Len() != 0 {
		t.Error("Close left the cache key or a copy behind")
	}
	if err := e1.CheckSealed("shielding/v1", info, ct); err == nil {
		t.Error("a closed enclave answered from its cache")
	}
}

// TestReadCacheBounds: copies expire after readCacheTTL, and the cache holds
// at most readCacheMax copies and readCacheBytes bytes, dropping the oldest.
func TestReadCacheBounds(t *testing.T) {
	c := newReadCache()
	t0 := time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)
	id := func(i int) [32]byte { return sha256.Sum256(fmt.Append(nil, i)) }
	pt := []byte("credential")
	has := func(i int, now time.Time) bool {
		got, ok, err := c.open(id(i), "shielding/v1", nil, now)
		if err != nil {
			t.Fatalf("copy %d: %v", i, err)
		}
		if ok && !bytes.Equal(got, pt) {
			t.Fatalf("copy %d opened to %q", i, got)
		}
		return ok
	}

	c.put(id(0), "shielding/v1", nil, pt, t0)
	if !has(0, t0.Add(readCacheTTL-time.Second)) {
		t.Fatal("copy gone before its TTL")
	}
	if has(0, t0.Add(readCacheTTL)) || c.order.Len() != 0 || c.bytes != 0 {
		t.Fatal("copy served, or kept, at its TTL")
	}

	for i := range readCacheMax + 10 {
		c.put(id(i), "shielding/v1", nil, pt, t0)
	}
	if c.order.Len() != readCacheMax || len(c.entries) != readCacheMax {
		t.Fatalf("%d copies (map %d), limit %d", c.order.Len(), len(c.entries), readCacheMax)
	}
	if has(9, t0) || !has(10, t0) || !has(readCacheMax+9, t0) {
		t.Fatal("not the oldest copies were dropped")
	}

	c.close()
	c.key = [32]byte{1}
	big := make([]byte, 1<<20)
	for i := range 40 {
		c.put(id(i), "shielding/v1", nil, big, t0)
	}
	if c.bytes > readCacheBytes || c.order.Len() != readCacheBytes/(1<<20)-1 {
		t.Fatalf("%d bytes in %d copies, byte limit %d", c.bytes, c.order.Len(), readCacheBytes)
	}
	c.put(id(99), "shielding/v1", nil, make([]byte, readCacheBytes), t0)
	if _, ok := c.entries[id(99)]; ok {
		t.Fatal("a copy larger than the whole budget was kept")
	}
}
