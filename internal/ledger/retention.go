package ledger

import (
	"context"
	"crypto/ed25519"
	"encoding/hex"
	"errors"
	"fmt"
)

// Retention (§3.3): once a range of the chain is exported to an archive
// (package archive) and that export verified, a store may drop the range. It
// keeps genesis (the ledger's identity and the key that signs everything) and
// an Anchor: the last dropped entry, which is always a checkpoint the enclave
// signed, and the chain's Position after it. Verification and start-up resume
// at the anchor; entries before it are read from the archive on request.

// Anchor is where a pruned store's chain resumes.
type Anchor struct {
	// Entry is the last dropped entry: a checkpoint, signed by the enclave's
	// ledger key; its hash is the prev_hash of the first entry kept.
	Entry Entry `json:"entry"`
	// Pos is where the chain stands after Entry, as the walk of the verified
	// archive found it (Next, Prev and PrevTime restate Entry; the governance
	// set in force and Switched are what the archive's walk reached).
	Pos Position `json:"position"`
}

// Pruner is a Driver that can drop entries an archive holds. Both drivers
// implement it; the conformance suite tests it.
type Pruner interface {
	// Anchor returns the store's anchor; ok is false if nothing was dropped.
	Anchor(ctx context.Context) (a Anchor, ok bool, err error)
	// Prune stores a and deletes every entry with 0 < seq <= a.Entry.Seq in one
	// transaction. The store must hold entry a.Entry.Seq with that hash and at
	// least one entry after it; a store whose anchor is already at or past
	// a.Entry.Seq is left as it is.
	Prune(ctx context.Context, a Anchor) error
}

// ErrPrune is wrapped by a driver's Prune when the anchor does not fit the store.
var ErrPrune = errors.New("ledger: cannot prune")

// CheckAnchor checks a's entry against the ledger key of genesis (hex): a
// checkpoint signed by that key, which Pos restates. ledgerID is the genesis
// entry's hash.
func CheckAnchor(a Anchor, ledgerKey string, ledgerID Hash) error {
	e := &a.Entry
	fail := func(msg string) error { return &ChainError{Seq: e.Seq, Err: errors.New("pruning anchor: " + msg)} }
	if e.Kind != KindCheckpoint || e.Origin != OriginEnclave || e.Seq == 0 {
		return fail("not a checkpoint entry")
	}
	h := e.Hash()
	pub, err := hex.DecodeString(ledgerKey)
	if err != nil || len(pub) != ed25519.PublicKeySize || e.Signer != ledgerKey || !ed25519.Verify(pub, h[:], e.Sig) {
		return fail("not signed by the enclave ledger key")
	}
	var c Checkpoint
	if err := decodeStrict(e.Payload, &c); err != nil || c.Seq+1 != e.Seq || c.Hash != e.PrevHash {
		return fail("the checkpoint does not vouch for the entry before it")
	}
	p := a.Pos
	if p.Next != e.Seq+1 || p.Prev != h || p.PrevTime != e.Time || p.LedgerID != ledgerID || p.Gov == nil {
		return fail("the position does not follow the anchor entry")
	}
	return nil
}

// StoredAnchor returns d's anchor, checked (CheckAnchor) against d's genesis;
// ok is false when d dropped nothing (or cannot drop anything).
func StoredAnchor(ctx context.Context, d Driver) (Anchor, bool, error) {
	p, ok := d.(Pruner)
	if !ok {
		return Anchor{}, false, nil
	}
	a, ok, err := p.Anchor(ctx)
	if err != nil || !ok {
		return a, false, err
	}
	g, err := LoadGenesis(View(ctx, d))
	if err != nil {
		return a, false, err
	}
	first, err := d.Entries(ctx, 0, 1)
	if err != nil {
		return a, false, err
	}
	if len(first) != 1 || first[0].Seq != 0 {
		return a, false, &ChainError{Seq: 0, Err: errors.New("the store dropped genesis")}
	}
	if err := CheckAnchor(a, g.LedgerKey, first[0].Hash()); err != nil {
		return a, false, err
	}
	return a, true, nil
}

// verifyGenesisAndAnchor is VerifyFrom's start on a pruned store: genesis checked
// in full, then the anchor.
func verifyGenesisAndAnchor(ctx context.Context, s Schema, d Driver, a Anchor) error {
	es, err := d.Entries(ctx, 0, 1)
	if err != nil {
		return err
	}
	v := NewLinkVerifier(s, View(ctx, d))
	if len(es) != 1 {
		return &ChainError{Seq: 0, Err: errors.New("the store dropped genesis")}
	}
	if err := v.Check(&es[0]); err != nil {
		return err
	}
	if a.Pos.LedgerID != es[0].Hash() {
		return fmt.Errorf("%w: the anchor names another genesis", ErrNotAtPosition)
	}
	return nil
}
