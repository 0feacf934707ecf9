// Package account is the ledger side of identities (§4): owner accounts, their
// enclave-held wallets and their sessions. It declares the kinds, folds them into
// state, reads state back, and keeps the in-memory revocation index in step with
// the ledger. It never signs or verifies tokens (package token does).
package account

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/agentkeys/agentkeys/internal/ledger"
)

// Kinds.
const (
	KindCreated       = "account.created"
	KindSessionIssued = "session.issued"
	KindSessionRevoke = "session.revoked"
)

// Account types.
const (
	TypeKey = "key" // an Ed25519 identity key held by the owner's CLI
)

// Account is the state record of one account.
type Account struct {
	Omni       string `json:"omni"`
	Wallet     string `json:"wallet"`
	Type       string `json:"type"`
	PublicKey  string `json:"public_key,omitempty"` // hex Ed25519 identity key (type key)
	Role       string `json:"role"`                 // owner | agent
	Parent     string `json:"parent,omitempty"`     // agents: the owner's omni
	Alias      string `json:"alias,omitempty"`      // agents: the alias given at pairing
	Generation int    `json:"generation,omitempty"` // agents: 1 at first pairing, +1 per re-pairing
	Created    int64  `json:"created,omitempty"`    // unix nanos, set from the entry time
	Invite     string `json:"invite,omitempty"`     // owners signed up by invite: its id (each invite is used once)
}

// Session is the state record of one session; tokens are never stored.
type Session struct {
	SID       string `json:"sid"`
	Omni      string `json:"omni"`
	Role      string `json:"role"`
	Expires   int64  `json:"expires"`          // unix seconds
	Issued    int64  `json:"issued,omitempty"` // unix nanos, set from the entry time
	LoginHash string `json:"login_hash,omitempty"`
	Revoked   bool   `json:"revoked,omitempty"`
	Reason    string `json:"reason,omitempty"`
}

// Revocation is the payload of session.revoked.
type Revocation struct {
	SID    string `json:"sid"`
	Reason string `json:"reason"`
}

// OwnerOmni computes an owner's omni from its Ed25519 identity public key (§4.1).
func OwnerOmni(pub []byte) string {
	h := sha256.Sum256([]byte("agentkeys/omni/v1|key|" + hex.EncodeToString(pub)))
	return hex.EncodeToString(h[:])
}

// AgentOmni computes an agent's omni (§4.1): a fresh one per generation.
func AgentOmni(parent, alias string, generation int) string {
	h := sha256.Sum256(fmt.Appendf(nil, "agentkeys/omni/v1|child|%s//%s/%d", parent, alias, generation))
	return hex.EncodeToString(h[:])
}

// Module declares the account kinds (package modules lists it) and maps an
// account to the wallet that signs its entries. An account's creation is its
// own, or its owner's when it is an agent (and shows in the owner's trail);
// a session's entries are the signing account's.
var Module = ledger.Module{
	Name: "account",
	Kinds: map[string]ledger.Kind{
		KindCreated:       {Origins: ledger.FromEnclave, Fold: foldCreated, Owner: ownerCreated, Usage: usageCreated},
		KindSessionIssued: {Origins: ledger.FromAccount, Fold: foldSessionIssued, Owner: ledger.OwnerSigner},
		KindSessionRevoke: {Origins: ledger.FromAccount | ledger.FromEnclave, Fold: foldSessionRevoked, Owner: ledger.OwnerSigner},
	},
	Wallet: Wallet,
}

// ownerCreated: the new account, and its owner ("parent") when it is an agent.
func ownerCreated(e *ledger.Entry) (account, parent string, ok bool) {
	var a struct {
		Omni   string `json:"omni"`
		Parent string `json:"parent"`
	}
	if json.Unmarshal(e.Payload, &a) != nil {
		return "", "", false
	}
	return a.Omni, a.Parent, a.Omni != "" || a.Parent != ""
}

// usageCreated: an agent's creation is a row in its owner's trail.
func usageCreated(e *ledger.Entry) (ledger.Usage, bool) {
	a, u, ok := ledger.UsageRow[struct {
		Omni, Role, Parent, Alias string
		Generation                int
	}](e)
	u.Actor, u.ActorRole, u.Agent, u.Alias, u.Action = "enclave", "enclave", a.Alias, a.Alias, "agent.create"
	u.Detail = fmt.Sprintf("omni %s generation %d", a.Omni, a.Generation)
	return u, ok && a.Role == "agent"
}

func accountKey(omni string) string { return "account/" + omni }
func sessionKey(sid string) string  { return "session/" + sid }
func loginKey(h string) string      { return "login/" + h }
func walletKey(w string) string     { return "wallet/" + strings.ToLower(w) }
func inviteKey(id string) string    { return "invite/" + id }

// InviteUsed reports whether an account was created with the invite id.
func InviteUsed(st ledger.State, id string) (bool, error) {
	_, ok, err := st.Get(inviteKey(id))
	return ok, err
}

// ByWallet finds the omni of the account with wallet address w (any case).
func ByWallet(st ledger.State, w string) (string, bool, error) {
	var omni string
	ok, err := ledger.GetJSON(st, walletKey(w), &omni)
	return omni, ok, err
}

// Wallet returns the wallet address of an account (ledger.Schema.Wallet).
func Wallet(st ledger.State, omni string) (string, error) {
	a, err := Get(st, omni)
	if err != nil {
		return "", err
	}
	return a.Wallet, nil
}

// ErrNoAccount means no account has that omni.
var ErrNoAccount = errors.New("no such account")

// Get reads an account.
func Get(st ledger.State, omni string) (*Account, error) {
	var a Account
	ok, err := ledger.GetJSON(st, accountKey(omni), &a)
	if err != nil {
		return nil, err
	}
	if !ok {
		return nil, ErrNoAccount
	}
	return &a, nil
}

// GetSession reads a session.
func GetSession(st ledger.State, sid string) (*Session, bool, error) {
	var s Session
	ok, err := ledger.GetJSON(st, sessionKey(sid), &s)
	return &s, ok, err
}

func foldCreated(st ledger.State, e *ledger.Entry) error {
	var a Account
	if err := ledger.DecodeStrict(e.Payload, &a); err != nil {
		return err
	}
	if !ledger.ValidOmni(a.Omni) || a.Wallet == "" {
		return errors.New("account needs an omni and a wallet")
	}
	switch a.Role {
	case "owner":
		pub, err := hex.DecodeString(a.PublicKey)
		if a.Type != TypeKey || err != nil || OwnerOmni(pub) != a.Omni {
			return errors.New("owner omni must be derived from its identity key")
		}
	case "agent":
		if !ledger.ValidOmni(a.Parent) || a.Alias == "" || a.Generation < 1 || AgentOmni(a.Parent, a.Alias, a.Generation) != a.Omni {
			return errors.New("agent account needs its owner as parent and an omni derived from parent, alias and generation")
		}
	default:
		return fmt.Errorf("unknown role %q", a.Role)
	}
	if _, ok, err := st.Get(accountKey(a.Omni)); err != nil {
		return err
	} else if ok {
		return fmt.Errorf("account %s already exists", a.Omni)
	}
	if a.Invite != "" {
		if used, err := InviteUsed(st, a.Invite); err != nil {
			return err
		} else if used || a.Role != "owner" {
			return errors.New("an invite creates one owner account")
		}
		if err := st.Put(inviteKey(a.Invite), []byte(strconv.Quote(a.Omni))); err != nil {
			return err
		}
	}
	a.Created = e.Time
	if err := st.Put(walletKey(a.Wallet), []byte(strconv.Quote(a.Omni))); err != nil {
		return err
	}
	return ledger.PutJSON(st, accountKey(a.Omni), a)
}

func foldSessionIssued(st ledger.State, e *ledger.Entry) error {
	var s Session
	if err := ledger.DecodeStrict(e.Payload, &s); err != nil {
		return err
	}
	omni, _ := ledger.AccountOf(e.Origin)
	s.Issued = e.Time
	if s.Omni != omni || s.SID == "" || s.Revoked {
		return errors.New("a session is issued by its own account, with a sid, not revoked")
	}
	if _, ok, err := st.Get(sessionKey(s.SID)); err != nil {
		return err
	} else if ok {
		return errors.New("session id already used")
	}
	if s.LoginHash != "" {
		// a signed login statement opens at most one session (replay protection)
		if _, ok, err := st.Get(loginKey(s.LoginHash)); err != nil {
			return err
		} else if ok {
			return errors.New("login statement already used")
		}
		if err := st.Put(loginKey(s.LoginHash), []byte(`1`)); err != nil {
			return err
		}
	}
	return ledger.PutJSON(st, sessionKey(s.SID), s)
}

func foldSessionRevoked(st ledger.State, e *ledger.Entry) error {
	var r Revocation
	if err := ledger.DecodeStrict(e.Payload, &r); err != nil {
		return err
	}
	s, ok, err := GetSession(st, r.SID)
	if err != nil {
		return err
	}
	if !ok {
		return errors.New("no such session")
	}
	if omni, isAcct := ledger.AccountOf(e.Origin); isAcct && omni != s.Omni {
		if a, err := Get(st, s.Omni); err != nil || a.Parent != omni {
			return errors.New("an account may revoke only its own sessions or its agents'")
		}
	}
	if s.Revoked {
		return errors.New("session already revoked")
	}
	s.Revoked, s.Reason = true, r.Reason
	return ledger.PutJSON(st, sessionKey(s.SID), s)
}
