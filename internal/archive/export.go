package archive

import (
	"context"
	"errors"
	"fmt"

	"github.com/agentkeys/agentkeys/internal/ledger"
)

// DefaultSegment is how many entries a segment holds at least (it closes at the
// first checkpoint from there on: at most about CheckpointEvery more).
const DefaultSegment = 10_000

// Chain is the identity of the ledger in a store: what an archive must match.
type Chain struct {
	LedgerKey string      // the enclave's ledger/v1 public key (hex), from genesis
	ID        ledger.Hash // the genesis entry's hash
}

// ChainOf reads the identity of the ledger in d.
func ChainOf(ctx context.Context, d ledger.Driver) (Chain, error) {
	es, err := d.Entries(ctx, 0, 1)
	if err != nil {
		return Chain{}, err
	}
	if len(es) != 1 || es[0].Seq != 0 {
		return Chain{}, errors.New("the ledger store holds no genesis entry")
	}
	g, err := ledger.LoadGenesis(ledger.View(ctx, d))
	if err != nil {
		return Chain{}, err
	}
	return Chain{LedgerKey: g.LedgerKey, ID: es[0].Hash()}, nil
}

// Exported is what Export did.
type Exported struct {
	Written int `json:"segments_written"`
	Present int `json:"segments_present"` // already in the archive, checked, skipped
	// Before: the archive now holds every entry with a smaller seq. It is one
	// past the last checkpoint below the requested seq (segments end at one).
	Before    uint64 `json:"before"`
	Requested uint64 `json:"requested_before"`
	Entries   uint64 `json:"entries_written"`
}

// Progress is told how far Export is: entries handled of total.
type Progress func(done, total uint64)

// Export writes the entries of d before seq before (at least size to a
// segment) to a, after the segments a already holds, which it checks first
// (Segment.Check, linked, of d's chain). Run again, it skips what is there:
// an interrupted export resumes where it stopped. Only entries up to the last
// checkpoint below before are written. It only reads d.
func Export(ctx context.Context, a *Archive, d ledger.Driver, before uint64, size int, progress Progress) (Exported, error) {
	out := Exported{Requested: before}
	if size <= 0 {
		size = DefaultSegment
	}
	if progress == nil {
		progress = func(uint64, uint64) {}
	}
	ch, err := ChainOf(ctx, d)
	if err != nil {
		return out, err
	}
	refs, err := a.List(ctx)
	if err != nil {
		return out, err
	}
	var next uint64
	var prev ledger.Hash
	for _, r := range refs {
		s, err := a.Get(ctx, r)
		if err != nil {
			return out, err
		}
		if err := s.Check(ch.LedgerKey); err != nil {
			return out, err
		}
		if s.LedgerID != ch.ID || s.Prev != prev {
			return out, invalidf("%s: segment %d-%d is not of this ledger's chain", a.where, s.First, s.Last)
		}
		next, prev = s.Last+1, s.LastHash
		out.Present++
		progress(min(next, before), before)
	}
	out.Before = next
	if len(refs) > 0 { // the store, where it still holds it, must agree with the archive's end
		es, err := d.Entries(ctx, next-1, 1)
		if err != nil {
			return out, err
		}
		if len(es) == 1 && es[0].Seq == next-1 && es[0].Hash() != prev {
			return out, invalidf("%s ends at seq %d with an entry the ledger store does not hold", a.where, next-1)
		}
	}
	var buf []ledger.Entry
	cut := 0 // buf[:cut] ends with a checkpoint
	flush := func() error {
		es := buf[:cut]
		s := &Segment{Format: Format, LedgerID: ch.ID, First: es[0].Seq, Last: es[len(es)-1].Seq,
			Prev: es[0].PrevHash, LastHash: es[len(es)-1].Hash(), Entries: es}
		if err := s.Check(ch.LedgerKey); err != nil {
			return fmt.Errorf("the ledger store's entries do not verify: %w", err)
		}
		if err := a.put(ctx, s); err != nil {
			return err
		}
		out.Written++
		out.Entries += uint64(len(es))
		out.Before = s.Last + 1
		progress(out.Before, before)
		buf, cut = append([]ledger.Entry(nil), buf[cut:]...), 0
		return nil
	}
	for from := next; from < before; {
		page, err := d.Entries(ctx, from, 1000)
		if err != nil {
			return out, err
		}
		if len(page) == 0 {
			break
		}
		done := false
		for i := range page {
			e := page[i]
			if e.Seq > from {
				return out, fmt.Errorf("the ledger store no longer holds entry %d (it was pruned) and the archive %s ends before it: export to the archive the earlier entries went to", from, a.where)
			}
			if e.Seq >= before {
				done = true
				break
			}
			if e.Seq != from || e.PrevHash != prev {
				return out, fmt.Errorf("the ledger store's chain breaks at seq %d: run agentkeys audit verify", from)
			}
			buf = append(buf, e)
			from, prev = e.Seq+1, e.Hash()
			if e.Kind == ledger.KindCheckpoint {
				cut = len(buf)
				if cut >= size {
					if err := flush(); err != nil {
						return out, err
					}
				}
			}
		}
		if done {
			break
		}
	}
	if cut > 0 {
		if err := flush(); err != nil {
			return out, err
		}
	}
	return out, nil
}

// Pruned is what Prune did.
type Pruned struct {
	// Before: the store now holds no entry below this seq but genesis. It is one
	// past the last archived checkpoint below the requested seq.
	Before    uint64 `json:"before"`
	Requested uint64 `json:"requested_before"`
	Segments  int    `json:"segments_verified"`
	Already   bool   `json:"already_pruned,omitempty"` // the store had dropped this much before
}

// ErrNotCovered means the archive holds no checkpoint below the requested seq
// that prune could cut at.
var ErrNotCovered = errors.New("the archive does not cover any entry below that seq")

// Prune drops from d the entries before the last archived checkpoint below
// before, once it has verified the whole archive again from genesis (every
// segment checked, every entry re-folded with v, a fresh ledger.NewVerifier)
// and that the archive's checkpoint is the store's entry at that seq. d keeps
// genesis and the anchor (that checkpoint and the chain's position after it).
func Prune(ctx context.Context, a *Archive, d ledger.Driver, before uint64, v *ledger.Verifier, progress Progress) (Pruned, error) {
	out := Pruned{Requested: before}
	p, ok := d.(ledger.Pruner)
	if !ok {
		return out, errors.New("this ledger store cannot drop entries")
	}
	ch, err := ChainOf(ctx, d)
	if err != nil {
		return out, err
	}
	head, _, err := d.Head(ctx)
	if err != nil {
		return out, err
	}
	if progress == nil {
		progress = func(uint64, uint64) {}
	}
	if refs, err := a.List(ctx); err != nil {
		return out, err
	} else if len(refs) == 0 {
		return out, ErrNotCovered
	}
	var anchor *ledger.Anchor
	refs, err := a.Walk(ctx, ch.LedgerKey, v, func(s *Segment, pos ledger.Position) error {
		if s.First == 0 && s.LedgerID != ch.ID {
			return invalidf("%s holds another ledger's chain (its genesis is not the store's)", a.where)
		}
		if s.Last < before && s.Last < head.Seq {
			anchor = &ledger.Anchor{Entry: s.Entries[len(s.Entries)-1], Pos: pos}
		}
		progress(s.Last+1, max(before, s.Last+1))
		return nil
	})
	out.Segments = len(refs)
	if err != nil {
		return out, err
	}
	if anchor == nil {
		return out, ErrNotCovered
	}
	out.Before = anchor.Entry.Seq + 1
	if old, ok, err := p.Anchor(ctx); err != nil {
		return out, err
	} else if ok && old.Entry.Seq >= anchor.Entry.Seq {
		out.Already, out.Before = true, old.Entry.Seq+1
		return out, nil
	}
	if err := ledger.CheckAnchor(*anchor, ch.LedgerKey, ch.ID); err != nil {
		return out, err
	}
	if err := p.Prune(ctx, *anchor); err != nil {
		return out, err
	}
	return out, nil
}
