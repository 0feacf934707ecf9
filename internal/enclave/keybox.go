package enclave

import (
	"crypto"
	"crypto/hkdf"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"errors"
	"fmt"
	"math/big"

	"github.com/agentkeys/agentkeys/internal/seal"
)

// Key boxes. Some keys cannot be derived from the seed: an RSA key is found by
// a prime search, not computed from a scalar (and DKIM receivers that verify
// only RSA need one). The enclave generates such a key itself and hands out
// only its box: the private key, PKCS#8, AES-256-GCM-sealed under a key derived
// from the seed at a keybox/* path and the box's context (e.g. the domain it
// signs for). The box goes on the ledger, so the seed and the ledger still
// recover every key; the public sees ciphertext; a box opens only for its
// context; and it opens only inside an operation that signs with it — its
// plaintext never leaves the enclave (unlike pair/* fields, keybox/* has no
// open operation).

// RSABits is the size of the RSA keys the enclave generates.
const RSABits = 2048

// maxBox bounds a key box handed back to the enclave: a sealed PKCS#8 RSA-2048
// key is about 1.2 KiB.
const maxBox = 4096

// boxKey derives the AES-256 key of context under the keybox/* root k. The
// caller zeroes it.
func boxKey(k *key, context string) ([]byte, error) {
	if context == "" {
		return nil, errors.New("enclave: key box context is empty")
	}
	return hkdf.Key(sha256.New, k.channel, nil, "agentkeys/keybox/v1|"+context, 32)
}

// NewRSAKey generates an RSA-2048 key inside the enclave and returns it sealed
// under the key at path (keybox/* only) for context, with its public key
// (PKIX DER). Only RSAPublic and SignRSA with the same path and context use
// the box.
func (e *Enclave) NewRSAKey(path, context string) (box, public []byte, err error) {
	err = e.useKey("NewRSAKey", path, kindKeyBox, "keybox/*", func(k *key) error {
		bk, err := boxKey(k, context)
		if err != nil {
			return err
		}
		defer clear(bk)
		priv, err := rsa.GenerateKey(rand.Reader, RSABits)
		if err != nil {
			return fmt.Errorf("enclave: NewRSAKey %s: %w", path, err)
		}
		defer zeroRSA(priv)
		der, err := x509.MarshalPKCS8PrivateKey(priv)
		if err != nil {
			return fmt.Errorf("enclave: NewRSAKey %s: %w", path, err)
		}
		defer clear(der)
		if public, err = x509.MarshalPKIXPublicKey(&priv.PublicKey); err != nil {
			return fmt.Errorf("enclave: NewRSAKey %s: %w", path, err)
		}
		box, err = seal.Box(bk, []byte(context), der)
		return err
	})
	return box, public, err
}

// withRSA opens box (path keybox/*, context) and runs f with the key, which is
// zeroed when f returns.
func (e *Enclave) withRSA(op, path, context string, box []byte, f func(*rsa.PrivateKey) error) error {
	if len(box) > maxBox {
		return fmt.Errorf("enclave: %s %s: the key box is %d bytes, more than any the enclave makes", op, path, len(box))
	}
	return e.useKey(op, path, kindKeyBox, "keybox/*", func(k *key) error {
		bk, err := boxKey(k, context)
		if err != nil {
			return err
		}
		defer clear(bk)
		der, err := seal.OpenBox(bk, []byte(context), box)
		if err != nil {
			return fmt.Errorf("enclave: %s %s: the key box does not open for this context", op, path)
		}
		defer clear(der)
		parsed, err := x509.ParsePKCS8PrivateKey(der)
		priv, ok := parsed.(*rsa.PrivateKey)
		if err != nil || !ok {
			return fmt.Errorf("enclave: %s %s: the key box holds no RSA key", op, path)
		}
		defer zeroRSA(priv)
		return f(priv)
	})
}

// RSAPublic returns the public key (PKIX DER) of the RSA key in box.
func (e *Enclave) RSAPublic(path, context string, box []byte) ([]byte, error) {
	var out []byte
	err := e.withRSA("RSAPublic", path, context, box, func(k *rsa.PrivateKey) error {
		var err error
		out, err = x509.MarshalPKIXPublicKey(&k.PublicKey)
		return err
	})
	return out, err
}

// SignRSA signs a SHA-256 digest with the RSA key in box: RSASSA-PKCS1-v1_5
// (RFC 8017), as DKIM's rsa-sha256 and JWS RS256 use it.
func (e *Enclave) SignRSA(path, context string, box, digest []byte) ([]byte, error) {
	if len(digest) != sha256.Size {
		return nil, fmt.Errorf("enclave: SignRSA: the digest is %d bytes, a SHA-256 digest is %d", len(digest), sha256.Size)
	}
	var sig []byte
	err := e.withRSA("SignRSA", path, context, box, func(k *rsa.PrivateKey) error {
		var err error
		sig, err = rsa.SignPKCS1v15(nil, k, crypto.SHA256, digest)
		return err
	})
	return sig, err
}

// zeroRSA overwrites the private parts of k that can be reached (see Limits of
// zeroing: the standard library keeps its own precomputed copy, dropped here).
func zeroRSA(k *rsa.PrivateKey) {
	if k.D != nil {
		clear(k.D.Bits())
	}
	for _, p := range k.Primes {
		clear(p.Bits())
	}
	for _, n := range []*big.Int{k.Precomputed.Dp, k.Precomputed.Dq, k.Precomputed.Qinv} {
		if n != nil {
			clear(n.Bits())
		}
	}
	k.Precomputed = rsa.PrecomputedValues{}
}
