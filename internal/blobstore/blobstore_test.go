package blobstore

import (
	"errors"
	"path"
	"strings"
	"testing"
)

// FuzzCheckKey: a key CheckKey accepts is clean, relative, stays inside any
// root it is joined to, and never names a driver's own ('.'-prefixed) file.
func FuzzCheckKey(f *testing.F) {
	for _, s := range []string{"a", "a/b", "0xabc/a1@x.example/1-2.eml", "../a", "a/../b", "/a", "a//b", ".tmp-1", "a/", "é", "a\\b"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, key string) {
		err := CheckKey(key)
		if err != nil {
			if !errors.Is(err, ErrKey) {
				t.Fatalf("%q: %v is not ErrKey", key, err)
			}
			return
		}
		if path.Clean(key) != key || path.IsAbs(key) || !strings.HasPrefix(path.Join("root", key), "root/") {
			t.Fatalf("accepted %q escapes or is not clean", key)
		}
		for seg := range strings.SplitSeq(key, "/") {
			if seg == "" || seg[0] == '.' || strings.ContainsAny(seg, "\\\x00 ") {
				t.Fatalf("accepted %q has segment %q", key, seg)
			}
		}
		if CheckPrefix(key) != nil || CheckPrefix(key+"/") != nil {
			t.Fatalf("a valid key %q is not a valid prefix", key)
		}
	})
}

func TestCheckLimit(t *testing.T) {
	for in, want := range map[int]int{0: MaxList, 1: 1, MaxList: MaxList} {
		if got, err := CheckLimit(in); got != want || err != nil {
			t.Errorf("CheckLimit(%d) = %d, %v", in, got, err)
		}
	}
	for _, in := range []int{-1, MaxList + 1} {
		if _, err := CheckLimit(in); err == nil {
			t.Errorf("CheckLimit(%d) accepted", in)
		}
	}
}
