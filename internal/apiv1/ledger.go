package apiv1

import (
	"github.com/agentkeys/agentkeys/internal/attest"
	"github.com/agentkeys/agentkeys/internal/entry"
)

// EnclaveInfo is the body of GET /v1/enclave.
type EnclaveInfo struct {
	MrEnclave string           `json:"mrenclave"`
	MrSigner  string           `json:"mrsigner"`
	Tier      string           `json:"tier"`
	Keys      []attest.KeyInfo `json:"keys"`
	Quote     attest.Quote     `json:"quote"` // report_data commits to the empty nonce and the keys
	// SessionKeys are the session-token key versions (issuer/jwt/vN), oldest
	// first, as the ledger's session-key registry has them: an operator sees a
	// rotation here. Not covered by the quote (it is fixed at start).
	SessionKeys []SessionKeyInfo `json:"session_keys"`
}

// SessionKeyInfo is one session-token key version in GET /v1/enclave.
type SessionKeyInfo struct {
	Version    int    `json:"version"`
	Path       string `json:"path"`   // issuer/jwt/vN
	Kid        string `json:"kid"`    // the kid in the tokens it signs
	Public     string `json:"public"` // hex uncompressed P-256 point
	State      string `json:"state"`  // current (signs new sessions), retiring (verifies the sessions it signed until retire_at), retired
	ActiveFrom int64  `json:"active_from"`
	RetireAt   int64  `json:"retire_at,omitempty"`
}

// HeadInfo is the body of GET /v1/ledger/head.
type HeadInfo struct {
	Seq  uint64     `json:"seq"`
	Hash entry.Hash `json:"hash"`
	Time string     `json:"time"`
}

// EntriesPage is the body of GET /v1/ledger/entries.
type EntriesPage struct {
	Entries []entry.Entry `json:"entries"`
	Next    uint64        `json:"next"` // seq to ask for next
}

// MaxEntriesPage caps limit on GET /v1/ledger/entries.
const MaxEntriesPage = 1000

// GovernanceInfo is the governance set in force (GET /v1/governance).
type GovernanceInfo struct {
	Ledger    entry.Hash `json:"ledger"` // the ledger's identity: proposals are bound to it
	Threshold int        `json:"threshold"`
	Members   []string   `json:"members"` // hex ed25519 public keys: they sign every change, Threshold of them at least
	// Incident keys (hex ed25519) may only revoke OIDC keys, each alone (the
	// watchdog's key); they count toward no threshold.
	Incident []string `json:"incident"`
}

// ProposalResult is the answer to a submitted proposal: the entry it became and,
// for oidc.rotate, what the rotation did.
type ProposalResult struct {
	Entry  entry.Entry   `json:"entry"`
	Rotate *RotateResult `json:"rotate,omitempty"`
}

// HandoffRequest is the body of POST /v1/enclave/handoff (§10.3): a successor
// enclave's quote, whose report data commits to its ephemeral HPKE key.
type HandoffRequest struct {
	Quote attest.Quote `json:"quote"`
	Key   string       `json:"key"` // hex HPKE public key (ML-KEM-768 + X25519)
}

// HandoffResponse carries the seed HPKE-sealed to the successor's key.
type HandoffResponse struct {
	Sealed string `json:"sealed"` // hex
	Seq    uint64 `json:"seq"`    // the successor.handoff entry that records the grant
}
