package client

import (
	"context"
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/agentkeys/agentkeys/internal/apiv1"
	"github.com/agentkeys/agentkeys/internal/backoff"
	"github.com/agentkeys/agentkeys/internal/entry"
	"github.com/agentkeys/agentkeys/internal/problem"
)

// governanceTries bounds how often SubmitGovernance rebuilds an entry on a moved head.
const governanceTries = 50

// SubmitGovernance appends a governance entry of kind with payload, signed by keys
// (as many as the genesis threshold needs). It builds the entry on the current head
// and, when another writer moved the head first (CONFLICT), rebuilds and re-signs it
// on the new head, a bounded number of times with a small random pause. It returns
// the entry as stored, once it is durable.
func (c *Client) SubmitGovernance(ctx context.Context, kind string, payload any, keys ...ed25519.PrivateKey) (entry.Entry, error) {
	p, err := entry.MarshalPayload(payload)
	if err != nil {
		return entry.Entry{}, fmt.Errorf("%s payload: %w", kind, err)
	}
	var out entry.Entry
	err = c.submitWith(ctx, kind, p, keys, func(e entry.Entry) error {
		var err error
		out, err = c.Submit(ctx, e)
		return err
	})
	return out, err
}

// submitWith builds a governance entry on the current head, signs it and hands it
// to send, rebuilding it on a moved head (CONFLICT) a bounded number of times.
func (c *Client) submitWith(ctx context.Context, kind string, p json.RawMessage, keys []ed25519.PrivateKey, send func(entry.Entry) error) error {
	if len(keys) == 0 {
		return problem.New(problem.BadRequest, "no governance key to sign with",
			"pass the operator key (<data-dir>/operator.key) or the governance keys listed in genesis")
	}
	var last error
	pause := backoff.Backoff{Initial: 5 * time.Millisecond, Max: 20 * time.Millisecond, Jitter: 1}
	for try := range governanceTries {
		if try > 0 {
			if err := pause.Wait(ctx); err != nil {
				return err
			}
		}
		h, err := c.Head(ctx)
		if err != nil {
			return err
		}
		ht, err := time.Parse(time.RFC3339Nano, h.Time)
		if err != nil {
			return fmt.Errorf("ledger head time %q: %w", h.Time, err)
		}
		e := entry.Entry{Seq: h.Seq + 1, PrevHash: h.Hash, Time: max(c.now().UnixNano(), ht.UnixNano()),
			Kind: kind, Origin: entry.OriginGovernance, Payload: p}
		for _, k := range keys {
			entry.SignGovernance(&e, k)
		}
		err = send(e)
		var pe *problem.Error
		if errors.As(err, &pe) && pe.Code == problem.Conflict {
			last = err
			continue
		}
		return err
	}
	return fmt.Errorf("the ledger head kept moving, gave up after %d tries: %w", governanceTries, last)
}

// Governance fetches the governance set in force and the ledger's identity
// (GET /v1/governance).
func (c *Client) Governance(ctx context.Context) (*apiv1.GovernanceInfo, error) {
	var g apiv1.GovernanceInfo
	return &g, c.Do(ctx, http.MethodGet, "/v1/governance", nil, &g)
}

// SubmitProposal submits a proposal its members signed (POST
// /v1/governance/proposals). The broker places it at the ledger's head itself,
// so nothing is rebuilt or retried here.
func (c *Client) SubmitProposal(ctx context.Context, p entry.Proposal) (*apiv1.ProposalResult, error) {
	var out apiv1.ProposalResult
	return &out, c.Do(ctx, http.MethodPost, "/v1/governance/proposals", p, &out)
}
