// Package ledger is AgentKeys' single source of truth: an append-only, hash-chained,
// signed log of entries, with the state folded from them in the same transaction.
//
// The ledger decides nothing about accounts or credentials itself: a Schema says which
// kinds exist, which origins may submit each kind and how each kind folds into state.
// Storage sits behind the Driver interface (SQLite embedded, PostgreSQL shared), and
// every driver passes the conformance suite in package ledgertest.
//
// The ledger never holds a private key. Entries of origin enclave and account:<omni>
// are signed through the Signer (the enclave); governance entries arrive signed.
package ledger

import (
	"crypto/ed25519"
	"strings"

	"github.com/agentkeys/agentkeys/internal/entry"
)

// The entry format lives in package entry, which clients share without
// linking the ledger; these are its names as the ledger's API uses them.
type (
	// Entry is one ledger record (see entry.Entry).
	Entry = entry.Entry
	// Hash is a SHA-256 digest: an entry hash or a prev_hash link.
	Hash = entry.Hash
)

// Names of the entry format that the ledger's callers use.
const (
	SaltSize          = entry.SaltSize
	GovernanceSigSize = entry.GovernanceSigSize
)

// ErrPayload marks a payload that is not a canonical JSON object.
var ErrPayload = entry.ErrPayload

// PayloadCommitment is entry.PayloadCommitment.
func PayloadCommitment(salt, payload []byte) Hash { return entry.PayloadCommitment(salt, payload) }

// CheckPayload is entry.CheckPayload.
func CheckPayload(p []byte) error { return entry.CheckPayload(p) }

// MarshalPayload is entry.MarshalPayload.
func MarshalPayload(v any) ([]byte, error) { return entry.MarshalPayload(v) }

// SignGovernance is entry.SignGovernance.
func SignGovernance(e *Entry, key ed25519.PrivateKey) { entry.SignGovernance(e, key) }

// Origins. An account origin is "account:" followed by the account's omni.
const (
	OriginEnclave    = "enclave"
	OriginGovernance = entry.OriginGovernance
	accountPrefix    = "account:"
)

// AccountOrigin returns the origin string for entries signed by account omni's wallet.
func AccountOrigin(omni string) string { return accountPrefix + omni }

// AccountOf returns the omni of an account origin.
func AccountOf(origin string) (string, bool) {
	omni, ok := strings.CutPrefix(origin, accountPrefix)
	return omni, ok && ValidOmni(omni)
}

// ValidOmni reports whether s is a 64-character lowercase hex account id.
func ValidOmni(s string) bool {
	if len(s) != 64 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
			return false
		}
	}
	return true
}
