// Package seal is the encryption a client shares with the enclave: HPKE
// (hybrid ML-KEM-768 + X25519, HKDF-SHA256, AES-256-GCM) to a published key,
// and the AES-256-GCM boxes of a session channel. A client seals a credential
// to the enclave's shielding key (To, with CredentialInfo) and opens what the
// enclave re-encrypts for it (Open, OpenBox, with ReadInfo); the enclave uses
// the same functions for its side, so the suite and the formats have one
// definition.
//
// seal holds no key and imports nothing of AgentKeys: a client that links it
// links neither the enclave nor the broker.
package seal

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/hpke"
	"crypto/rand"
	"errors"
	"fmt"
)

var (
	kem  = hpke.MLKEM768X25519()
	kdf  = hpke.HKDFSHA256()
	aead = hpke.AES256GCM()
)

// ShieldingPath is the enclave key credentials are sealed to; its public half
// is published (GET /v1/enclave, algorithm HPKE-MLKEM768X25519) as hex.
const ShieldingPath = "shielding/v1"

// CredentialInfo is the HPKE info that binds a stored credential to its owner,
// agent ("*" for owner-wide) and service: a ciphertext made for one binding does
// not open under another.
func CredentialInfo(owner, agent, service string) []byte {
	return []byte("agentkeys/credential/v1|" + owner + "|" + agent + "|" + service)
}

// ReadInfo is the HPKE info (or, for session channels, the AEAD associated data)
// of a credential handed to a reader.
func ReadInfo(owner, agent, service string, version int) []byte {
	return fmt.Appendf(nil, "agentkeys/read/v1|%s|%s|%s|%d", owner, agent, service, version)
}

// Recipient parses hybrid ML-KEM-768 + X25519 HPKE public key bytes (e.g. the
// Public of shielding/v1 decoded from hex, or a daemon's key).
func Recipient(b []byte) (hpke.PublicKey, error) {
	pk, err := kem.NewPublicKey(b)
	if err != nil {
		return nil, fmt.Errorf("recipient is not an ML-KEM-768 + X25519 HPKE public key (%d bytes): %w", len(b), err)
	}
	return pk, nil
}

// To encrypts plaintext to recipient (public key bytes, see Recipient) with
// info. The result is the HPKE encapsulated key followed by the ciphertext, as
// Open expects.
func To(recipient, info, plaintext []byte) ([]byte, error) {
	pk, err := Recipient(recipient)
	if err != nil {
		return nil, fmt.Errorf("seal: %w", err)
	}
	return ToKey(pk, info, plaintext)
}

// ToKey is To with a parsed recipient.
func ToKey(pk hpke.PublicKey, info, plaintext []byte) ([]byte, error) {
	ct, err := hpke.Seal(pk, kdf, aead, info, plaintext)
	if err != nil {
		return nil, fmt.Errorf("seal: %w", err)
	}
	return ct, nil
}

// Open decrypts what To sealed to k's public key with the same info.
func Open(k hpke.PrivateKey, info, sealed []byte) ([]byte, error) {
	return hpke.Open(k, kdf, aead, info, sealed)
}

// NewKey returns a fresh hybrid HPKE key pair for a client to receive on.
func NewKey() (hpke.PrivateKey, error) { return kem.GenerateKey() }

// ParseKey parses a private key made by NewKey (its Bytes).
func ParseKey(b []byte) (hpke.PrivateKey, error) { return kem.NewPrivateKey(b) }

// Box encrypts plaintext under a 32-byte symmetric key (a session channel key)
// with associated data aad: a random nonce followed by the AES-256-GCM output.
func Box(key, aad, plaintext []byte) ([]byte, error) {
	g, err := gcm(key)
	if err != nil {
		return nil, err
	}
	nonce := make([]byte, g.NonceSize(), g.NonceSize()+len(plaintext)+g.Overhead())
	rand.Read(nonce)
	return g.Seal(nonce, nonce, plaintext, aad), nil
}

// OpenBox opens a box made by Box with the same key and aad: a client opens
// its session channel's credential reads with the channel key it received.
func OpenBox(key, aad, box []byte) ([]byte, error) {
	g, err := gcm(key)
	if err != nil {
		return nil, err
	}
	if len(box) < g.NonceSize()+g.Overhead() {
		return nil, errors.New("seal: box is too short")
	}
	pt, err := g.Open(nil, box[:g.NonceSize()], box[g.NonceSize():], aad)
	if err != nil {
		return nil, errors.New("seal: box does not open under this key")
	}
	return pt, nil
}

func gcm(key []byte) (cipher.AEAD, error) {
	if len(key) != 32 {
		return nil, errors.New("seal: box key must be 32 bytes")
	}
	b, err := aes.NewCipher(key)
	if err != nil {
		return nil, err
	}
	return cipher.NewGCM(b)
}
