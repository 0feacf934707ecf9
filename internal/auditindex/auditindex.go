// Package auditindex keeps each owner's entries findable: their usage trail, and
// which private entries of the ledger an owner may read in full (§3.4). It holds,
// in memory, which entries belong to which owner (their sequence numbers); the
// rows themselves are derived from those entries when asked for. Whose an entry
// is and the row it shows are declared by its kind (ledger.Kind Owner and Usage),
// for every kind of the module list (package modules). It is a cache of the
// ledger, filled during the start-up verification walk and then by every commit,
// where it costs a decode of a few payload members and a slice append per entry.
package auditindex

import (
	"context"
	"maps"
	"math"
	"slices"
	"sync"

	"github.com/agentkeys/agentkeys/internal/ledger"
	"github.com/agentkeys/agentkeys/internal/modules"
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

// kinds are those of every module, with their Owner and Usage.
var kinds = modules.Schema().Kinds

// New returns an empty index over src.
func New(src Source) *Index {
	return &Index{src: src, byOwner: map[string][]uint64{}, parents: map[string]string{}}
}

// usageOf derives the usage row of an entry and the owner whose trail it is in
// (its kind's Usage and Owner); ok is false for entries that show no row.
func usageOf(e *ledger.Entry) (owner string, u vault.Usage, ok bool) {
	k := kinds[e.Kind]
	if k.Usage == nil || k.Owner == nil {
		return "", u, false
	}
	if u, ok = k.Usage(e); !ok {
		return "", u, false
	}
	account, parent, ok := k.Owner(e)
	if parent != "" {
		account = parent
	}
	return account, u, ok
}

// ownerOf is the owner an entry belongs to, as its kind's Owner says: the account
// it names, or that account's owner when it is an agent (learnt from the entries
// that create agents, which name their parent). Entries of public kinds and
// entries without a payload are no one's. It runs at every commit; Owner decodes
// only the payload members it needs. It may file an entry that is in no trail
// (Usage derives each row with usageOf and keeps only those of the owner asked
// for), but never files a trail entry under another owner than usageOf's
// (tested). Callers hold x.mu.
func (x *Index) ownerOf(e *ledger.Entry) (string, bool) {
	k := kinds[e.Kind]
	if k.Owner == nil || e.Payload == nil {
		return "", false
	}
	account, parent, ok := k.Owner(e)
	switch {
	case !ok:
		return "", false
	case parent != "":
		x.parents[account] = parent
		return parent, true
	}
	if parent, ok := x.parents[account]; ok {
		return parent, true
	}
	return account, account != ""
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
// consecutive sequence numbers; the source may answer a run in several
// shorter pages, and skip entries it no longer holds (a pruned store without
// its archive): only entries of the run count.
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
		for from, to := seqs[i], seqs[j-1]; from <= to; {
			es, err := x.src.Entries(ctx, from, int(to-from)+1)
			if err != nil {
				return nil, err
			}
			if len(es) == 0 {
				break
			}
			for k := range es {
				if es[k].Seq > to {
					break
				}
				if o, u, ok := usageOf(&es[k]); ok && o == owner && f.Match(u) && (f.Limit <= 0 || len(out) < f.Limit) {
					out = append(out, u)
				}
			}
			from = es[len(es)-1].Seq + 1
		}
		i = j
	}
	return out, nil
}

// Snapshot is the index as of a point of the chain: what the broker's start-up
// snapshot carries so that a restart does not read every entry again (§3.3).
type Snapshot struct {
	Next    uint64              `json:"next"` // first seq not yet observed
	ByOwner map[string][]uint64 `json:"by_owner"`
	Parents map[string]string   `json:"parents"`
}

// Snapshot returns a copy of the index.
func (x *Index) Snapshot() Snapshot {
	x.mu.RLock()
	defer x.mu.RUnlock()
	s := Snapshot{Next: x.next, ByOwner: make(map[string][]uint64, len(x.byOwner)), Parents: maps.Clone(x.parents)}
	for o, seqs := range x.byOwner {
		s.ByOwner[o] = slices.Clone(seqs)
	}
	return s
}

// Restore replaces the index with s; entries from s.Next on are observed next.
func (x *Index) Restore(s Snapshot) {
	x.mu.Lock()
	defer x.mu.Unlock()
	x.next, x.byOwner, x.parents = s.Next, s.ByOwner, s.Parents
	if x.byOwner == nil {
		x.byOwner = map[string][]uint64{}
	}
	if x.parents == nil {
		x.parents = map[string]string{}
	}
}
