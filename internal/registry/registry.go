// Package registry holds the chain-anchored registries of §10 as ledger kinds: the
// authorized successor mrsigners (at most 8), changed only by governance, and the
// OIDC issuer keys (registered by the enclave, revoked by governance), and the
// session-token key versions (rotated by governance). It folds
// entries into state and reads them back; it never signs anything.
package registry

import (
	"encoding/hex"
	"errors"
	"fmt"
	"strings"

	"github.com/agentkeys/agentkeys/internal/ledger"
)

// Kinds.
const (
	KindSuccessorAuthorize   = "successor.authorize"
	KindSuccessorDeauthorize = "successor.deauthorize"
	// KindSuccessorHandoff records a seed handoff attempt (§10.3), granted or
	// refused: enclave origin only, it changes no state.
	KindSuccessorHandoff = "successor.handoff"
)

// MaxSuccessors bounds the authorized successor set.
const MaxSuccessors = 8

const successorPrefix = "registry/successor/"

// Successor is an AuthorizedMrSigner record.
type Successor struct {
	MrSigner      string `json:"mrsigner"`
	EffectiveFrom int64  `json:"effective_from"` // unix seconds
	RationaleURI  string `json:"rationale_uri,omitempty"`
	// PlatformKey pins the successor's platform attestation key (hex ed25519):
	// the key its handoff quote must be signed by. In a software enclave it
	// is the root of trust a CPU vendor's chain would be (§2.2); a successor
	// authorized without one receives no seed.
	PlatformKey string `json:"platform_key,omitempty"`
}

// Handoff is the payload of successor.handoff: who asked for the seed, and
// whether the enclave sent it.
type Handoff struct {
	MrSigner    string `json:"mrsigner"`
	MrEnclave   string `json:"mrenclave"`
	PlatformKey string `json:"platform_key"`
	Tier        string `json:"tier"`
	Granted     bool   `json:"granted"`
	Reason      string `json:"reason,omitempty"` // why it was refused
}

// Deauthorize is the payload of successor.deauthorize.
type Deauthorize struct {
	MrSigner string `json:"mrsigner"`
}

// Module declares the registries' kinds (package modules lists it): all
// public, so they have no owner and no usage rows.
var Module = ledger.Module{
	Name: "registry",
	Kinds: map[string]ledger.Kind{
		KindSuccessorAuthorize:   {Origins: ledger.FromGovernance, Public: true, Fold: foldAuthorize},
		KindSuccessorDeauthorize: {Origins: ledger.FromGovernance, Public: true, Fold: foldDeauthorize},
		KindSuccessorHandoff:     {Origins: ledger.FromEnclave, Public: true, Fold: foldHandoff},
		KindOidcKeyRegister:      {Origins: ledger.FromEnclave, Public: true, Fold: foldOidcRegister},
		// The one kind an incident key signs, alone (the watchdog's answer to drift).
		KindOidcKeyRevoke:    {Origins: ledger.FromGovernance, Public: true, Fold: foldOidcRevoke, Incident: true},
		KindOidcRotate:       {Origins: ledger.FromGovernance, Public: true, Fold: foldOidcRotate},
		KindSessionKeyRotate: {Origins: ledger.FromGovernance, Public: true, Fold: foldSessionKeyRotate},
	},
}

func checkMrSigner(s string) error {
	if b, err := hex.DecodeString(s); err != nil || len(b) != 32 || s != strings.ToLower(s) {
		return errors.New("mrsigner must be 64 lowercase hex characters (SHA-256 of the release-signing key)")
	}
	return nil
}

func foldAuthorize(st ledger.State, e *ledger.Entry) error {
	var s Successor
	if err := ledger.DecodeStrict(e.Payload, &s); err != nil {
		return err
	}
	if err := checkMrSigner(s.MrSigner); err != nil {
		return err
	}
	if s.PlatformKey != "" {
		if b, err := hex.DecodeString(s.PlatformKey); err != nil || len(b) != 32 || s.PlatformKey != strings.ToLower(s.PlatformKey) {
			return errors.New("platform_key must be 64 lowercase hex characters (the successor's ed25519 platform attestation key)")
		}
	}
	if _, ok, err := st.Get(successorPrefix + s.MrSigner); err != nil {
		return err
	} else if ok {
		return fmt.Errorf("mrsigner %s is already authorized", s.MrSigner)
	}
	n, err := count(st)
	if err != nil {
		return err
	}
	if n >= MaxSuccessors {
		return fmt.Errorf("already %d authorized successors; deauthorize one first", MaxSuccessors)
	}
	return st.Put(successorPrefix+s.MrSigner, e.Payload)
}

func foldDeauthorize(st ledger.State, e *ledger.Entry) error {
	var d Deauthorize
	if err := ledger.DecodeStrict(e.Payload, &d); err != nil {
		return err
	}
	if err := checkMrSigner(d.MrSigner); err != nil {
		return err
	}
	if _, ok, err := st.Get(successorPrefix + d.MrSigner); err != nil {
		return err
	} else if !ok {
		return fmt.Errorf("mrsigner %s is not authorized", d.MrSigner)
	}
	return st.Delete(successorPrefix + d.MrSigner)
}

func count(st ledger.State) (int, error) {
	n := 0
	err := st.Scan(successorPrefix, func(string, []byte) error { n++; return nil })
	return n, err
}

// Successors lists the authorized mrsigners in key order.
func Successors(st ledger.State) ([]string, error) {
	out := []string{}
	err := st.Scan(successorPrefix, func(k string, _ []byte) error {
		out = append(out, strings.TrimPrefix(k, successorPrefix))
		return nil
	})
	return out, err
}

// foldHandoff checks a handoff record; the ledger keeps it, state does not.
func foldHandoff(_ ledger.State, e *ledger.Entry) error {
	var h Handoff
	if err := ledger.DecodeStrict(e.Payload, &h); err != nil {
		return err
	}
	return checkMrSigner(h.MrSigner)
}

// AuthorizedSuccessor returns the record of an authorized mrsigner; ok is
// false when it was never authorized or has been deauthorized.
func AuthorizedSuccessor(st ledger.State, mrsigner string) (s Successor, ok bool, err error) {
	raw, ok, err := st.Get(successorPrefix + mrsigner)
	if err != nil || !ok {
		return s, false, err
	}
	if err := ledger.DecodeStrict(raw, &s); err != nil {
		return s, false, err
	}
	return s, true, nil
}
