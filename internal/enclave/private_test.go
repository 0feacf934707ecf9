package enclave

import (
	"bytes"
	"errors"
	"testing"
)

func TestPrivateFields(t *testing.T) {
	cfg := testConfig(t)
	e := mustOpen(t, cfg)
	secret := []byte("nonce-and-source")
	box, err := e.SealPrivate("pair/vvc/v1", "pair.requested|id1", secret)
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(box, secret) {
		t.Fatal("box contains the plaintext")
	}
	got, err := e.OpenPrivate("pair/vvc/v1", "pair.requested|id1", box)
	if err != nil || !bytes.Equal(got, secret) {
		t.Fatalf("open: %q %v", got, err)
	}
	// Another context, another path, a flipped bit: nothing opens.
	if _, err := e.OpenPrivate("pair/vvc/v1", "pair.requested|id2", box); err == nil {
		t.Fatal("opened under another context")
	}
	if _, err := e.OpenPrivate("pair/other/v1", "pair.requested|id1", box); err == nil {
		t.Fatal("opened under another path")
	}
	flipped := bytes.Clone(box)
	flipped[len(flipped)-1] ^= 1
	if _, err := e.OpenPrivate("pair/vvc/v1", "pair.requested|id1", flipped); err == nil {
		t.Fatal("opened a tampered box")
	}
	if _, err := e.SealPrivate("pair/vvc/v1", "", secret); err == nil {
		t.Fatal("empty context accepted")
	}
	// Only pair/* paths: the shielding key and the channel root are refused.
	for _, p := range []string{"shielding/v1", "session/channel/v1", "ledger/v1"} {
		if _, err := e.SealPrivate(p, "c", secret); !errors.Is(err, ErrUnknownPath) {
			t.Errorf("SealPrivate(%s): %v", p, err)
		}
	}
	// The same seed re-opens it after a restart.
	e.Close()
	if _, err := e.OpenPrivate("pair/vvc/v1", "pair.requested|id1", box); err == nil {
		t.Fatal("closed enclave opened a box")
	}
	e2 := mustOpen(t, cfg)
	if got, err := e2.OpenPrivate("pair/vvc/v1", "pair.requested|id1", box); err != nil || !bytes.Equal(got, secret) {
		t.Fatalf("after restart: %q %v", got, err)
	}
}
