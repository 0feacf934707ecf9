// Package vault is the ledger side of the credential vault (§5): credential
// records, their audit trail (store, read, denied read, delete), high-value
// approvals, and the usage rows derived from those entries. Records hold only the hash of the
// ciphertext; the ciphertext is a content-addressed blob beside the ledger. It
// never sees plaintext.
package vault

import (
	"errors"
	"fmt"

	"github.com/agentkeys/agentkeys/internal/apiv1"
	"github.com/agentkeys/agentkeys/internal/ledger"
)

// Kinds.
const (
	KindStored    = "credential.stored"
	KindRead      = "credential.read"
	KindDenied    = "credential.denied"
	KindDeleted   = "credential.deleted"
	KindRequested = "approval.requested"
	KindGranted   = "approval.granted"
)

// Credential is the state record of a stored credential (no ciphertext).
type Credential struct {
	Owner          string `json:"owner"`
	Agent          string `json:"agent"` // alias, or "*" for owner-wide
	Service        string `json:"service"`
	CiphertextHash string `json:"ciphertext_hash"`
	Version        int    `json:"version"`
	Approval       string `json:"approval"`
	Size           int    `json:"size"`
	Stored         int64  `json:"stored,omitempty"` // unix nanos, from the entry time
}

// Read is the payload of credential.read (and, with Reason, credential.denied).
type Read struct {
	Owner      string `json:"owner"`
	Agent      string `json:"agent"`
	Service    string `json:"service"`
	Actor      string `json:"actor"` // omni of the reader
	ActorRole  string `json:"actor_role"`
	Alias      string `json:"alias,omitempty"` // reader's alias when an agent
	SID        string `json:"sid"`
	Version    int    `json:"version,omitempty"`
	ApprovalID string `json:"approval_id,omitempty"`
	Reason     string `json:"reason,omitempty"` // denied reads only
}

// Deleted is the payload of credential.deleted.
type Deleted struct {
	Owner   string `json:"owner"`
	Agent   string `json:"agent"`
	Service string `json:"service"`
	Actor   string `json:"actor"`
}

// Approval is the state record of a high-value release request.
type Approval struct {
	ID        string `json:"id"`
	Owner     string `json:"owner"`
	Agent     string `json:"agent"`
	Service   string `json:"service"`
	Actor     string `json:"actor"`
	ActorRole string `json:"actor_role"`
	Alias     string `json:"alias,omitempty"`
	SID       string `json:"sid"`
	Expires   int64  `json:"expires"`          // unix seconds: pending requests lapse
	Status    string `json:"status,omitempty"` // pending, granted, used (set by folds)
	Until     int64  `json:"until,omitempty"`  // unix seconds: a grant is usable until then
}

// Grant is the payload of approval.granted.
type Grant struct {
	ID      string `json:"id"`
	Owner   string `json:"owner"`
	Service string `json:"service"`
	Agent   string `json:"agent"`
	Until   int64  `json:"until"`
}

// Usage is one audit row as shown by `agentkeys usage` (ledger.Usage: each
// kind derives its own).
type Usage = ledger.Usage

// Module declares the vault's kinds (package modules lists it). Each entry is
// in the trail of the owner its payload names.
var Module = ledger.Module{
	Name: "vault",
	Kinds: map[string]ledger.Kind{
		KindStored:    {Origins: ledger.FromAccount, Fold: foldStored, Owner: ledger.OwnerMember, Usage: usageStored},
		KindRead:      {Origins: ledger.FromAccount, Fold: foldRead, Owner: ledger.OwnerMember, Usage: usageRead},
		KindDenied:    {Origins: ledger.FromAccount, Fold: foldDenied, Owner: ledger.OwnerMember, Usage: usageRead},
		KindDeleted:   {Origins: ledger.FromAccount, Fold: foldDeleted, Owner: ledger.OwnerMember, Usage: usageDeleted},
		KindRequested: {Origins: ledger.FromAccount, Fold: foldRequested, Owner: ledger.OwnerMember, Usage: usageRequested},
		KindGranted:   {Origins: ledger.FromAccount, Fold: foldGranted, Owner: ledger.OwnerMember, Usage: usageGranted},
	},
}

// CredKey is the state key of a credential record.
func CredKey(owner, agent, service string) string {
	return "cred/" + owner + "/" + agent + "/" + service
}

func approvalKey(owner, id string) string { return "approval/" + owner + "/" + id }

func actorOf(e *ledger.Entry, actor string) error {
	omni, _ := ledger.AccountOf(e.Origin)
	if omni != actor {
		return errors.New("the actor must be the account that signs the entry")
	}
	return nil
}

func foldStored(st ledger.State, e *ledger.Entry) error {
	var c Credential
	if err := ledger.DecodeStrict(e.Payload, &c); err != nil {
		return err
	}
	if err := actorOf(e, c.Owner); err != nil {
		return err
	}
	if !apiv1.ValidName(c.Service) || (c.Agent != apiv1.OwnerWide && !apiv1.ValidName(c.Agent)) {
		return errors.New("invalid service or agent name")
	}
	if c.Approval != apiv1.ApprovalNone && c.Approval != apiv1.ApprovalRequired {
		return errors.New("approval must be none or required")
	}
	if len(c.CiphertextHash) != 64 {
		return errors.New("ciphertext_hash must be hex SHA-256")
	}
	prev, ok, err := Get(st, c.Owner, c.Agent, c.Service)
	if err != nil {
		return err
	}
	want := 1
	if ok {
		want = prev.Version + 1
		if prev.CiphertextHash != c.CiphertextHash {
			if err := st.Delete(ledger.BlobKey(prev.CiphertextHash)); err != nil {
				return err
			}
		}
	}
	if c.Version != want {
		return fmt.Errorf("version must be %d", want)
	}
	c.Stored = e.Time
	return ledger.PutJSON(st, CredKey(c.Owner, c.Agent, c.Service), c)
}

func foldRead(st ledger.State, e *ledger.Entry) error {
	var r Read
	if err := ledger.DecodeStrict(e.Payload, &r); err != nil {
		return err
	}
	if err := actorOf(e, r.Actor); err != nil {
		return err
	}
	c, ok, err := Get(st, r.Owner, r.Agent, r.Service)
	if err != nil {
		return err
	}
	// A read names the version it released: the current one, or an older one
	// when a store committed while the read was being audited (it had looked up
	// and holds the old ciphertext). Never a version not yet stored.
	if !ok || r.Version < 1 || r.Version > c.Version {
		return errors.New("no such credential version")
	}
	if c.Approval == apiv1.ApprovalRequired {
		a, ok, err := GetApproval(st, r.Owner, r.ApprovalID)
		if err != nil {
			return err
		}
		if !ok || a.Status != "granted" || a.Service != r.Service || a.Agent != r.Agent || a.Actor != r.Actor {
			return errors.New("high-value read without a matching grant")
		}
		if e.Time/1e9 > a.Until {
			return errors.New("the grant has lapsed")
		}
		a.Status = "used"
		return ledger.PutJSON(st, approvalKey(r.Owner, a.ID), a)
	}
	if r.ApprovalID != "" {
		return errors.New("approval_id on a credential without approval")
	}
	return nil
}

func foldDenied(st ledger.State, e *ledger.Entry) error {
	var r Read
	if err := ledger.DecodeStrict(e.Payload, &r); err != nil {
		return err
	}
	if err := actorOf(e, r.Actor); err != nil {
		return err
	}
	if r.Reason == "" || !ledger.ValidOmni(r.Owner) {
		return errors.New("a denied read names its owner and reason")
	}
	return nil
}

func foldDeleted(st ledger.State, e *ledger.Entry) error {
	var d Deleted
	if err := ledger.DecodeStrict(e.Payload, &d); err != nil {
		return err
	}
	if err := actorOf(e, d.Actor); err != nil || d.Actor != d.Owner {
		return errors.New("only the owner deletes a credential")
	}
	c, ok, err := Get(st, d.Owner, d.Agent, d.Service)
	if err != nil {
		return err
	}
	if !ok {
		return errors.New("no such credential")
	}
	if err := st.Delete(CredKey(d.Owner, d.Agent, d.Service)); err != nil {
		return err
	}
	return st.Delete(ledger.BlobKey(c.CiphertextHash))
}

func foldRequested(st ledger.State, e *ledger.Entry) error {
	var a Approval
	if err := ledger.DecodeStrict(e.Payload, &a); err != nil {
		return err
	}
	if err := actorOf(e, a.Actor); err != nil {
		return err
	}
	if a.ID == "" || a.Status != "" || a.Until != 0 {
		return errors.New("a new approval request has an id and no status")
	}
	if _, ok, err := st.Get(approvalKey(a.Owner, a.ID)); err != nil {
		return err
	} else if ok {
		return errors.New("approval id already used")
	}
	a.Status = "pending"
	return ledger.PutJSON(st, approvalKey(a.Owner, a.ID), a)
}

func foldGranted(st ledger.State, e *ledger.Entry) error {
	var g Grant
	if err := ledger.DecodeStrict(e.Payload, &g); err != nil {
		return err
	}
	if err := actorOf(e, g.Owner); err != nil {
		return err
	}
	a, ok, err := GetApproval(st, g.Owner, g.ID)
	if err != nil {
		return err
	}
	if !ok || a.Status != "pending" || a.Service != g.Service || a.Agent != g.Agent {
		return errors.New("no pending approval with that id for that credential")
	}
	if e.Time/1e9 > a.Expires {
		return errors.New("the approval request has expired")
	}
	a.Status, a.Until = "granted", g.Until
	return ledger.PutJSON(st, approvalKey(g.Owner, g.ID), a)
}
