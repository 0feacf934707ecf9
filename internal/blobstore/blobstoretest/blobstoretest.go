// Package blobstoretest is the conformance suite every blobstore driver runs
// (as dex's storage/conformance): what blobstore.Store promises, checked the
// same way against each.
package blobstoretest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"

	"github.com/agentkeys/agentkeys/internal/blobstore"
)

// Run runs the suite; newStore returns an empty store for each subtest.
func Run(t *testing.T, newStore func(t *testing.T) blobstore.Store) {
	for _, c := range []struct {
		name string
		fn   func(t *testing.T, s blobstore.Store)
	}{
		{"PutGet", testPutGet},
		{"PutIfAbsentNeverReplaces", testNoReplace},
		{"ConcurrentPutOneWins", testConcurrentPut},
		{"BadKeys", testBadKeys},
		{"ListOrderPrefixPages", testList},
		{"Delete", testDelete},
		{"ReadersNeverSeePartial", testNoPartial},
	} {
		t.Run(c.name, func(t *testing.T) { c.fn(t, newStore(t)) })
	}
}

func put(t *testing.T, s blobstore.Store, key string, data []byte) {
	t.Helper()
	if err := s.PutIfAbsent(context.Background(), key, data); err != nil {
		t.Fatalf("PutIfAbsent %s: %v", key, err)
	}
}

func get(t *testing.T, s blobstore.Store, key string) []byte {
	t.Helper()
	b, err := s.Get(context.Background(), key)
	if err != nil {
		t.Fatalf("Get %s: %v", key, err)
	}
	return b
}

func testPutGet(t *testing.T, s blobstore.Store) {
	ctx := context.Background()
	bin := make([]byte, 70_000)
	for i := range bin {
		bin[i] = byte(i * 7)
	}
	objs := map[string][]byte{
		"0xabc/a1b2c3d4e5f6@agents.example.com/1733366400000000000-0a1b2c3d.eml": []byte("Subject: hi\r\n\r\nbody\r\n"),
		"bin":        bin,
		"empty/obj":  {},
		"x/y/z/deep": []byte("deep"),
	}
	for k, v := range objs {
		put(t, s, k, v)
	}
	for k, v := range objs {
		if got := get(t, s, k); !bytes.Equal(got, v) {
			t.Errorf("Get %s: %d bytes, want the %d stored", k, len(got), len(v))
		}
	}
	if _, err := s.Get(ctx, "missing"); !errors.Is(err, blobstore.ErrNotFound) {
		t.Errorf("Get of a missing key: %v, want ErrNotFound", err)
	}
	if _, err := s.Get(ctx, "x/y"); !errors.Is(err, blobstore.ErrNotFound) {
		t.Errorf("Get of a prefix of keys: %v, want ErrNotFound", err)
	}
}

func testNoReplace(t *testing.T, s blobstore.Store) {
	put(t, s, "k/one", []byte("first"))
	err := s.PutIfAbsent(context.Background(), "k/one", []byte("second, longer"))
	if !errors.Is(err, blobstore.ErrExists) {
		t.Fatalf("second PutIfAbsent: %v, want ErrExists", err)
	}
	if got := get(t, s, "k/one"); string(got) != "first" {
		t.Fatalf("after a refused put the object is %q", got)
	}
}

func testConcurrentPut(t *testing.T, s blobstore.Store) {
	const n = 8
	var wg sync.WaitGroup
	errs := make([]error, n)
	for i := range n {
		wg.Go(func() {
			errs[i] = s.PutIfAbsent(context.Background(), "race/key", bytes.Repeat([]byte{byte('a' + i)}, 10_000+i))
		})
	}
	wg.Wait()
	winner := -1
	for i, err := range errs {
		switch {
		case err == nil && winner >= 0:
			t.Fatalf("writers %d and %d both stored the key", winner, i)
		case err == nil:
			winner = i
		case !errors.Is(err, blobstore.ErrExists):
			t.Fatalf("writer %d: %v, want nil or ErrExists", i, err)
		}
	}
	if winner < 0 {
		t.Fatal("no writer stored the key")
	}
	if got := get(t, s, "race/key"); !bytes.Equal(got, bytes.Repeat([]byte{byte('a' + winner)}, 10_000+winner)) {
		t.Fatalf("the stored object (%d bytes) is not the winner's", len(got))
	}
}

func testBadKeys(t *testing.T, s blobstore.Store) {
	ctx := context.Background()
	for _, k := range []string{"", "/abs", "a//b", "a/", "../up", "a/../b", "a/./b", ".hidden", "a/.tmp-x", "sp ace", "a\x00b", "a\\b", "é", string(bytes.Repeat([]byte("a"), blobstore.MaxKey+1))} {
		if err := s.PutIfAbsent(ctx, k, []byte("x")); !errors.Is(err, blobstore.ErrKey) {
			t.Errorf("PutIfAbsent %q: %v, want ErrKey", k, err)
		}
		if _, err := s.Get(ctx, k); !errors.Is(err, blobstore.ErrKey) {
			t.Errorf("Get %q: %v, want ErrKey", k, err)
		}
		if err := s.Delete(ctx, k); !errors.Is(err, blobstore.ErrKey) {
			t.Errorf("Delete %q: %v, want ErrKey", k, err)
		}
	}
	for _, p := range []string{"/", "../", "a//", ".tmp"} {
		if _, _, err := s.List(ctx, p, "", 10); !errors.Is(err, blobstore.ErrKey) {
			t.Errorf("List prefix %q: %v, want ErrKey", p, err)
		}
	}
	for _, l := range []int{-1, blobstore.MaxList + 1} {
		if _, _, err := s.List(ctx, "", "", l); err == nil {
			t.Errorf("List limit %d: accepted", l)
		}
	}
	if objs, _, err := s.List(ctx, "", "", 0); err != nil || len(objs) != 0 {
		t.Errorf("refused writes stored something: %v %v", objs, err)
	}
}

// listAll pages through prefix with page size limit.
func listAll(t *testing.T, s blobstore.Store, prefix string, limit int) []blobstore.Object {
	t.Helper()
	var all []blobstore.Object
	after := ""
	for pages := 0; ; pages++ {
		objs, more, err := s.List(context.Background(), prefix, after, limit)
		if err != nil {
			t.Fatalf("List %q after %q: %v", prefix, after, err)
		}
		if len(objs) > limit || pages > 100 {
			t.Fatalf("List returned %d objects for limit %d (page %d)", len(objs), limit, pages)
		}
		all = append(all, objs...)
		if !more {
			return all
		}
		if len(objs) == 0 {
			t.Fatal("List says more follow but returned none")
		}
		after = objs[len(objs)-1].Key
	}
}

func keysOf(objs []blobstore.Object) []string {
	var ks []string
	for _, o := range objs {
		ks = append(ks, o.Key)
	}
	return ks
}

func testList(t *testing.T, s blobstore.Store) {
	// Keys whose byte order differs from a directory walk's: '-' and '.' sort
	// before '/', so "a-c" comes before "a/b".
	keys := []string{"a/b", "a-c", "a.d", "a/b0", "a/b/c", "ab", "b", "in/17-x.eml", "in/170-y.eml", "in/18-z.eml", "in2/1.eml"}
	for i := range 23 {
		keys = append(keys, fmt.Sprintf("page/%03d.eml", i))
	}
	for _, k := range keys {
		if k == "a/b" { // "a/b" and "a/b/c" both: only an S3-like store can; keep the directory store's rule out of the suite
			continue
		}
		put(t, s, k, []byte(k))
	}
	keys = slices.DeleteFunc(keys, func(k string) bool { return k == "a/b" })
	slices.Sort(keys)
	for _, limit := range []int{1, 2, 5, 1000} {
		if got := keysOf(listAll(t, s, "", limit)); !slices.Equal(got, keys) {
			t.Fatalf("List all (pages of %d):\n got %q\nwant %q", limit, got, keys)
		}
	}
	for prefix, want := range map[string][]string{
		"in/":   {"in/17-x.eml", "in/170-y.eml", "in/18-z.eml"},
		"in/17": {"in/17-x.eml", "in/170-y.eml"},
		"in":    {"in/17-x.eml", "in/170-y.eml", "in/18-z.eml", "in2/1.eml"},
		"a":     {"a-c", "a.d", "a/b/c", "a/b0", "ab"},
		"a/b":   {"a/b/c", "a/b0"},
		"none/": nil,
		"b":     {"b"},
	} {
		if got := keysOf(listAll(t, s, prefix, 2)); !slices.Equal(got, want) {
			t.Errorf("List %q: got %q, want %q", prefix, got, want)
		}
	}
	objs, more, err := s.List(context.Background(), "page/", "page/010.eml", 5)
	if err != nil || !more || len(objs) != 5 || objs[0].Key != "page/011.eml" || objs[4].Key != "page/015.eml" {
		t.Fatalf("List after page/010.eml: %v more=%v err=%v", objs, more, err)
	}
	for _, o := range objs {
		if o.Size != int64(len(o.Key)) {
			t.Errorf("%s: size %d, want %d", o.Key, o.Size, len(o.Key))
		}
	}
	if objs, more, err := s.List(context.Background(), "page/", "page/022.eml", 5); err != nil || more || len(objs) != 0 {
		t.Errorf("List after the last key: %v more=%v err=%v", objs, more, err)
	}
}

func testDelete(t *testing.T, s blobstore.Store) {
	ctx := context.Background()
	put(t, s, "d/one", []byte("1"))
	put(t, s, "d/two", []byte("2"))
	if err := s.Delete(ctx, "d/one"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Get(ctx, "d/one"); !errors.Is(err, blobstore.ErrNotFound) {
		t.Fatalf("Get after Delete: %v", err)
	}
	if err := s.Delete(ctx, "d/one"); err != nil {
		t.Fatalf("Delete of a missing key: %v", err)
	}
	if got := keysOf(listAll(t, s, "d/", 10)); !slices.Equal(got, []string{"d/two"}) {
		t.Fatalf("List after Delete: %q", got)
	}
	put(t, s, "d/one", []byte("again")) // the key is free again
	if got := get(t, s, "d/one"); string(got) != "again" {
		t.Fatalf("put after delete: %q", got)
	}
}

// testNoPartial: while objects are being written, every Get that finds one
// returns it whole, and every listed object has its full size.
func testNoPartial(t *testing.T, s blobstore.Store) {
	ctx := context.Background()
	const n, size = 12, 512 << 10
	body := func(i int) []byte { return bytes.Repeat([]byte{byte(i)}, size) }
	done := make(chan struct{})
	var wg sync.WaitGroup
	var bad []string
	var mu sync.Mutex
	fail := func(f string, a ...any) { mu.Lock(); bad = append(bad, fmt.Sprintf(f, a...)); mu.Unlock() }
	for range 2 {
		wg.Go(func() {
			for {
				select {
				case <-done:
					return
				default:
				}
				objs, _, err := s.List(ctx, "w/", "", 0)
				if err != nil {
					fail("List: %v", err)
					return
				}
				for _, o := range objs {
					if o.Size != size {
						fail("listed %s with %d bytes", o.Key, o.Size)
					}
					b, err := s.Get(ctx, o.Key)
					if err != nil {
						fail("Get %s: %v", o.Key, err)
						continue
					}
					var i int
					fmt.Sscanf(o.Key, "w/%d", &i)
					if !bytes.Equal(b, body(i)) {
						fail("Get %s: %d bytes, not the object written", o.Key, len(b))
					}
				}
			}
		})
	}
	for i := range n {
		put(t, s, fmt.Sprintf("w/%03d", i), body(i))
	}
	close(done)
	wg.Wait()
	if len(bad) > 0 {
		t.Fatalf("readers saw partial objects: %v", bad[:min(len(bad), 5)])
	}
	if got := listAll(t, s, "w/", 1000); len(got) != n {
		t.Fatalf("%d objects listed, want %d", len(got), n)
	}
}
