package ledger

import (
	"crypto/ed25519"
	"encoding/hex"
	"errors"
	"fmt"
	"github.com/agentkeys/agentkeys/internal/entry"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Governance is part of the ledger core, like genesis: the origin "governance"
// is an M-of-N set of Ed25519 keys, named in genesis and changed only by a
// governance.set entry that the set in force signed. Its entries are signed in
// one of two forms:
//
//   - entry form (Signer "governance"): each key signs the entry hash, so the
//     entry is bound to its place in the chain; all signers must sign the same
//     head, which suits one operator holding every key;
//   - proposal form (Signer "governance:<nonce>:<expires>"): each key signs
//     ProposalDigest — the ledger's identity (its genesis entry hash), kind,
//     payload, a nonce and an expiry — offline and in any order; the ledger
//     places the entry at its head, refuses an expired proposal and records the
//     nonce so that it is carried out at most once.

// KindGovernanceSet replaces the governance set (payload: Governance).
const KindGovernanceSet = "governance.set"

// MaxGovernanceMembers (entry.MaxGovernanceMembers) bounds a governance set, and with it the signatures a
// submission may make the ledger check.
const MaxGovernanceMembers = entry.MaxGovernanceMembers

// MaxIncidentKeys bounds the incident keys of a governance set.
const MaxIncidentKeys = 8

// MaxProposalLifetime bounds how far past its submission a proposal may expire.
const MaxProposalLifetime = 31 * 24 * time.Hour

// ErrReplay means a proposal's nonce was already carried out.
var ErrReplay = errors.New("proposal already submitted")

const (
	keyGovernance      = "ledger/governance"
	keyProposalNonce   = "ledger/governance/nonce/"
	proposalSignerPref = entry.ProposalSignerPrefix
)

// ThresholdError says a governance entry carries too few distinct member signatures.
type ThresholdError struct{ Have, Need, Members int }

func (e *ThresholdError) Error() string {
	return fmt.Sprintf("%d distinct member signature(s); the governance set needs %d of its %d members", e.Have, e.Need, e.Members)
}

// Unwrap makes a ThresholdError an ErrSignature.
func (e *ThresholdError) Unwrap() error { return ErrSignature }

// IncidentKeyError says an incident key signed a kind it may not: incident
// keys sign only kinds declared Incident (revoking an OIDC key).
type IncidentKeyError struct {
	Key, Kind string
}

func (e *IncidentKeyError) Error() string {
	return fmt.Sprintf("signature by incident key %.16s…: an incident key may only revoke OIDC keys, it signs no %q entry and counts toward no threshold", e.Key, e.Kind)
}

// Unwrap makes an IncidentKeyError an ErrSignature.
func (e *IncidentKeyError) Unwrap() error { return ErrSignature }

func (gv Governance) validate() error {
	if len(gv.Keys) > MaxGovernanceMembers {
		return fmt.Errorf("governance: %d members, at most %d", len(gv.Keys), MaxGovernanceMembers)
	}
	if gv.Threshold < 1 || gv.Threshold > len(gv.Keys) {
		return fmt.Errorf("governance threshold %d of %d keys is impossible", gv.Threshold, len(gv.Keys))
	}
	if len(gv.Incident) > MaxIncidentKeys {
		return fmt.Errorf("governance: %d incident keys, at most %d", len(gv.Incident), MaxIncidentKeys)
	}
	seen := map[string]bool{}
	for _, k := range slices.Concat(gv.Keys, gv.Incident) {
		if b, err := hex.DecodeString(k); err != nil || len(b) != ed25519.PublicKeySize || k != strings.ToLower(k) {
			return errors.New("governance keys must be lowercase hex ed25519 public keys")
		}
		if seen[k] {
			return errors.New("duplicate governance key (a key is a member or an incident key, not both)")
		}
		seen[k] = true
	}
	return nil
}

// ValidateGovernance checks a governance set as genesis and governance.set require.
func ValidateGovernance(gv Governance) error { return gv.validate() }

func foldGovernanceSet(st State, e *Entry) error {
	var gv Governance
	if err := decodeStrict(e.Payload, &gv); err != nil {
		return fmt.Errorf("governance.set payload: %w", err)
	}
	if err := gv.validate(); err != nil {
		return err
	}
	return st.Put(keyGovernance, e.Payload)
}

// CurrentGovernance is the governance set in force: the last governance.set, or
// genesis's.
func CurrentGovernance(st State) (Governance, error) {
	var gv Governance
	if ok, err := GetJSON(st, keyGovernance, &gv); err != nil || ok {
		return gv, err
	}
	g, err := LoadGenesis(st)
	if err != nil {
		return gv, err
	}
	return g.Governance, nil
}

// govContext is what a governance signature is checked against: the ledger's
// identity and, when the caller tracks it itself (a verifier walking history
// against final state), the set in force; nil means read it from state.
type govContext struct {
	ledgerID Hash
	set      *Governance
}

// ProposalDigest is entry.ProposalDigest: what each member signs for a
// proposal-form entry.
func ProposalDigest(ledgerID Hash, kind string, payload []byte, nonce string, expires int64) Hash {
	return entry.ProposalDigest(ledgerID, kind, payload, nonce, expires)
}

// proposalOf parses a proposal-form signer: ok is false for every other signer.
func proposalOf(e *Entry) (nonce string, expires int64, ok bool, err error) {
	rest, found := strings.CutPrefix(e.Signer, proposalSignerPref)
	if !found || e.Origin != OriginGovernance {
		return "", 0, false, nil
	}
	nonce, exp, found := strings.Cut(rest, ":")
	if !found || !entry.ValidNonce(nonce) {
		return "", 0, true, fmt.Errorf("%w: proposal signer must be governance:<32 hex nonce>:<expiry>", ErrSignature)
	}
	expires, perr := strconv.ParseInt(exp, 10, 64)
	if perr != nil || expires <= 0 || strconv.FormatInt(expires, 10) != exp {
		return "", 0, true, fmt.Errorf("%w: proposal expiry must be unix seconds", ErrSignature)
	}
	return nonce, expires, true, nil
}

// IsProposal reports whether e is a governance entry in proposal form: the
// ledger places it at its head itself (its signatures do not cover the place).
func IsProposal(e *Entry) bool { return strings.HasPrefix(e.Signer, proposalSignerPref) }

// verifyGovernance checks e's signatures against the set in force: every pair is
// a member's valid signature over the entry hash (entry form) or the proposal
// digest (proposal form), and at least the threshold of distinct members signed.
// On a kind that admits incident keys (k.Incident) one incident key's valid
// signature suffices instead; on any other kind an incident key's signature is
// refused before it is checked. A key's second signature counts once and is not
// checked again; more pairs than keys in the set are refused before any is checked, so a
// submission costs at most one verification per key.
func verifyGovernance(gv Governance, gc govContext, k Kind, e *Entry, h Hash) error {
	msg := h
	nonce, expires, isProposal, err := proposalOf(e)
	if err != nil {
		return err
	}
	if isProposal {
		if e.Redacted() {
			return fmt.Errorf("%w: a proposal's payload cannot be withheld", ErrSignature)
		}
		msg = ProposalDigest(gc.ledgerID, e.Kind, e.Payload, nonce, expires)
	} else if e.Signer != OriginGovernance {
		return fmt.Errorf("%w: governance signer must be \"governance\" or a proposal's", ErrSignature)
	}
	if len(e.Sig) == 0 || len(e.Sig)%GovernanceSigSize != 0 {
		return fmt.Errorf("%w: governance entries carry key||signature pairs", ErrSignature)
	}
	signers := len(gv.Keys) + len(gv.Incident)
	if n := len(e.Sig) / GovernanceSigSize; n > signers {
		return fmt.Errorf("%w: %d signatures, more than the %d members of the governance set", ErrSignature, n, signers)
	}
	valid := map[string]bool{} // every key whose signature verified
	members, incident := 0, false
	for part := range slices.Chunk(e.Sig, GovernanceSigSize) {
		pub, sig := part[:ed25519.PublicKeySize], part[ed25519.PublicKeySize:]
		key := hex.EncodeToString(pub)
		if valid[key] {
			continue
		}
		isIncident := slices.Contains(gv.Incident, key)
		switch {
		case isIncident && !k.Incident:
			return &IncidentKeyError{Key: key, Kind: e.Kind}
		case !isIncident && !slices.Contains(gv.Keys, key):
			return fmt.Errorf("%w: signature by %.16s…, which is not a member of the governance set", ErrSignature, key)
		}
		if !ed25519.Verify(pub, msg[:], sig) {
			return fmt.Errorf("%w: member %.16s…'s signature does not verify (signed for another ledger, or the proposal changed after signing)", ErrSignature, key)
		}
		valid[key] = true
		if isIncident {
			incident = true
		} else {
			members++
		}
	}
	if incident {
		return nil
	}
	if members < gv.Threshold {
		return fmt.Errorf("%w", &ThresholdError{Have: members, Need: gv.Threshold, Members: len(gv.Keys)})
	}
	return nil
}

// foldCore runs what the ledger core itself folds for any entry — a proposal's
// expiry and single use — and then the kind's own fold.
func foldCore(k Kind, st State, e *Entry) error {
	nonce, expires, ok, err := proposalOf(e)
	if err != nil {
		return err
	}
	if ok {
		if e.Time > expires*int64(time.Second) {
			return fmt.Errorf("proposal expired at %s", time.Unix(expires, 0).UTC().Format(time.RFC3339))
		}
		if time.Duration(expires*int64(time.Second)-e.Time) > MaxProposalLifetime {
			return fmt.Errorf("proposal expires more than %s after it was submitted", MaxProposalLifetime)
		}
		var seq uint64
		if used, err := GetJSON(st, keyProposalNonce+nonce, &seq); err != nil {
			return err
		} else if used {
			return fmt.Errorf("%w: its nonce %s was carried out at seq %d", ErrReplay, nonce, seq)
		}
		if err := PutJSON(st, keyProposalNonce+nonce, e.Seq); err != nil {
			return err
		}
	}
	return k.Fold(st, e)
}

// Proposal is entry.Proposal: a governance change as members pass it around
// before it is submitted.
type Proposal = entry.Proposal

// ProposalSig is entry.ProposalSig: one member's signature over a proposal.
type ProposalSig = entry.ProposalSig
