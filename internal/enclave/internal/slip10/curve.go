package slip10

import (
	"crypto/ecdh"
	"crypto/ed25519"
	"strconv"

	"github.com/decred/dcrd/dcrec/secp256k1/v4"
)

// Curve identifies the elliptic curve a [Node] derives keys for.
type Curve int

// Supported curves. The zero value is not a valid curve.
const (
	// Ed25519 is the Edwards curve used by Ed25519 signatures. Only hardened
	// derivation is defined for it.
	Ed25519 Curve = iota + 1
	// NIST256p1 is NIST P-256 (secp256r1, prime256v1).
	NIST256p1
	// Secp256k1 is the SEC 2 Koblitz curve used by Bitcoin and Ethereum.
	Secp256k1
)

// String returns the SLIP-0010 name of the curve: "ed25519", "nist256p1" or
// "secp256k1". Unknown values print as "Curve(N)".
func (c Curve) String() string {
	switch c {
	case Ed25519:
		return "ed25519"
	case NIST256p1:
		return "nist256p1"
	case Secp256k1:
		return "secp256k1"
	default:
		return "Curve(" + strconv.Itoa(int(c)) + ")"
	}
}

// valid reports whether c is one of the supported curves.
func (c Curve) valid() bool {
	return c == Ed25519 || c == NIST256p1 || c == Secp256k1
}

// hmacKey returns the HMAC-SHA512 key SLIP-0010 uses for master key
// generation on curve c.
func (c Curve) hmacKey() []byte {
	switch c {
	case Ed25519:
		return []byte("ed25519 seed")
	case NIST256p1:
		return []byte("Nist256p1 seed")
	case Secp256k1:
		return []byte("Bitcoin seed")
	default:
		return nil
	}
}

// addScalar returns (il + k) mod n for the ECDSA curve c, where n is the
// group order. ok is false when il >= n or the sum is zero, which SLIP-0010
// treats as an invalid key. With k = 0 it validates a master key candidate.
func (c Curve) addScalar(il, k *[32]byte) (sum [32]byte, ok bool) {
	switch c {
	case NIST256p1:
		return p256AddScalar(il, k)
	case Secp256k1:
		return secp256k1AddScalar(il, k)
	default:
		return sum, false
	}
}

// secp256k1AddScalar implements addScalar for secp256k1 using the
// constant-time scalar arithmetic of the decred secp256k1 package.
func secp256k1AddScalar(il, k *[32]byte) ([32]byte, bool) {
	var a, b secp256k1.ModNScalar
	defer a.Zero()
	defer b.Zero()
	if a.SetBytes(il) != 0 {
		return [32]byte{}, false
	}
	b.SetBytes(k)
	a.Add(&b)
	if a.IsZero() {
		return [32]byte{}, false
	}
	return a.Bytes(), true
}

// publicKey returns the SLIP-0010 serialization of the public key for
// private key k on curve c, or nil if k is not a valid private key.
func (c Curve) publicKey(k *[32]byte) []byte {
	switch c {
	case Ed25519:
		return ed25519PublicKey(k)
	case NIST256p1:
		return p256PublicKey(k)
	case Secp256k1:
		return secp256k1PublicKey(k)
	default:
		return nil
	}
}

// ed25519PublicKey returns 0x00 || A, where A is the 32-byte Ed25519 public
// key for the seed k.
func ed25519PublicKey(k *[32]byte) []byte {
	priv := ed25519.NewKeyFromSeed(k[:])
	defer clear(priv)
	out := make([]byte, 1+ed25519.PublicKeySize)
	copy(out[1:], priv[ed25519.SeedSize:])
	return out
}

// p256PublicKey returns the 33-byte compressed SEC 1 encoding of k·G on
// NIST P-256.
func p256PublicKey(k *[32]byte) []byte {
	priv, err := ecdh.P256().NewPrivateKey(k[:])
	if err != nil {
		return nil
	}
	// Uncompressed SEC 1: 0x04 || X (32 bytes) || Y (32 bytes).
	uncompressed := priv.PublicKey().Bytes()
	out := make([]byte, 33)
	out[0] = 0x02 | (uncompressed[64] & 1)
	copy(out[1:], uncompressed[1:33])
	return out
}

// secp256k1PublicKey returns the 33-byte compressed SEC 1 encoding of k·G on
// secp256k1.
func secp256k1PublicKey(k *[32]byte) []byte {
	var s secp256k1.ModNScalar
	if s.SetBytes(k) != 0 || s.IsZero() {
		s.Zero()
		return nil
	}
	priv := secp256k1.NewPrivateKey(&s)
	s.Zero()
	defer priv.Zero()
	return priv.PubKey().SerializeCompressed()
}
