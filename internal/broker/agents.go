package broker

// Agent lifecycle: listing an owner's agents, changing their scope, revoking
// and tearing them down, and what an agent session may read.

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/agentkeys/agentkeys/internal/account"
	"github.com/agentkeys/agentkeys/internal/agent"
	"github.com/agentkeys/agentkeys/internal/apiv1"
	"github.com/agentkeys/agentkeys/internal/ledger"
	"github.com/agentkeys/agentkeys/internal/problem"
	"github.com/agentkeys/agentkeys/internal/vault"
)

func (b *Broker) revokeSession(ctx context.Context, by, sid, reason string) error {
	lg, err := b.Ledger()
	if err != nil {
		return err
	}
	s, ok, err := account.GetSession(lg.State(ctx), sid)
	if err != nil || !ok || s.Revoked {
		return err
	}
	_, err = lg.Append(ctx, ledger.AccountOrigin(by), account.KindSessionRevoke, account.Revocation{SID: sid, Reason: reason})
	if errors.Is(err, ledger.ErrRejected) {
		return nil // revoked meanwhile
	}
	return ledgerProblem(err)
}

// Agents lists the owner's agents.
func (b *Broker) Agents(ctx context.Context, c *Caller) ([]agent.Agent, error) {
	lg, err := b.ownerLedger(c)
	if err != nil {
		return nil, err
	}
	return agent.List(lg.State(ctx), c.Omni())
}

func (b *Broker) ownAgent(ctx context.Context, c *Caller, alias string) (*agent.Agent, error) {
	lg, err := b.ownerLedger(c)
	if err != nil {
		return nil, err
	}
	a, ok, err := agent.Get(lg.State(ctx), c.Omni(), alias)
	if err != nil {
		return nil, err
	}
	if !ok || a.Status == apiv1.AgentTornDown {
		return nil, problem.Newf(problem.NotFound, "list your agents with agentkeys agent list", "no agent %q", alias)
	}
	return a, nil
}

// SetScope changes an agent's scope; it acts on the agent's very next request.
func (b *Broker) SetScope(ctx context.Context, c *Caller, alias string, e apiv1.ScopeEdit) (*agent.Agent, error) {
	a, err := b.ownAgent(ctx, c, alias)
	if err != nil {
		return nil, err
	}
	scope := slices.Clone(a.Scope)
	var change []string
	if e.Set != nil {
		scope = slices.Clone(e.Set)
		change = append(change, "set "+strings.Join(e.Set, ","))
	}
	for _, s := range e.Add {
		if !slices.Contains(scope, s) {
			scope = append(scope, s)
		}
		change = append(change, "add "+s)
	}
	for _, s := range e.Remove {
		scope = slices.DeleteFunc(scope, func(x string) bool { return x == s })
		change = append(change, "remove "+s)
	}
	if len(change) == 0 {
		return a, nil
	}
	if err := agent.CheckScope(scope); err != nil {
		return nil, problem.Newf(problem.BadRequest, "scope entries are service names, oidc:* or oidc:<audience>", "scope refused: %v", err)
	}
	if scope == nil {
		scope = []string{}
	}
	lg, _ := b.Ledger()
	if _, err := lg.Append(ctx, ledger.AccountOrigin(c.Omni()), agent.KindScope,
		agent.ScopeChange{Owner: c.Omni(), Alias: alias, Scope: scope, Change: strings.Join(change, "; ")}); err != nil {
		return nil, ledgerProblem(err)
	}
	a.Scope = scope
	return a, nil
}

// RevokeAgent revokes every session of the agent; it acts on the next request.
func (b *Broker) RevokeAgent(ctx context.Context, c *Caller, alias string) (*agent.Agent, error) {
	a, err := b.ownAgent(ctx, c, alias)
	if err != nil {
		return nil, err
	}
	if a.Status == apiv1.AgentRevoked {
		return a, nil
	}
	if err := b.revokeSession(ctx, c.Omni(), a.SID, "agent revoked by owner"); err != nil {
		return nil, err
	}
	lg, _ := b.Ledger()
	if _, err := lg.Append(ctx, ledger.AccountOrigin(c.Omni()), agent.KindStatus,
		agent.StatusChange{Owner: c.Omni(), Alias: alias, Agent: a.Omni, Status: apiv1.AgentRevoked, Reason: "sessions revoked"}); err != nil {
		return nil, ledgerProblem(err)
	}
	a.Status = apiv1.AgentRevoked
	return a, nil
}

// Teardown deletes the agent's own credentials and revokes its sessions.
func (b *Broker) Teardown(ctx context.Context, c *Caller, alias string) (deleted int, err error) {
	a, err := b.ownAgent(ctx, c, alias)
	if err != nil {
		return 0, err
	}
	if err := b.revokeSession(ctx, c.Omni(), a.SID, "agent torn down by owner"); err != nil {
		return 0, err
	}
	lg, _ := b.Ledger()
	creds, err := vault.List(lg.State(ctx), c.Omni())
	if err != nil {
		return 0, err
	}
	for _, cr := range creds {
		if cr.Agent != alias {
			continue
		}
		if _, err := lg.Append(ctx, ledger.AccountOrigin(c.Omni()), vault.KindDeleted,
			vault.Deleted{Owner: c.Omni(), Agent: alias, Service: cr.Service, Actor: c.Omni()}); err != nil && !errors.Is(err, ledger.ErrRejected) {
			return deleted, ledgerProblem(err)
		}
		deleted++
	}
	if _, err := lg.Append(ctx, ledger.AccountOrigin(c.Omni()), agent.KindStatus,
		agent.StatusChange{Owner: c.Omni(), Alias: alias, Agent: a.Omni, Status: apiv1.AgentTornDown,
			Reason: fmt.Sprintf("%d credential(s) deleted, sessions revoked", deleted)}); err != nil {
		return deleted, ledgerProblem(err)
	}
	return deleted, nil
}

// AgentServices lists the services the calling agent may read now: in its scope
// and stored (for it or owner-wide); approval lists those of them whose reads
// each need the owner's approval. Names only; nothing is released.
func (b *Broker) AgentServices(ctx context.Context, c *Caller) (services, approval []string, err error) {
	lg, err := b.Ledger()
	if err != nil {
		return nil, nil, err
	}
	if c.Agent == nil {
		return nil, nil, problem.New(problem.Denied, "only an agent session lists its readable credentials", "owners use agentkeys list")
	}
	st := lg.State(ctx)
	services, approval = []string{}, []string{}
	for _, s := range c.Agent.Scope {
		if !apiv1.ValidName(s) {
			continue // oidc:… entries are not credentials
		}
		for _, who := range []string{c.Agent.Alias, apiv1.OwnerWide} {
			if cr, ok, err := vault.Get(st, c.Agent.Owner, who, s); err != nil {
				return nil, nil, err
			} else if ok {
				services = append(services, s)
				if cr.Approval == apiv1.ApprovalRequired {
					approval = append(approval, s)
				}
				break
			}
		}
	}
	slices.Sort(services)
	slices.Sort(approval)
	return services, approval, nil
}
