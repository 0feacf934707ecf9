// Package auditindex keeps each owner's usage trail queryable. It holds, in
// memory, which entries belong to which owner's trail (their sequence numbers);
// the rows themselves are derived from those entries when asked for. It is a
// cache of the ledger, filled during the start-up verification walk and then by
// every commit, where it costs a decode of one payload member and a slice append
// per entry.
package auditindex

import (
	"context"
	"encoding/json"
	"sync"

	"github.com/agentkeys/agentkeys/internal/account"
	"github.com/agentkeys/agentkeys/internal/agent"
	"github.com/agentkeys/agentkeys/internal/ledger"
	"github.com/agentkeys/agentkeys/internal/oidc"
	"github.com/agentkeys/agentkeys/internal/vault"
)

// Source is where entries are read back from (the ledger driver).
type Source interface {
	Entries(ctx context.Context, from uint64, limit int) ([]ledger.Entry, error)
}

// Index maps owners to the sequence numbers of their trail's entries.
type Index struct {
	src Source

	mu      sync.RWMutex
	byOwner map[string][]uint64 // ascending
	next    uint64              // first seq not yet observed
}

// New returns an empty index over src.
func New(src Source) *Index { return &Index{src: src, byOwner: map[string][]uint64{}} }

// usageOf derives the usage row of an entry, whichever trail kind it is.
func usageOf(e *ledger.Entry) (owner string, u vault.Usage, ok bool) {
	if owner, u, ok = vault.UsageOf(e); ok {
		return
	}
	if owner, u, ok = agent.UsageOf(e); ok {
		return
	}
	return oidc.UsageOf(e)
}

// ownerOf is the trail an entry may belong to, read from its payload's "owner"
// member ("parent" for an account's creation) without deriving the whole row: it
// runs at every commit. It may file an entry that is in no trail (Usage derives
// each row with usageOf and keeps only those of the owner asked for), but never
// files a trail entry under another owner than usageOf's (tested).
func ownerOf(e *ledger.Entry) (string, bool) {
	var p struct {
		Owner  string `json:"owner"`
		Parent string `json:"parent"`
	}
	if json.Unmarshal(e.Payload, &p) != nil {
		return "", false
	}
	if e.Kind == account.KindCreated {
		p.Owner = p.Parent
	}
	return p.Owner, p.Owner != ""
}

// Observe files entries: every stored one during the start-up walk
// (ledger.VerifyDriver), then each commit (ledger.Options.OnCommit). Entries
// already seen are ignored, so the two may overlap.
func (x *Index) Observe(es []ledger.Entry) {
	x.mu.Lock()
	defer x.mu.Unlock()
	for i := range es {
		e := &es[i]
		if e.Seq < x.next {
			continue
		}
		x.next = e.Seq + 1
		if owner, ok := ownerOf(e); ok {
			x.byOwner[owner] = append(x.byOwner[owner], e.Seq)
		}
	}
}

// Usage returns an owner's rows matching f, oldest first. Entries are read back
// in runs of consecutive sequence numbers.
func (x *Index) Usage(ctx context.Context, owner string, f vault.UsageFilter) ([]vault.Usage, error) {
	x.mu.RLock()
	seqs := append([]uint64(nil), x.byOwner[owner]...)
	x.mu.RUnlock()
	out := []vault.Usage{}
	for i := 0; i < len(seqs); {
		j := i + 1
		for j < len(seqs) && seqs[j] == seqs[j-1]+1 && j-i < 1000 {
			j++
		}
		es, err := x.src.Entries(ctx, seqs[i], j-i)
		if err != nil {
			return nil, err
		}
		for k := range es {
			if o, u, ok := usageOf(&es[k]); ok && o == owner && f.Match(u) {
				out = append(out, u)
			}
		}
		i = j
	}
	return out, nil
}
