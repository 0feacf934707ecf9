package entry

import (
	"bytes"
	"crypto/ed25519"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
)

// MaxGovernanceMembers bounds a governance set, and with it the signatures a
// proposal may carry.
const MaxGovernanceMembers = 32

// ProposalSignerPrefix starts the signer of a proposal-form governance entry:
// governance:<nonce>:<expires>.
const ProposalSignerPrefix = OriginGovernance + ":"

// Proposal is a governance change as members pass it around before it is
// submitted (a file): what to append (kind, payload), to which ledger, until
// when, and a nonce so that it is carried out once. Members sign Digest, offline
// and in any order; Server only says where to submit it and is not signed (the
// ledger identity binds the proposal, and every broker on one shared ledger is
// the same ledger).
type Proposal struct {
	Ledger     Hash            `json:"ledger"` // hash of the ledger's genesis entry
	Server     string          `json:"server,omitempty"`
	Kind       string          `json:"kind"`
	Payload    json.RawMessage `json:"payload"`
	Nonce      string          `json:"nonce"`   // 32 lowercase hex characters
	Expires    int64           `json:"expires"` // unix seconds
	Signatures []ProposalSig   `json:"signatures"`
}

// ProposalSig is one member's signature over a proposal's digest.
type ProposalSig struct {
	Key string `json:"key"` // hex ed25519 public key
	Sig string `json:"sig"` // hex ed25519 signature over Digest
}

// Digest is what members sign.
func (p *Proposal) Digest() Hash {
	return ProposalDigest(p.Ledger, p.Kind, p.Payload, p.Nonce, p.Expires)
}

// Check checks the proposal's form (not its signatures: the ledger does).
func (p *Proposal) Check() error {
	switch {
	case p.Kind == "":
		return errors.New("proposal has no kind")
	case !ValidNonce(p.Nonce):
		return errors.New("proposal nonce must be 32 lowercase hex characters")
	case p.Expires <= 0:
		return errors.New("proposal has no expiry")
	case CheckPayload(p.Payload) != nil:
		return errors.New("proposal payload must be a canonical (compact) JSON object")
	case len(p.Signatures) > MaxGovernanceMembers:
		return fmt.Errorf("proposal carries %d signatures, at most %d", len(p.Signatures), MaxGovernanceMembers)
	}
	return nil
}

// Sign adds key's signature, replacing an earlier one by the same key.
func (p *Proposal) Sign(key ed25519.PrivateKey) {
	d := p.Digest()
	s := ProposalSig{Key: hex.EncodeToString(key.Public().(ed25519.PublicKey)), Sig: hex.EncodeToString(ed25519.Sign(key, d[:]))}
	p.Signatures = slices.DeleteFunc(p.Signatures, func(o ProposalSig) bool { return o.Key == s.Key })
	p.Signatures = append(p.Signatures, s)
}

// Entry is the proposal as a ledger entry in proposal form; the ledger places it.
func (p *Proposal) Entry() (Entry, error) {
	if err := p.Check(); err != nil {
		return Entry{}, err
	}
	e := Entry{Kind: p.Kind, Origin: OriginGovernance, Payload: p.Payload,
		Signer: ProposalSignerPrefix + p.Nonce + ":" + strconv.FormatInt(p.Expires, 10)}
	for _, s := range p.Signatures {
		k, kerr := hex.DecodeString(s.Key)
		sig, serr := hex.DecodeString(s.Sig)
		if kerr != nil || serr != nil || len(k) != ed25519.PublicKeySize || len(sig) != ed25519.SignatureSize {
			return Entry{}, fmt.Errorf("signature by %.16q is not a hex ed25519 key and signature", s.Key)
		}
		e.Sig = append(append(e.Sig, k...), sig...)
	}
	return e, nil
}

// UnmarshalJSON decodes a proposal (unknown fields refused) and brings its
// payload to canonical form, so that a file a person re-indented still has the
// digest its members signed.
func (p *Proposal) UnmarshalJSON(b []byte) error {
	type plain Proposal
	var q plain
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&q); err != nil {
		return fmt.Errorf("proposal: %w", err)
	}
	if bytes.Equal(q.Payload, []byte("null")) {
		q.Payload = nil
	}
	if len(q.Payload) > 0 {
		var buf, esc bytes.Buffer
		if err := json.Compact(&buf, q.Payload); err != nil {
			return fmt.Errorf("proposal payload: %w", err)
		}
		json.HTMLEscape(&esc, buf.Bytes())
		q.Payload = esc.Bytes()
	}
	*p = Proposal(q)
	return nil
}

// ValidNonce reports whether s is a proposal nonce: 32 lowercase hex characters.
func ValidNonce(s string) bool {
	if len(s) != 32 {
		return false
	}
	_, err := hex.DecodeString(s)
	return err == nil && s == strings.ToLower(s)
}
