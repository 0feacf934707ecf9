package ledger

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
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
	// Start, if set, is the last entry the caller built its own indexes from
	// (a walk of the store before Open): Open delivers every stored entry after
	// it to OnCommit before it returns, so entries another process committed
	// meanwhile are not missed. nil: the store's head.
	Start *Head
	// FollowEvery is how often the ledger looks for entries another process
	// committed to the same store (Follow). 0: only when woken (Wake) and when
	// a commit finds that the store's head moved, which is all one process
	// alone on its store needs.
	FollowEvery time.Duration
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
// answered only after its entry is durable. Other processes may append to the
// same store: the writer follows their entries (Follow) before it builds on them.
type Ledger struct {
	d      Driver
	schema Schema
	signer Signer
	opts   Options

	reqs    chan *request
	commits chan *batch     // prepared batches, in chain order, to the committer
	signq   chan signJob    // entries to the signing pool (nil until Open succeeds)
	follows chan chan error // Follow's requests to the committer
	wake    chan struct{}   // Wake: follow soon (capacity 1)
	quit    chan struct{}
	done    chan struct{}
	once    sync.Once

	salts salter // payload-commitment salts; used by the preparer only

	ledgerID Hash // hash of the genesis entry: what governance proposals are bound to

	head atomic.Pointer[Head] // last durable entry the committer delivered to OnCommit
	// caughtUp is when (opts.Now, unix ns) a read of the store last began that
	// found nothing after the local head: a follow that reached the end, or a
	// commit the store accepted on top of it. See Lag.
	caughtUp atomic.Int64
	cache    *stateCache // committed state, write-through

	mu      sync.Mutex
	pending []*batch // prepared but not yet committed, oldest first
	gen     uint64   // bumped when a commit fails or foreign entries are followed: later prepared batches are void
	// resetSince is sinceCheckpoint for the preparer's tip after a gen bump.
	resetSince int

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
	each         []*request // BeginEach: a bundle of appends, each answered on its own
	done         chan result
}

// unbundle appends r to reqs, or the appends it carries if it is a bundle.
func (r *request) unbundle(reqs []*request) []*request {
	if r.each != nil {
		return append(reqs, r.each...)
	}
	return append(reqs, r)
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
		follows: make(chan chan error), wake: make(chan struct{}, 1),
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
		first, err := d.Entries(ctx, 0, 1)
		if err != nil || len(first) != 1 {
			return nil, fmt.Errorf("ledger: reading genesis: %v", err)
		}
		l.ledgerID = first[0].Hash()
		l.head.Store(&h)
		if st := opts.Start; st != nil {
			if st.Seq > h.Seq {
				return nil, fmt.Errorf("ledger: start at seq %d is past the store's head %d", st.Seq, h.Seq)
			}
			l.head.Store(st)
			if _, err := l.follow(ctx); err != nil {
				return nil, err
			}
			h, l.tipGen = l.Head(), l.gen
		}
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
		res := <-r.done
		if res.err != nil || len(res.es) != 1 {
			return nil, fmt.Errorf("ledger: writing genesis: %w", res.err)
		}
		l.ledgerID = res.es[0].Hash()
	}
	l.caughtUp.Store(opts.Now().UnixNano()) // the store was read, or written, just now
	committed := make(chan struct{})
	l.signers()
	go l.commitLoop(committed)
	go l.run(committed)
	if n, ok := d.(Notifier); ok {
		n.Notify(l.Wake)
	}
	return l, nil
}

// ID is the ledger's identity: the hash of its genesis entry. Governance
// proposals are bound to it.
func (l *Ledger) ID() Hash { return l.ledgerID }

// Head returns the position of the newest durable entry.
func (l *Ledger) Head() Head { return *l.head.Load() }

// Lag is how long ago (by Options.Now) the ledger last knew it held every entry
// in the store: when a follow that reached the store's end, or a commit the store
// accepted on the local head, began. Entries another process committed since may
// not have reached OnCommit yet. With FollowEvery set it stays below about that
// interval while the store answers; it grows while the store cannot be read.
func (l *Ledger) Lag() time.Duration {
	return time.Duration(l.opts.Now().UnixNano() - l.caughtUp.Load())
}

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
