// Package entry is the format of one ledger entry: its fields, the canonical
// encoding its hash covers, the salted payload commitment that lets it be
// served redacted, its JSON wire form (GET and POST /v1/ledger/entries) and
// governance signatures. The ledger writes and verifies entries in this
// format; a client reads and signs them with it, without linking the ledger.
//
// entry imports only the standard library.
package entry

import (
	"bytes"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"time"
)

// OriginGovernance is the origin (and Signer) of governance-signed entries.
const OriginGovernance = "governance"

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

// Entry is one ledger record. Its hash covers every field but Sig; Sig signs the hash.
//
// Entries come in two formats (§3.4). Format 2, which the ledger writes since
// payload commitments exist, hashes a salted commitment to the payload instead of
// the payload itself, so that an entry can be served without its payload
// (Redact) and still be checked: hash, link and signature. Format 1 entries were
// written before; they carry no salt and keep hashing their payload directly.
type Entry struct {
	Seq      uint64
	PrevHash Hash
	Time     int64 // unix nanoseconds, never decreasing along the chain
	Kind     string
	Origin   string
	Payload  []byte // canonical compact JSON object; nil in a redacted entry
	// Salt is the random salt of the payload commitment: SaltSize bytes in a
	// format-2 entry, nil in a format-1 entry and in a redacted one.
	Salt []byte
	// Commitment stands in for Payload and Salt in a redacted entry; nil otherwise.
	Commitment *Hash
	Signer     string // enclave: hex ed25519 key; account: wallet address; governance: "governance"
	Sig        []byte
}

// SaltSize is the size of a payload commitment's salt.
const SaltSize = 32

// PayloadCommitment is SHA-256("agentkeys/ledger/payload/v1\n" || salt || payload):
// it binds the payload without revealing it, as long as the salt stays secret.
func PayloadCommitment(salt, payload []byte) Hash {
	h := sha256.New()
	h.Write([]byte("agentkeys/ledger/payload/v1\n"))
	h.Write(salt)
	h.Write(payload)
	var c Hash
	h.Sum(c[:0])
	return c
}

// Format is 2 for entries that commit to their payload (salted or redacted) and
// 1 for entries written before commitments existed.
func (e *Entry) Format() int {
	if e.Salt != nil || e.Commitment != nil {
		return 2
	}
	return 1
}

// Redacted reports whether the entry is served without its payload.
func (e *Entry) Redacted() bool { return e.Commitment != nil }

// PayloadHash is the commitment a format-2 entry's hash covers.
func (e *Entry) PayloadHash() Hash {
	if e.Commitment != nil {
		return *e.Commitment
	}
	return PayloadCommitment(e.Salt, e.Payload)
}

// Redact returns the entry without its payload and salt, carrying the commitment
// instead: same hash, same signature. Format-1 entries cannot be redacted (their
// hash covers the payload itself): ok is false and e is returned unchanged.
func (e Entry) Redact() (r Entry, ok bool) {
	if e.Format() != 2 {
		return e, false
	}
	c := e.PayloadHash()
	e.Payload, e.Salt, e.Commitment = nil, nil, &c
	return e, true
}

// Hash returns SHA-256 of the entry's canonical encoding (everything but Sig).
func (e *Entry) Hash() Hash {
	return sha256.Sum256(e.canonical())
}

// canonical is the domain-separated, length-prefixed encoding that Hash covers:
// format 1 covers the payload, format 2 the payload commitment in its place.
func (e *Entry) canonical() []byte {
	v2 := e.Format() == 2
	n := 26 + 8 + 32 + 8 + 16 + len(e.Kind) + len(e.Origin) + len(e.Signer)
	if v2 {
		n += len(Hash{})
	} else {
		n += len(e.Payload)
	}
	b := make([]byte, 0, n)
	if v2 {
		b = append(b, "agentkeys/ledger/entry/v2\n"...)
	} else {
		b = append(b, "agentkeys/ledger/entry/v1\n"...)
	}
	b = binary.BigEndian.AppendUint64(b, e.Seq)
	b = append(b, e.PrevHash[:]...)
	b = binary.BigEndian.AppendUint64(b, uint64(e.Time))
	b = appendField(b, e.Kind)
	b = appendField(b, e.Origin)
	if v2 {
		c := e.PayloadHash()
		b = appendField(b, string(c[:]))
	} else {
		b = appendField(b, string(e.Payload))
	}
	return appendField(b, e.Signer)
}

func appendField(b []byte, f string) []byte {
	b = binary.BigEndian.AppendUint32(b, uint32(len(f)))
	return append(b, f...)
}

// CheckForm checks what the hash cannot: a full entry's payload is canonical and
// its salt (if any) has the right size; a redacted entry carries nothing else.
func (e *Entry) CheckForm() error {
	if e.Redacted() {
		if e.Payload != nil || e.Salt != nil {
			return errors.New("a redacted entry carries a commitment instead of payload and salt, not both")
		}
		return nil
	}
	if e.Salt != nil && len(e.Salt) != SaltSize {
		return fmt.Errorf("salt must be %d bytes, got %d", SaltSize, len(e.Salt))
	}
	return CheckPayload(e.Payload)
}

// entryJSON is the wire form served by GET /v1/ledger/entries and accepted by POST.
// A redacted entry has commitment and neither payload nor salt.
type entryJSON struct {
	Seq        uint64          `json:"seq"`
	PrevHash   Hash            `json:"prev_hash"`
	Time       string          `json:"time"`
	Kind       string          `json:"kind"`
	Origin     string          `json:"origin"`
	Payload    json.RawMessage `json:"payload,omitempty"`
	Salt       string          `json:"salt,omitempty"`
	Commitment *Hash           `json:"commitment,omitempty"`
	Signer     string          `json:"signer"`
	Sig        string          `json:"sig"`
	Hash       *Hash           `json:"hash,omitempty"`
}

// MarshalJSON encodes the entry with its hash, RFC 3339 time and hex signature.
func (e Entry) MarshalJSON() ([]byte, error) {
	h := e.Hash()
	return json.Marshal(entryJSON{
		Seq: e.Seq, PrevHash: e.PrevHash,
		Time: time.Unix(0, e.Time).UTC().Format(time.RFC3339Nano),
		Kind: e.Kind, Origin: e.Origin, Payload: e.Payload,
		Salt: hex.EncodeToString(e.Salt), Commitment: e.Commitment,
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
	*e = Entry{Seq: j.Seq, PrevHash: j.PrevHash, Time: t.UnixNano(), Kind: j.Kind,
		Origin: j.Origin, Signer: j.Signer, Sig: sig, Commitment: j.Commitment}
	if j.Payload != nil && !bytes.Equal(j.Payload, []byte("null")) {
		e.Payload = []byte(j.Payload)
	}
	if j.Salt != "" {
		if e.Salt, err = hex.DecodeString(j.Salt); err != nil {
			return fmt.Errorf("ledger entry: salt is not hex: %w", err)
		}
	}
	if err := e.CheckForm(); err != nil {
		return fmt.Errorf("ledger entry: %w", err)
	}
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

// GovernanceSigSize is the size of one governance signature: key || ed25519 signature.
const GovernanceSigSize = ed25519.PublicKeySize + ed25519.SignatureSize

// SignGovernance appends one governance key's signature to e.Sig; callers sign with
// as many keys as the threshold needs.
func SignGovernance(e *Entry, key ed25519.PrivateKey) {
	e.Signer = OriginGovernance
	h := e.Hash()
	e.Sig = append(e.Sig, key.Public().(ed25519.PublicKey)...)
	e.Sig = append(e.Sig, ed25519.Sign(key, h[:])...)
}

// ProposalDigest is what each member signs for a proposal-form entry.
func ProposalDigest(ledgerID Hash, kind string, payload []byte, nonce string, expires int64) Hash {
	b := []byte("agentkeys/governance/proposal/v1\n")
	b = append(b, ledgerID[:]...)
	b = appendField(b, kind)
	b = appendField(b, string(payload))
	b = appendField(b, nonce)
	b = binary.BigEndian.AppendUint64(b, uint64(expires))
	return sha256.Sum256(b)
}
