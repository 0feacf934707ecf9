package vault

import (
	"encoding/json"
	"fmt"
	"strings"

	"github.com/agentkeys/agentkeys/internal/ledger"
)

// Get reads one credential record.
func Get(st ledger.State, owner, agent, service string) (*Credential, bool, error) {
	var c Credential
	ok, err := ledger.GetJSON(st, CredKey(owner, agent, service), &c)
	return &c, ok, err
}

// List returns an owner's credential records, ordered by agent then service.
func List(st ledger.State, owner string) ([]Credential, error) {
	return ledger.ListJSON[Credential](st, "cred/"+owner+"/")
}

// GetApproval reads one approval.
func GetApproval(st ledger.State, owner, id string) (*Approval, bool, error) {
	var a Approval
	if id == "" || strings.Contains(id, "/") {
		return &a, false, nil
	}
	ok, err := ledger.GetJSON(st, approvalKey(owner, id), &a)
	return &a, ok, err
}

// Approvals lists an owner's approvals.
func Approvals(st ledger.State, owner string) ([]Approval, error) {
	return ledger.ListJSON[Approval](st, "approval/"+owner+"/")
}

// UsageFilter selects usage rows; empty fields match everything. From and
// Limit page through them: rows of entries from seq From on, at most Limit
// (0 = no limit).
type UsageFilter struct {
	Agent   string // alias: rows about this agent's credentials or by this agent
	Service string
	Since   int64 // unix nanos
	From    uint64
	Limit   int
}

// Match reports whether u passes the filter.
func (f UsageFilter) Match(u Usage) bool {
	return (f.Service == "" || u.Service == f.Service) && (f.Since == 0 || u.Time >= f.Since) &&
		(f.Agent == "" || u.Agent == f.Agent || u.Alias == f.Agent)
}

// UsageOf derives the usage row of an entry and the owner whose trail it is in;
// ok is false for entries that are not part of a credential trail.
func UsageOf(e *ledger.Entry) (owner string, u Usage, ok bool) {
	u = Usage{Seq: e.Seq, Time: e.Time, Result: "ok"}
	switch e.Kind {
	case KindStored:
		var c Credential
		if json.Unmarshal(e.Payload, &c) != nil {
			return "", u, false
		}
		owner, u.Actor, u.ActorRole, u.Action, u.Service, u.Agent = c.Owner, c.Owner, "owner", "store", c.Service, c.Agent
		u.Detail = fmt.Sprintf("version %d", c.Version)
	case KindRead, KindDenied:
		var r Read
		if json.Unmarshal(e.Payload, &r) != nil {
			return "", u, false
		}
		owner, u.Actor, u.ActorRole, u.Alias, u.Action, u.Service, u.Agent = r.Owner, r.Actor, r.ActorRole, r.Alias, "read", r.Service, r.Agent
		u.Detail = fmt.Sprintf("version %d", r.Version)
		if e.Kind == KindDenied {
			u.Result, u.Detail = "denied", r.Reason
		}
	case KindDeleted:
		var d Deleted
		if json.Unmarshal(e.Payload, &d) != nil {
			return "", u, false
		}
		owner, u.Actor, u.ActorRole, u.Action, u.Service, u.Agent = d.Owner, d.Actor, "owner", "delete", d.Service, d.Agent
	case KindRequested:
		var a Approval
		if json.Unmarshal(e.Payload, &a) != nil {
			return "", u, false
		}
		owner, u.Actor, u.ActorRole, u.Alias, u.Action, u.Service, u.Agent = a.Owner, a.Actor, a.ActorRole, a.Alias, "approval.request", a.Service, a.Agent
		u.Result, u.Detail = "pending", a.ID
	case KindGranted:
		var g Grant
		if json.Unmarshal(e.Payload, &g) != nil {
			return "", u, false
		}
		owner, u.Actor, u.ActorRole, u.Action, u.Service, u.Agent, u.Detail = g.Owner, g.Owner, "owner", "approve", g.Service, g.Agent, g.ID
	default:
		return "", u, false
	}
	return owner, u, true
}
