// Package ledgertest is the conformance suite every ledger.Driver must pass, in the
// manner of dex's storage/conformance: one suite, run against every implementation.
package ledgertest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"

	"github.com/agentkeys/agentkeys/internal/ledger"
)

// Opener opens the driver's store. Calling it again must reopen the same store, so
// the suite can check durability, also while the first handle is open: two
// handles on one store are two writers (two brokers on one store); each call to
// newStore gives a fresh store.
type Opener func() (ledger.Driver, error)

// Run runs the conformance suite. newStore returns an Opener for a fresh, empty store.
func Run(t *testing.T, newStore func(t *testing.T) Opener) {
	tests := []struct {
		name string
		fn   func(t *testing.T, open Opener)
	}{
		{"EmptyHead", testEmptyHead},
		{"CommitAndRead", testCommitAndRead},
		{"Conflict", testConflict},
		{"FailedCommitWritesNothing", testFailedCommitWritesNothing},
		{"StateWritesAndScan", testStateWritesAndScan},
		{"Durable", testDurable},
		{"ConcurrentReads", testConcurrentReads},
		{"PayloadCommitments", testPayloadCommitments},
		{"ConcurrentWriters", testConcurrentWriters},
		{"Prune", testPrune},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) { tc.fn(t, newStore(t)) })
	}
}

func mustOpen(t *testing.T, open Opener) ledger.Driver {
	t.Helper()
	d, err := open()
	if err != nil {
		t.Fatalf("open: %v", err)
	}
	t.Cleanup(func() { d.Close() })
	return d
}

// chain builds n linked entries following head (or from genesis when prev is nil):
// odd seqs in format 1 (no salt), even ones in format 2 (a salted commitment).
func chain(prev *ledger.Head, n int) []ledger.Entry {
	var seq uint64
	var ph ledger.Hash
	if prev != nil {
		seq, ph = prev.Seq+1, prev.Hash
	}
	out := make([]ledger.Entry, n)
	for i := range out {
		e := ledger.Entry{Seq: seq, PrevHash: ph, Time: int64(1000 + seq), Kind: "test.kind",
			Origin: ledger.OriginEnclave, Payload: fmt.Appendf(nil, `{"n":%d}`, seq), Signer: "s", Sig: []byte{byte(seq), 1, 2}}
		if seq%2 == 0 {
			e.Salt = bytes.Repeat([]byte{byte(seq), 0xa5}, ledger.SaltSize/2)
		}
		out[i] = e
		seq, ph = seq+1, e.Hash()
	}
	return out
}

func headOf(es []ledger.Entry) *ledger.Head {
	e := es[len(es)-1]
	return &ledger.Head{Seq: e.Seq, Hash: e.Hash(), Time: e.Time}
}

func testEmptyHead(t *testing.T, open Opener) {
	d := mustOpen(t, open)
	if _, ok, err := d.Head(context.Background()); err != nil || ok {
		t.Fatalf("empty store: head ok=%v err=%v, want ok=false", ok, err)
	}
	es, err := d.Entries(context.Background(), 0, 10)
	if err != nil || len(es) != 0 {
		t.Fatalf("empty store: %d entries, err %v", len(es), err)
	}
}

func testCommitAndRead(t *testing.T, open Opener) {
	ctx := context.Background()
	d := mustOpen(t, open)
	first := chain(nil, 3)
	if err := d.Commit(ctx, first, nil); err != nil {
		t.Fatal(err)
	}
	second := chain(headOf(first), 4)
	if err := d.Commit(ctx, second, nil); err != nil {
		t.Fatal(err)
	}
	all := append(slices.Clone(first), second...)
	h, ok, err := d.Head(ctx)
	if err != nil || !ok || h != *headOf(all) {
		t.Fatalf("head = %+v ok=%v err=%v, want %+v", h, ok, err, *headOf(all))
	}
	got, err := d.Entries(ctx, 2, 3)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 3 || got[0].Seq != 2 || got[2].Seq != 4 {
		t.Fatalf("Entries(2,3) returned seqs %v", seqs(got))
	}
	for i, e := range got {
		want := all[2+i]
		if e.Hash() != want.Hash() || !slices.Equal(e.Sig, want.Sig) || !bytes.Equal(e.Salt, want.Salt) || (e.Salt == nil) != (want.Salt == nil) {
			t.Fatalf("entry %d does not round-trip (salt %x, want %x)", e.Seq, e.Salt, want.Salt)
		}
	}
	if got, _ := d.Entries(ctx, 100, 10); len(got) != 0 {
		t.Fatalf("Entries past head returned %v", seqs(got))
	}
}

func testConflict(t *testing.T, open Opener) {
	ctx := context.Background()
	d := mustOpen(t, open)
	base := chain(nil, 2)
	if err := d.Commit(ctx, base, []ledger.Write{{Key: "k", Value: []byte("v1")}}); err != nil {
		t.Fatal(err)
	}
	stale := chain(nil, 1) // links to nothing: a second genesis
	wrongPrev := chain(&ledger.Head{Seq: 1, Hash: ledger.Hash{9}}, 1)
	gap := chain(&ledger.Head{Seq: 5, Hash: headOf(base).Hash}, 1)
	for name, es := range map[string][]ledger.Entry{"second genesis": stale, "wrong prev_hash": wrongPrev, "seq gap": gap} {
		err := d.Commit(ctx, es, []ledger.Write{{Key: "k", Value: []byte("v2")}})
		if !errors.Is(err, ledger.ErrConflict) {
			t.Errorf("%s: err = %v, want ErrConflict", name, err)
		}
	}
	if v, _, _ := d.Get(ctx, "k"); string(v) != "v1" {
		t.Fatalf("state changed by a refused commit: %q", v)
	}
	if h, _, _ := d.Head(ctx); h.Seq != 1 {
		t.Fatalf("head moved by a refused commit: %d", h.Seq)
	}
}

// testFailedCommitWritesNothing: a commit that fails after its first entry
// was written (the second does not follow it) leaves nothing behind, and the
// same handle's next commit goes through.
func testFailedCommitWritesNothing(t *testing.T, open Opener) {
	ctx := context.Background()
	d := mustOpen(t, open)
	base := chain(nil, 2)
	if err := d.Commit(ctx, base, nil); err != nil {
		t.Fatal(err)
	}
	next := chain(headOf(base), 3)
	broken := []ledger.Entry{next[0], next[2]} // seq 2, then 4
	if err := d.Commit(ctx, broken, []ledger.Write{{Key: "k", Value: []byte("v")}}); err == nil || errors.Is(err, ledger.ErrConflict) {
		t.Fatalf("a commit with a gap inside: %v, want a plain error", err)
	}
	if h, _, _ := d.Head(ctx); h.Seq != 1 {
		t.Fatalf("head moved by a failed commit: %d", h.Seq)
	}
	if _, ok, _ := d.Get(ctx, "k"); ok {
		t.Fatal("state written by a failed commit")
	}
	if err := d.Commit(ctx, next, []ledger.Write{{Key: "k", Value: []byte("v")}}); err != nil {
		t.Fatalf("the next commit after a failed one: %v", err)
	}
	if h, _, _ := d.Head(ctx); h.Seq != 4 {
		t.Fatalf("head after the next commit: %d, want 4", h.Seq)
	}
}

func testStateWritesAndScan(t *testing.T, open Opener) {
	ctx := context.Background()
	d := mustOpen(t, open)
	es := chain(nil, 1)
	writes := []ledger.Write{
		{Key: "a/1", Value: []byte("1")}, {Key: "a/2", Value: []byte("2")},
		{Key: "a0", Value: []byte("x")}, {Key: "b/1", Value: []byte("3")},
		{Key: "empty", Value: []byte{}},
	}
	if err := d.Commit(ctx, es, writes); err != nil {
		t.Fatal(err)
	}
	if v, ok, err := d.Get(ctx, "a/2"); err != nil || !ok || string(v) != "2" {
		t.Fatalf("Get a/2 = %q %v %v", v, ok, err)
	}
	if v, ok, err := d.Get(ctx, "empty"); err != nil || !ok || len(v) != 0 {
		t.Fatalf("Get of empty value = %q %v %v", v, ok, err)
	}
	if _, ok, err := d.Get(ctx, "missing"); err != nil || ok {
		t.Fatalf("Get missing: ok=%v err=%v", ok, err)
	}
	if got := scan(t, d, "a/"); !slices.Equal(got, []string{"a/1", "a/2"}) {
		t.Fatalf(`Scan("a/") = %v`, got)
	}
	if got := scan(t, d, ""); len(got) != 5 || !slices.IsSorted(got) {
		t.Fatalf(`Scan("") = %v, want 5 sorted keys`, got)
	}
	es2 := chain(headOf(es), 1)
	if err := d.Commit(ctx, es2, []ledger.Write{{Key: "a/1"}, {Key: "a/2", Value: []byte("22")}}); err != nil {
		t.Fatal(err)
	}
	if got := scan(t, d, "a/"); !slices.Equal(got, []string{"a/2"}) {
		t.Fatalf("after delete Scan = %v", got)
	}
	if v, _, _ := d.Get(ctx, "a/2"); string(v) != "22" {
		t.Fatalf("overwrite lost: %q", v)
	}
}

func testDurable(t *testing.T, open Opener) {
	ctx := context.Background()
	d, err := open()
	if err != nil {
		t.Fatal(err)
	}
	es := chain(nil, 5)
	if err := d.Commit(ctx, es, []ledger.Write{{Key: "k", Value: []byte("v")}}); err != nil {
		t.Fatal(err)
	}
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	d2 := mustOpen(t, open)
	h, ok, err := d2.Head(ctx)
	if err != nil || !ok || h != *headOf(es) {
		t.Fatalf("after reopen head = %+v ok=%v err=%v", h, ok, err)
	}
	if v, _, _ := d2.Get(ctx, "k"); string(v) != "v" {
		t.Fatalf("after reopen state k = %q", v)
	}
}

func testConcurrentReads(t *testing.T, open Opener) {
	ctx := context.Background()
	d := mustOpen(t, open)
	es := chain(nil, 1)
	if err := d.Commit(ctx, es, nil); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for range 4 {
		wg.Go(func() {
			for range 50 {
				got, err := d.Entries(ctx, 0, 1000)
				if err != nil {
					errs <- err
					return
				}
				for i, e := range got {
					if e.Seq != uint64(i) {
						errs <- fmt.Errorf("reader saw seq %d at index %d", e.Seq, i)
						return
					}
				}
			}
		})
	}
	head := headOf(es)
	for range 50 {
		next := chain(head, 2)
		if err := d.Commit(ctx, next, []ledger.Write{{Key: "n", Value: []byte{byte(next[1].Seq)}}}); err != nil {
			t.Fatal(err)
		}
		head = headOf(next)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
}

// testPayloadCommitments: the salt is stored exactly (absent for format 1, so an
// old entry keeps its hash), and a stored format-2 entry redacts to the same hash:
// its payload and salt are covered only through the commitment.
func testPayloadCommitments(t *testing.T, open Opener) {
	ctx := context.Background()
	d := mustOpen(t, open)
	es := chain(nil, 6)
	if err := d.Commit(ctx, es, nil); err != nil {
		t.Fatal(err)
	}
	got, err := d.Entries(ctx, 0, 10)
	if err != nil || len(got) != len(es) {
		t.Fatalf("read back %d entries, %v", len(got), err)
	}
	for i, e := range got {
		if e.Format() != es[i].Format() {
			t.Fatalf("seq %d: format %d stored as %d", e.Seq, es[i].Format(), e.Format())
		}
		r, ok := e.Redact()
		if ok != (e.Format() == 2) {
			t.Fatalf("seq %d (format %d): Redact ok=%v", e.Seq, e.Format(), ok)
		}
		if !ok {
			continue
		}
		if r.Hash() != e.Hash() || r.Payload != nil || r.Salt != nil || *r.Commitment != ledger.PayloadCommitment(es[i].Salt, es[i].Payload) {
			t.Fatalf("seq %d: the redacted entry does not carry the same commitment", e.Seq)
		}
		other := e
		other.Salt = bytes.Repeat([]byte{0xff}, ledger.SaltSize)
		if other.Hash() == e.Hash() {
			t.Fatalf("seq %d: the hash does not cover the salt", e.Seq)
		}
		other = e
		other.Payload = []byte(`{"n":-1}`)
		if other.Hash() == e.Hash() {
			t.Fatalf("seq %d: the hash does not cover the payload", e.Seq)
		}
	}
	if h, _, _ := d.Head(ctx); h != *headOf(es) {
		t.Fatalf("head %+v, want %+v", h, *headOf(es))
	}
}

// testConcurrentWriters: two handles on one store append at once, each reading
// the head and committing on top of it, again on ErrConflict. The store keeps one
// chain: every seq once, no gap, each entry linking to the one before, and every
// entry whose commit succeeded is in it; both handles then see the same head.
func testConcurrentWriters(t *testing.T, open Opener) {
	ctx := context.Background()
	handles := []ledger.Driver{mustOpen(t, open), mustOpen(t, open)}
	// Taking turns, each handle commits on the head the other one moved.
	var turns []ledger.Entry
	for i := range 4 {
		d := handles[i%2]
		h, ok, err := d.Head(ctx)
		if err != nil || ok != (i > 0) {
			t.Fatalf("turn %d: head %+v ok=%v err=%v", i, h, ok, err)
		}
		var prev *ledger.Head
		if ok {
			prev = &h
		}
		es := chain(prev, 1)
		if err := d.Commit(ctx, es, nil); err != nil {
			t.Fatalf("turn %d: handle %d cannot commit on the head the other handle moved: %v", i, i%2, err)
		}
		turns = append(turns, es...)
	}
	const commits = 25        // per writer
	const maxConflicts = 2000 // per writer: more means it cannot make progress
	committed := make([][]ledger.Entry, len(handles))
	errs := make(chan error, len(handles))
	var wg sync.WaitGroup
	for w, d := range handles {
		wg.Go(func() {
			n, conflicts := 0, 0 // commits, conflicts
			for n < commits {
				h, ok, err := d.Head(ctx)
				if err != nil {
					errs <- fmt.Errorf("writer %d: head: %w", w, err)
					return
				}
				var prev *ledger.Head
				if ok {
					prev = &h
				}
				es := chain(prev, 1+n%2)
				for i := range es { // this writer's own payload: a fork would show
					es[i].Payload = fmt.Appendf(nil, `{"writer":%d,"n":%d}`, w, es[i].Seq)
					if i > 0 {
						es[i].PrevHash = es[i-1].Hash()
					}
				}
				switch err := d.Commit(ctx, es, []ledger.Write{{Key: fmt.Sprintf("w/%d", w), Value: []byte{byte(n)}}}); {
				case err == nil:
					committed[w] = append(committed[w], es...)
					n++
				case errors.Is(err, ledger.ErrConflict):
					if conflicts++; conflicts > maxConflicts {
						errs <- fmt.Errorf("writer %d: %d conflicts: the handle does not follow the other's commits", w, conflicts)
						return
					}
				default:
					errs <- fmt.Errorf("writer %d: commit: %w", w, err)
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	all, err := handles[0].Entries(ctx, 0, 10_000)
	if err != nil {
		t.Fatal(err)
	}
	want := len(turns) + len(committed[0]) + len(committed[1])
	if len(all) != want {
		t.Fatalf("the store holds %d entries, the writers committed %d", len(all), want)
	}
	for i, e := range all {
		if e.Seq != uint64(i) {
			t.Fatalf("entry %d has seq %d: a gap or a duplicate", i, e.Seq)
		}
		if i > 0 && e.PrevHash != all[i-1].Hash() {
			t.Fatalf("entry %d does not link to entry %d: a fork", i, i-1)
		}
	}
	for w, es := range committed {
		for _, e := range es {
			if all[e.Seq].Hash() != e.Hash() {
				t.Fatalf("writer %d's committed entry %d is not in the chain", w, e.Seq)
			}
		}
	}
	for i, d := range handles {
		h, ok, err := d.Head(ctx)
		if err != nil || !ok || h != *headOf(all) {
			t.Fatalf("handle %d: head %+v %v %v, want %+v", i, h, ok, err, *headOf(all))
		}
		for w := range handles {
			if v, _, _ := d.Get(ctx, fmt.Sprintf("w/%d", w)); len(v) != 1 || v[0] != commits-1 {
				t.Fatalf("handle %d: writer %d's last state write reads %v", i, w, v)
			}
		}
	}
}

func scan(t *testing.T, d ledger.Driver, prefix string) []string {
	t.Helper()
	var keys []string
	if err := d.Scan(context.Background(), prefix, func(k string, _ []byte) error {
		keys = append(keys, k)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return keys
}

func seqs(es []ledger.Entry) []uint64 {
	out := make([]uint64, len(es))
	for i, e := range es {
		out[i] = e.Seq
	}
	return out
}

// testPrune: a store drops the entries up to an anchor (keeping genesis), keeps
// the anchor durably, refuses an anchor it does not hold or that is its head,
// and goes on appending after the cut.
func testPrune(t *testing.T, open Opener) {
	ctx := context.Background()
	d := mustOpen(t, open)
	p, ok := d.(ledger.Pruner)
	if !ok {
		t.Fatal("the driver does not implement ledger.Pruner")
	}
	if _, ok, err := p.Anchor(ctx); err != nil || ok {
		t.Fatalf("anchor of a fresh store: ok=%v err=%v", ok, err)
	}
	es := chain(nil, 10)
	if err := d.Commit(ctx, es, nil); err != nil {
		t.Fatal(err)
	}
	anchorAt := func(e ledger.Entry) ledger.Anchor {
		return ledger.Anchor{Entry: e, Pos: ledger.Position{Next: e.Seq + 1, Prev: e.Hash(), PrevTime: e.Time}}
	}
	seqs := func() []uint64 {
		t.Helper()
		got, err := d.Entries(ctx, 0, 100)
		if err != nil {
			t.Fatal(err)
		}
		var out []uint64
		for _, e := range got {
			out = append(out, e.Seq)
		}
		return out
	}
	// Refused, changing nothing: the head, an entry that is not the store's, genesis.
	forged := es[4]
	forged.Payload = []byte(`{"n":"forged"}`)
	for name, a := range map[string]ledger.Anchor{"head": anchorAt(es[9]), "forged": anchorAt(forged), "genesis": anchorAt(es[0])} {
		if err := p.Prune(ctx, a); !errors.Is(err, ledger.ErrPrune) {
			t.Errorf("prune at %s: %v, want ErrPrune", name, err)
		}
	}
	if got := seqs(); len(got) != 10 {
		t.Fatalf("a refused prune dropped entries: %v", got)
	}
	if err := p.Prune(ctx, anchorAt(es[4])); err != nil {
		t.Fatal(err)
	}
	if got := seqs(); !slices.Equal(got, []uint64{0, 5, 6, 7, 8, 9}) {
		t.Fatalf("after prune at 4: %v, want genesis and 5..9", got)
	}
	if h, _, _ := d.Head(ctx); h.Seq != 9 {
		t.Fatalf("head after prune: %d", h.Seq)
	}
	// An anchor before the stored one changes nothing.
	if err := p.Prune(ctx, anchorAt(es[2])); err != nil {
		t.Fatalf("pruning less than already pruned: %v", err)
	}
	// Appends continue after the cut; the anchor is durable.
	more := chain(headOf(es), 3)
	if err := d.Commit(ctx, more, nil); err != nil {
		t.Fatalf("append after prune: %v", err)
	}
	d2 := mustOpen(t, open)
	a, ok, err := d2.(ledger.Pruner).Anchor(ctx)
	if err != nil || !ok || a.Entry.Hash() != es[4].Hash() || a.Pos.Next != 5 {
		t.Fatalf("anchor after reopening: ok=%v err=%v seq=%d", ok, err, a.Entry.Seq)
	}
	got, err := d2.Entries(ctx, 1, 1)
	if err != nil || len(got) != 1 || got[0].Seq != 5 || got[0].PrevHash != es[4].Hash() {
		t.Fatalf("first entry after genesis, reopened: %+v %v", got, err)
	}
}
