package oidc

import (
	"errors"
	"fmt"
	"time"

	"github.com/agentkeys/agentkeys/internal/ledger"
)

// Audit kinds: every mint and every refused mint, signed by the acting
// account's wallet. They carry the token's kid, jti, audience and expiry, never
// the token.
const (
	KindMinted = "oidc.minted"
	KindDenied = "oidc.denied"
)

// Mint is the payload of oidc.minted and oidc.denied.
type Mint struct {
	Owner     string `json:"owner"`           // owner omni (the trail it is filed in)
	Actor     string `json:"actor"`           // omni of the signing account
	ActorRole string `json:"actor_role"`      // agent or owner
	Alias     string `json:"alias,omitempty"` // agent alias
	SID       string `json:"sid"`
	Audience  string `json:"aud"`
	Kid       string `json:"kid,omitempty"`
	JTI       string `json:"jti,omitempty"`
	Exp       int64  `json:"exp,omitempty"`
	OwnerSelf bool   `json:"owner_self,omitempty"`
	Reason    string `json:"reason,omitempty"` // oidc.denied: no_scope, unknown_audience, owner_without_flag, rate_limited
}

// Module declares the OIDC audit kinds (package modules lists it). Each entry
// is in the trail of the owner its payload names.
var Module = ledger.Module{
	Name: "oidc",
	Kinds: map[string]ledger.Kind{
		KindMinted: {Origins: ledger.FromAccount, Fold: foldMint, Owner: ledger.OwnerMember, Usage: usageMint},
		KindDenied: {Origins: ledger.FromAccount, Fold: foldMint, Owner: ledger.OwnerMember, Usage: usageMint},
	},
}

func foldMint(_ ledger.State, e *ledger.Entry) error {
	var m Mint
	if err := ledger.DecodeStrict(e.Payload, &m); err != nil {
		return err
	}
	if omni, _ := ledger.AccountOf(e.Origin); omni != m.Actor {
		return errors.New("the actor must be the account that signs the entry")
	}
	if m.Audience == "" || m.Owner == "" {
		return errors.New("owner and aud are required")
	}
	if e.Kind == KindMinted && (m.Kid == "" || m.JTI == "" || m.Exp == 0) {
		return errors.New("a mint records kid, jti and exp")
	}
	return nil
}

// usageMint is the usage row of oidc.minted and oidc.denied.
func usageMint(e *ledger.Entry) (ledger.Usage, bool) {
	m, u, ok := ledger.UsageRow[Mint](e)
	u.Actor, u.ActorRole, u.Alias, u.Agent, u.Action, u.Service = m.Actor, m.ActorRole, m.Alias, m.Alias, "oidc.mint", "oidc:"+m.Audience
	if m.Alias == "" {
		u.Agent = "*"
	}
	if e.Kind == KindDenied {
		u.Result, u.Detail = "denied", m.Reason
	} else {
		u.Detail = fmt.Sprintf("kid %s jti %s exp %s", m.Kid, m.JTI, time.Unix(m.Exp, 0).UTC().Format(time.RFC3339))
		if m.OwnerSelf {
			u.Detail += " owner_self"
		}
	}
	return u, ok
}
