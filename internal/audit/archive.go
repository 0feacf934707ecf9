package audit

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/agentkeys/agentkeys/internal/archive"
	"github.com/agentkeys/agentkeys/internal/ledger"
	"github.com/agentkeys/agentkeys/internal/modules"
)

// archiveInvalid reports a bad archive as a ledger problem, naming the archive.
func archiveInvalid(a *archive.Archive, err error) error {
	var ce *ledger.ChainError
	if errors.Is(err, archive.ErrInvalid) || errors.As(err, &ce) {
		return invalid(fmt.Errorf("archive %s: %w", a, err))
	}
	return err
}

// VerifyArchive verifies archive a offline with nothing but the enclave's
// ledger public key (hex): every segment checked on its own (links, the
// closing checkpoint's signature), and the whole run from genesis re-folded
// (every origin and signature, the governance and account keys as they were).
func VerifyArchive(ctx context.Context, a *archive.Archive, ledgerKey string) (Summary, error) {
	mem := ledger.NewMemState()
	v := ledger.NewVerifier(modules.Schema(), mem)
	refs, err := a.Walk(ctx, ledgerKey, v, nil)
	if err != nil {
		return Summary{Entries: v.Count}, archiveInvalid(a, err)
	}
	sum, err := finish(Summary{Segments: len(refs)}, v, mem)
	sum.ArchivedBefore = sum.HeadSeq + 1
	return sum, err
}

// VerifyStoreArchive verifies the full chain of a pruned (or not yet pruned)
// store d and its archive a: the archive from genesis, then the store's
// entries after it, all re-folded, and the re-folded state compared with the
// store's. The archive must reach the store's anchor; where both hold an
// entry they must hold the same.
func VerifyStoreArchive(ctx context.Context, d ledger.Driver, a *archive.Archive) (Summary, error) {
	ch, err := archive.ChainOf(ctx, d)
	if err != nil {
		return Summary{}, err
	}
	an, pruned, err := ledger.StoredAnchor(ctx, d)
	if err != nil {
		return Summary{}, invalid(err)
	}
	mem := ledger.NewMemState()
	v := ledger.NewVerifier(modules.Schema(), mem)
	var atCut *ledger.Position // where the archive's chain stands at the store's anchor
	refs, err := a.Walk(ctx, ch.LedgerKey, v, func(s *archive.Segment, pos ledger.Position) error {
		if pruned && s.Last == an.Entry.Seq {
			atCut = &pos
		}
		return nil
	})
	if err != nil {
		return Summary{Entries: v.Count}, archiveInvalid(a, err)
	}
	sum := Summary{Segments: len(refs)}
	next, last := v.Head()
	sum.ArchivedBefore = next
	if es, err := d.Entries(ctx, 0, 1); err != nil || len(es) != 1 || es[0].Hash() != v.Position().LedgerID {
		return sum, invalid(fmt.Errorf("archive %s holds another ledger's chain (its genesis is not the store's)", a))
	}
	if pruned && an.Entry.Seq >= next {
		return sum, invalid(fmt.Errorf("archive %s ends at seq %d, before the store's first kept entry %d: it is not the archive the store was pruned to", a, next-1, an.Entry.Seq+1))
	}
	// The anchor's position beyond its signed entry (the governance set in
	// force) is what start-up trusts without the archive: it must be the
	// archive's.
	if pruned {
		want, _ := json.Marshal(atCut)
		got, _ := json.Marshal(an.Pos)
		if atCut == nil || !bytes.Equal(want, got) {
			return sum, invalid(&ledger.ChainError{Seq: an.Entry.Seq, Err: fmt.Errorf("the store's anchor is not where the chain in archive %s stands at that entry", a)})
		}
	}
	// The store's entry at the archive's end, if it still holds it, is the same.
	if es, err := d.Entries(ctx, next-1, 1); err != nil {
		return sum, err
	} else if len(es) == 1 && es[0].Seq == next-1 && es[0].Hash() != last {
		return sum, invalid(&ledger.ChainError{Seq: next - 1, Err: fmt.Errorf("the store's entry differs from the one in archive %s", a)})
	}
	if err := ledger.FoldStore(ctx, d, v, mem); err != nil {
		return sum, storeProblem(err)
	}
	sum, err = finish(sum, v, mem)
	if err != nil {
		return sum, err
	}
	ledger.View(ctx, d).Scan("", func(string, []byte) error { sum.StateKeys++; return nil })
	return sum, nil
}
