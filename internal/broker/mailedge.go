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
	acct, err := b.account(st, agentOmni)
	if errors.Is(err, account.ErrNoAccount) {
		return out, nil
	}
	if err != nil || acct.Role != "agent" || acct.Parent != in.Owner {
		return out, err // an owner, or another owner's agent: no rights
	}
	a, ok, err := agent.Get(st, acct.Parent, acct.Alias)
	if err != nil || !ok || a.Omni != agentOmni || a.Status != apiv1.AgentActive {
		return out, err
	}
	g, ok, err := mail.GetGrant(st, in.Owner, acct.Alias, address)
	if err != nil || !ok {
		return out, err
	}
	out.Rights = slices.Clone(g.Rights)
	return out, nil
}
