package wallet

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"strings"
	"testing"

	"github.com/decred/dcrd/dcrec/secp256k1/v4"
)

func keyFromInt(t testing.TB, v byte) *secp256k1.PrivateKey {
	t.Helper()
	var b [32]byte
	b[31] = v
	return secp256k1.PrivKeyFromBytes(b[:])
}

func TestKeccakVector(t *testing.T) {
	got := keccak256()
	const want = "c5d2460186f7233c927e7db2dcc703c0e500b653ca82273b7bfad8045d85a470"
	if hex.EncodeToString(got[:]) != want {
		t.Fatalf("keccak256(\"\") = %x, want %s", got, want)
	}
}

func TestAddressPrivateKeyOne(t *testing.T) {
	const want = "0x7E5F4552091A69125d5DfCb7b8C2659029395Bdf"
	if got := Address(keyFromInt(t, 1).PubKey()); got != want {
		t.Fatalf("Address(1*G) = %s, want %s", got, want)
	}
	if !ValidAddress(want) {
		t.Fatalf("ValidAddress(%s) = false", want)
	}
}

// EIP-55 test vectors, https://eips.ethereum.org/EIPS/eip-55.
var eip55Vectors = []string{
	// All caps.
	"0x52908400098527886E0F7030069857D2E4169EE7",
	"0x8617E340B3D01FA5F11F306F4090FD50E238070D",
	// All lower.
	"0xde709f2102306220921060314715629080e2fb77",
	"0x27b1fdb04752bbc536007a920d24acb045561c26",
	// Normal.
	"0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed",
	"0xfB6916095ca1df60bB79Ce92cE3Ea74c37c5d359",
	"0xdbF03B407c01E7cD3CBea99509d93f8DDDC8C6FB",
	"0xD1220A0cf47c7B9Be7A2E6BA89F429762e7b9aDb",
}

func TestValidAddressEIP55Vectors(t *testing.T) {
	for _, a := range eip55Vectors {
		if !ValidAddress(a) {
			t.Errorf("ValidAddress(%s) = false, want true", a)
		}
	}
	// The mixed-case vectors must also be what checksum produces.
	for _, a := range eip55Vectors[4:] {
		if got := checksum(strings.ToLower(a[2:])); got != a {
			t.Errorf("checksum(%s) = %s", strings.ToLower(a), got)
		}
	}
}

func flipCase(c byte) byte {
	switch {
	case c >= 'a' && c <= 'f':
		return c - ('a' - 'A')
	case c >= 'A' && c <= 'F':
		return c + ('a' - 'A')
	}
	return c
}

func TestValidAddressRejectsCaseFlip(t *testing.T) {
	for _, a := range eip55Vectors[4:] {
		b := []byte(a)
		for i := 2; i < len(b); i++ {
			if f := flipCase(b[i]); f != b[i] {
				b[i] = f
				break
			}
		}
		if ValidAddress(string(b)) {
			t.Errorf("ValidAddress(%s) = true for one-letter case flip of %s", b, a)
		}
	}
}

func TestValidAddressMalformed(t *testing.T) {
	for _, s := range []string{
		"",
		"0x",
		"7E5F4552091A69125d5DfCb7b8C2659029395Bdf",
		"0x7E5F4552091A69125d5DfCb7b8C2659029395Bd",
		"0x7E5F4552091A69125d5DfCb7b8C2659029395Bdf0",
		"0x7e5f4552091a69125d5dfcb7b8c2659029395bdg",
		"1x7e5f4552091a69125d5dfcb7b8c2659029395bdf",
	} {
		if ValidAddress(s) {
			t.Errorf("ValidAddress(%q) = true", s)
		}
	}
}

func TestSignVerifyRoundTrip(t *testing.T) {
	priv := keyFromInt(t, 7)
	addr := Address(priv.PubKey())
	hash := sha256.Sum256([]byte("ledger entry"))
	sig := Sign(priv, hash)
	if len(sig) != SignatureSize {
		t.Fatalf("len(sig) = %d", len(sig))
	}
	if sig[64] != 27 && sig[64] != 28 {
		t.Fatalf("v = %d", sig[64])
	}
	if err := Verify(addr, hash, sig); err != nil {
		t.Fatalf("Verify: %v", err)
	}
	// Case-insensitive comparison with an unchecksummed address.
	if err := Verify(strings.ToLower(addr), hash, sig); err != nil {
		t.Fatalf("Verify(lowercase address): %v", err)
	}
	if err := Verify("0x"+strings.ToUpper(addr[2:]), hash, sig); err != nil {
		t.Fatalf("Verify(uppercase address): %v", err)
	}
	// Deterministic (RFC 6979).
	if again := Sign(priv, hash); hex.EncodeToString(again) != hex.EncodeToString(sig) {
		t.Fatalf("Sign is not deterministic")
	}
}

func TestVerifyFailures(t *testing.T) {
	priv := keyFromInt(t, 7)
	addr := Address(priv.PubKey())
	hash := sha256.Sum256([]byte("ledger entry"))
	sig := Sign(priv, hash)

	t.Run("flipped hash bit", func(t *testing.T) {
		h := hash
		h[5] ^= 0x01
		if err := Verify(addr, h, sig); err == nil {
			t.Fatal("Verify succeeded for a different hash")
		}
	})
	t.Run("other address", func(t *testing.T) {
		other := Address(keyFromInt(t, 8).PubKey())
		err := Verify(other, hash, sig)
		if !errors.Is(err, ErrWrongSigner) {
			t.Fatalf("err = %v, want ErrWrongSigner", err)
		}
	})
	t.Run("invalid address", func(t *testing.T) {
		bad := []byte(addr)
		for i := 2; i < len(bad); i++ {
			if f := flipCase(bad[i]); f != bad[i] {
				bad[i] = f
				break
			}
		}
		if err := Verify(string(bad), hash, sig); !errors.Is(err, ErrInvalidAddress) {
			t.Fatalf("err = %v, want ErrInvalidAddress", err)
		}
	})
	for _, v := range []byte{0, 1, 26, 29, 31, 255} {
		bad := append([]byte(nil), sig...)
		bad[64] = v
		if err := Verify(addr, hash, bad); !errors.Is(err, ErrMalformedSignature) {
			t.Errorf("v=%d: err = %v, want ErrMalformedSignature", v, err)
		}
	}
	t.Run("64-byte signature", func(t *testing.T) {
		if err := Verify(addr, hash, sig[:64]); !errors.Is(err, ErrMalformedSignature) {
			t.Fatalf("err = %v, want ErrMalformedSignature", err)
		}
	})
	t.Run("66-byte signature", func(t *testing.T) {
		if err := Verify(addr, hash, append(append([]byte(nil), sig...), 0)); !errors.Is(err, ErrMalformedSignature) {
			t.Fatalf("err = %v, want ErrMalformedSignature", err)
		}
	})
	t.Run("zero r", func(t *testing.T) {
		bad := append([]byte(nil), sig...)
		clear(bad[:32])
		if err := Verify(addr, hash, bad); !errors.Is(err, ErrMalformedSignature) {
			t.Fatalf("err = %v, want ErrMalformedSignature", err)
		}
	})
	t.Run("high S", func(t *testing.T) {
		// (r, n-s) with the opposite parity recovers the same key: the
		// classic malleated signature. It must be rejected.
		var s secp256k1.ModNScalar
		s.SetByteSlice(sig[32:64])
		s.Negate()
		hs := s.Bytes()
		bad := append([]byte(nil), sig...)
		copy(bad[32:64], hs[:])
		bad[64] ^= 27 ^ 28
		err := Verify(addr, hash, bad)
		if !errors.Is(err, ErrMalformedSignature) {
			t.Fatalf("err = %v, want ErrMalformedSignature", err)
		}
		if !strings.Contains(err.Error(), "high s") {
			t.Fatalf("error does not name the cause: %v", err)
		}
	})
}

func BenchmarkSign(b *testing.B) {
	priv := keyFromInt(b, 7)
	hash := sha256.Sum256([]byte("bench"))
	for b.Loop() {
		Sign(priv, hash)
	}
}

func BenchmarkVerify(b *testing.B) {
	priv := keyFromInt(b, 7)
	addr := Address(priv.PubKey())
	hash := sha256.Sum256([]byte("bench"))
	sig := Sign(priv, hash)
	for b.Loop() {
		if err := Verify(addr, hash, sig); err != nil {
			b.Fatal(err)
		}
	}
}
