// Package auditindex keeps each owner's entries findable: their usage trail, and
// which private entries of the ledger an owner may read in full (§3.4). It holds,
// in memory, which entries belong to which owner (their sequence numbers); the
// rows themselves are derived from those entries when asked for. It is a cache of
// the ledger, filled during the start-up verification walk and then by every
// commit, where it costs a decode of a few payload members and a slice append per
// entry.
package auditindex

import (
	"context"
	"encoding/json"
	"math"
	"slices"
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
	parents map[string]string   // agent omni -> its owner's omni
	next    uint64              // first seq not yet observed
}

// New returns an empty index over src.
func New(src Source) *Index {
	return &Index{src: src, byOwner: map[string][]uint64{}, parents: map[string]string{}}
}

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

// ownerOf is the owner an entry belongs to: its payload's "owner" member; for an
// account's creation the account's owner ("parent", or the account itself); for
// entries without an owner member (sessions) the account that signed it, or that
// account's owner when it is an agent. It runs at every commit, so it decodes only
// those members. It may file an entry that is in no trail (Usage derives each row
// with usageOf and keeps only those of the owner asked for), but never files a
// trail entry under another owner than usageOf's (tested). Callers hold x.mu.
func (x *Index) ownerOf(e *ledger.Entry) (string, bool) {
	var p struct {
		Owner  string `json:"owner"`
		Parent string `json:"parent"`
		Omni   string `json:"omni"`
	}
	if e.Payload == nil || json.Unmarshal(e.Payload, &p) != nil {
		return "", false
	}
	switch {
	case e.Kind == account.KindCreated && p.Parent != "":
		x.parents[p.Omni] = p.Parent
		return p.Parent, true
	case e.Kind == account.KindCreated:
		return p.Omni, p.Omni != ""
	case p.Owner != "":
		return p.Owner, true
	}
	signer, ok := ledger.AccountOf(e.Origin)
	if !ok {
		return "", false
	}
	if parent, ok := x.parents[signer]; ok {
		return parent, true
	}
	return signer, true
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
		if owner, ok := x.ownerOf(e); ok {
			x.byOwner[owner] = append(x.byOwner[owner], e.Seq)
		}
	}
}

// Owned returns the sequence numbers in [from, to] of the entries filed under
// owner, ascending: the private entries that owner may read in full.
func (x *Index) Owned(owner string, from, to uint64) []uint64 {
	x.mu.RLock()
	defer x.mu.RUnlock()
	seqs := x.byOwner[owner]
	i, _ := slices.BinarySearch(seqs, from)
	j, _ := slices.BinarySearch(seqs, to+1)
	if to == math.MaxUint64 {
		j = len(seqs)
	}
	return slices.Clone(seqs[i:max(i, j)])
}

// Usage returns an owner's rows matching f, oldest first: of entries from seq
// f.From on, at most f.Limit (0 = all). Entries are read back in runs of
// consecutive sequence numbers.
func (x *Index) Usage(ctx context.Context, owner string, f vault.UsageFilter) ([]vault.Usage, error) {
	x.mu.RLock()
	all := x.byOwner[owner]
	i, _ := slices.BinarySearch(all, f.From)
	seqs := slices.Clone(all[i:])
	x.mu.RUnlock()
	out := []vault.Usage{}
	for i := 0; i < len(seqs) && (f.Limit <= 0 || len(out) < f.Limit); {
		j := i + 1
		for j < len(seqs) && seqs[j] == seqs[j-1]+1 && j-i < 1000 {
			j++
		}
		es, err := x.src.Entries(ctx, seqs[i], j-i)
		if err != nil {
			return nil, err
		}
		for k := range es {
			if o, u, ok := usageOf(&es[k]); ok && o == owner && f.Match(u) && (f.Limit <= 0 || len(out) < f.Limit) {
				out = append(out, u)
			}
		}
		i = j
	}
	return out, nil
}
