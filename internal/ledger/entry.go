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
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"
)

// Hash is a SHA-256 digest: an entry hash or a prev_hash link.
type Hash [32]byte

// String returns the lowercase hex form.
func (h Hash) String() string { return hex.EncodeToString(h[:]) }

// MarshalText encodes the hash as hex.
func (h Hash) MarshalText() ([]byte, error) { return []byte(h.String()), nil }

// UnmarshalText decodes a 64-character hex hash.
func (h *Hash) UnmarshalText(b []byte) error {
	if len(b) != 64 {
		return fmt.Errorf("hash must be 64 hex characters, got %d", len(b))
	}
	_, err := hex.Decode(h[:], b)
	return err
}

// Origins. An account origin is "account:" followed by the account's omni.
const (
	OriginEnclave    = "enclave"
	OriginGovernance = "governance"
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

// Entry is one ledger record. Its hash covers every field but Sig; Sig signs the hash.
type Entry struct {
	Seq      uint64
	PrevHash Hash
	Time     int64 // unix nanoseconds, never decreasing along the chain
	Kind     string
	Origin   string
	Payload  []byte // canonical compact JSON object
	Signer   string // enclave: hex ed25519 key; account: wallet address; governance: "governance"
	Sig      []byte
}

// Hash returns SHA-256 of the entry's canonical encoding (everything but Sig).
func (e *Entry) Hash() Hash {
	return sha256.Sum256(e.canonical())
}

// canonical is the domain-separated, length-prefixed encoding that Hash covers.
func (e *Entry) canonical() []byte {
	n := 26 + 8 + 32 + 8 + 16 + len(e.Kind) + len(e.Origin) + len(e.Payload) + len(e.Signer)
	b := make([]byte, 0, n)
	b = append(b, "agentkeys/ledger/entry/v1\n"...)
	b = binary.BigEndian.AppendUint64(b, e.Seq)
	b = append(b, e.PrevHash[:]...)
	b = binary.BigEndian.AppendUint64(b, uint64(e.Time))
	for _, f := range []string{e.Kind, e.Origin, string(e.Payload), e.Signer} {
		b = binary.BigEndian.AppendUint32(b, uint32(len(f)))
		b = append(b, f...)
	}
	return b
}

// entryJSON is the wire form served by GET /v1/ledger/entries and accepted by POST.
type entryJSON struct {
	Seq      uint64          `json:"seq"`
	PrevHash Hash            `json:"prev_hash"`
	Time     string          `json:"time"`
	Kind     string          `json:"kind"`
	Origin   string          `json:"origin"`
	Payload  json.RawMessage `json:"payload"`
	Signer   string          `json:"signer"`
	Sig      string          `json:"sig"`
	Hash     *Hash           `json:"hash,omitempty"`
}

// MarshalJSON encodes the entry with its hash, RFC 3339 time and hex signature.
func (e Entry) MarshalJSON() ([]byte, error) {
	h := e.Hash()
	return json.Marshal(entryJSON{
		Seq: e.Seq, PrevHash: e.PrevHash,
		Time: time.Unix(0, e.Time).UTC().Format(time.RFC3339Nano),
		Kind: e.Kind, Origin: e.Origin, Payload: e.Payload,
		Signer: e.Signer, Sig: hex.EncodeToString(e.Sig), Hash: &h,
	})
}

// UnmarshalJSON decodes the wire form. If a hash is present it must match the entry;
// the payload must already be in canonical form so that its hash is unambiguous.
func (e *Entry) UnmarshalJSON(b []byte) error {
	var j entryJSON
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&j); err != nil {
		return fmt.Errorf("ledger entry: %w", err)
	}
	t, err := time.Parse(time.RFC3339Nano, j.Time)
	if err != nil {
		return fmt.Errorf("ledger entry: time: %w", err)
	}
	sig, err := hex.DecodeString(j.Sig)
	if err != nil {
		return fmt.Errorf("ledger entry: sig is not hex: %w", err)
	}
	if err := CheckPayload(j.Payload); err != nil {
		return fmt.Errorf("ledger entry: %w", err)
	}
	*e = Entry{Seq: j.Seq, PrevHash: j.PrevHash, Time: t.UnixNano(), Kind: j.Kind,
		Origin: j.Origin, Payload: []byte(j.Payload), Signer: j.Signer, Sig: sig}
	if j.Hash != nil && *j.Hash != e.Hash() {
		return fmt.Errorf("ledger entry %d: hash field does not match the entry's content", e.Seq)
	}
	return nil
}

// ErrPayload marks a payload that is not a canonical JSON object.
var ErrPayload = errors.New("payload must be a compact JSON object as produced by encoding/json")

// CheckPayload reports whether p is a JSON object in the canonical form that
// encoding/json produces (compact, HTML-escaped), so that one payload has one hash.
func CheckPayload(p []byte) error {
	if len(p) == 0 || p[0] != '{' || !json.Valid(p) {
		return ErrPayload
	}
	var buf bytes.Buffer
	if err := json.Compact(&buf, p); err != nil {
		return ErrPayload
	}
	var esc bytes.Buffer
	json.HTMLEscape(&esc, buf.Bytes())
	if !bytes.Equal(esc.Bytes(), p) {
		return ErrPayload
	}
	return nil
}

// MarshalPayload encodes v as a canonical payload. encoding/json writes compact,
// HTML-escaped JSON (it compacts what custom marshalers return, too), so only the
// object shape is left to check; TestMarshalPayloadIsCanonical holds it to
// CheckPayload.
func MarshalPayload(v any) ([]byte, error) {
	p, err := json.Marshal(v)
	if err != nil {
		return nil, err
	}
	if len(p) == 0 || p[0] != '{' {
		return nil, ErrPayload
	}
	return p, nil
}
