package enclave

import (
	"crypto/hkdf"
	"crypto/sha256"
	"errors"
	"fmt"

	"github.com/agentkeys/agentkeys/internal/seal"
)

// Session channels. Re-encrypting every credential read with hybrid HPKE costs
// two KEM operations; instead each session gets a symmetric channel key, derived
// inside the enclave from the seed (session/channel/v1) and the session id, and
// handed to the client once, HPKE-sealed to its hybrid key. Reads for that
// session are then AES-256-GCM boxes under the channel key: post-quantum safe
// (AES-256) and cheap. Nothing is stored: the same seed re-derives every key.

// ChannelPath is the key tree node of session channel keys.
const ChannelPath = "session/channel/v1"

// channelKey derives the channel key of session sid. The caller zeroes it.
func channelKey(k *key, sid string) ([]byte, error) {
	if sid == "" {
		return nil, errors.New("enclave: session id is empty")
	}
	return hkdf.Key(sha256.New, k.channel, nil, "agentkeys/session-channel/v1|"+sid, 32)
}

// SessionKeyTo seals the channel key of session sid to recipient (hybrid
// ML-KEM-768 + X25519 HPKE public key bytes) with info, for the client to keep
// beside its session token.
func (e *Enclave) SessionKeyTo(sid string, recipient, info []byte) ([]byte, error) {
	pk, err := seal.Recipient(recipient)
	if err != nil {
		return nil, fmt.Errorf("enclave: SessionKeyTo: %w", err)
	}
	var out []byte
	err = e.useKey("SessionKeyTo", ChannelPath, kindChannel, "session/*", func(k *key) error {
		ck, err := channelKey(k, sid)
		if err != nil {
			return err
		}
		defer clear(ck)
		out, err = seal.ToKey(pk, info, ck)
		return err
	})
	return out, err
}

// ResealToSession decrypts sealed (to the shielding key at path, with info)
// inside the enclave and boxes the plaintext for session sid's channel with aad.
// The plaintext never leaves the enclave, is not kept (only a sealed copy is,
// see readcache.go), and its buffer is zeroed before ResealToSession returns.
func (e *Enclave) ResealToSession(path string, info, sealed []byte, sid string, aad []byte) ([]byte, error) {
	var ck []byte
	err := e.useKey("ResealToSession", ChannelPath, kindChannel, "session/*", func(k *key) error {
		var err error
		ck, err = channelKey(k, sid)
		return err
	})
	if err != nil {
		return nil, err
	}
	defer clear(ck)
	var out []byte
	err = e.withPlaintext("ResealToSession", path, info, sealed, func(pt []byte) error {
		out, err = seal.Box(ck, aad, pt)
		return err
	})
	return out, err
}

// withPlaintext runs f with the plaintext of sealed, which is HPKE-sealed to
// the shielding key at path with info, and zeroes it before returning, whatever
// f returns. f must not keep pt. The plaintext comes from the enclave's sealed
// copy of sealed (see readcache.go) or, on a miss, from opening sealed, after
// which the sealed copy is filled; no plaintext outlives the operation (see
// "Limits of zeroing" in the package doc).
func (e *Enclave) withPlaintext(op, path string, info, sealed []byte, f func(pt []byte) error) error {
	return e.useKey(op, path, kindShielding, "shielding/*", func(k *key) error {
		id := sha256.Sum256(sealed)
		now := e.now()
		pt, hit, err := e.reads.open(id, path, info, now)
		if err != nil {
			return fmt.Errorf("enclave: %s %s: ciphertext does not open under this key and info: %w", op, path, err)
		}
		if !hit {
			if pt, err = seal.Open(k.shield, info, sealed); err != nil {
				return fmt.Errorf("enclave: %s %s: ciphertext does not open under this key and info: %w", op, path, err)
			}
		}
		defer clear(pt)
		if !hit {
			e.reads.put(id, path, info, pt, now)
		}
		return f(pt)
	})
}
