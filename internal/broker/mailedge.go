package broker

import (
	"context"
	"errors"
	"slices"
	"strings"

	"github.com/agentkeys/agentkeys/internal/account"
	"github.com/agentkeys/agentkeys/internal/agent"
	"github.com/agentkeys/agentkeys/internal/apiv1"
	"github.com/agentkeys/agentkeys/internal/ledger"
	"github.com/agentkeys/agentkeys/internal/mail"
	"github.com/agentkeys/agentkeys/internal/problem"
)

// MailLookup answers the mail edge (§9) about one inbox address: whether it
// takes mail and under which object-store prefix, and which rights the agent
// with omni agentOmni ("" = none asked) holds on it. An agent holds rights only
// while it is the current, active generation of its alias: a revoked or torn
// down agent, or an earlier generation's token, holds none. It reads committed
// state only and writes nothing: the edge asks once per recipient and per
// authenticated sender, never per stored byte.
func (b *Broker) MailLookup(ctx context.Context, address, agentOmni string) (apiv1.MailLookup, error) {
	address = strings.ToLower(address)
	out := apiv1.MailLookup{Address: address, Rights: []string{}}
	if len(address) > 320 || (agentOmni != "" && !ledger.ValidOmni(agentOmni)) {
		return out, problem.New(problem.BadRequest, "send an address of at most 320 characters and an agent omni of 64 hex digits", "malformed mail lookup")
	}
	lg, err := b.Ledger()
	if err != nil {
		return out, err
	}
	st := lg.State(ctx)
	in, ok, err := mail.GetInbox(st, address)
	if err != nil || !ok || !in.Live() {
		return out, err
	}
	out.Live, out.Prefix = true, in.Prefix()
	if agentOmni == "" {
		return out, nil
	}
	owner, alias, ok, err := b.mailAgent(st, agentOmni)
	if err != nil || !ok || owner != in.Owner {
		return out, err // an owner, another owner's agent, or not active: no rights
	}
	g, ok, err := mail.GetGrant(st, in.Owner, alias, address)
	if err != nil || !ok {
		return out, err
	}
	out.Rights = slices.Clone(g.Rights)
	return out, nil
}

// mailAgent resolves agentOmni to its owner and alias when it is the current,
// active generation of an agent (ok false otherwise: an owner, a revoked or
// torn-down agent, an earlier generation, an unknown omni).
func (b *Broker) mailAgent(st ledger.State, agentOmni string) (owner, alias string, ok bool, err error) {
	acct, err := b.account(st, agentOmni)
	if errors.Is(err, account.ErrNoAccount) {
		return "", "", false, nil
	}
	if err != nil || acct.Role != "agent" {
		return "", "", false, err
	}
	a, found, err := agent.Get(st, acct.Parent, acct.Alias)
	if err != nil || !found || a.Omni != agentOmni || a.Status != apiv1.AgentActive {
		return "", "", false, err
	}
	return acct.Parent, acct.Alias, true, nil
}

// MailInboxes lists the live inboxes the agent with omni agentOmni holds a
// right on, each with its prefix and the agent's rights, by address: what the
// edge's IMAP server offers the agent (those with read), and which domains the
// agent may mint identity tokens for (MintOIDC). An agent that is not active
// holds none. Like MailLookup it reads committed state only; its cost is one
// pass over the owner's inboxes.
func (b *Broker) MailInboxes(ctx context.Context, agentOmni string) ([]apiv1.MailLookup, error) {
	if !ledger.ValidOmni(agentOmni) {
		return nil, problem.New(problem.BadRequest, "send an agent omni of 64 hex digits", "malformed mail inbox list")
	}
	lg, err := b.Ledger()
	if err != nil {
		return nil, err
	}
	return b.mailInboxes(lg.State(ctx), agentOmni)
}

func (b *Broker) mailInboxes(st ledger.State, agentOmni string) ([]apiv1.MailLookup, error) {
	out := []apiv1.MailLookup{}
	owner, alias, ok, err := b.mailAgent(st, agentOmni)
	if err != nil || !ok {
		return out, err
	}
	ins, err := mail.Inboxes(st, owner)
	if err != nil {
		return nil, err
	}
	for _, in := range ins {
		if !in.Live() {
			continue
		}
		g, ok, err := mail.GetGrant(st, owner, alias, in.Address)
		if err != nil {
			return nil, err
		}
		if ok && len(g.Rights) > 0 {
			out = append(out, apiv1.MailLookup{Address: in.Address, Live: true, Prefix: in.Prefix(), Rights: slices.Clone(g.Rights)})
		}
	}
	return out, nil
}
