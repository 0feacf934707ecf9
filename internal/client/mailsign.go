package client

import (
	"context"
	"net/http"

	"github.com/agentkeys/agentkeys/internal/apiv1"
)

// DKIMSign asks the broker to DKIM-sign a message the agent sends: r holds the
// canonical header block and the body hash, never the body.
func (a *AgentSession) DKIMSign(ctx context.Context, r apiv1.DKIMSignRequest) (*apiv1.DKIMSignResult, error) {
	var out apiv1.DKIMSignResult
	return &out, a.do(ctx, http.MethodPost, "/v1/mail/dkim-sign", r, &out)
}
