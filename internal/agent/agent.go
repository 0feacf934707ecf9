// Package agent is the ledger side of pairing and the agent lifecycle (§6): pair
// requests from daemons, the owner's approvals and denials, the agent records
// (alias, generation, scope, proof-key binding, status) and their usage rows.
// It declares the kinds and folds them into state; it never mints tokens, never
// sees a plaintext token and never holds a private key.
package agent

import (
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"

	"github.com/agentkeys/agentkeys/internal/account"
	"github.com/agentkeys/agentkeys/internal/apiv1"
	"github.com/agentkeys/agentkeys/internal/ledger"
)

// Kinds.
const (
	KindPairRequested = "pair.requested" // enclave origin: a daemon's signed request
	KindPairApproved  = "pair.approved"  // owner origin: approval, new generation, sealed session
	KindPairDenied    = "pair.denied"    // owner origin
	KindScope         = "agent.scope"    // owner origin: the agent's full new scope
	KindStatus        = "agent.status"   // owner origin: revoked or torn_down
)

// ValidScopeEntry reports whether s may appear in a scope: a service name,
// "oidc:*" or "oidc:<audience>".
func ValidScopeEntry(s string) bool {
	if aud, ok := strings.CutPrefix(s, "oidc:"); ok {
		return aud == "*" || apiv1.ValidName(aud)
	}
	return apiv1.ValidName(s)
}

// MaxScope bounds the entries of a scope.
const MaxScope = 64

// CheckScope validates a scope list: valid entries, no duplicates, bounded.
func CheckScope(scope []string) error {
	if len(scope) > MaxScope {
		return fmt.Errorf("at most %d scope entries", MaxScope)
	}
	seen := map[string]bool{}
	for _, s := range scope {
		if !ValidScopeEntry(s) {
			return fmt.Errorf("%q is not a service name, oidc:* or oidc:<audience>", s)
		}
		if seen[s] {
			return fmt.Errorf("%q is listed twice", s)
		}
		seen[s] = true
	}
	return nil
}

// Agent is the state record of an agent (one per owner and alias; re-pairing
// replaces it with the next generation).
type Agent struct {
	Owner      string   `json:"owner"`
	Alias      string   `json:"alias"`
	Omni       string   `json:"omni"`
	Wallet     string   `json:"wallet"`
	Generation int      `json:"generation"`
	Scope      []string `json:"scope"`
	JKT        string   `json:"jkt"`
	SID        string   `json:"sid"`
	Status     string   `json:"status"`
	PairID     string   `json:"pair_id"`
	Created    int64    `json:"created"` // unix nanos
	Expires    int64    `json:"expires"` // session expiry, unix seconds
}

// ScopeChange is the payload of agent.scope.
type ScopeChange struct {
	Owner  string   `json:"owner"`
	Alias  string   `json:"alias"`
	Scope  []string `json:"scope"`  // the full new scope
	Change string   `json:"change"` // what the owner asked, e.g. "add openai"
}

// StatusChange is the payload of agent.status.
type StatusChange struct {
	Owner  string `json:"owner"`
	Alias  string `json:"alias"`
	Agent  string `json:"agent"` // omni of the generation it applies to
	Status string `json:"status"`
	Reason string `json:"reason,omitempty"`
}

// Module declares the kinds of pairing and agents (package modules lists it).
// Each entry is in the trail of the owner its payload names. (An agent's
// creation, account.created, is package account's.)
var Module = ledger.Module{
	Name: "agent",
	Kinds: map[string]ledger.Kind{
		KindPairRequested: {Origins: ledger.FromEnclave, Fold: foldRequested, Owner: ledger.OwnerMember, Usage: usagePairRequested},
		KindPairApproved:  {Origins: ledger.FromAccount, Fold: foldApproved, Owner: ledger.OwnerMember, Usage: usagePairApproved},
		KindPairDenied:    {Origins: ledger.FromAccount, Fold: foldDenied, Owner: ledger.OwnerMember, Usage: usagePairDenied},
		KindScope:         {Origins: ledger.FromAccount, Fold: foldScope, Owner: ledger.OwnerMember, Usage: usageScope},
		KindStatus:        {Origins: ledger.FromAccount, Fold: foldStatus, Owner: ledger.OwnerMember, Usage: usageStatus},
	},
}

func agentKey(owner, alias string) string { return "agent/" + owner + "/" + alias }

// OmniOf derives an agent's omni (§4.1).
func OmniOf(owner, alias string, generation int) string {
	return account.AgentOmni(owner, alias, generation)
}

func originIs(e *ledger.Entry, omni string) error {
	if o, _ := ledger.AccountOf(e.Origin); o != omni {
		return errors.New("the owner must sign this entry")
	}
	return nil
}

func foldScope(st ledger.State, e *ledger.Entry) error {
	var s ScopeChange
	if err := ledger.DecodeStrict(e.Payload, &s); err != nil {
		return err
	}
	if err := originIs(e, s.Owner); err != nil {
		return err
	}
	if err := CheckScope(s.Scope); err != nil {
		return err
	}
	a, ok, err := Get(st, s.Owner, s.Alias)
	if err != nil {
		return err
	}
	if !ok || a.Status == apiv1.AgentTornDown {
		return errors.New("no such agent")
	}
	a.Scope = s.Scope
	return ledger.PutJSON(st, agentKey(a.Owner, a.Alias), a)
}

func foldStatus(st ledger.State, e *ledger.Entry) error {
	var s StatusChange
	if err := ledger.DecodeStrict(e.Payload, &s); err != nil {
		return err
	}
	if err := originIs(e, s.Owner); err != nil {
		return err
	}
	if s.Status != apiv1.AgentRevoked && s.Status != apiv1.AgentTornDown {
		return errors.New("status must be revoked or torn_down")
	}
	a, ok, err := Get(st, s.Owner, s.Alias)
	if err != nil {
		return err
	}
	if !ok || a.Omni != s.Agent {
		return errors.New("no such agent generation")
	}
	if a.Status == apiv1.AgentTornDown || (a.Status == apiv1.AgentRevoked && s.Status == apiv1.AgentRevoked) {
		return fmt.Errorf("the agent is already %s", a.Status)
	}
	a.Status = s.Status
	return ledger.PutJSON(st, agentKey(a.Owner, a.Alias), a)
}

// Get reads an agent record.
func Get(st ledger.State, owner, alias string) (*Agent, bool, error) {
	var a Agent
	ok, err := ledger.GetJSON(st, agentKey(owner, alias), &a)
	return &a, ok, err
}

// Memo serves agent records decoded once per stored version: an agent's record
// is read on every request it makes and changes only on scope edits, revocation
// and re-pairing, while decoding it costs more than comparing its bytes. Safe for
// concurrent use; it holds one entry per agent ever looked up.
type Memo struct{ m sync.Map } // key → *memoized

type memoized struct {
	raw string
	a   Agent
}

// Get is Get through the memo. The result is the caller's own copy, except that
// its Scope shares the memo's array: callers may append to it (Scope is clipped)
// but must not write into it.
func (m *Memo) Get(st ledger.State, owner, alias string) (*Agent, bool, error) {
	key := agentKey(owner, alias)
	raw, ok, err := st.Get(key)
	if err != nil || !ok {
		return &Agent{}, false, err
	}
	if v, hit := m.m.Load(key); hit && v.(*memoized).raw == string(raw) {
		a := v.(*memoized).a
		return &a, true, nil
	}
	var a Agent
	if err := json.Unmarshal(raw, &a); err != nil {
		return &Agent{}, false, err
	}
	a.Scope = slices.Clip(a.Scope) // a caller's append never writes into the memo
	m.m.Store(key, &memoized{raw: string(raw), a: a})
	return &a, true, nil
}

// List returns an owner's agents, by alias.
func List(st ledger.State, owner string) ([]Agent, error) {
	return ledger.ListJSON[Agent](st, "agent/"+owner+"/")
}

// The usage rows of the kinds of pairing and agents (Module).

func usagePairRequested(e *ledger.Entry) (ledger.Usage, bool) {
	p, u, ok := ledger.UsageRow[Pair](e)
	u.Actor, u.ActorRole, u.Alias, u.Agent, u.Action = "daemon", "daemon", p.Alias, p.Alias, "pair.request"
	u.Result, u.Detail = apiv1.PairPending, "id "+p.ID+" key "+apiv1.Fingerprint(p.JKT)+" scope "+strings.Join(p.Scope, ",")
	return u, ok
}

func usagePairApproved(e *ledger.Entry) (ledger.Usage, bool) {
	a, u, ok := ledger.UsageRow[Approval](e)
	u.Actor, u.ActorRole, u.Agent, u.Action = a.Owner, "owner", a.Alias, "pair.approve"
	u.Detail = fmt.Sprintf("id %s generation %d scope %s", a.ID, a.Delivery.Generation, strings.Join(a.Scope, ","))
	return u, ok
}

func usagePairDenied(e *ledger.Entry) (ledger.Usage, bool) {
	d, u, ok := ledger.UsageRow[Denial](e)
	u.Actor, u.ActorRole, u.Action, u.Detail = d.Owner, "owner", "pair.deny", "id "+d.ID
	return u, ok
}

func usageScope(e *ledger.Entry) (ledger.Usage, bool) {
	s, u, ok := ledger.UsageRow[ScopeChange](e)
	u.Actor, u.ActorRole, u.Agent, u.Action = s.Owner, "owner", s.Alias, "agent.scope"
	u.Detail = s.Change + " → " + strings.Join(s.Scope, ",")
	return u, ok
}

func usageStatus(e *ledger.Entry) (ledger.Usage, bool) {
	s, u, ok := ledger.UsageRow[StatusChange](e)
	u.Action = "agent.revoke"
	if s.Status == apiv1.AgentTornDown {
		u.Action = "agent.teardown"
	}
	u.Actor, u.ActorRole, u.Agent, u.Detail = s.Owner, "owner", s.Alias, s.Reason
	return u, ok
}
