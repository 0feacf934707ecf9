package enclave

import (
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"fmt"
)

const (
	quoteDomain       = "agentkeys/quote/v1"
	keysHashDomain    = "agentkeys/keys/v1"
	attestNoncePrefix = "agentkeys/attest/nonce/v1|"
)

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

// Quote returns a quote over reportData signed by the platform attestation
// key, timestamped now. After Close the quote carries no signature (and so
// fails VerifyQuote).
func (e *Enclave) Quote(reportData [64]byte) Quote {
	f := quoteFields{
		mrenclave:  e.meas.MrEnclave,
		mrsigner:   e.meas.MrSigner,
		reportData: reportData,
		tier:       e.meas.Tier,
		ts:         e.now().Unix(),
	}
	copy(f.platformKey[:], e.platformPub)
	q := Quote{
		MrEnclave:   hex.EncodeToString(f.mrenclave[:]),
		MrSigner:    hex.EncodeToString(f.mrsigner[:]),
		ReportData:  hex.EncodeToString(f.reportData[:]),
		Tier:        f.tier,
		Timestamp:   f.ts,
		PlatformKey: hex.EncodeToString(f.platformKey[:]),
	}
	if e.rlock() != nil {
		return q
	}
	defer e.mu.RUnlock()
	q.Signature = hex.EncodeToString(ed25519.Sign(e.sec.attestPriv, f.message()))
	return q
}

// Attest returns a quote whose report data commits to nonce and to the
// published key set: AttestationReportData(nonce, e.Keys()).
func (e *Enclave) Attest(nonce []byte) Quote {
	return e.Quote(AttestationReportData(nonce, e.Keys()))
}

// AttestationReportData returns SHA-256("agentkeys/attest/nonce/v1|" || nonce)
// followed by KeysHash(keys): the report data of GET /v1/attestation.
func AttestationReportData(nonce []byte, keys []KeyInfo) [64]byte {
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

// VerifyQuote checks q against the pinned platform attestation public key:
// every field well formed (lowercase hex of the right length, a known tier, a
// positive timestamp), q.PlatformKey equal to platformPub, and the signature
// valid. It checks neither freshness nor which measurements are acceptable;
// callers compare q.Timestamp, q.MrEnclave, q.MrSigner and q.ReportData with
// their own policy.
func VerifyQuote(q Quote, platformPub ed25519.PublicKey) error {
	if len(platformPub) != ed25519.PublicKeySize {
		return fmt.Errorf("%w: pinned platform public key is %d bytes, want %d", ErrInvalidQuote, len(platformPub), ed25519.PublicKeySize)
	}
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
			return fmt.Errorf("%w: %s is not %d bytes of lowercase hex", ErrInvalidQuote, fld.name, len(fld.dst))
		}
		copy(fld.dst, b)
	}
	if q.Tier != TierDev && q.Tier != TierProduction {
		return fmt.Errorf("%w: tier %q is neither %q nor %q", ErrInvalidQuote, q.Tier, TierDev, TierProduction)
	}
	if q.Timestamp <= 0 {
		return fmt.Errorf("%w: timestamp %d is not a positive unix time", ErrInvalidQuote, q.Timestamp)
	}
	f.tier, f.ts = q.Tier, q.Timestamp
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
