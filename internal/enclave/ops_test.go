package enclave

import (
	"bytes"
	"crypto/ecdh"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/hkdf"
	"crypto/hpke"
	"crypto/mlkem"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"math/big"
	"strings"
	"sync"
	"testing"

	"github.com/decred/dcrd/dcrec/secp256k1/v4"

	"github.com/agentkeys/agentkeys/internal/enclave/internal/slip10"
	"github.com/agentkeys/agentkeys/internal/seal"
	"github.com/agentkeys/agentkeys/internal/wallet"
)

func publicBytes(t testing.TB, e *Enclave, path string) []byte {
	t.Helper()
	ki, err := e.PublicKey(path)
	if err != nil {
		t.Fatalf("PublicKey(%s): %v", path, err)
	}
	b, err := hex.DecodeString(ki.Public)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestSignEd25519(t *testing.T) {
	e := mustOpen(t, testConfig(t))
	msg := []byte("checkpoint {seq: 42}")
	for _, path := range []string{"ledger/v1", "dkim/example.com/v1", "dkim/mail.example.org/v2"} {
		sig, err := e.SignEd25519(path, msg)
		if err != nil {
			t.Fatalf("SignEd25519(%s): %v", path, err)
		}
		pub := publicBytes(t, e, path)
		if !ed25519.Verify(pub, msg, sig) {
			t.Fatalf("%s: signature does not verify", path)
		}
		if ed25519.Verify(pub, append(msg, '!'), sig) {
			t.Fatalf("%s: signature verifies for another message", path)
		}
	}
	a, _ := e.SignEd25519("dkim/a.example/v1", msg)
	b, _ := e.SignEd25519("dkim/b.example/v1", msg)
	if bytes.Equal(a, b) {
		t.Fatal("different dkim paths share a key")
	}
}

func TestSignES256(t *testing.T) {
	e := mustOpen(t, testConfig(t))
	input := []byte("eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJ4In0")
	for _, path := range []string{"issuer/jwt/v1", "oidc/issuer/v1", "oidc/issuer/v2"} {
		sig, err := e.SignES256(path, input)
		if err != nil {
			t.Fatalf("SignES256(%s): %v", path, err)
		}
		if len(sig) != 64 {
			t.Fatalf("%s: signature is %d bytes, want 64", path, len(sig))
		}
		pub, err := ecdsa.ParseUncompressedPublicKey(elliptic.P256(), publicBytes(t, e, path))
		if err != nil {
			t.Fatalf("%s: published key: %v", path, err)
		}
		digest := sha256.Sum256(input)
		r, s := new(big.Int).SetBytes(sig[:32]), new(big.Int).SetBytes(sig[32:])
		if !ecdsa.Verify(pub, digest[:], r, s) {
			t.Fatalf("%s: signature does not verify", path)
		}
		other := sha256.Sum256(append(input, 'x'))
		if ecdsa.Verify(pub, other[:], r, s) {
			t.Fatalf("%s: signature verifies for another input", path)
		}
	}
}

func TestWallet(t *testing.T) {
	e := mustOpen(t, testConfig(t))
	hash := sha256.Sum256([]byte("ledger entry"))
	for i := range 5 {
		omni := testOmni(i)
		addr, err := e.WalletAddress(omni)
		if err != nil {
			t.Fatal(err)
		}
		if !wallet.ValidAddress(addr) || addr != strings.TrimSpace(addr) || !strings.HasPrefix(addr, "0x") {
			t.Fatalf("WalletAddress = %q", addr)
		}
		sig, err := e.SignWallet(omni, hash)
		if err != nil {
			t.Fatal(err)
		}
		if err := wallet.Verify(addr, hash, sig); err != nil {
			t.Fatalf("wallet.Verify: %v", err)
		}
		if err := wallet.Verify(addr, sha256.Sum256([]byte("other")), sig); err == nil {
			t.Fatal("wallet signature verifies for another hash")
		}
		// Published key is the 33-byte compressed point of the same wallet.
		pubBytes := publicBytes(t, e, "wallet/eth/"+omni+"/v1")
		pub, err := secp256k1.ParsePubKey(pubBytes)
		if err != nil || len(pubBytes) != 33 {
			t.Fatalf("wallet public key: %d bytes, %v", len(pubBytes), err)
		}
		if wallet.Address(pub) != addr {
			t.Fatal("published wallet key does not match WalletAddress")
		}
	}
	a0, _ := e.WalletAddress(testOmni(0))
	a1, _ := e.WalletAddress(testOmni(1))
	if a0 == a1 {
		t.Fatal("two accounts share a wallet")
	}
	v2, err := e.PublicKey("wallet/eth/" + testOmni(0) + "/v2")
	if err != nil {
		t.Fatal(err)
	}
	v1, _ := e.PublicKey("wallet/eth/" + testOmni(0) + "/v1")
	if v1.Public == v2.Public {
		t.Fatal("wallet v2 equals v1")
	}
}

func TestConcurrentWallets(t *testing.T) {
	e := mustOpen(t, testConfig(t))
	hash := sha256.Sum256([]byte("x"))
	var wg sync.WaitGroup
	errs := make(chan error, 64)
	for range 8 {
		wg.Go(func() {
			for i := range 40 {
				omni := testOmni(i % 10)
				sig, err := e.SignWallet(omni, hash)
				if err != nil {
					errs <- err
					return
				}
				addr, _ := e.WalletAddress(omni)
				if err := wallet.Verify(addr, hash, sig); err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
}

func TestPathRules(t *testing.T) {
	e := mustOpen(t, testConfig(t))
	omni := testOmni(3)
	valid := []string{
		"shielding/v1", "ledger/v1", "dkim/example.com/v1", "issuer/jwt/v1", "oidc/issuer/v7",
		"wallet/eth/" + omni + "/v1", "wallet/eth/" + omni + "/v12", "dkim/user@host:1/v1",
	}
	for _, p := range valid {
		if _, err := e.PublicKey(p); err != nil {
			t.Errorf("PublicKey(%q): %v", p, err)
		}
	}
	invalid := []string{
		"", "ledger", "/ledger/v1", "ledger/v1/", "ledger//v1", "Ledger/v1", "dkim/Example.com/v1",
		"foo/v1", "m/0/1", "seed/v1", "ledger/v 1", "ledger/ü/v1",
		"wallet/eth/" + omni, "wallet/eth/" + omni + "/v0", "wallet/eth/" + omni + "/v01", "wallet/eth/" + omni + "/1",
		"wallet/btc/" + omni + "/v1", "wallet/eth/" + strings.ToUpper(omni) + "/v1", "wallet/eth/" + omni[:63] + "/v1",
		"wallet/eth/" + omni + "/v1/x", "wallet/" + omni + "/v1",
		"ledger/" + strings.Repeat("a/", 16) + "v1", "ledger/" + strings.Repeat("a", 129) + "/v1",
	}
	for _, p := range invalid {
		if ki, err := e.PublicKey(p); !errors.Is(err, ErrUnknownPath) {
			t.Errorf("PublicKey(%q) = %v, %v; want ErrUnknownPath", p, ki, err)
		}
	}
}

func TestWrongKeyType(t *testing.T) {
	e := mustOpen(t, testConfig(t))
	omni := testOmni(4)
	checks := map[string]error{}
	_, checks["SignEd25519 issuer"] = e.SignEd25519("issuer/jwt/v1", []byte("m"))
	_, checks["SignEd25519 oidc"] = e.SignEd25519("oidc/issuer/v1", []byte("m"))
	_, checks["SignEd25519 shielding"] = e.SignEd25519("shielding/v1", []byte("m"))
	_, checks["SignEd25519 wallet"] = e.SignEd25519("wallet/eth/"+omni+"/v1", []byte("m"))
	_, checks["SignES256 ledger"] = e.SignES256("ledger/v1", []byte("m"))
	_, checks["SignES256 dkim"] = e.SignES256("dkim/example.com/v1", []byte("m"))
	_, checks["SignES256 wallet"] = e.SignES256("wallet/eth/"+omni+"/v1", []byte("m"))
	checks["CheckSealed ledger"] = e.CheckSealed("ledger/v1", nil, []byte("x"))
	_, checks["ResealToSession dkim"] = e.ResealToSession("dkim/example.com/v1", nil, []byte("x"), "sid", nil)
	_, checks["Reseal oidc"] = e.Reseal("oidc/issuer/v1", nil, []byte("x"), mustClientKey(t).PublicKey().Bytes(), nil)
	_, checks["SignWallet short omni"] = e.SignWallet("abc", [32]byte{})
	_, checks["SignWallet upper omni"] = e.SignWallet(strings.ToUpper(omni), [32]byte{})
	_, checks["WalletAddress path"] = e.WalletAddress("wallet/eth/" + omni + "/v1")
	_, checks["SignEd25519 unknown"] = e.SignEd25519("foo/v1", nil)
	for name, err := range checks {
		if !errors.Is(err, ErrUnknownPath) {
			t.Errorf("%s: %v, want ErrUnknownPath", name, err)
		} else if strings.ContainsAny(err.Error(), "\r\n") {
			t.Errorf("%s: multi-line error %q", name, err)
		}
	}
}

// mustClientKey generates a client's hybrid HPKE key the way a daemon does:
// crypto/mlkem + crypto/ecdh.
func mustClientKey(t testing.TB) hpke.PrivateKey {
	t.Helper()
	dk, err := mlkem.GenerateKey768()
	if err != nil {
		t.Fatal(err)
	}
	x, err := ecdh.X25519().GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	k, err := hpke.NewHybridPrivateKey(dk, x)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func TestShieldingRoundTrip(t *testing.T) {
	e := mustOpen(t, testConfig(t))
	pub := publicBytes(t, e, "shielding/v1")
	info := []byte("owner|*|openai")
	secret := []byte("sk-live-0123456789")

	ct, err := seal.To(pub, info, secret)
	if err != nil {
		t.Fatal(err)
	}
	if err := e.CheckSealed("shielding/v1", info, ct); err != nil {
		t.Fatalf("CheckSealed: %v", err)
	}
	if err := e.CheckSealed("shielding/v1", []byte("owner|*|anthropic"), ct); err == nil {
		t.Fatal("CheckSealed accepted the wrong info")
	}
	bad := bytes.Clone(ct)
	bad[len(bad)-1] ^= 1
	if err := e.CheckSealed("shielding/v1", info, bad); err == nil {
		t.Fatal("CheckSealed accepted a modified ciphertext")
	}
	if err := e.CheckSealed("shielding/v1", info, ct[:10]); err == nil {
		t.Fatal("CheckSealed accepted a truncated ciphertext")
	}
	if err := e.CheckSealed("shielding/v2", info, ct); err == nil {
		t.Fatal("CheckSealed accepted a ciphertext for another shielding key")
	}
	if _, err := seal.To(pub[:100], info, secret); err == nil {
		t.Fatal("seal.To accepted a truncated public key")
	}

	// Reseal to a client key; the client opens it with plain hpke.Open.
	client := mustClientKey(t)
	rinfo := []byte("agentkeys/read/v1|agent")
	out, err := e.Reseal("shielding/v1", info, ct, client.PublicKey().Bytes(), rinfo)
	if err != nil {
		t.Fatalf("Reseal: %v", err)
	}
	got, err := hpke.Open(client, hpke.HKDFSHA256(), hpke.AES256GCM(), rinfo, out)
	if err != nil {
		t.Fatalf("client hpke.Open: %v", err)
	}
	if !bytes.Equal(got, secret) {
		t.Fatalf("resealed plaintext = %q", got)
	}
	if _, err := hpke.Open(client, hpke.HKDFSHA256(), hpke.AES256GCM(), info, out); err == nil {
		t.Fatal("resealed ciphertext opens with the wrong recipient info")
	}
	if _, err := hpke.Open(mustClientKey(t), hpke.HKDFSHA256(), hpke.AES256GCM(), rinfo, out); err == nil {
		t.Fatal("resealed ciphertext opens under another client key")
	}
	if _, err := e.Reseal("shielding/v1", []byte("wrong"), ct, client.PublicKey().Bytes(), rinfo); err == nil {
		t.Fatal("Reseal succeeded with the wrong info")
	}
	if _, err := e.Reseal("shielding/v1", info, ct, []byte("not a key"), rinfo); err == nil {
		t.Fatal("Reseal accepted a malformed recipient")
	}
}

// TestShieldingDerivation recomputes the shielding key from the SLIP-0010
// node exactly as the design specifies, independently of shieldingKey.
func TestShieldingDerivation(t *testing.T) {
	e := mustOpen(t, testConfig(t))
	node, err := slip10.DeriveString(slip10.Ed25519, e.sec.seed[:], "shielding/v1")
	if err != nil {
		t.Fatal(err)
	}
	defer node.Zero()
	ikm := node.PrivateKey()
	xs, _ := hkdf.Key(sha256.New, ikm[:], nil, "agentkeys/shielding/x25519/v1", 32)
	ms, _ := hkdf.Key(sha256.New, ikm[:], nil, "agentkeys/shielding/mlkem768/v1", 64)
	x, err := ecdh.X25519().NewPrivateKey(xs)
	if err != nil {
		t.Fatal(err)
	}
	dk, err := mlkem.NewDecapsulationKey768(ms)
	if err != nil {
		t.Fatal(err)
	}
	want, err := hpke.NewHybridPublicKey(dk.EncapsulationKey(), x.PublicKey())
	if err != nil {
		t.Fatal(err)
	}
	if got := publicBytes(t, e, "shielding/v1"); !bytes.Equal(got, want.Bytes()) {
		t.Fatal("shielding/v1 public key does not match the specified derivation")
	}
}

// TestDerivationMatchesSLIP10 checks every curve's published public key
// against the SLIP-0010 node's public key.
func TestDerivationMatchesSLIP10(t *testing.T) {
	e := mustOpen(t, testConfig(t))
	for path, c := range map[string]slip10.Curve{
		"ledger/v1":                         slip10.Ed25519,
		"issuer/jwt/v1":                     slip10.NIST256p1,
		"wallet/eth/" + testOmni(9) + "/v1": slip10.Secp256k1,
	} {
		node, err := slip10.DeriveString(c, e.sec.seed[:], path)
		if err != nil {
			t.Fatal(err)
		}
		np := node.PublicKey()
		node.Zero()
		got := publicBytes(t, e, path)
		switch c {
		case slip10.Ed25519:
			np = np[1:]
		case slip10.NIST256p1:
			x, y := elliptic.UnmarshalCompressed(elliptic.P256(), np)
			if x == nil {
				t.Fatalf("%s: bad compressed point", path)
			}
			pk := &ecdsa.PublicKey{Curve: elliptic.P256(), X: x, Y: y} //lint:ignore SA1019 decompressing a SLIP-0010 point for comparison
			np, _ = pk.Bytes()
		}
		if !bytes.Equal(got, np) {
			t.Errorf("%s: published key %x, SLIP-0010 node %x", path, got, np)
		}
	}
}
