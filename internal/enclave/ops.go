package enclave

import (
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"fmt"

	"github.com/agentkeys/agentkeys/internal/seal"
	"github.com/agentkeys/agentkeys/internal/wallet"
)

// useKey validates path for the operation op, which accepts keys of kind
// want (described by accepts), and runs f with the key while holding the
// operation lock.
func (e *Enclave) useKey(op, path string, want kind, accepts string, f func(*key) error) error {
	k, err := parsePath(path)
	if err != nil {
		return fmt.Errorf("enclave: %s: %w", op, err)
	}
	if k != want {
		return fmt.Errorf("%w: %s takes %s paths, %q is a %s key", ErrUnknownPath, op, accepts, path, k.alg())
	}
	if err := e.rlock(); err != nil {
		return fmt.Errorf("enclave: %s %s: %w", op, path, err)
	}
	defer e.mu.RUnlock()
	kk, done, err := e.key(path, k)
	if err != nil {
		return err
	}
	defer done()
	return f(kk)
}

// SignEd25519 signs msg with the ed25519 key at path (ledger/* and dkim/*
// paths only). The signature verifies with ed25519.Verify under the key
// published by PublicKey(path).
func (e *Enclave) SignEd25519(path string, msg []byte) ([]byte, error) {
	var sig []byte
	err := e.useKey("SignEd25519", path, kindEd25519, "ledger/* or dkim/*", func(k *key) error {
		sig = ed25519.Sign(k.ed, msg)
		return nil
	})
	return sig, err
}

// SignES256 signs signingInput with the P-256 key at path (issuer/* and oidc/*
// paths only): ECDSA over SHA-256(signingInput), returned in the fixed-width
// 64-byte r || s form of JWS ES256 (RFC 7518 §3.4).
func (e *Enclave) SignES256(path string, signingInput []byte) ([]byte, error) {
	var sig []byte
	err := e.useKey("SignES256", path, kindP256, "issuer/* or oidc/*", func(k *key) error {
		digest := sha256.Sum256(signingInput)
		r, s, err := ecdsa.Sign(rand.Reader, k.p256, digest[:])
		if err != nil {
			return fmt.Errorf("enclave: SignES256 %s: %w", path, err)
		}
		sig = make([]byte, 64)
		r.FillBytes(sig[:32])
		s.FillBytes(sig[32:])
		return nil
	})
	return sig, err
}

// walletPath returns wallet/eth/<omni>/v1 after checking omni.
func walletPath(op, omni string) (string, error) {
	if !validOmni(omni) {
		return "", fmt.Errorf("%w: %s: omni must be 64 lowercase hex digits (got %d characters)", ErrUnknownPath, op, len(omni))
	}
	return "wallet/eth/" + omni + "/v1", nil
}

// SignWallet signs hash with the wallet of account omni (path
// wallet/eth/<omni>/v1): an EIP-191 signature (see wallet.Sign), 65 bytes
// r || s || v, that wallet.Verify accepts against WalletAddress(omni).
func (e *Enclave) SignWallet(omni string, hash [32]byte) ([]byte, error) {
	path, err := walletPath("SignWallet", omni)
	if err != nil {
		return nil, err
	}
	var sig []byte
	err = e.useKey("SignWallet", path, kindSecp256k1, "wallet/eth/<omni>/v<n>", func(k *key) error {
		sig = wallet.Sign(k.k1, hash)
		return nil
	})
	return sig, err
}

// WalletAddress returns the EIP-55 address of the wallet of account omni.
func (e *Enclave) WalletAddress(omni string) (string, error) {
	path, err := walletPath("WalletAddress", omni)
	if err != nil {
		return "", err
	}
	var addr string
	err = e.useKey("WalletAddress", path, kindSecp256k1, "wallet/eth/<omni>/v<n>", func(k *key) error {
		addr = k.address
		return nil
	})
	return addr, err
}

// Reseal decrypts sealed (to the shielding key at path, with info) inside the
// enclave and re-encrypts the plaintext to recipient — hybrid ML-KEM-768 +
// X25519 HPKE public key bytes — with recipientInfo. The plaintext never
// leaves the enclave, is not kept (the enclave keeps only a sealed copy, see
// readcache.go), and its buffer is zeroed before Reseal returns.
func (e *Enclave) Reseal(path string, info, sealed []byte, recipient []byte, recipientInfo []byte) ([]byte, error) {
	pk, err := seal.Recipient(recipient)
	if err != nil {
		return nil, fmt.Errorf("enclave: Reseal: %w", err)
	}
	var out []byte
	err = e.withPlaintext("Reseal", path, info, sealed, func(pt []byte) error {
		var err error
		out, err = seal.ToKey(pk, recipientInfo, pt)
		if err != nil {
			return fmt.Errorf("enclave: Reseal %s: encrypt to recipient: %w", path, err)
		}
		return nil
	})
	return out, err
}

// CheckSealed reports whether sealed opens under the shielding key at path with
// info, without letting the plaintext out (nor keeping it: the buffer is zeroed
// before CheckSealed returns; the enclave keeps only a sealed copy). The broker uses it to refuse a credential that
// was not encrypted for it, its owner and its service.
func (e *Enclave) CheckSealed(path string, info, sealed []byte) error {
	return e.withPlaintext("CheckSealed", path, info, sealed, func([]byte) error { return nil })
}
