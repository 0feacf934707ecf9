package enclave

import (
	"crypto/ed25519"
	"crypto/subtle"
	"encoding/hex"
	"errors"
	"fmt"
	"time"

	"github.com/agentkeys/agentkeys/internal/attest"
	"github.com/agentkeys/agentkeys/internal/seal"
)

// Seed handoff (§10.3): the running enclave sends its seed to a successor
// build — another mrsigner, which cannot unseal seed.sealed — HPKE-sealed to a
// key the successor made inside its enclave and committed to in a quote. The
// broker decides whether the successor is authorized (registry); the enclave
// checks the quote itself and never lets the seed out in any other form.

// ErrHandoffRefused: SealSeedTo refused the successor's quote or key.
var ErrHandoffRefused = errors.New("enclave: handoff refused")

// MaxHandoffQuoteAge is how old (or how far ahead of this enclave's clock) a
// successor's handoff quote may be.
const MaxHandoffQuoteAge = 5 * time.Minute

// SealSeedTo returns the seed HPKE-sealed to hpkePub, for the successor whose
// quote q is: q must verify under platformPub (the successor's pinned platform
// attestation key), be tier production, be fresh (MaxHandoffQuoteAge), and its
// report data must commit to hpkePub (attest.HandoffReportData). The sealed
// seed opens only with the successor's private key and under its measurements
// (attest.HandoffInfo). Every refusal wraps ErrHandoffRefused.
func (e *Enclave) SealSeedTo(q attest.Quote, hpkePub []byte, platformPub ed25519.PublicKey) ([]byte, error) {
	if err := attest.Verify(q, platformPub); err != nil {
		return nil, fmt.Errorf("%w: the quote does not verify under the successor's authorized platform key: %v", ErrHandoffRefused, err)
	}
	if q.Tier != attest.TierProduction {
		return nil, fmt.Errorf("%w: the successor runs at tier %s: only a signed release (tier production) receives the seed", ErrHandoffRefused, q.Tier)
	}
	if age := e.now().Sub(time.Unix(q.Timestamp, 0)); age > MaxHandoffQuoteAge || age < -MaxHandoffQuoteAge {
		return nil, fmt.Errorf("%w: the quote is dated %s, more than %s from this enclave's clock", ErrHandoffRefused, time.Unix(q.Timestamp, 0).UTC().Format(time.RFC3339), MaxHandoffQuoteAge)
	}
	want := attest.HandoffReportData(hpkePub)
	if subtle.ConstantTimeCompare([]byte(q.ReportData), []byte(hex.EncodeToString(want[:]))) != 1 {
		return nil, fmt.Errorf("%w: the quote's report data does not commit to the offered HPKE key", ErrHandoffRefused)
	}
	pk, err := seal.Recipient(hpkePub)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrHandoffRefused, err)
	}
	if err := e.rlock(); err != nil {
		return nil, err
	}
	defer e.mu.RUnlock()
	return seal.ToKey(pk, attest.HandoffInfo(q.MrSigner, q.MrEnclave), e.sec.seed[:])
}

// receiveSeed runs the successor's side: an ephemeral HPKE key, a quote
// committing to it, and the seed from handoff, opened into e.sec.seed. The
// private key lives only in this call.
func (e *Enclave) receiveSeed(handoff func(attest.Quote, []byte) ([]byte, error)) error {
	if e.meas.Tier != attest.TierProduction {
		return errors.New("enclave: a handoff needs a signed release (tier production): start the successor with --mrsigner-key and its <executable>.sig; nothing was created")
	}
	k, err := seal.NewKey()
	if err != nil {
		return fmt.Errorf("enclave: handoff key: %w", err)
	}
	pub := k.PublicKey().Bytes()
	q := e.Quote(attest.HandoffReportData(pub))
	sealed, err := handoff(q, pub)
	if err != nil {
		return err
	}
	seed, err := seal.Open(k, attest.HandoffInfo(q.MrSigner, q.MrEnclave), sealed)
	if err != nil || len(seed) != len(e.sec.seed) {
		clear(seed)
		return errors.New("enclave: the predecessor's answer does not open as a seed sealed to this enclave's handoff key; nothing was created")
	}
	copy(e.sec.seed[:], seed)
	clear(seed)
	return nil
}
