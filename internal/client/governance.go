package client

import (
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"math/rand/v2"
	"time"

	"github.com/agentkeys/agentkeys/internal/ledger"
	"github.com/agentkeys/agentkeys/internal/problem"
)

// governanceTries bounds how often SubmitGovernance rebuilds an entry on a moved head.
const governanceTries = 50

// SubmitGovernance appends a governance entry of kind with payload, signed by keys
// (as many as the genesis threshold needs). It builds the entry on the current head
// and, when another writer moved the head first (CONFLICT), rebuilds and re-signs it
// on the new head, a bounded number of times with a small random pause. It returns
// the entry as stored, once it is durable.
func (c *Client) SubmitGovernance(ctx context.Context, kind string, payload any, keys ...ed25519.PrivateKey) (ledger.Entry, error) {
	if len(keys) == 0 {
		return ledger.Entry{}, problem.New(problem.BadRequest, "no governance key to sign with",
			"pass the operator key (<data-dir>/operator.key) or the governance keys listed in genesis")
	}
	p, err := ledger.MarshalPayload(payload)
	if err != nil {
		return ledger.Entry{}, fmt.Errorf("%s payload: %w", kind, err)
	}
	var last error
	for try := range governanceTries {
		if try > 0 {
			pause := time.Duration(1+rand.IntN(5*min(try, 4))) * time.Millisecond
			select {
			case <-ctx.Done():
				return ledger.Entry{}, ctx.Err()
			case <-time.After(pause):
			}
		}
		h, err := c.Head(ctx)
		if err != nil {
			return ledger.Entry{}, err
		}
		ht, err := time.Parse(time.RFC3339Nano, h.Time)
		if err != nil {
			return ledger.Entry{}, fmt.Errorf("ledger head time %q: %w", h.Time, err)
		}
		e := ledger.Entry{Seq: h.Seq + 1, PrevHash: h.Hash, Time: max(time.Now().UnixNano(), ht.UnixNano()),
			Kind: kind, Origin: ledger.OriginGovernance, Payload: p}
		for _, k := range keys {
			ledger.SignGovernance(&e, k)
		}
		out, err := c.Submit(ctx, e)
		var pe *problem.Error
		if errors.As(err, &pe) && pe.Code == problem.Conflict {
			last = err
			continue
		}
		return out, err
	}
	return ledger.Entry{}, fmt.Errorf("the ledger head kept moving, gave up after %d tries: %w", governanceTries, last)
}
