package broker

import (
	"context"
	"errors"
	"fmt"
	"os"

	"github.com/agentkeys/agentkeys/internal/ledger"
	"github.com/agentkeys/agentkeys/internal/problem"
)

// Retention (§3.3): a store pruned by `agentkeys audit prune` holds genesis and
// the entries after its anchor; the entries it dropped are in the archive they
// were exported to. With Config.Archive the broker reads them from there, each
// segment checked with the enclave's ledger key, so the read API, owners'
// usage and audit verify --server see the whole chain; without it, a page
// below the cut is refused with the fix, and usage shows the rows after it.

// history returns up to limit entries from seq from on: from the store, and
// for entries it dropped, from the archive. A page is short only at the head
// (readers stop there). strict: a range dropped without an archive to read it
// from is an error; otherwise it is skipped.
func (b *Broker) history(ctx context.Context, from uint64, limit int, strict bool) ([]ledger.Entry, error) {
	var out []ledger.Entry
	for len(out) < limit {
		es, err := b.historyRun(ctx, from, limit-len(out), strict)
		if err != nil {
			return nil, err
		}
		if len(es) == 0 {
			break
		}
		out = append(out, es...)
		from = es[len(es)-1].Seq + 1
	}
	return out, nil
}

// historyRun is history's one read: contiguous entries from the store, or from
// the archive up to the cut at most (or, not strict and without the archive,
// the store's entries after the range it dropped).
func (b *Broker) historyRun(ctx context.Context, from uint64, limit int, strict bool) ([]ledger.Entry, error) {
	es, err := b.store.Entries(ctx, from, limit)
	if err != nil || len(es) == 0 {
		return es, err
	}
	if es[0].Seq == from {
		for i := 1; i < len(es); i++ { // genesis, then the first entry after the cut
			if es[i].Seq != es[i-1].Seq+1 {
				return es[:i], nil
			}
		}
		return es, nil
	}
	kept := es[0].Seq // the store dropped [from, kept)
	if b.archive != nil {
		old, err := b.archive.Entries(ctx, from, int(min(uint64(limit), kept-from)))
		if err != nil {
			b.log.Error("reading archived entries failed", "from", from, "err", err)
			return nil, problem.Wrap(err, problem.Internal, "the operator checks the archive: agentkeys audit verify --archive",
				"entries %d-%d are archived and could not be read from the archive", from, kept-1)
		}
		if len(old) > 0 {
			return old, nil
		}
	}
	if !strict {
		return es, nil
	}
	return nil, problem.Newf(problem.NotFound, "ask for entries from seq "+fmt.Sprint(kept)+" on; the operator serves older ones by starting the server with --archive naming the archive they were exported to",
		"entries %d-%d were archived and dropped from this broker's ledger store", from, kept-1)
}

// usageSource is what the usage index reads entries back from: history,
// skipping archived ranges it cannot read.
type usageSource struct{ b *Broker }

func (s usageSource) Entries(ctx context.Context, from uint64, limit int) ([]ledger.Entry, error) {
	return s.b.history(ctx, from, limit, false)
}

// observeArchived files the archived entries before the store's anchor in the
// usage index: at a start without a snapshot, on a pruned store, with an
// archive. Without an archive, usage starts at the cut.
func (b *Broker) observeArchived(ctx context.Context) error {
	a, ok, err := ledger.StoredAnchor(ctx, b.store)
	if err != nil || !ok || b.archive == nil {
		return err
	}
	for from := uint64(1); from <= a.Entry.Seq; {
		es, err := b.archive.Entries(ctx, from, 10_000)
		if err != nil {
			return fmt.Errorf("reading the archive: %w", err)
		}
		if len(es) == 0 {
			return fmt.Errorf("the archive ends at seq %d, before the store's anchor at %d: is --archive the one the store was pruned to?", from-1, a.Entry.Seq)
		}
		b.usage.Observe(es)
		from = es[len(es)-1].Seq + 1
	}
	return nil
}

// dropOrphanOperatorKey removes the operator key this start created if the
// ledger's genesis does not name it: another broker on the same store wrote
// genesis first (with its own operator key), so this one could never sign.
func (b *Broker) dropOrphanOperatorKey(st ledger.State) error {
	if !b.OperatorKeyCreated {
		return nil
	}
	path := OperatorKeyPath(b.cfg.DataDir)
	k, err := LoadOperatorKey(path)
	if err != nil {
		return err
	}
	g, err := ledger.LoadGenesis(st)
	if err != nil {
		return err
	}
	pub := fmt.Sprintf("%x", k.Public())
	for _, m := range g.Governance.Keys {
		if m == pub {
			return nil
		}
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("removing the operator key another broker's genesis made useless: %w", err)
	}
	b.OperatorKeyCreated = false
	b.log.Info("removed the operator key this start created: another broker wrote genesis first, so the governance key is that broker's operator.key (back that one up)",
		"path", path)
	return nil
}
