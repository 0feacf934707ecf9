package broker

import (
	"context"

	"github.com/agentkeys/agentkeys/internal/ledger"
	"github.com/agentkeys/agentkeys/internal/token"
)

// Entries returns a page of the chain as caller may see it (§3.4): entries of
// public kinds in full; entries of owner-private kinds redacted to their header
// and payload commitment, except the caller's own (c an owner session; nil is
// anonymous), which come in full. Format-1 entries, written before commitments
// existed, cannot be redacted (their hash covers the payload) and come in full,
// as they always were.
func (b *Broker) Entries(ctx context.Context, c *Caller, from uint64, limit int) ([]ledger.Entry, error) {
	if c != nil && c.Claims.Role != token.RoleOwner {
		return nil, errNotOwner
	}
	es, err := b.history(ctx, from, limit, true)
	if err != nil || len(es) == 0 {
		return es, err
	}
	var mine []uint64
	if c != nil {
		mine = b.usage.Owned(c.Omni(), es[0].Seq, es[len(es)-1].Seq)
	}
	for i := range es {
		e := &es[i]
		for len(mine) > 0 && mine[0] < e.Seq {
			mine = mine[1:]
		}
		if b.kinds.Public(e.Kind) || len(mine) > 0 && mine[0] == e.Seq {
			continue
		}
		*e, _ = e.Redact()
	}
	return es, nil
}
