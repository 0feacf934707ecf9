package ledger

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// Signer signs entries on behalf of the enclave and of accounts; the enclave
// implements it. The ledger never sees a private key.
type Signer interface {
	// LedgerKey is the hex ed25519 public key that signs enclave-origin entries.
	LedgerKey() string
	SignLedger(h Hash) ([]byte, error)
	// SignAccount signs with the wallet of account omni.
	SignAccount(omni string, h Hash) ([]byte, error)
}

// Options tune a Ledger; zero values take the defaults.
type Options struct {
	// Genesis builds the genesis payload when the driver holds no entries.
	Genesis func() (*Genesis, error)
	// CheckpointEvery is the number of entries between checkpoints (default 1000).
	CheckpointEvery int
	// CheckpointInterval bounds the time between checkpoints while entries arrive
	// (default 10s).
	CheckpointInterval time.Duration
	// MaxBatch caps how many entries share one transaction (default 1024).
	MaxBatch int
	// StateCache is how many state keys are kept in memory (default 100,000).
	StateCache int
	// MaxSkew is how far in the future a submitted entry's time may be (default 1m).
	MaxSkew time.Duration
	// OnCommit runs in the writer after every durable commit, before any appender is
	// told; in-memory indexes follow the ledger through it.
	OnCommit func([]Entry)
	// CommitTook, if set, runs in the writer after every transaction with how
	// long the store took to make it durable (measured with Now).
	CommitTook func(time.Duration)
	Now        func() time.Time
}

func (o *Options) defaults() {
	if o.CheckpointEvery <= 0 {
		o.CheckpointEvery = 1000
	}
	if o.CheckpointInterval <= 0 {
		o.CheckpointInterval = 10 * time.Second
	}
	if o.MaxBatch <= 0 {
		o.MaxBatch = 1024
	}
	if o.StateCache <= 0 {
		o.StateCache = 100_000
	}
	if o.MaxSkew <= 0 {
		o.MaxSkew = time.Minute
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.OnCommit == nil {
		o.OnCommit = func([]Entry) {}
	}
}

// salter hands out fresh random salts, read from crypto/rand 64 at a time.
type salter struct{ buf []byte }

func (s *salter) next() []byte {
	if len(s.buf) < SaltSize {
		s.buf = make([]byte, 64*SaltSize)
		rand.Read(s.buf) // never fails (crypto/rand crashes the program instead)
	}
	b := s.buf[:SaltSize:SaltSize]
	s.buf = s.buf[SaltSize:]
	return b
}

// ErrClosed is returned for appends after Close.
var ErrClosed = errors.New("ledger: closed")

// ErrForeignLedger means the stored ledger was started by a different seed.
var ErrForeignLedger = errors.New("ledger: genesis names a different enclave ledger key")

// Ledger appends entries through one writer goroutine that commits in groups: all
// appenders waiting at the moment share one transaction and one fsync, and each is
// answered only after its entry is durable.
type Ledger struct {
	d      Driver
	schema Schema
	signer Signer
	opts   Options

	reqs    chan *request
	commits chan *batch  // prepared batches, in chain order, to the committer
	signq   chan signJob // entries to the signing pool (nil until Open succeeds)
	quit    chan struct{}
	done    chan struct{}
	once    sync.Once

	salts salter // payload-commitment salts; used by the preparer only

	head  atomic.Pointer[Head] // last durable entry
	cache *stateCache          // committed state, write-through

	mu      sync.Mutex
	pending []*batch // prepared but not yet committed, oldest first
	gen     uint64   // bumped when a commit fails: later prepared batches are void

	// preparer-goroutine state: the tip includes pending batches
	tip             Head
	tipGen          uint64
	empty           bool
	sinceCheckpoint int
	lastCheckpoint  time.Time
}

// batch is a group of entries prepared (validated, folded, signed) on top of the
// tip, waiting to be committed in one transaction.
type batch struct {
	gen     uint64
	entries []Entry
	hashes  []Hash     // hashes[i] = entries[i].Hash(), computed once when linked
	owners  []*request // owners[i] answers entries[i]; nil for checkpoints
	writes  *overlay
	// refused are requests refused on top of this batch (or later ones): they are
	// answered once it is committed, see answerRefused.
	refused []refusal
}

// refusal is a refused request and why.
type refusal struct {
	r   *request
	err error
}

type request struct {
	origin, kind string
	payload      []byte
	blob         []byte     // stored at BlobKey(sha256(blob)) in the same transaction
	external     *Entry     // pre-signed (governance) entry, nil for enclave/account appends
	group        []*request // AppendAll: entries that are written all together or not at all
	done         chan result
}

type result struct {
	es  []Entry // one entry, or a group's entries
	err error
}

// Open starts a ledger on d, writing genesis first if d is empty.
func Open(ctx context.Context, d Driver, s Schema, signer Signer, opts Options) (*Ledger, error) {
	opts.defaults()
	l := &Ledger{d: d, schema: s, signer: signer, opts: opts,
		reqs: make(chan *request, 4096), commits: make(chan *batch, 64),
		quit: make(chan struct{}), done: make(chan struct{}),
		lastCheckpoint: opts.Now(), empty: true, cache: newStateCache(opts.StateCache)}
	h, ok, err := d.Head(ctx)
	if err != nil {
		return nil, fmt.Errorf("ledger: reading head: %w", err)
	}
	if ok {
		g, err := LoadGenesis(View(ctx, d))
		if err != nil {
			return nil, err
		}
		if g.LedgerKey != signer.LedgerKey() {
			return nil, fmt.Errorf("%w (ledger has %s…, enclave has %s…)", ErrForeignLedger, g.LedgerKey[:16], signer.LedgerKey()[:16])
		}
		l.head.Store(&h)
		l.tip, l.empty = h, false
		if c, ok, err := LastCheckpoint(View(ctx, d)); err != nil {
			return nil, err
		} else if !ok || c.Seq+1 < h.Seq {
			l.sinceCheckpoint = 1 // entries after the last checkpoint: vouch for them soon
		}
	} else {
		if opts.Genesis == nil {
			return nil, errors.New("ledger: empty ledger and no genesis")
		}
		g, err := opts.Genesis()
		if err != nil {
			return nil, err
		}
		g.LedgerKey = signer.LedgerKey()
		p, err := MarshalPayload(g)
		if err != nil {
			return nil, err
		}
		r := &request{origin: OriginEnclave, kind: KindGenesis, payload: p, done: make(chan result, 1)}
		if b := l.prepare([]*request{r}, false); b != nil {
			l.commit([]*batch{b})
		}
		if res := <-r.done; res.err != nil || len(res.es) != 1 {
			return nil, fmt.Errorf("ledger: writing genesis: %w", res.err)
		}
	}
	committed := make(chan struct{})
	l.signers()
	go l.commitLoop(committed)
	go l.run(committed)
	return l, nil
}

// Append signs an entry of kind with origin's key and returns once it is durable.
// payload is marshalled with encoding/json.
func (l *Ledger) Append(ctx context.Context, origin, kind string, payload any) (Entry, error) {
	return l.begin(ctx, &request{origin: origin, kind: kind}, payload)()
}

// AppendBlob is Append that also stores blob, content-addressed at
// BlobKey(hex(SHA-256(blob))), in the same transaction as the entry.
func (l *Ledger) AppendBlob(ctx context.Context, origin, kind string, payload any, blob []byte) (Entry, error) {
	return l.begin(ctx, &request{origin: origin, kind: kind, blob: blob}, payload)()
}

// Begin queues an append like Append and returns at once; wait blocks until the
// entry is durable (or refused) and returns what Append would have. A caller can
// work while its entry is committed: the OIDC mint signs its token meanwhile.
func (l *Ledger) Begin(ctx context.Context, origin, kind string, payload any) (wait func() (Entry, error)) {
	return l.begin(ctx, &request{origin: origin, kind: kind}, payload)
}

// begin marshals payload into r, queues r and returns its wait.
func (l *Ledger) begin(ctx context.Context, r *request, payload any) func() (Entry, error) {
	var err error
	if r.payload, err = MarshalPayload(payload); err != nil {
		err = fmt.Errorf("ledger: %s payload: %w", r.kind, err)
	} else if err = l.enqueue(ctx, r); err == nil {
		return func() (Entry, error) { return first(l.await(ctx, r)) }
	}
	return func() (Entry, error) { return Entry{}, err }
}

func first(es []Entry, err error) (Entry, error) {
	if err != nil {
		return Entry{}, err
	}
	return es[0], nil
}

// Submit appends an entry signed outside the enclave (governance). It must link to
// the current head; if the head moved the result is ErrConflict and the caller
// re-signs against the new head.
func (l *Ledger) Submit(ctx context.Context, e Entry) (Entry, error) {
	return first(l.sendAll(ctx, &request{external: &e}))
}

// Req is one entry of an AppendAll group.
type Req struct {
	Origin, Kind string
	Payload      any
	Blob         []byte // optional, as for AppendBlob
}

// AppendAll appends entries in order and atomically: each is admitted and folded
// on top of the ones before it, and either all are durable when it returns or
// none was written.
func (l *Ledger) AppendAll(ctx context.Context, reqs []Req) ([]Entry, error) {
	if len(reqs) == 0 {
		return nil, nil
	}
	g := &request{group: make([]*request, len(reqs))}
	for i, r := range reqs {
		p, err := MarshalPayload(r.Payload)
		if err != nil {
			return nil, fmt.Errorf("ledger: %s payload: %w", r.Kind, err)
		}
		g.group[i] = &request{origin: r.Origin, kind: r.Kind, payload: p, blob: r.Blob}
	}
	return l.sendAll(ctx, g)
}

func (l *Ledger) sendAll(ctx context.Context, r *request) ([]Entry, error) {
	if err := l.enqueue(ctx, r); err != nil {
		return nil, err
	}
	return l.await(ctx, r)
}

// QueueDepth is how many appends are queued for the writer and not yet taken
// into a batch: a depth that stays high means appends arrive faster than the
// store commits them.
func (l *Ledger) QueueDepth() int { return len(l.reqs) }

// enqueue hands r to the preparer.
func (l *Ledger) enqueue(ctx context.Context, r *request) error {
	r.done = make(chan result, 1)
	select {
	case <-l.quit:
		return ErrClosed
	default:
	}
	select {
	case l.reqs <- r:
		return nil
	case <-l.quit:
		return ErrClosed
	case <-ctx.Done():
		return ctx.Err()
	}
}

// await waits for r's answer.
func (l *Ledger) await(ctx context.Context, r *request) ([]Entry, error) {
	select {
	case res := <-r.done:
		return res.es, res.err
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// Head returns the position of the newest durable entry.
func (l *Ledger) Head() Head { return *l.head.Load() }

// Entries returns up to limit durable entries from seq from.
func (l *Ledger) Entries(ctx context.Context, from uint64, limit int) ([]Entry, error) {
	return l.d.Entries(ctx, from, limit)
}

// State returns a read-only view of the committed state.
func (l *Ledger) State(ctx context.Context) State { return View(ctx, l.reader()) }

func (l *Ledger) reader() Reader { return cachedReader{l.cache, l.d} }

// Schema returns the schema the ledger enforces.
func (l *Ledger) Schema() Schema { return l.schema }

// Close stops the writer after the appends already queued; later appends get ErrClosed.
func (l *Ledger) Close() error {
	l.once.Do(func() { close(l.quit) })
	<-l.done
	return nil
}

// run is the preparer: it groups waiting requests into batches and hands them to
// the committer, so the next batch is validated and signed while the previous one
// is being written and fsynced.
func (l *Ledger) run(committed chan struct{}) {
	defer close(l.done)
	defer close(l.signq)
	defer func() { <-committed }()
	defer close(l.commits)
	tick := time.NewTicker(l.opts.CheckpointInterval)
	defer tick.Stop()
	reqs := make([]*request, 0, l.opts.MaxBatch)
	for {
		var b *batch
		select {
		case r := <-l.reqs:
			reqs = append(reqs[:0], r)
		drain:
			for len(reqs) < l.opts.MaxBatch {
				select {
				case r := <-l.reqs:
					reqs = append(reqs, r)
				default:
					break drain
				}
			}
			b = l.prepare(reqs, false)
		case <-tick.C:
			if l.opts.Now().Sub(l.lastCheckpoint) >= l.opts.CheckpointInterval {
				b = l.prepare(nil, true)
			}
		case <-l.quit:
			for {
				select {
				case r := <-l.reqs:
					r.done <- result{err: ErrClosed}
				default:
					return
				}
			}
		}
		if b != nil {
			l.commits <- b
		}
	}
}

// commitLoop is the committer: it writes prepared batches in order, merging all
// that are waiting into one transaction, and answers their requests only once that
// transaction is durable.
func (l *Ledger) commitLoop(committed chan struct{}) {
	defer close(committed)
	for b := range l.commits {
		group := []*batch{b}
	more:
		for {
			select {
			case b, ok := <-l.commits:
				if !ok {
					break more
				}
				group = append(group, b)
			default:
				break more
			}
		}
		l.commit(group)
	}
}

var errVoid = errors.New("ledger: an earlier commit in the pipeline failed; retry")

// commit writes a group of consecutive batches in one transaction. Batches prepared
// on top of a failed commit are void and fail without touching storage.
func (l *Ledger) commit(group []*batch) {
	l.mu.Lock()
	gen := l.gen
	l.mu.Unlock()
	var live []*batch
	for _, b := range group {
		if b.gen == gen {
			live = append(live, b)
		} else {
			l.failAll(b.owners, errVoid)
		}
	}
	var err error
	if len(live) > 0 {
		entries, writes := live[0].entries, live[0].writes
		if len(live) > 1 {
			writes = newOverlay(nil)
			entries = nil
			for _, b := range live {
				entries = append(entries, b.entries...)
				b.writes.mergeInto(writes)
			}
		}
		list := writes.list()
		start := l.opts.Now()
		err = l.d.Commit(context.Background(), entries, list)
		if l.opts.CommitTook != nil {
			l.opts.CommitTook(l.opts.Now().Sub(start))
		}
		if err == nil {
			l.cache.apply(list)
		}
	}
	l.mu.Lock()
	if err != nil {
		l.gen++ // every batch prepared on top of these is void
	}
	l.pending = slices.DeleteFunc(l.pending, func(p *batch) bool { return slices.Contains(group, p) })
	l.mu.Unlock()
	for _, b := range live {
		if err != nil {
			l.failAll(b.owners, fmt.Errorf("ledger: commit: %w", err))
			continue
		}
		last := b.entries[len(b.entries)-1]
		l.head.Store(&Head{Seq: last.Seq, Hash: b.hashes[len(b.hashes)-1], Time: last.Time})
		l.opts.OnCommit(b.entries)
		for i, r := range b.owners {
			if r != nil {
				n := max(1, len(r.group))
				r.done <- result{es: b.entries[i+1-n : i+1]}
			}
		}
	}
	for _, b := range group { // refused on top of these entries: now they are durable (or failed)
		answer(b.refused)
	}
	// The appenders just answered were made runnable on this goroutine's P. If the
	// committer went straight on to the next commit, that P would sit in fsync
	// with them queued until the runtime takes it back (a sysmon tick, 20 µs to
	// 10 ms); yielding lets them run first, and the next group grows meanwhile
	// (docs/benchmarks.md, OIDC mint: ~3.0k -> ~3.8k tokens/s on 2 cores).
	runtime.Gosched()
}

// base returns the state that the next batch builds on: committed state plus every
// pending batch's writes. After a failed commit it first resets the tip to storage.
func (l *Ledger) base(ctx context.Context) (*overlay, uint64, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.tipGen != l.gen {
		h, ok, err := l.d.Head(ctx)
		if err != nil {
			return nil, 0, err
		}
		l.tip, l.empty, l.tipGen, l.sinceCheckpoint = h, !ok, l.gen, 1
		l.pending = nil // the committer voids them
	}
	var st State = View(ctx, l.reader())
	for _, p := range l.pending {
		st = &overlay{base: st, writes: p.writes.writes}
	}
	return newOverlay(st), l.gen, nil
}

// answer tells refused requests why.
func answer(refused []refusal) {
	for _, f := range refused {
		f.r.done <- result{err: f.err}
	}
}

// answerRefused answers requests refused on top of the tip once every entry they
// were judged against is durable: with the newest pending batch, or now if none
// is pending. So a caller that looks at state again after a refusal (a read that
// lost a race for a grant, a store that lost one for a version) sees what
// refused it, instead of the state before it.
func (l *Ledger) answerRefused(refused []refusal) {
	if len(refused) == 0 {
		return
	}
	l.mu.Lock()
	if n := len(l.pending); n > 0 {
		l.pending[n-1].refused = append(l.pending[n-1].refused, refused...)
		l.mu.Unlock()
		return
	}
	l.mu.Unlock()
	answer(refused)
}

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
		if external {
			if err := l.checkExternal(e, head, empty); err != nil {
				return err
			}
		} else {
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
		k, err := l.schema.admit(sub, &e, external, walletOf)
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
		if err := k.Fold(sub, &e); err != nil {
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

// signerFor names who signs an enclave or account entry; it is part of the hash.
func (l *Ledger) signerFor(st State, origin string) (string, error) {
	if origin == OriginEnclave {
		return l.signer.LedgerKey(), nil
	}
	omni, ok := AccountOf(origin)
	if !ok {
		return "", fmt.Errorf("%w: %s entries must arrive signed", ErrOrigin, origin)
	}
	if l.schema.Wallet == nil {
		return "", fmt.Errorf("%w: no accounts in this ledger", ErrOrigin)
	}
	addr, err := l.schema.Wallet(st, omni)
	if err != nil {
		return "", fmt.Errorf("%w: account %s: %v", ErrOrigin, omni, err)
	}
	return addr, nil
}

// sign signs the entries that the enclave signs: the preparer signs the first
// while the pool signs the others. Pre-signed entries already carry their
// signatures.
func (l *Ledger) sign(entries []Entry, hashes []Hash) error {
	errs := make([]error, len(entries))
	var wg sync.WaitGroup
	first := -1
	for i := range entries {
		switch {
		case entries[i].Sig != nil: // pre-signed (governance)
		case first < 0:
			first = i
		case l.signq == nil: // genesis, written before the pool starts
			errs[i] = l.signOne(&entries[i], hashes[i])
		default:
			wg.Add(1)
			l.signq <- signJob{e: &entries[i], h: hashes[i], err: &errs[i], wg: &wg}
		}
	}
	if first >= 0 {
		errs[first] = l.signOne(&entries[first], hashes[first])
	}
	wg.Wait()
	return errors.Join(errs...)
}

// signJob is one entry for the signing pool.
type signJob struct {
	e   *Entry
	h   Hash
	err *error
	wg  *sync.WaitGroup
}

// signers are the signing pool: GOMAXPROCS goroutines that live as long as the
// preparer (long-lived, so their stacks are grown once, not per batch).
func (l *Ledger) signers() {
	l.signq = make(chan signJob, 256)
	for range runtime.GOMAXPROCS(0) {
		go func() {
			for j := range l.signq {
				*j.err = l.signOne(j.e, j.h)
				j.wg.Done()
			}
		}()
	}
}

func (l *Ledger) signOne(e *Entry, h Hash) error {
	var err error
	if omni, ok := AccountOf(e.Origin); ok {
		e.Sig, err = l.signer.SignAccount(omni, h)
	} else {
		e.Sig, err = l.signer.SignLedger(h)
	}
	if err != nil {
		return fmt.Errorf("ledger: signing seq %d: %w", e.Seq, err)
	}
	return nil
}
