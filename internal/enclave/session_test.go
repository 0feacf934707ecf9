package enclave

import (
	"bytes"
	"testing"

	"github.com/agentkeys/agentkeys/internal/seal"
)

func TestSessionChannel(t *testing.T) {
	e := mustOpen(t, testConfig(t))
	pub := publicBytes(t, e, "shielding/v1")
	info, secret := []byte("owner|*|svc"), []byte("sk-session-channel-secret")
	sealed, err := seal.To(pub, info, secret)
	if err != nil {
		t.Fatal(err)
	}
	client := mustClientKey(t)
	wrapped, err := e.SessionKeyTo("sid-1", client.PublicKey().Bytes(), []byte("agentkeys/channel"))
	if err != nil {
		t.Fatal(err)
	}
	ck, err := seal.Open(client, []byte("agentkeys/channel"), wrapped)
	if err != nil {
		t.Fatal(err)
	}
	for range 2 { // the same ciphertext twice: the second read opens the enclave's sealed copy
		box, err := e.ResealToSession("shielding/v1", info, sealed, "sid-1", []byte("aad"))
		if err != nil {
			t.Fatal(err)
		}
		if bytes.Contains(box, secret) {
			t.Fatal("box contains the plaintext")
		}
		got, err := seal.OpenBox(ck, []byte("aad"), box)
		if err != nil || !bytes.Equal(got, secret) {
			t.Fatalf("open: %q %v", got, err)
		}
		if _, err := seal.OpenBox(ck, []byte("other aad"), box); err == nil {
			t.Fatal("box opened with another aad")
		}
	}
	other, _ := e.ResealToSession("shielding/v1", info, sealed, "sid-2", []byte("aad"))
	if _, err := seal.OpenBox(ck, []byte("aad"), other); err == nil {
		t.Fatal("sid-1's channel key opened sid-2's box")
	}
	if err := e.CheckSealed("shielding/v1", info, sealed); err != nil {
		t.Fatal(err)
	}
	if err := e.CheckSealed("shielding/v1", []byte("owner|*|other"), sealed); err == nil {
		t.Fatal("CheckSealed accepted a ciphertext bound to another service")
	}
	if _, err := e.ResealToSession("shielding/v1", info, sealed, "", nil); err == nil {
		t.Fatal("empty sid accepted")
	}
	e.Close()
	if _, err := e.ResealToSession("shielding/v1", info, sealed, "sid-1", nil); err == nil {
		t.Fatal("closed enclave still reseals from its cache")
	}
}

func BenchmarkResealToSession(b *testing.B) {
	e := mustOpen(b, testConfig(b))
	pub := publicBytes(b, e, "shielding/v1")
	sealed, _ := seal.To(pub, []byte("i"), []byte("secret"))
	for b.Loop() {
		if _, err := e.ResealToSession("shielding/v1", []byte("i"), sealed, "sid", nil); err != nil {
			b.Fatal(err)
		}
	}
}
