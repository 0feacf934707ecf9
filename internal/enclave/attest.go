package enclave

import (
	"crypto/ed25519"
	"encoding/hex"

	"github.com/agentkeys/agentkeys/internal/attest"
)

// Quote returns a quote over reportData signed by the platform attestation
// key, timestamped now. After Close the quote carries no signature (and so
// fails attest.Verify).
func (e *Enclave) Quote(reportData [64]byte) attest.Quote {
	q := attest.Quote{
		MrEnclave:   hex.EncodeToString(e.meas.MrEnclave[:]),
		MrSigner:    hex.EncodeToString(e.meas.MrSigner[:]),
		ReportData:  hex.EncodeToString(reportData[:]),
		Tier:        e.meas.Tier,
		Timestamp:   e.now().Unix(),
		PlatformKey: hex.EncodeToString(e.platformPub),
	}
	if e.rlock() != nil {
		return q
	}
	defer e.mu.RUnlock()
	m, err := attest.Message(q)
	if err != nil { // a malformed measurement: the quote stays unsigned
		return q
	}
	q.Signature = hex.EncodeToString(ed25519.Sign(e.sec.attestPriv, m))
	return q
}

// Attest returns a quote whose report data commits to nonce and to the
// published key set: attest.ReportData(nonce, e.Keys()).
func (e *Enclave) Attest(nonce []byte) attest.Quote {
	return e.Quote(attest.ReportData(nonce, e.Keys()))
}
