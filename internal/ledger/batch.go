package ledger

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
)

// prepare turns requests into entries on top of the tip: validate, fold, link and
// sign them. Refused requests are answered once what they were judged against is
// durable (answerRefused); the rest travel in the batch.
// With checkpoint set, a checkpoint closes the batch if anything was written since
// the last one.
func (l *Ledger) prepare(reqs []*request, checkpoint bool) *batch {
	ctx := context.Background()
	base, gen, err := l.base(ctx)
	if err != nil {
		l.failAll(reqs, err)
		return nil
	}
	var refused []refusal
	head, empty := l.tip, l.empty
	b := &batch{gen: gen, writes: base, entries: make([]Entry, 0, len(reqs)+1), owners: make([]*request, 0, len(reqs)+1)}
	since, checkpointed := l.sinceCheckpoint, false

	// add admits e on top of the tip, folds it into the overlay into, and appends
	// it to the batch, answered to r (nil: nobody waits for this entry).
	add := func(r *request, e Entry, external bool, into *overlay, blob []byte) error {
		if external && !IsProposal(&e) {
			if err := l.checkExternal(e, head, empty); err != nil {
				return err
			}
		} else { // the ledger places its own entries, and proposals (their signatures do not cover the place)
			if e.Redacted() {
				return fmt.Errorf("%w: a submitted entry carries its payload, not a commitment", ErrRejected)
			}
			e.Time = max(l.opts.Now().UnixNano(), head.Time)
			if !empty {
				e.Seq, e.PrevHash = head.Seq+1, head.Hash
			}
			e.Salt = l.salts.next()
		}
		sub := newOverlay(into)
		if blob != nil {
			sum := sha256.Sum256(blob)
			sub.Put(BlobKey(hex.EncodeToString(sum[:])), blob)
		}
		var walletOf func(string) (string, error)
		if external {
			walletOf = l.schema.stateWallet(sub)
		}
		k, err := l.schema.admit(sub, &e, external, walletOf, govContext{ledgerID: l.ledgerID})
		if err != nil {
			return err
		}
		if external && !k.Public && e.Format() != 2 {
			return fmt.Errorf("%w: an entry of private kind %q needs a %d-byte salt (format 2)", ErrRejected, e.Kind, SaltSize)
		}
		if !external {
			if e.Signer, err = l.signerFor(sub, e.Origin); err != nil {
				return err
			}
		}
		if err := foldCore(k, sub, &e); err != nil {
			return fmt.Errorf("%w: %w", ErrRejected, err) // callers may match the fold's own error
		}
		sub.mergeInto(into)
		h := e.Hash()
		head, empty = Head{Seq: e.Seq, Hash: h, Time: e.Time}, false
		b.entries, b.hashes, b.owners = append(b.entries, e), append(b.hashes, h), append(b.owners, r)
		if e.Kind == KindCheckpoint {
			since, checkpointed = 0, true
		} else {
			since++
		}
		return nil
	}
	// addGroup adds a group's entries, or none of them.
	addGroup := func(r *request) error {
		h, em, sn, n := head, empty, since, len(b.entries)
		gov := newOverlay(base)
		for i, g := range r.group {
			owner := (*request)(nil)
			if i == len(r.group)-1 {
				owner = r
			}
			if err := add(owner, Entry{Kind: g.kind, Origin: g.origin, Payload: g.payload}, false, gov, g.blob); err != nil {
				head, empty, since = h, em, sn
				b.entries, b.hashes, b.owners = b.entries[:n], b.hashes[:n], b.owners[:n]
				return fmt.Errorf("entry %d of %d (%s): %w", i+1, len(r.group), g.kind, err)
			}
		}
		gov.mergeInto(base)
		return nil
	}
	addCheckpoint := func() bool {
		if err := add(nil, l.checkpointEntry(head), false, base, nil); err != nil {
			l.failAll(b.owners, err)
			l.answerRefused(refused)
			return false
		}
		return true
	}
	for _, r := range reqs {
		var err error
		switch {
		case r.group != nil:
			err = addGroup(r)
		case r.external != nil:
			err = add(r, *r.external, true, base, nil)
		default:
			err = add(r, Entry{Kind: r.kind, Origin: r.origin, Payload: r.payload}, false, base, r.blob)
		}
		if err != nil {
			refused = append(refused, refusal{r, err})
			continue
		}
		if since >= l.opts.CheckpointEvery && !addCheckpoint() {
			return nil
		}
	}
	if checkpoint && since > 0 && !addCheckpoint() {
		return nil
	}
	if len(b.entries) == 0 {
		l.answerRefused(refused)
		return nil
	}
	if err := l.sign(b.entries, b.hashes); err != nil {
		l.failAll(b.owners, err)
		l.answerRefused(refused)
		return nil
	}
	b.refused = refused
	l.mu.Lock()
	l.pending = append(l.pending, b)
	l.mu.Unlock()
	l.tip, l.empty, l.sinceCheckpoint = head, false, since
	if checkpointed {
		l.lastCheckpoint = l.opts.Now()
	}
	return b
}

func (l *Ledger) checkpointEntry(head Head) Entry {
	p, _ := MarshalPayload(Checkpoint{Seq: head.Seq, Hash: head.Hash})
	return Entry{Kind: KindCheckpoint, Origin: OriginEnclave, Payload: p}
}

func (l *Ledger) failAll(owners []*request, err error) {
	for _, r := range owners {
		if r != nil {
			r.done <- result{err: err}
		}
	}
}

// checkExternal checks that a pre-signed entry links to the head and has a sane time.
func (l *Ledger) checkExternal(e Entry, head Head, empty bool) error {
	if empty || e.Seq != head.Seq+1 || e.PrevHash != head.Hash {
		return fmt.Errorf("%w (head is seq %d)", ErrConflict, head.Seq)
	}
	if e.Time < head.Time {
		return fmt.Errorf("%w: time is before the head's time", ErrRejected)
	}
	if e.Redacted() {
		return fmt.Errorf("%w: a submitted entry carries its payload, not a commitment", ErrRejected)
	}
	if e.Time > l.opts.Now().Add(l.opts.MaxSkew).UnixNano() {
		return fmt.Errorf("%w: time is more than %s in the future", ErrRejected, l.opts.MaxSkew)
	}
	return nil
}
