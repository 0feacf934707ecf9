package enclave

import (
	"bytes"
	"crypto"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"errors"
	"testing"
)

func TestRSAKeyBox(t *testing.T) {
	cfg := testConfig(t)
	e := mustOpen(t, cfg)
	const path, ctx = "keybox/dkim/v1", "dkim-rsa|example.com"
	box, pubDER, err := e.NewRSAKey(path, ctx)
	if err != nil {
		t.Fatal(err)
	}
	parsed, err := x509.ParsePKIXPublicKey(pubDER)
	pub, ok := parsed.(*rsa.PublicKey)
	if err != nil || !ok || pub.N.BitLen() != RSABits {
		t.Fatalf("public key: %T %v", parsed, err)
	}
	// The box is ciphertext: not even the public modulus shows in it.
	if bytes.Contains(box, pub.N.Bytes()[:32]) {
		t.Fatal("the box holds the key in the clear")
	}
	digest := sha256.Sum256([]byte("header block"))
	sig, err := e.SignRSA(path, ctx, box, digest[:])
	if err != nil {
		t.Fatal(err)
	}
	if err := rsa.VerifyPKCS1v15(pub, crypto.SHA256, digest[:], sig); err != nil {
		t.Fatalf("signature does not verify: %v", err)
	}
	if got, err := e.RSAPublic(path, ctx, box); err != nil || !bytes.Equal(got, pubDER) {
		t.Fatalf("RSAPublic: %v", err)
	}
	// Another context, another path, a flipped bit, a huge box: nothing signs.
	if _, err := e.SignRSA(path, "dkim-rsa|other.com", box, digest[:]); err == nil {
		t.Fatal("signed under another context")
	}
	if _, err := e.SignRSA("keybox/other/v1", ctx, box, digest[:]); err == nil {
		t.Fatal("signed under another path")
	}
	flipped := bytes.Clone(box)
	flipped[len(flipped)-1] ^= 1
	if _, err := e.SignRSA(path, ctx, flipped, digest[:]); err == nil {
		t.Fatal("signed with a tampered box")
	}
	if _, err := e.SignRSA(path, ctx, make([]byte, maxBox+1), digest[:]); err == nil {
		t.Fatal("took an oversize box")
	}
	if _, err := e.SignRSA(path, ctx, box, digest[:16]); err == nil {
		t.Fatal("signed a short digest")
	}
	if _, _, err := e.NewRSAKey(path, ""); err == nil {
		t.Fatal("empty context accepted")
	}
	// Only keybox/* paths: a pair/* box root cannot make or open key boxes.
	for _, p := range []string{"pair/vvc/v1", "dkim/example.com/v1", "shielding/v1"} {
		if _, _, err := e.NewRSAKey(p, ctx); !errors.Is(err, ErrUnknownPath) {
			t.Errorf("NewRSAKey(%s): %v", p, err)
		}
		if _, err := e.SignRSA(p, ctx, box, digest[:]); !errors.Is(err, ErrUnknownPath) {
			t.Errorf("SignRSA(%s): %v", p, err)
		}
	}
	// A pair/* field sealed for the same context is not a key box, and a key
	// box does not open as a private field (the roots differ).
	if _, err := e.OpenPrivate("pair/vvc/v1", ctx, box); err == nil {
		t.Fatal("a key box opened as a private field")
	}
	// The same seed signs with the box after a restart: seed + ledger suffice.
	e.Close()
	if _, err := e.SignRSA(path, ctx, box, digest[:]); err == nil {
		t.Fatal("closed enclave signed")
	}
	e2 := mustOpen(t, cfg)
	sig2, err := e2.SignRSA(path, ctx, box, digest[:])
	if err != nil || rsa.VerifyPKCS1v15(pub, crypto.SHA256, digest[:], sig2) != nil {
		t.Fatalf("after restart: %v", err)
	}
}

// BenchmarkSignRSA is one DKIM RSA signature: open the box, parse the key,
// sign, zero it.
func BenchmarkSignRSA(b *testing.B) {
	e := mustOpen(b, testConfig(b))
	box, _, err := e.NewRSAKey("keybox/dkim/v1", "dkim-rsa|example.com")
	if err != nil {
		b.Fatal(err)
	}
	digest := sha256.Sum256([]byte("header block"))
	for b.Loop() {
		if _, err := e.SignRSA("keybox/dkim/v1", "dkim-rsa|example.com", box, digest[:]); err != nil {
			b.Fatal(err)
		}
	}
}
