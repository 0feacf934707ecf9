package mail

import (
	"crypto/sha256"
	"encoding/hex"
	"testing"

	"github.com/agentkeys/agentkeys/internal/blobstore"
)

func TestMessageKey(t *testing.T) {
	in := Inbox{Address: "a0123456789ab@agents.example.com", Wallet: "0x0123456789ABcdef0123456789abcdef01234567"}
	obj := []byte("Authentication-Results: mx; none\r\n\r\nhi\r\n")
	sum := sha256.Sum256(obj)
	key := MessageKey(in.Prefix(), 42, obj)
	want := "0x0123456789abcdef0123456789abcdef01234567/a0123456789ab@agents.example.com/0000000000000000042-" + hex.EncodeToString(sum[:4]) + ".eml"
	if key != want {
		t.Fatalf("MessageKey = %q, want %q", key, want)
	}
	if err := blobstore.CheckKey(key); err != nil {
		t.Fatalf("the key is not a valid object key: %v", err)
	}
	prefix, n, h, ok := ParseMessageKey(key)
	if !ok || prefix != in.Prefix() || n != 42 || h != hex.EncodeToString(sum[:4]) {
		t.Fatalf("ParseMessageKey = %q %d %q %v", prefix, n, h, ok)
	}
	// Later arrivals sort after earlier ones, whatever their hashes.
	if a, b := MessageKey(in.Prefix(), 1796083200000000000, []byte("z")), MessageKey(in.Prefix(), 1796083200000000001, []byte("a")); a >= b {
		t.Fatalf("keys do not sort by arrival: %s >= %s", a, b)
	}
	for _, bad := range []string{"", "x/y", in.Prefix() + "manifest.json", in.Prefix() + "000000000000000004a-01234567.eml",
		in.Prefix() + "0000000000000000042-0123456G.eml", in.Prefix() + "0000000000000000042-0123ABCD.eml", in.Prefix() + "0000000000000000042_01234567.eml"} {
		if _, _, _, ok := ParseMessageKey(bad); ok {
			t.Errorf("ParseMessageKey(%q) accepted it", bad)
		}
	}
}
