package mail

import (
	"fmt"
	"slices"
	"strings"

	"github.com/agentkeys/agentkeys/internal/agent"
	"github.com/agentkeys/agentkeys/internal/apiv1"
	"github.com/agentkeys/agentkeys/internal/ledger"
)

// GetDomain reads a domain record (any owner's, any status).
func GetDomain(st ledger.State, name string) (*Domain, bool, error) {
	var d Domain
	if !ValidDomain(name) {
		return &d, false, nil
	}
	ok, err := ledger.GetJSON(st, domainKey(name), &d)
	return &d, ok, err
}

// GetInbox reads an inbox record (any owner's, live or deleted).
func GetInbox(st ledger.State, address string) (*Inbox, bool, error) {
	var in Inbox
	if address == "" || strings.ContainsAny(address, "/ ") {
		return &in, false, nil
	}
	ok, err := ledger.GetJSON(st, inboxKey(address), &in)
	return &in, ok, err
}

// Domains lists the domains owner has added (removed ones too), by name.
func Domains(st ledger.State, owner string) ([]Domain, error) {
	out := []Domain{}
	err := indexed(st, ownerPrefix(owner, "domain"), func(name string) error {
		d, ok, err := GetDomain(st, name)
		if ok && d.Owner == owner {
			out = append(out, *d)
		}
		return err
	})
	return out, err
}

// Inboxes lists owner's inboxes (deleted ones too), by address.
func Inboxes(st ledger.State, owner string) ([]Inbox, error) {
	out := []Inbox{}
	err := indexed(st, ownerPrefix(owner, "inbox"), func(address string) error {
		in, ok, err := GetInbox(st, address)
		if ok {
			out = append(out, *in)
		}
		return err
	})
	return out, err
}

// indexed calls fn with the last segment of every key under prefix.
func indexed(st ledger.State, prefix string, fn func(string) error) error {
	var names []string
	if err := st.Scan(prefix, func(k string, _ []byte) error {
		names = append(names, strings.TrimPrefix(k, prefix))
		return nil
	}); err != nil {
		return err
	}
	for _, n := range names {
		if err := fn(n); err != nil {
			return err
		}
	}
	return nil
}

// Grants lists the grants on an inbox, by agent alias.
func Grants(st ledger.State, address string) ([]Grant, error) {
	return ledger.ListJSON[Grant](st, grantsPrefix(address))
}

// Holds reports whether the owner's agent alias, not torn down, holds right
// on the live inbox at address.
func Holds(st ledger.State, owner, alias, address, right string) (bool, error) {
	g, ok, err := GetGrant(st, owner, alias, address)
	if err != nil || !ok || !slices.Contains(g.Rights, right) {
		return false, err
	}
	a, ok, err := agent.Get(st, owner, alias)
	return ok && a.Status != apiv1.AgentTornDown, err
}

// GetGrant reads what the owner's agent alias holds on the owner's live inbox
// at address.
func GetGrant(st ledger.State, owner, alias, address string) (*Grant, bool, error) {
	var g Grant
	in, ok, err := GetInbox(st, address)
	if err != nil || !ok || in.Owner != owner || !in.Live() || strings.Contains(alias, "/") {
		return &g, false, err
	}
	ok, err = ledger.GetJSON(st, grantKey(address, alias), &g)
	return &g, ok, err
}

// The usage rows of the mail kinds (Module).

func usageDomain(e *ledger.Entry) (ledger.Usage, bool) {
	d, u, ok := ledger.UsageRow[DomainChange](e)
	u.Actor, u.ActorRole, u.Service, u.Action = d.Owner, "owner", "mail", "domain.add"
	u.Detail = d.Name
	if e.Kind == KindDomainRemoved {
		u.Action = "domain.remove"
	}
	return u, ok
}

func usageInbox(e *ledger.Entry) (ledger.Usage, bool) {
	c, u, ok := ledger.UsageRow[InboxChange](e)
	u.Actor, u.ActorRole, u.Service, u.Agent, u.Action, u.Detail = c.Owner, "owner", "mail", c.Agent, "inbox.create", c.Address
	if e.Kind == KindInboxDeleted {
		u.Action = "inbox.delete"
	}
	return u, ok
}

func usageGrant(e *ledger.Entry) (ledger.Usage, bool) {
	g, u, ok := ledger.UsageRow[Grant](e)
	u.Actor, u.ActorRole, u.Service, u.Agent, u.Action = g.Owner, "owner", "mail", g.Agent, "inbox.grant"
	if e.Kind == KindRevoked {
		u.Action = "inbox.revoke"
	}
	u.Detail = fmt.Sprintf("%s %s", strings.Join(g.Rights, ","), g.Address)
	return u, ok
}

// Listed is an inbox as its owner lists it: the record and its grants.
type Listed struct {
	Inbox
	Grants []Grant `json:"grants"`
}
