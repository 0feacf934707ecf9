package api

import (
	"github.com/agentkeys/agentkeys/internal/agent"
	"github.com/agentkeys/agentkeys/internal/apiv1"
	"github.com/agentkeys/agentkeys/internal/vault"
)

// The broker's services answer with the records their ledger modules fold;
// the API answers with their apiv1 mirrors. Each conversion is a Go struct
// conversion (same fields, same types), so the two cannot drift apart
// silently; TestRecordsMirrorState holds the JSON tags equal.

func agentOut(a *agent.Agent) *apiv1.Agent { return (*apiv1.Agent)(a) }

func credentialOut(c *vault.Credential) *apiv1.Credential { return (*apiv1.Credential)(c) }

func approvalOut(a *vault.Approval) *apiv1.Approval { return (*apiv1.Approval)(a) }

// each converts a list with conv.
func each[S, W any](in []S, conv func(S) W) []W {
	out := make([]W, len(in))
	for i, v := range in {
		out[i] = conv(v)
	}
	return out
}
