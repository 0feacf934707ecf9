// Package wallet holds the Ethereum-style helpers for account wallets
// (design §2.3, §4.1): EIP-55 addresses, EIP-191 personal-message hashing,
// and recoverable secp256k1 signatures in the 65-byte r||s||v form.
//
// Everything here is a pure function over public data or a caller-supplied
// key. The enclave is the only caller that holds wallet private keys; every
// other package uses Address, ValidAddress, PersonalHash and Verify.
package wallet

import (
	"encoding/hex"
	"errors"
	"fmt"
	"strings"

	"github.com/decred/dcrd/dcrec/secp256k1/v4"
	"github.com/decred/dcrd/dcrec/secp256k1/v4/ecdsa"
	"golang.org/x/crypto/sha3"
)

// SignatureSize is the length of a wallet signature: r (32) || s (32) || v (1).
const SignatureSize = 65

// personalPrefix is the EIP-191 version 0x45 prefix for a 32-byte message.
const personalPrefix = "\x19Ethereum Signed Message:\n32"

// Errors returned by Verify. They are wrapped with context; test with errors.Is.
var (
	// ErrInvalidAddress means the expected signer is not a well-formed
	// (or correctly checksummed) address.
	ErrInvalidAddress = errors.New("wallet: invalid address")
	// ErrMalformedSignature means the signature is not 65 bytes of r||s||v
	// with v in {27, 28}, low S and r, s in range.
	ErrMalformedSignature = errors.New("wallet: malformed signature")
	// ErrWrongSigner means the signature is valid but was made by another key.
	ErrWrongSigner = errors.New("wallet: signature is from a different signer")
)

// keccak256 hashes the concatenation of parts with legacy Keccak-256.
func keccak256(parts ...[]byte) [32]byte {
	h := sha3.NewLegacyKeccak256()
	for _, p := range parts {
		h.Write(p)
	}
	var out [32]byte
	h.Sum(out[:0])
	return out
}

// Address returns the EIP-55 checksummed address ("0x" + 40 hex) of pub: the
// last 20 bytes of Keccak-256 over the 64-byte uncompressed point (X || Y).
func Address(pub *secp256k1.PublicKey) string {
	uncompressed := pub.SerializeUncompressed() // 0x04 || X || Y
	digest := keccak256(uncompressed[1:])
	return checksum(hex.EncodeToString(digest[12:]))
}

// checksum applies EIP-55 mixed-case encoding to 40 lowercase hex digits and
// prefixes "0x".
func checksum(lowerHex string) string {
	digest := keccak256([]byte(lowerHex))
	out := make([]byte, 2, 42)
	copy(out, "0x")
	for i := 0; i < len(lowerHex); i++ {
		c := lowerHex[i]
		nibble := digest[i/2]
		if i%2 == 0 {
			nibble >>= 4
		}
		if c >= 'a' && c <= 'f' && nibble&0x0f >= 8 {
			c -= 'a' - 'A'
		}
		out = append(out, c)
	}
	return string(out)
}

// ValidAddress reports whether s is "0x" followed by 40 hex digits and, when
// the digits use both upper and lower case, whether they carry a valid EIP-55
// checksum. All-lowercase and all-uppercase addresses carry no checksum and
// are accepted.
func ValidAddress(s string) bool {
	if len(s) != 42 || s[0] != '0' || (s[1] != 'x' && s[1] != 'X') {
		return false
	}
	body := s[2:]
	hasUpper, hasLower := false, false
	for i := 0; i < len(body); i++ {
		switch c := body[i]; {
		case c >= '0' && c <= '9':
		case c >= 'a' && c <= 'f':
			hasLower = true
		case c >= 'A' && c <= 'F':
			hasUpper = true
		default:
			return false
		}
	}
	if !hasUpper || !hasLower {
		return true
	}
	return checksum(strings.ToLower(body))[2:] == body
}

// PersonalHash returns the EIP-191 personal-message hash of a 32-byte message:
// keccak256("\x19Ethereum Signed Message:\n32" || hash).
func PersonalHash(hash [32]byte) [32]byte {
	return keccak256([]byte(personalPrefix), hash[:])
}

// Sign returns the EIP-191 signature of hash by priv: ECDSA (RFC 6979, low S)
// over PersonalHash(hash), encoded as 65 bytes r || s || v with v = 27 or 28.
// This is the form produced by eth_sign / personal_sign.
func Sign(priv *secp256k1.PrivateKey, hash [32]byte) []byte {
	digest := PersonalHash(hash)
	compact := ecdsa.SignCompact(priv, digest[:], false) // v || r || s, v = 27 + recid
	sig := make([]byte, SignatureSize)
	copy(sig, compact[1:])
	sig[64] = compact[0]
	return sig
}

// Recover returns the public key that produced sig over hash (see Sign). It
// rejects malformed signatures, including high-S (malleable) ones.
func Recover(hash [32]byte, sig []byte) (*secp256k1.PublicKey, error) {
	if len(sig) != SignatureSize {
		return nil, fmt.Errorf("%w: length %d, want %d bytes (r||s||v)", ErrMalformedSignature, len(sig), SignatureSize)
	}
	v := sig[64]
	if v != 27 && v != 28 {
		return nil, fmt.Errorf("%w: v = %d, want 27 or 28", ErrMalformedSignature, v)
	}
	var s secp256k1.ModNScalar
	if overflow := s.SetByteSlice(sig[32:64]); overflow {
		return nil, fmt.Errorf("%w: s is not below the group order", ErrMalformedSignature)
	}
	if s.IsOverHalfOrder() {
		return nil, fmt.Errorf("%w: high s value (malleable signature), want s <= n/2", ErrMalformedSignature)
	}
	compact := make([]byte, SignatureSize)
	compact[0] = v
	copy(compact[1:], sig[:64])
	digest := PersonalHash(hash)
	pub, _, err := ecdsa.RecoverCompact(compact, digest[:])
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrMalformedSignature, err)
	}
	return pub, nil
}

// Verify checks that sig is an EIP-191 signature of hash by the wallet with the
// given address. The address must pass ValidAddress; it is then compared with
// the recovered signer case-insensitively.
func Verify(address string, hash [32]byte, sig []byte) error {
	if !ValidAddress(address) {
		return fmt.Errorf("%w: %q is not 0x + 40 hex digits with a valid EIP-55 checksum", ErrInvalidAddress, address)
	}
	pub, err := Recover(hash, sig)
	if err != nil {
		return fmt.Errorf("wallet: verify signature for %s: %w", address, err)
	}
	got := Address(pub)
	if !strings.EqualFold(got[2:], address[2:]) {
		return fmt.Errorf("%w: signed by %s, expected %s", ErrWrongSigner, got, address)
	}
	return nil
}
