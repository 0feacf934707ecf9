package seal

import (
	"bytes"
	"testing"
)

func TestToOpensOnlyWithItsKeyAndInfo(t *testing.T) {
	k, err := NewKey()
	if err != nil {
		t.Fatal(err)
	}
	other, _ := NewKey()
	info := CredentialInfo("owner", "*", "openai")
	ct, err := To(k.PublicKey().Bytes(), info, []byte("sk-secret"))
	if err != nil {
		t.Fatal(err)
	}
	if pt, err := Open(k, info, ct); err != nil || string(pt) != "sk-secret" {
		t.Fatalf("Open = %q, %v", pt, err)
	}
	if _, err := Open(k, CredentialInfo("owner", "*", "anthropic"), ct); err == nil {
		t.Error("opened under another binding's info")
	}
	if _, err := Open(other, info, ct); err == nil {
		t.Error("opened with another key")
	}
	if _, err := To(k.PublicKey().Bytes()[:10], info, []byte("x")); err == nil {
		t.Error("sealed to a truncated public key")
	}
	raw, _ := k.Bytes()
	k2, err := ParseKey(raw)
	if err != nil {
		t.Fatal(err)
	}
	if pt, err := Open(k2, info, ct); err != nil || string(pt) != "sk-secret" {
		t.Fatalf("Open with the parsed key = %q, %v", pt, err)
	}
}

func TestBoxOpensOnlyWithItsKeyAndAAD(t *testing.T) {
	key := bytes.Repeat([]byte{7}, 32)
	aad := ReadInfo("owner", "*", "openai", 2)
	box, err := Box(key, aad, []byte("sk-secret"))
	if err != nil {
		t.Fatal(err)
	}
	if pt, err := OpenBox(key, aad, box); err != nil || string(pt) != "sk-secret" {
		t.Fatalf("OpenBox = %q, %v", pt, err)
	}
	wrong := bytes.Repeat([]byte{8}, 32)
	for name, tc := range map[string]struct{ key, aad, box []byte }{
		"other key":     {wrong, aad, box},
		"other aad":     {key, ReadInfo("owner", "*", "openai", 3), box},
		"short key":     {key[:16], aad, box},
		"truncated box": {key, aad, box[:10]},
		"flipped byte":  {key, aad, append(append([]byte{}, box[:len(box)-1]...), box[len(box)-1]^1)},
	} {
		if _, err := OpenBox(tc.key, tc.aad, tc.box); err == nil {
			t.Errorf("%s: opened", name)
		}
	}
	if _, err := Box(key[:31], aad, []byte("x")); err == nil {
		t.Error("boxed under a 31-byte key")
	}
}
