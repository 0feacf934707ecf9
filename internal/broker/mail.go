package broker

import (
	"context"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"strings"

	"github.com/agentkeys/agentkeys/internal/apiv1"
	"github.com/agentkeys/agentkeys/internal/ledger"
	"github.com/agentkeys/agentkeys/internal/mail"
	"github.com/agentkeys/agentkeys/internal/maildns"
	"github.com/agentkeys/agentkeys/internal/problem"
)

// The owner's mail management (§9): domains, inboxes and grants. Each change is
// one entry the owner's wallet signs; package mail's folds judge it against the
// state it commits on and say what is wrong, which is answered as is.

// mailAppend appends an owner's mail entry; a refusal by the fold is answered
// with the fold's own problem.
func (b *Broker) mailAppend(ctx context.Context, lg *ledger.Ledger, c *Caller, kind string, payload any) error {
	_, err := lg.Append(ctx, ledger.AccountOrigin(c.Omni()), kind, payload)
	return foldProblem(err)
}

// foldProblem is the fold's own problem for an entry it refused, else err as
// ledgerProblem answers it.
func foldProblem(err error) error {
	var p *problem.Error
	if errors.Is(err, ledger.ErrRejected) && errors.As(err, &p) {
		return p
	}
	return ledgerProblem(err)
}

func checkDomain(name string) (string, error) {
	d := maildns.Normalize(name)
	if !mail.ValidDomain(d) {
		return "", problem.Newf(problem.BadRequest, "use a DNS name you control, e.g. agents.example.com",
			"%q is not a domain name", name)
	}
	return d, nil
}

func checkAlias(alias string) error {
	if !apiv1.ValidName(alias) {
		return problem.Newf(problem.BadRequest, "name the agent by its alias, e.g. --agent ci-bot (agentkeys agent list)", "%q is not an agent alias", alias)
	}
	return nil
}

// AddDomain makes the mail domain name the owner's.
func (b *Broker) AddDomain(ctx context.Context, c *Caller, name string) (*mail.Domain, error) {
	lg, err := b.ownerLedger(c)
	if err != nil {
		return nil, err
	}
	if name, err = checkDomain(name); err != nil {
		return nil, err
	}
	// The first add of a name also records its DKIM RSA key, which the
	// enclave generates now: one atomic group, so the domain never lacks it.
	group := []ledger.Req{{Origin: ledger.AccountOrigin(c.Omni()), Kind: mail.KindDomainAdded,
		Payload: mail.DomainChange{Owner: c.Omni(), Name: name, DKIMSelector: mail.Selector}}}
	if _, ok, err := mail.GetDKIMRSA(lg.State(ctx), name); err != nil {
		return nil, err
	} else if !ok {
		req, err := b.newDKIMRSA(c.Omni(), name)
		if err != nil {
			return nil, err
		}
		group = append(group, req)
	}
	if _, err := lg.AppendAll(ctx, group); err != nil {
		return nil, foldProblem(err)
	}
	d, _, err := mail.GetDomain(lg.State(ctx), name)
	return d, err
}

// RemoveDomain gives up one of the owner's domains (it must have no live inbox).
func (b *Broker) RemoveDomain(ctx context.Context, c *Caller, name string) (*mail.Domain, error) {
	lg, err := b.ownerLedger(c)
	if err != nil {
		return nil, err
	}
	if name, err = checkDomain(name); err != nil {
		return nil, err
	}
	if err := b.mailAppend(ctx, lg, c, mail.KindDomainRemoved, mail.DomainChange{Owner: c.Omni(), Name: name}); err != nil {
		return nil, err
	}
	d, _, err := mail.GetDomain(lg.State(ctx), name)
	return d, err
}

// Domains lists the owner's domains.
func (b *Broker) Domains(ctx context.Context, c *Caller) ([]mail.Domain, error) {
	lg, err := b.ownerLedger(c)
	if err != nil {
		return nil, err
	}
	return mail.Domains(lg.State(ctx), c.Omni())
}

// CreateInbox creates the inbox of the owner's agent alias on domain (""
// means the owner's one active domain): its address is derived from the
// agent's wallet, and the agent holds read, send and admin on it.
func (b *Broker) CreateInbox(ctx context.Context, c *Caller, alias, domain string) (*mail.Inbox, error) {
	lg, err := b.ownerLedger(c)
	if err != nil {
		return nil, err
	}
	if err := checkAlias(alias); err != nil {
		return nil, err
	}
	st := lg.State(ctx)
	if domain == "" {
		if domain, err = b.onlyDomain(st, c.Omni()); err != nil {
			return nil, err
		}
	} else if domain, err = checkDomain(domain); err != nil {
		return nil, err
	}
	a, err := b.ownAgent(ctx, c, alias)
	if err != nil {
		return nil, err
	}
	ch := mail.InboxChange{Owner: c.Omni(), Agent: alias, Wallet: a.Wallet, Domain: domain, Address: mail.Address(a.Wallet, domain)}
	if err := b.mailAppend(ctx, lg, c, mail.KindInboxCreated, ch); err != nil {
		return nil, err
	}
	in, _, err := mail.GetInbox(lg.State(ctx), ch.Address)
	return in, err
}

// onlyDomain is the owner's one active domain.
func (b *Broker) onlyDomain(st ledger.State, owner string) (string, error) {
	ds, err := mail.Domains(st, owner)
	if err != nil {
		return "", err
	}
	var active []string
	for _, d := range ds {
		if d.Status == mail.Active {
			active = append(active, d.Name)
		}
	}
	switch len(active) {
	case 1:
		return active[0], nil
	case 0:
		return "", problem.New(problem.NotFound, "you have no mail domain yet", "add one with agentkeys domain add DOMAIN")
	}
	return "", problem.Newf(problem.BadRequest, "name one with --domain", "you have %d mail domains (%s)", len(active), strings.Join(active, ", "))
}

// Inboxes lists the owner's inboxes (deleted ones too) with their grants.
func (b *Broker) Inboxes(ctx context.Context, c *Caller) ([]mail.Listed, error) {
	lg, err := b.ownerLedger(c)
	if err != nil {
		return nil, err
	}
	st := lg.State(ctx)
	ins, err := mail.Inboxes(st, c.Omni())
	if err != nil {
		return nil, err
	}
	out := make([]mail.Listed, len(ins))
	for i, in := range ins {
		out[i].Inbox = in
		if out[i].Grants, err = mail.Grants(st, in.Address); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// ownInbox is the owner's live inbox at address.
func (b *Broker) ownInbox(st ledger.State, c *Caller, address string) (*mail.Inbox, error) {
	in, ok, err := mail.GetInbox(st, strings.ToLower(address))
	if err != nil {
		return nil, err
	}
	if !ok || in.Owner != c.Omni() || !in.Live() {
		return nil, problem.Newf(problem.NotFound, "list your inboxes with agentkeys inbox list", "no inbox %q of yours", address)
	}
	return in, nil
}

// DeleteInbox deletes one of the owner's inboxes and every grant on it: the
// edge refuses its mail from then on. Stored messages stay in the object store.
func (b *Broker) DeleteInbox(ctx context.Context, c *Caller, address string) (*mail.Inbox, error) {
	lg, err := b.ownerLedger(c)
	if err != nil {
		return nil, err
	}
	in, err := b.ownInbox(lg.State(ctx), c, address)
	if err != nil {
		return nil, err
	}
	if err := b.mailAppend(ctx, lg, c, mail.KindInboxDeleted, mail.InboxChange{Owner: c.Omni(), Address: in.Address, Agent: in.Agent}); err != nil {
		return nil, err
	}
	in, _, err = mail.GetInbox(lg.State(ctx), in.Address)
	return in, err
}

// GrantInbox gives (or, with revoke, takes away) rights of the owner's agent
// alias on the owner's inbox at address, and returns what it holds then.
// Admin stays with the inbox's own agent.
func (b *Broker) GrantInbox(ctx context.Context, c *Caller, address, alias string, rights []string, revoke bool) (*mail.Grant, error) {
	lg, err := b.ownerLedger(c)
	if err != nil {
		return nil, err
	}
	if err := checkAlias(alias); err != nil {
		return nil, err
	}
	for _, r := range rights {
		if r != mail.Read && r != mail.Send {
			return nil, problem.Newf(problem.BadRequest, "grant read or send (admin stays with the inbox's own agent)", "%q is not a right you can grant", r)
		}
	}
	in, err := b.ownInbox(lg.State(ctx), c, address)
	if err != nil {
		return nil, err
	}
	kind := mail.KindGranted
	if revoke {
		kind = mail.KindRevoked
	}
	if err := b.mailAppend(ctx, lg, c, kind, mail.Grant{Owner: c.Omni(), Address: in.Address, Agent: alias, Rights: rights}); err != nil {
		return nil, err
	}
	g, ok, err := mail.GetGrant(lg.State(ctx), c.Omni(), alias, in.Address)
	if err != nil {
		return nil, err
	}
	if !ok { // every right revoked
		g = &mail.Grant{Owner: c.Omni(), Address: in.Address, Agent: alias, Rights: []string{}}
	}
	return g, nil
}

// DKIMKeys returns the public DKIM keys of the owner's active domain name, to
// publish in DNS (agentkeys mail dns): the Ed25519 key dkim/<domain>/v1 and
// the domain's RSA key (mail.dkim.rsa).
// Only the domain's owner asks, so no one makes the enclave derive keys for
// names that are no one's.
func (b *Broker) DKIMKeys(ctx context.Context, c *Caller, name string) ([]apiv1.DKIMKey, error) {
	lg, err := b.ownerLedger(c)
	if err != nil {
		return nil, err
	}
	if name, err = checkDomain(name); err != nil {
		return nil, err
	}
	d, ok, err := mail.GetDomain(lg.State(ctx), name)
	if err != nil {
		return nil, err
	}
	if !ok || d.Owner != c.Omni() || d.Status != mail.Active {
		return nil, problem.Newf(problem.NotFound, "add it first with agentkeys domain add "+name, "no active mail domain %q of yours", name)
	}
	k, err := b.enc.PublicKey(mail.DKIMPath(name))
	if err != nil {
		return nil, err
	}
	pub, err := hex.DecodeString(k.Public)
	if err != nil {
		return nil, err
	}
	rk, err := b.dkimRSA(ctx, lg, c.Omni(), name)
	if err != nil {
		return nil, err
	}
	return []apiv1.DKIMKey{{Selector: d.DKIMSelector, Alg: "ed25519", Public: base64.StdEncoding.EncodeToString(pub)},
		{Selector: rk.Selector, Alg: "rsa", Public: rk.Public}}, nil
}
