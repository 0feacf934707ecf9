// Package mail is the ledger side of agent email (§9): an owner's mail domains,
// the agents' inboxes on them and the per-inbox grants (read, send, admin) of
// the owner's agents. It declares the kinds, folds them into state and derives
// their usage rows. Every check lives in the folds, which answer a refused
// change as a *problem.Error (what happened, how to fix it) that the broker
// passes on: a change is judged once, against the state it commits on.
//
// It never sees mail: messages live in the object store (package blobstore),
// under the prefix an inbox record names; nothing here is written per message.
package mail

import (
	"slices"
	"strings"

	"github.com/agentkeys/agentkeys/internal/agent"
	"github.com/agentkeys/agentkeys/internal/apiv1"
	"github.com/agentkeys/agentkeys/internal/ledger"
	"github.com/agentkeys/agentkeys/internal/maildns"
	"github.com/agentkeys/agentkeys/internal/problem"
)

// Kinds.
const (
	KindDomainAdded   = "mail.domain.added"
	KindDomainRemoved = "mail.domain.removed"
	KindInboxCreated  = "mail.inbox.created"
	KindInboxDeleted  = "mail.inbox.deleted"
	KindGranted       = "mail.inbox.granted"
	KindRevoked       = "mail.inbox.revoked"
)

// Domain states.
const (
	Active  = "active"
	Removed = "removed"
)

// Rights an agent may hold on an inbox. The inbox's own agent holds all three
// from its creation; the owner grants read and send to other agents.
const (
	Read  = "read"  // list and fetch its messages
	Send  = "send"  // send with it as From (DKIM-signed by the broker)
	Admin = "admin" // the inbox's own agent: its mailbox manifest (labels, flags)
)

// Rights is every right, in order.
var Rights = []string{Read, Send, Admin}

// Selector is the DKIM selector of the domain key dkim/<domain>/v1: its
// Ed25519 public key is published at Selector._domainkey.<domain>.
const Selector = "ak1"

// Domain is the state record of a mail domain, one owner's while active.
type Domain struct {
	Name         string `json:"name"`
	Owner        string `json:"owner"`
	DKIMSelector string `json:"dkim_selector"`
	Status       string `json:"status"` // active or removed (set by the folds)
	Added        int64  `json:"added"`  // unix nanos of the last add (set by the fold)
}

// DomainChange is the payload of mail.domain.added and mail.domain.removed.
type DomainChange struct {
	Owner        string `json:"owner"`
	Name         string `json:"name"`
	DKIMSelector string `json:"dkim_selector,omitempty"` // added only
}

// Inbox is the state record of an inbox. Its address is derived from the
// agent's wallet when created (Address); the wallet names the object-store
// prefix its mail is written under (Prefix), so it stays the inbox's when the
// alias is paired again.
type Inbox struct {
	Address   string `json:"address"`
	Agent     string `json:"agent"` // alias of the owner's agent
	Wallet    string `json:"wallet"`
	Owner     string `json:"owner"`
	Domain    string `json:"domain"`
	CreatedAt int64  `json:"created_at"`           // unix nanos (set by the fold)
	DeletedAt int64  `json:"deleted_at,omitempty"` // unix nanos; 0 while live (set by the fold)
}

// Live reports whether the inbox takes mail.
func (i *Inbox) Live() bool { return i.DeletedAt == 0 }

// InboxChange is the payload of mail.inbox.created and mail.inbox.deleted.
type InboxChange struct {
	Owner   string `json:"owner"`
	Address string `json:"address"`
	Agent   string `json:"agent"`
	Wallet  string `json:"wallet,omitempty"` // created only
	Domain  string `json:"domain,omitempty"` // created only
}

// Grant is the state record of the rights one agent holds on one inbox; the
// payload of mail.inbox.granted (rights added) and mail.inbox.revoked (rights
// taken away).
type Grant struct {
	Owner   string   `json:"owner"`
	Address string   `json:"address"`
	Agent   string   `json:"agent"` // alias
	Rights  []string `json:"rights"`
}

// Module declares the kinds of agent email (package modules lists it). All
// are private to the owner their payload names: the owner's changes and the
// agents' signings each with a row in its usage trail; a domain's DKIM RSA
// key (dkim.go), the enclave's, with none.
var Module = ledger.Module{
	Name: "mail",
	Kinds: map[string]ledger.Kind{
		KindDomainAdded:   {Origins: ledger.FromAccount, Fold: foldDomainAdded, Owner: ledger.OwnerMember, Usage: usageDomain},
		KindDomainRemoved: {Origins: ledger.FromAccount, Fold: foldDomainRemoved, Owner: ledger.OwnerMember, Usage: usageDomain},
		KindInboxCreated:  {Origins: ledger.FromAccount, Fold: foldInboxCreated, Owner: ledger.OwnerMember, Usage: usageInbox},
		KindInboxDeleted:  {Origins: ledger.FromAccount, Fold: foldInboxDeleted, Owner: ledger.OwnerMember, Usage: usageInbox},
		KindGranted:       {Origins: ledger.FromAccount, Fold: foldGranted, Owner: ledger.OwnerMember, Usage: usageGrant},
		KindRevoked:       {Origins: ledger.FromAccount, Fold: foldRevoked, Owner: ledger.OwnerMember, Usage: usageGrant},
		KindDKIMRSA:       {Origins: ledger.FromEnclave, Fold: foldDKIMRSA, Owner: ledger.OwnerMember},
		KindSigned:        {Origins: ledger.FromAccount, Fold: foldSigning, Owner: ledger.OwnerMember, Usage: usageSigning},
		KindSignDenied:    {Origins: ledger.FromAccount, Fold: foldSigning, Owner: ledger.OwnerMember, Usage: usageSigning},
	},
}

// State keys: records by name and address (what the mail edge looks up), and
// an index per owner (what the owner lists).
func domainKey(name string) string               { return "mail/domain/" + name }
func inboxKey(address string) string             { return "mail/inbox/" + address }
func grantKey(address, alias string) string      { return "mail/grant/" + address + "/" + alias }
func ownerDomainKey(owner, name string) string   { return "mail/owner/" + owner + "/domain/" + name }
func ownerInboxKey(owner, address string) string { return "mail/owner/" + owner + "/inbox/" + address }
func grantsPrefix(address string) string         { return "mail/grant/" + address + "/" }
func ownerPrefix(owner, what string) string      { return "mail/owner/" + owner + "/" + what + "/" }
func putIndex(st ledger.State, key string) error { return st.Put(key, []byte("1")) }

// ValidDomain reports whether s may name a mail domain (maildns.Valid).
func ValidDomain(s string) bool { return maildns.Valid(s) }

// DKIMPath is the enclave key (ed25519, RFC 8463) that signs domain's mail.
func DKIMPath(domain string) string { return "dkim/" + domain + "/v1" }

// Address is the inbox address of the agent with wallet on domain:
// "a" + the first 12 hex digits of the wallet (lowercase) + "@" + domain.
func Address(wallet, domain string) string { return maildns.InboxAddress(wallet, domain) }

// Prefix is the object-store prefix of an inbox's messages (§9):
// "<agent wallet, lowercase>/<address>/".
func (i *Inbox) Prefix() string { return strings.ToLower(i.Wallet) + "/" + i.Address + "/" }

// badInput is a payload the broker should never have built.
func badInput(format string, args ...any) error {
	return problem.Newf(problem.BadRequest, "correct the request; nothing was written", format, args...)
}

func signedByOwner(e *ledger.Entry, owner string) error {
	if o, _ := ledger.AccountOf(e.Origin); o != owner || !ledger.ValidOmni(owner) {
		return problem.New(problem.Denied, "mail domains, inboxes and grants change only by entries their owner signs", "sign in as the owner")
	}
	return nil
}

func noDomain(name string) error {
	return problem.Newf(problem.NotFound, "add it first with agentkeys domain add "+name+" (agentkeys domain list shows yours)",
		"no active mail domain %q of yours", name)
}

func noAgent(alias string) error {
	return problem.Newf(problem.NotFound, "list your agents with agentkeys agent list", "no agent %q", alias)
}

func noInbox(address string) error {
	return problem.Newf(problem.NotFound, "list your inboxes with agentkeys inbox list", "no inbox %q of yours", address)
}

func foldDomainAdded(st ledger.State, e *ledger.Entry) error {
	var d DomainChange
	if err := ledger.DecodeStrict(e.Payload, &d); err != nil {
		return err
	}
	if err := signedByOwner(e, d.Owner); err != nil {
		return err
	}
	if !ValidDomain(d.Name) {
		return badInput("%q is not a domain name: use lowercase labels of letters, digits and '-', e.g. agents.example.com", d.Name)
	}
	if d.DKIMSelector != Selector {
		return badInput("the DKIM selector must be %q", Selector)
	}
	prev, ok, err := GetDomain(st, d.Name)
	if err != nil {
		return err
	}
	if ok && prev.Status == Active {
		if prev.Owner == d.Owner {
			return problem.Newf(problem.Conflict, "it is ready: create inboxes on it with agentkeys inbox create --agent ALIAS --domain "+d.Name,
				"mail domain %q is already yours", d.Name)
		}
		return problem.Newf(problem.Conflict, "use a domain (or subdomain) of your own, e.g. agents."+d.Name, "mail domain %q belongs to another account", d.Name)
	}
	rec := Domain{Name: d.Name, Owner: d.Owner, DKIMSelector: d.DKIMSelector, Status: Active, Added: e.Time}
	if ok && prev.Owner != d.Owner {
		if err := st.Delete(ownerDomainKey(prev.Owner, d.Name)); err != nil {
			return err
		}
	}
	if err := putIndex(st, ownerDomainKey(d.Owner, d.Name)); err != nil {
		return err
	}
	return ledger.PutJSON(st, domainKey(d.Name), rec)
}

func foldDomainRemoved(st ledger.State, e *ledger.Entry) error {
	var d DomainChange
	if err := ledger.DecodeStrict(e.Payload, &d); err != nil {
		return err
	}
	if err := signedByOwner(e, d.Owner); err != nil {
		return err
	}
	if d.DKIMSelector != "" {
		return badInput("a removal names no selector")
	}
	rec, ok, err := GetDomain(st, d.Name)
	if err != nil {
		return err
	}
	if !ok || rec.Owner != d.Owner || rec.Status != Active {
		return noDomain(d.Name)
	}
	inboxes, err := Inboxes(st, d.Owner)
	if err != nil {
		return err
	}
	for _, in := range inboxes {
		if in.Domain == d.Name && in.Live() {
			return problem.Newf(problem.Conflict, "delete its inboxes first (agentkeys inbox list shows them, agentkeys inbox delete ADDRESS deletes one)",
				"mail domain %q still has inbox %s", d.Name, in.Address)
		}
	}
	rec.Status = Removed
	return ledger.PutJSON(st, domainKey(d.Name), rec)
}

func foldInboxCreated(st ledger.State, e *ledger.Entry) error {
	var c InboxChange
	if err := ledger.DecodeStrict(e.Payload, &c); err != nil {
		return err
	}
	if err := signedByOwner(e, c.Owner); err != nil {
		return err
	}
	d, ok, err := GetDomain(st, c.Domain)
	if err != nil {
		return err
	}
	if !ok || d.Owner != c.Owner || d.Status != Active {
		return noDomain(c.Domain)
	}
	a, ok, err := agent.Get(st, c.Owner, c.Agent)
	if err != nil {
		return err
	}
	if !ok || a.Status == apiv1.AgentTornDown {
		return noAgent(c.Agent)
	}
	if a.Wallet != c.Wallet {
		return problem.Newf(problem.Conflict, "run the command again", "agent %q was paired again while its inbox was being created", c.Agent)
	}
	if want := Address(c.Wallet, c.Domain); c.Address != want {
		return badInput("the inbox address of agent %q on %s is %s, not %q", c.Agent, c.Domain, want, c.Address)
	}
	prev, ok, err := GetInbox(st, c.Address)
	if err != nil {
		return err
	}
	if ok && prev.Live() {
		return problem.Newf(problem.Conflict, "use it (agentkeys inbox list), or delete it first with agentkeys inbox delete "+c.Address,
			"agent %q already has inbox %s", prev.Agent, c.Address)
	}
	if ok && prev.Owner != c.Owner { // 48 bits of two wallets alike: never in practice, refused all the same
		return problem.Newf(problem.Conflict, "create the inbox on another domain", "address %s was another account's", c.Address)
	}
	in := Inbox{Address: c.Address, Agent: c.Agent, Wallet: c.Wallet, Owner: c.Owner, Domain: c.Domain, CreatedAt: e.Time}
	if err := putIndex(st, ownerInboxKey(c.Owner, c.Address)); err != nil {
		return err
	}
	if err := ledger.PutJSON(st, grantKey(c.Address, c.Agent), Grant{Owner: c.Owner, Address: c.Address, Agent: c.Agent, Rights: slices.Clone(Rights)}); err != nil {
		return err
	}
	return ledger.PutJSON(st, inboxKey(c.Address), in)
}

func foldInboxDeleted(st ledger.State, e *ledger.Entry) error {
	var c InboxChange
	if err := ledger.DecodeStrict(e.Payload, &c); err != nil {
		return err
	}
	if err := signedByOwner(e, c.Owner); err != nil {
		return err
	}
	if c.Wallet != "" || c.Domain != "" {
		return badInput("a deletion names the inbox address and its agent only")
	}
	in, err := liveInbox(st, c.Owner, c.Address)
	if err != nil {
		return err
	}
	if c.Agent != in.Agent {
		return badInput("inbox %s is agent %q's, not %q's", c.Address, in.Agent, c.Agent)
	}
	grants, err := Grants(st, c.Address)
	if err != nil {
		return err
	}
	for _, g := range grants {
		if err := st.Delete(grantKey(c.Address, g.Agent)); err != nil {
			return err
		}
	}
	in.DeletedAt = e.Time
	return ledger.PutJSON(st, inboxKey(c.Address), in)
}

// liveInbox is owner's live inbox at address, or the problem to answer.
func liveInbox(st ledger.State, owner, address string) (*Inbox, error) {
	in, ok, err := GetInbox(st, address)
	if err != nil {
		return nil, err
	}
	if !ok || in.Owner != owner || !in.Live() {
		return nil, noInbox(address)
	}
	return in, nil
}

// checkRights: known rights, none twice, at least one.
func checkRights(rights []string) error {
	if len(rights) == 0 {
		return badInput("name at least one right: read or send")
	}
	for i, r := range rights {
		if !slices.Contains(Rights, r) || slices.Contains(rights[:i], r) {
			return badInput("rights are read, send and admin, each once; got %q", r)
		}
	}
	return nil
}

// grantChange decodes and checks a grant or revocation, and returns the
// current grant record (empty rights when none).
func grantChange(st ledger.State, e *ledger.Entry) (g Grant, cur *Grant, err error) {
	if err := ledger.DecodeStrict(e.Payload, &g); err != nil {
		return g, nil, err
	}
	if err := signedByOwner(e, g.Owner); err != nil {
		return g, nil, err
	}
	if err := checkRights(g.Rights); err != nil {
		return g, nil, err
	}
	if _, err := liveInbox(st, g.Owner, g.Address); err != nil {
		return g, nil, err
	}
	cur = &Grant{Owner: g.Owner, Address: g.Address, Agent: g.Agent, Rights: []string{}}
	if _, err := ledger.GetJSON(st, grantKey(g.Address, g.Agent), cur); err != nil {
		return g, nil, err
	}
	return g, cur, nil
}

func foldGranted(st ledger.State, e *ledger.Entry) error {
	g, cur, err := grantChange(st, e)
	if err != nil {
		return err
	}
	a, ok, err := agent.Get(st, g.Owner, g.Agent)
	if err != nil {
		return err
	}
	if !ok || a.Status == apiv1.AgentTornDown {
		return noAgent(g.Agent)
	}
	for _, r := range g.Rights {
		if slices.Contains(cur.Rights, r) {
			return problem.Newf(problem.Conflict, "nothing to do: agentkeys inbox list shows the grants", "agent %q already holds %s on %s", g.Agent, r, g.Address)
		}
		cur.Rights = append(cur.Rights, r)
	}
	cur.Rights = ordered(cur.Rights)
	return ledger.PutJSON(st, grantKey(g.Address, g.Agent), cur)
}

func foldRevoked(st ledger.State, e *ledger.Entry) error {
	g, cur, err := grantChange(st, e)
	if err != nil {
		return err
	}
	for _, r := range g.Rights {
		if !slices.Contains(cur.Rights, r) {
			return problem.Newf(problem.NotFound, "agentkeys inbox list shows who holds what", "agent %q holds no %s on %s", g.Agent, r, g.Address)
		}
		cur.Rights = slices.DeleteFunc(cur.Rights, func(x string) bool { return x == r })
	}
	if len(cur.Rights) == 0 {
		return st.Delete(grantKey(g.Address, g.Agent))
	}
	return ledger.PutJSON(st, grantKey(g.Address, g.Agent), cur)
}

// ordered is rights in the order of Rights.
func ordered(rights []string) []string {
	out := []string{}
	for _, r := range Rights {
		if slices.Contains(rights, r) {
			out = append(out, r)
		}
	}
	return out
}
