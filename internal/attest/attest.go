// Package attest is the enclave's public attestation format: the signed Quote
// of its measurements and report data, the published KeyInfo list, and the
// checks a client makes (Verify against a pinned platform key, ReportData of
// a nonce and the key list). The enclave signs quotes; owners, auditors and
// relying parties verify them with this package alone, without linking the
// enclave.
//
// attest imports only the standard library.
package attest

import (
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
)

const (
	quoteDomain       = "agentkeys/quote/v1"
	keysHashDomain    = "agentkeys/keys/v1"
	attestNoncePrefix = "agentkeys/attest/nonce/v1|"
)

// Tier says whose key signed the running build.
type Tier string

const (
	// TierDev: the build runs under the built-in dev signer, whose private
	// key is public knowledge. Not for real secrets.
	TierDev Tier = "dev"
	// TierProduction: the build runs under a configured release-signing key,
	// and its executable carries that key's signature (<executable>.sig).
	TierProduction Tier = "production"
)

var (
	// ErrInvalidQuote: Verify rejected a quote (bad signature or malformed
	// field).
	ErrInvalidQuote = errors.New("attest: invalid quote")
	// ErrWrongPlatformKey: a quote names another platform attestation key
	// than the pinned one.
	ErrWrongPlatformKey = errors.New("attest: wrong platform key")
)

// KeyInfo is the public description of one enclave key.
type KeyInfo struct {
	Path   string `json:"path"`
	Alg    string `json:"alg"`    // "EdDSA" (ed25519), "ES256" (P-256), "ES256K" (secp256k1 wallet), "HPKE-MLKEM768X25519" (shielding)
	Kid    string `json:"kid"`    // base64url (no padding) of SHA-256(path || "|" || public bytes), first 16 chars
	Public string `json:"public"` // hex: ed25519 32-byte key; P-256 65-byte uncompressed SEC1; secp256k1 33-byte compressed; HPKE: the hybrid public key bytes
}

// Kid returns the key id of a public key at path: base64url (no padding) of
// SHA-256(path || "|" || public), first 16 characters.
func Kid(path string, public []byte) string {
	h := sha256.New()
	h.Write([]byte(path))
	h.Write([]byte("|"))
	h.Write(public)
	return base64.RawURLEncoding.EncodeToString(h.Sum(nil))[:16]
}

// Quote is a signed statement of the enclave's measurements and 64 bytes of
// caller-chosen report data (§2.2), signed by the platform attestation key.
type Quote struct {
	MrEnclave   string `json:"mrenclave"`    // hex
	MrSigner    string `json:"mrsigner"`     // hex
	ReportData  string `json:"report_data"`  // hex, 64 bytes
	Tier        Tier   `json:"tier"`         // "dev" or "production"
	Timestamp   int64  `json:"ts"`           // unix seconds
	PlatformKey string `json:"platform_key"` // hex ed25519 public attestation key (informational; verifiers pin their own)
	Signature   string `json:"sig"`          // hex ed25519 over quoteMessage (every field above)
}

// quoteFields are the decoded signed fields of a Quote.
type quoteFields struct {
	mrenclave, mrsigner [32]byte
	reportData          [64]byte
	tier                Tier
	ts                  int64
	platformKey         [32]byte
}

// message is the canonical, domain-separated, length-prefixed encoding of
// the signed fields: lp(domain) lp(mrenclave) lp(mrsigner) lp(report_data)
// lp(tier) uint64(ts) lp(platform_key), lengths as big-endian uint32.
func (f *quoteFields) message() []byte {
	m := make([]byte, 0, 256)
	m = appendLP(m, []byte(quoteDomain))
	m = appendLP(m, f.mrenclave[:])
	m = appendLP(m, f.mrsigner[:])
	m = appendLP(m, f.reportData[:])
	m = appendLP(m, []byte(f.tier))
	m = binary.BigEndian.AppendUint64(m, uint64(f.ts))
	return appendLP(m, f.platformKey[:])
}

// ReportData returns SHA-256("agentkeys/attest/nonce/v1|" || nonce)
// followed by KeysHash(keys): the report data of GET /v1/attestation.
func ReportData(nonce []byte, keys []KeyInfo) [64]byte {
	var rd [64]byte
	h := sha256.New()
	h.Write([]byte(attestNoncePrefix))
	h.Write(nonce)
	h.Sum(rd[:0])
	kh := KeysHash(keys)
	copy(rd[32:], kh[:])
	return rd
}

// KeysHash returns SHA-256 over a canonical encoding of keys, in the given
// order: lp(domain) uint32(count), then lp(path) lp(alg) lp(kid) lp(public)
// for each key (lp = big-endian uint32 length, then the bytes; public is the
// hex text as published).
func KeysHash(keys []KeyInfo) [32]byte {
	b := appendLP(nil, []byte(keysHashDomain))
	b = binary.BigEndian.AppendUint32(b, uint32(len(keys)))
	for _, k := range keys {
		b = appendLP(b, []byte(k.Path))
		b = appendLP(b, []byte(k.Alg))
		b = appendLP(b, []byte(k.Kid))
		b = appendLP(b, []byte(k.Public))
	}
	return sha256.Sum256(b)
}

// Verify checks q against the pinned platform attestation public key:
// every field well formed (lowercase hex of the right length, a known tier, a
// positive timestamp), q.PlatformKey equal to platformPub, and the signature
// valid. It checks neither freshness nor which measurements are acceptable;
// callers compare q.Timestamp, q.MrEnclave, q.MrSigner and q.ReportData with
// their own policy.
func Verify(q Quote, platformPub ed25519.PublicKey) error {
	if len(platformPub) != ed25519.PublicKeySize {
		return fmt.Errorf("%w: pinned platform public key is %d bytes, want %d", ErrInvalidQuote, len(platformPub), ed25519.PublicKeySize)
	}
	f, err := decode(q)
	if err != nil {
		return err
	}
	if !ed25519.PublicKey(f.platformKey[:]).Equal(platformPub) {
		return fmt.Errorf("%w: quote names platform key %s, the pinned key is %s", ErrWrongPlatformKey, short(f.platformKey[:]), short(platformPub))
	}
	sig, ok := decodeHexN(q.Signature, ed25519.SignatureSize)
	if !ok {
		return fmt.Errorf("%w: sig is not %d bytes of lowercase hex", ErrInvalidQuote, ed25519.SignatureSize)
	}
	if !ed25519.Verify(platformPub, f.message(), sig) {
		return fmt.Errorf("%w: signature does not verify under the pinned platform key", ErrInvalidQuote)
	}
	return nil
}

// Message returns the bytes a quote's signature covers (every field but the
// signature, decoded and length-prefixed): the enclave signs them.
func Message(q Quote) ([]byte, error) {
	f, err := decode(q)
	if err != nil {
		return nil, err
	}
	return f.message(), nil
}

// decode checks and decodes the signed fields of q.
func decode(q Quote) (quoteFields, error) {
	var f quoteFields
	for _, fld := range []struct {
		name string
		hex  string
		dst  []byte
	}{
		{"mrenclave", q.MrEnclave, f.mrenclave[:]},
		{"mrsigner", q.MrSigner, f.mrsigner[:]},
		{"report_data", q.ReportData, f.reportData[:]},
		{"platform_key", q.PlatformKey, f.platformKey[:]},
	} {
		b, ok := decodeHexN(fld.hex, len(fld.dst))
		if !ok {
			return f, fmt.Errorf("%w: %s is not %d bytes of lowercase hex", ErrInvalidQuote, fld.name, len(fld.dst))
		}
		copy(fld.dst, b)
	}
	if q.Tier != TierDev && q.Tier != TierProduction {
		return f, fmt.Errorf("%w: tier %q is neither %q nor %q", ErrInvalidQuote, q.Tier, TierDev, TierProduction)
	}
	if q.Timestamp <= 0 {
		return f, fmt.Errorf("%w: timestamp %d is not a positive unix time", ErrInvalidQuote, q.Timestamp)
	}
	f.tier, f.ts = q.Tier, q.Timestamp
	return f, nil
}

func short(b []byte) string {
	if len(b) > 4 {
		return hex.EncodeToString(b[:4]) + "…"
	}
	return hex.EncodeToString(b)
}

// decodeHexN decodes lowercase hex of exactly n bytes.
func decodeHexN(s string, n int) ([]byte, bool) {
	if len(s) != 2*n {
		return nil, false
	}
	b, err := hex.DecodeString(s)
	if err != nil || hex.EncodeToString(b) != s {
		return nil, false
	}
	return b, true
}

// appendLP appends a big-endian uint32 length and then data.
func appendLP(b, data []byte) []byte {
	b = binary.BigEndian.AppendUint32(b, uint32(len(data)))
	return append(b, data...)
}

const handoffDomain = "agentkeys/handoff/v1|"

// HandoffReportData is the report data of a successor's handoff quote (§10.3):
// SHA-256("agentkeys/handoff/v1|" || its ephemeral HPKE public key), then 32
// zero bytes. A quote with it commits the enclave that signed it to the key the
// seed is sealed to.
func HandoffReportData(hpkePub []byte) [64]byte {
	var rd [64]byte
	h := sha256.New()
	h.Write([]byte(handoffDomain))
	h.Write(hpkePub)
	h.Sum(rd[:0])
	return rd
}

// HandoffInfo is the HPKE info the seed is sealed with to a successor: it binds
// the ciphertext to the successor's measurements (hex, as in its quote).
func HandoffInfo(mrsigner, mrenclave string) []byte {
	return []byte("agentkeys/handoff/seed/v1|" + mrsigner + "|" + mrenclave)
}
