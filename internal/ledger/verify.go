package ledger

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"

	"github.com/agentkeys/agentkeys/internal/wallet"
)

// Reasons an entry is refused. Fold errors are wrapped in ErrRejected.
var (
	ErrUnknownKind = errors.New("unknown entry kind")
	ErrOrigin      = errors.New("origin may not submit this kind")
	ErrSignature   = errors.New("bad signature")
	ErrRejected    = errors.New("entry rejected by its kind")
)

// ChainError names the first entry at which a chain fails verification.
type ChainError struct {
	Seq uint64
	Err error
}

func (e *ChainError) Error() string { return fmt.Sprintf("seq %d: %v", e.Seq, e.Err) }
func (e *ChainError) Unwrap() error { return e.Err }

// originSet classifies an origin string.
func originSet(origin string) (OriginSet, error) {
	switch origin {
	case OriginEnclave:
		return FromEnclave, nil
	case OriginGovernance:
		return FromGovernance, nil
	}
	if _, ok := AccountOf(origin); ok {
		return FromAccount, nil
	}
	return 0, fmt.Errorf("%w: %q is not enclave, governance or account:<omni>", ErrOrigin, origin)
}

// admit checks everything about e that does not depend on its position: the kind
// exists and the origin may submit it; when checkSig is set (entries signed
// outside, and every entry under verification) also the entry's form (a canonical
// payload, or a redacted one) and that the signature is the origin's. Entries the
// ledger builds itself have canonical payloads by construction (MarshalPayload).
// st supplies genesis; walletOf the wallet of an account origin; gc what
// governance signatures are checked against.
func (s Schema) admit(st State, e *Entry, checkSig bool, walletOf func(omni string) (string, error), gc govContext) (Kind, error) {
	k, ok := s.kind(e.Kind)
	if !ok {
		return k, fmt.Errorf("%w %q", ErrUnknownKind, e.Kind)
	}
	set, err := originSet(e.Origin)
	if err != nil {
		return k, err
	}
	if k.Origins&set == 0 {
		return k, fmt.Errorf("%w: %s may not submit %q", ErrOrigin, e.Origin, e.Kind)
	}
	if checkSig { // entries from outside: the entry's form and the signature
		if err := e.CheckForm(); err != nil {
			return k, err
		}
		if err := s.checkSig(st, e, k, set, walletOf, gc); err != nil {
			return k, err
		}
	}
	return k, nil
}

// stateWallet looks account wallets up in folded state (Schema.Wallet).
func (s Schema) stateWallet(st State) func(string) (string, error) {
	return func(omni string) (string, error) {
		if s.Wallet == nil {
			return "", fmt.Errorf("%w: no accounts in this ledger", ErrOrigin)
		}
		addr, err := s.Wallet(st, omni)
		if err != nil {
			return "", fmt.Errorf("%w: account %s: %v", ErrOrigin, omni, err)
		}
		return addr, nil
	}
}

func (s Schema) checkSig(st State, e *Entry, k Kind, set OriginSet, walletOf func(string) (string, error), gc govContext) error {
	h := e.Hash()
	var g *Genesis
	if e.Seq == 0 && e.Kind == KindGenesis {
		if e.Redacted() {
			return errors.New("genesis payload withheld")
		}
		g = new(Genesis)
		if err := decodeStrict(e.Payload, g); err != nil {
			return fmt.Errorf("genesis payload: %w", err)
		}
	} else {
		var err error
		if g, err = LoadGenesis(st); err != nil {
			return err
		}
	}
	switch set {
	case FromEnclave:
		pub, err := hex.DecodeString(e.Signer)
		if err != nil || e.Signer != g.LedgerKey || !ed25519.Verify(pub, h[:], e.Sig) {
			return fmt.Errorf("%w: not signed by the enclave ledger key", ErrSignature)
		}
	case FromGovernance:
		if gc.set != nil {
			return verifyGovernance(*gc.set, gc, k, e, h)
		}
		gv, err := CurrentGovernance(st)
		if err != nil {
			return err
		}
		return verifyGovernance(gv, gc, k, e, h)
	case FromAccount:
		omni, _ := AccountOf(e.Origin)
		addr, err := walletOf(omni)
		if err != nil {
			return err
		}
		if !strings.EqualFold(addr, e.Signer) {
			return fmt.Errorf("%w: signer is not the account's wallet", ErrSignature)
		}
		if err := wallet.Verify(addr, h, e.Sig); err != nil {
			return fmt.Errorf("%w: %v", ErrSignature, err)
		}
	}
	return nil
}

// Verifier walks a chain from genesis and checks links, hashes, origins and
// signatures; depending on how it was made it also re-folds the state.
type Verifier struct {
	schema  Schema
	st      State
	mode    verifyMode
	wallets map[string]string // public mode: account omni -> the wallet of its first entry
	pos     Position          // where the chain stands after the last checked entry
	// vouchedBefore: entries before this seq are checked by link only, a
	// checkpoint at that seq, checked in full, vouching for them (VerifyFrom).
	vouchedBefore uint64
	Count         uint64 // entries verified so far
	// Opened counts, in public mode, the private entries that came with their
	// payload (an owner's own, or format-1 entries) and were checked against it.
	Opened uint64
}

type verifyMode uint8

const (
	modeRefold verifyMode = iota // every payload present, every entry folded
	modeLinks                    // links and signatures against already-folded state
	modePublic                   // private entries may be redacted; public kinds folded
)

// NewVerifier returns a verifier that re-folds every entry into st (use NewMemState).
// It needs every payload: a redacted entry fails.
func NewVerifier(s Schema, st State) *Verifier {
	return &Verifier{schema: s, st: st, mode: modeRefold}
}

// NewLinkVerifier returns a verifier that checks links and signatures only, reading
// genesis and wallets from already-folded state (used at server start).
func NewLinkVerifier(s Schema, st State) *Verifier {
	return &Verifier{schema: s, st: &genesisOnce{State: st}, mode: modeLinks}
}

// NewLinkVerifierAt is NewLinkVerifier resuming at p: the next entry it checks
// is p.Next, linking to p.Prev. Entries before it are taken as verified.
func NewLinkVerifierAt(s Schema, st State, p Position) *Verifier {
	v := NewLinkVerifier(s, st)
	v.pos = p
	return v
}

// genesisOnce reads genesis from state once: it never changes, and every
// signature check needs it.
type genesisOnce struct {
	State
	genesis []byte
}

func (g *genesisOnce) Get(key string) ([]byte, bool, error) {
	if key != keyGenesis {
		return g.State.Get(key)
	}
	if g.genesis == nil {
		b, ok, err := g.State.Get(key)
		if err != nil || !ok {
			return b, ok, err
		}
		g.genesis = b
	}
	return g.genesis, true, nil
}

// NewPublicVerifier returns a verifier for the chain as anyone may read it (§3.4):
// entries of private kinds may come redacted to their payload commitment, and are
// then checked by hash, link and signature only; public kinds are re-folded into
// st (use NewMemState), so genesis and checkpoints are checked as well. Account
// entries are checked against the wallet named in the entry, which must stay the
// same for an account along the chain (their binding to the account is in its
// private account.created entry, which --data-dir verification checks).
func NewPublicVerifier(s Schema, st State) *Verifier {
	return &Verifier{schema: s, st: st, mode: modePublic, wallets: map[string]string{}}
}

// boundWallet is public mode's walletOf: the first entry of an account binds its
// wallet, later ones must be signed by the same.
func (v *Verifier) boundWallet(e *Entry) func(string) (string, error) {
	return func(omni string) (string, error) {
		w, ok := v.wallets[omni]
		if !ok {
			w = strings.ToLower(e.Signer)
			v.wallets[omni] = w
		}
		return w, nil
	}
}

// Check verifies the next entry of the chain. Errors are *ChainError.
func (v *Verifier) Check(e *Entry) error {
	fail := func(err error) error { return &ChainError{Seq: v.pos.Next, Err: err} }
	if e.Seq != v.pos.Next {
		return fail(fmt.Errorf("entry is missing or out of order (found seq %d)", e.Seq))
	}
	if e.PrevHash != v.pos.Prev {
		return fail(errors.New("prev_hash does not match the hash of the entry before"))
	}
	if e.Time < v.pos.PrevTime {
		return fail(errors.New("time goes backwards"))
	}
	if (e.Seq == 0) != (e.Kind == KindGenesis) {
		return fail(errors.New("the chain must start with exactly one genesis entry"))
	}
	if e.Seq < v.vouchedBefore { // a signed checkpoint further on vouches for it: its link is enough
		if err := v.pos.advance(e); err != nil {
			return fail(err)
		}
		v.Count++
		return nil
	}
	walletOf := v.schema.stateWallet(v.st)
	if v.mode == modePublic {
		walletOf = v.boundWallet(e)
	}
	k, err := v.schema.admit(v.st, e, true, walletOf, v.pos.gov())
	if err != nil {
		return fail(err)
	}
	switch {
	case e.Redacted() && v.mode != modePublic:
		return fail(errors.New("payload withheld: this check needs every payload (run audit verify --data-dir on the broker's host)"))
	case e.Redacted() && k.Public:
		return fail(fmt.Errorf("payload of public kind %q withheld", e.Kind))
	case e.Format() == 2:
	case v.pos.Switched && !k.Public:
		return fail(fmt.Errorf("private kind %q written without a payload commitment after the chain switched to commitments", e.Kind))
	}
	if v.mode == modeRefold || v.mode == modePublic && k.Public {
		if err := foldCore(k, v.st, e); err != nil {
			return fail(fmt.Errorf("%w: %v", ErrRejected, err))
		}
	} else if v.mode == modePublic && !e.Redacted() {
		v.Opened++
	}
	if err := v.pos.advance(e); err != nil {
		return fail(err)
	}
	v.Count++
	return nil
}

// Position is where a chain stands after an entry: everything a link verifier
// carries from one entry to the next, so that a walk can resume there
// (NewLinkVerifierAt) without re-reading what came before. It is what the
// broker's start-up snapshot records (§3.3).
type Position struct {
	Next     uint64 `json:"next"`      // seq of the entry expected next
	Prev     Hash   `json:"prev"`      // hash of entry Next-1
	PrevTime int64  `json:"prev_time"` // its time
	// Switched: a format-2 entry was seen, so private kinds commit from here on.
	Switched bool `json:"switched"`
	// LedgerID is the hash of genesis; Gov the governance set in force after
	// entry Next-1 (tracked along the chain itself: a link verifier reads final
	// state, in which a later governance.set would stand for the set that
	// signed earlier entries).
	LedgerID Hash        `json:"ledger_id"`
	Gov      *Governance `json:"gov"`
}

func (p *Position) gov() govContext { return govContext{ledgerID: p.LedgerID, set: p.Gov} }

// Advance moves p past es, which must be the entries that follow it, in order
// (it does not check them: a Verifier does). Consumers of
// Options.OnCommit keep a Position current with it.
func (p *Position) Advance(es []Entry) error {
	for i := range es {
		if err := p.advance(&es[i]); err != nil {
			return &ChainError{Seq: es[i].Seq, Err: err}
		}
	}
	return nil
}

func (p *Position) advance(e *Entry) error {
	var gv Governance
	switch e.Kind {
	case KindGenesis:
		var g Genesis
		if err := json.Unmarshal(e.Payload, &g); err != nil {
			return fmt.Errorf("genesis payload: %w", err)
		}
		p.LedgerID, gv = e.Hash(), g.Governance
		p.Gov = &gv
	case KindGovernanceSet:
		if err := json.Unmarshal(e.Payload, &gv); err != nil {
			return fmt.Errorf("governance.set payload: %w", err)
		}
		p.Gov = &gv
	}
	if e.Format() == 2 {
		p.Switched = true
	}
	p.Next, p.Prev, p.PrevTime = e.Seq+1, e.Hash(), e.Time
	return nil
}

// Head returns the position after the last checked entry.
func (v *Verifier) Head() (next uint64, hash Hash) { return v.pos.Next, v.pos.Prev }

// Position returns where the chain stands after the last checked entry.
func (v *Verifier) Position() Position { return v.pos }

// VerifyDriver walks every entry stored in d. With refold, state is re-folded into
// memory and compared with d's stored state; without, only the chain is checked.
// Each page of verified entries is also handed to visit, so that in-memory
// indexes can be built in the same walk.
func VerifyDriver(ctx context.Context, s Schema, d Driver, refold bool, visit ...func([]Entry)) (uint64, error) {
	if !refold {
		_, n, err := VerifyFrom(ctx, s, d, nil, visit...)
		return n, err
	}
	if _, ok, err := StoredAnchor(ctx, d); err != nil {
		return 0, err
	} else if ok {
		return 0, ErrPruned
	}
	mem := NewMemState()
	v := NewVerifier(s, mem)
	err := FoldStore(ctx, d, v, mem, visit...)
	return v.Count, err
}

// settleRounds bounds how often FoldStore compares the state.
const settleRounds = 5

// ErrUnsettled means the store was appended to during every comparison of its
// state, so none of them could conclude.
var ErrUnsettled = fmt.Errorf("ledger: brokers appended to the store during each of %d comparisons of its state with the chain", settleRounds)

// FoldStore checks and folds d's entries after v's position into mem (the
// state v folds into), to the store's end, and compares d's stored state with
// it. A store that brokers write to moves on meanwhile: a commit that lands
// after the walk and before the state is read puts state in the store whose
// entries the walk did not see. So when the state differs and the store has
// entries after the walk, those are checked and folded and the state compared
// again. A commit writes its entries and its state in one transaction, so a
// difference that remains with no new entry is real.
func FoldStore(ctx context.Context, d Driver, v *Verifier, mem *MemState, visit ...func([]Entry)) error {
	var diff error // the last comparison's difference
	for round := 0; ; round++ {
		seen := v.Count
		if err := walk(ctx, d, v, visit); err != nil {
			return err
		}
		switch {
		case diff != nil && v.Count == seen:
			return diff // no entry came since it was found
		case round == settleRounds:
			return ErrUnsettled
		}
		err := CompareState(ctx, mem, d)
		var se *StateMismatchError
		if !errors.As(err, &se) {
			return err // nil, or the state could not be read
		}
		diff = err
	}
}

// ErrPruned means the store dropped entries to an archive: re-folding the state
// needs the archive's entries too (package archive).
var ErrPruned = errors.New("the store dropped its oldest entries to an archive: re-folding the state needs that archive")

// ErrNotAtPosition means the store does not hold the entry a Position names.
var ErrNotAtPosition = errors.New("the store does not hold the entry the position names")

// VerifyFrom checks the links and signatures of the entries stored in d after
// from (nil: every entry, from genesis), reading genesis and wallets from d's
// folded state, and hands each page of verified entries to visit. It returns
// where the chain stands after the last entry, and how many it checked. From a
// position it first checks that d still holds, at from.Next-1, the entry it
// names: anything else (a store restored from an older backup, another
// ledger) is a *ChainError.
func VerifyFrom(ctx context.Context, s Schema, d Driver, from *Position, visit ...func([]Entry)) (Position, uint64, error) {
	v := NewLinkVerifier(s, View(ctx, d))
	if from == nil { // a pruned store: genesis, then the chain from its anchor on
		a, ok, err := StoredAnchor(ctx, d)
		if err != nil {
			return Position{}, 0, err
		}
		if ok {
			if err := verifyGenesisAndAnchor(ctx, s, d, a); err != nil {
				return Position{}, 0, err
			}
			v = NewLinkVerifierAt(s, View(ctx, d), a.Pos)
		}
	} else {
		if from.Next == 0 {
			return Position{}, 0, errors.New("ledger: a position resumes after an entry (next > 0)")
		}
		es, err := d.Entries(ctx, from.Next-1, 1)
		if err != nil {
			return Position{}, 0, err
		}
		if len(es) != 1 || es[0].Seq != from.Next-1 || es[0].Hash() != from.Prev {
			return Position{}, 0, &ChainError{Seq: from.Next - 1, Err: ErrNotAtPosition}
		}
		v = NewLinkVerifierAt(s, View(ctx, d), *from)
	}
	// The last checkpoint vouches for every entry before it: the enclave signed
	// it after admitting them, and its hash covers theirs through the links.
	// Entries up to it are checked by link; it and those after it in full. The
	// stored state only says where to look: the entry found there must be a
	// checkpoint, which the full check of its origin and signature proves.
	if c, ok, err := LastCheckpoint(View(ctx, d)); err != nil {
		return Position{}, 0, err
	} else if ok && c.Seq+1 > v.pos.Next {
		es, err := d.Entries(ctx, c.Seq+1, 1)
		if err != nil {
			return Position{}, 0, err
		}
		if len(es) != 1 || es[0].Seq != c.Seq+1 || es[0].Kind != KindCheckpoint {
			return Position{}, 0, &ChainError{Seq: c.Seq + 1, Err: errors.New("the stored state names a checkpoint entry that is not there")}
		}
		v.vouchedBefore = c.Seq + 1
	}
	err := walk(ctx, d, v, visit)
	if err == nil && v.pos.Next < v.vouchedBefore {
		err = &ChainError{Seq: v.pos.Next, Err: errors.New("the chain ends before the checkpoint that vouches for it")}
	}
	return v.Position(), v.Count, err
}

// walk checks every entry of d from v's next on, a page at a time; the next
// page is read while one is checked (on a big ledger the two take about as
// long as each other).
func walk(ctx context.Context, d Driver, v *Verifier, visit []func([]Entry)) error {
	const size = 1000
	type page struct {
		es  []Entry
		err error
	}
	pages, stop := make(chan page, 1), make(chan struct{})
	defer close(stop)
	start := v.pos.Next
	go func() {
		defer close(pages)
		for from := start; ; {
			es, err := d.Entries(ctx, from, size)
			select {
			case pages <- page{es, err}:
			case <-stop:
				return
			}
			if err != nil || len(es) < size {
				return
			}
			from = es[len(es)-1].Seq + 1
		}
	}()
	for p := range pages {
		if p.err != nil {
			return p.err
		}
		for i := range p.es {
			if err := v.Check(&p.es[i]); err != nil {
				return err
			}
		}
		for _, f := range visit {
			f(p.es)
		}
	}
	return nil
}

// StateMismatchError says the stored state differs from the state re-folded from the chain.
type StateMismatchError struct{ Key, Problem string }

func (e *StateMismatchError) Error() string {
	return fmt.Sprintf("state key %q %s", e.Key, e.Problem)
}

// CompareState reports the first key where stored state differs from want.
func CompareState(ctx context.Context, want *MemState, stored Reader) error {
	seen := map[string]bool{}
	err := stored.Scan(ctx, "", func(k string, v []byte) error {
		if h, ok := strings.CutPrefix(k, BlobPrefix); ok {
			if sum := sha256.Sum256(v); hex.EncodeToString(sum[:]) != h {
				return &StateMismatchError{k, "does not match its content hash"}
			}
			return nil
		}
		seen[k] = true
		w, ok := want.m[k]
		if !ok {
			return &StateMismatchError{k, "is stored but no entry folds to it"}
		}
		if !bytes.Equal(w, v) {
			return &StateMismatchError{k, "differs from the value folded from the chain"}
		}
		return nil
	})
	if err != nil {
		return err
	}
	for _, k := range slices.Sorted(maps.Keys(want.m)) {
		if !seen[k] {
			return &StateMismatchError{k, "is folded from the chain but missing from storage"}
		}
	}
	return nil
}
