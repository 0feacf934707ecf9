package enclave

import (
	"crypto/hkdf"
	"crypto/sha256"
	"errors"
	"fmt"

	"github.com/agentkeys/agentkeys/internal/seal"
)

// Private ledger fields. A few facts the broker must keep on the ledger (the
// ledger is the source of truth) must not be readable by everyone who reads the
// ledger: the nonce behind a pending pair request's VVC and where the request
// came from. The enclave seals them with AES-256-GCM under a key derived from the
// seed at a pair/* path and the field's context (e.g. the request id), so the
// public sees ciphertext, the same seed re-opens it after a restart, and a box
// cannot be moved to another context. These keys open only what SealPrivate
// sealed: credentials are HPKE-sealed to shielding/* keys and never open here.

// privateKey derives the AES-256 key of context under the pair/* root k. The
// caller zeroes it.
func privateKey(k *key, context string) ([]byte, error) {
	if context == "" {
		return nil, errors.New("enclave: private field context is empty")
	}
	return hkdf.Key(sha256.New, k.channel, nil, "agentkeys/private/v1|"+context, 32)
}

// SealPrivate encrypts plaintext under the key at path (pair/* only) for
// context; only OpenPrivate with the same path and context opens the result.
func (e *Enclave) SealPrivate(path, context string, plaintext []byte) ([]byte, error) {
	var out []byte
	err := e.useKey("SealPrivate", path, kindPrivate, "pair/*", func(k *key) error {
		pk, err := privateKey(k, context)
		if err != nil {
			return err
		}
		defer clear(pk)
		out, err = seal.Box(pk, []byte(context), plaintext)
		return err
	})
	return out, err
}

// OpenPrivate opens a box made by SealPrivate with the same path and context.
func (e *Enclave) OpenPrivate(path, context string, box []byte) ([]byte, error) {
	var out []byte
	err := e.useKey("OpenPrivate", path, kindPrivate, "pair/*", func(k *key) error {
		pk, err := privateKey(k, context)
		if err != nil {
			return err
		}
		defer clear(pk)
		if out, err = seal.OpenBox(pk, []byte(context), box); err != nil {
			return fmt.Errorf("enclave: OpenPrivate %s: the box does not open for this context", path)
		}
		return nil
	})
	return out, err
}
