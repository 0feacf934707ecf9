package vault

import (
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

// The usage rows of the vault's kinds (Module).

func usageStored(e *ledger.Entry) (Usage, bool) {
	c, u, ok := ledger.UsageRow[Credential](e)
	u.Actor, u.ActorRole, u.Action, u.Service, u.Agent = c.Owner, "owner", "store", c.Service, c.Agent
	u.Detail = fmt.Sprintf("version %d", c.Version)
	return u, ok
}

func usageRead(e *ledger.Entry) (Usage, bool) { // credential.read and credential.denied
	r, u, ok := ledger.UsageRow[Read](e)
	u.Actor, u.ActorRole, u.Alias, u.Action, u.Service, u.Agent = r.Actor, r.ActorRole, r.Alias, "read", r.Service, r.Agent
	u.Detail = fmt.Sprintf("version %d", r.Version)
	if e.Kind == KindDenied {
		u.Result, u.Detail = "denied", r.Reason
	}
	return u, ok
}

func usageDeleted(e *ledger.Entry) (Usage, bool) {
	d, u, ok := ledger.UsageRow[Deleted](e)
	u.Actor, u.ActorRole, u.Action, u.Service, u.Agent = d.Actor, "owner", "delete", d.Service, d.Agent
	return u, ok
}

func usageRequested(e *ledger.Entry) (Usage, bool) {
	a, u, ok := ledger.UsageRow[Approval](e)
	u.Actor, u.ActorRole, u.Alias, u.Action, u.Service, u.Agent = a.Actor, a.ActorRole, a.Alias, "approval.request", a.Service, a.Agent
	u.Result, u.Detail = "pending", a.ID
	return u, ok
}

func usageGranted(e *ledger.Entry) (Usage, bool) {
	g, u, ok := ledger.UsageRow[Grant](e)
	u.Actor, u.ActorRole, u.Action, u.Service, u.Agent, u.Detail = g.Owner, "owner", "approve", g.Service, g.Agent, g.ID
	return u, ok
}
