// Package broker wires the enclave and the ledger into the broker's services and
// owns their lifecycle: open the enclave (unseal), verify the ledger, then accept
// work. Package api translates HTTP into calls here; nothing here knows HTTP, and
// nothing here ever sees a private key (the enclave signs for it).
package broker

import (
	"cmp"
	"context"
	"crypto/ed25519"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/agentkeys/agentkeys/internal/account"
	"github.com/agentkeys/agentkeys/internal/agent"
	"github.com/agentkeys/agentkeys/internal/archive"
	"github.com/agentkeys/agentkeys/internal/attest"
	"github.com/agentkeys/agentkeys/internal/auditindex"
	"github.com/agentkeys/agentkeys/internal/dpop"
	"github.com/agentkeys/agentkeys/internal/enclave"
	"github.com/agentkeys/agentkeys/internal/ledger"
	"github.com/agentkeys/agentkeys/internal/ledger/ledgerstore"
	"github.com/agentkeys/agentkeys/internal/modules"
	"github.com/agentkeys/agentkeys/internal/oidc"
	"github.com/agentkeys/agentkeys/internal/problem"
	"github.com/agentkeys/agentkeys/internal/ratelimit"
)

// Config configures a broker.
type Config struct {
	DataDir         string
	PlatformKeyFile string // the platform key (sealing secret) file, outside DataDir; see enclave.Config
	PlatformKeyHex  string // AGENTKEYS_PLATFORM_KEY; when set, used instead of PlatformKeyFile
	SignerPublicKey []byte // release-signing public key (mrsigner); nil = dev signer
	// Handoff, when set, makes this broker a successor (§10.3): its data dir
	// holds no seed, and the enclave receives it from the running broker
	// through this function (enclave.Config.Handoff). It creates no operator
	// key: the successor joins the predecessor's ledger.
	Handoff    func(q attest.Quote, hpkePub []byte) ([]byte, error)
	Logger     *slog.Logger
	Registerer prometheus.Registerer // nil = metrics not exported
	Ledger     ledger.Options        // Genesis and OnCommit are set by the broker
	// LedgerURL names the ledger store (package ledgerstore); "" is the embedded
	// SQLite file in DataDir, LedgerPath. It is opened after the enclave.
	LedgerURL string
	// Store, when set, is the ledger store already open (tests, embedders);
	// LedgerURL must then be "". Open takes it over: Close closes it, as does a
	// failed Open.
	Store ledger.Driver
	// DevPlatformKeyInDataDir accepts a platform key inside DataDir
	// (server --dev): a copy of the data dir then unseals everything.
	DevPlatformKeyInDataDir bool

	Issuer         string           // this broker's URL: iss of its tokens, audience of logins
	PublicURLs     []string         // other URLs clients reach the broker at; DPoP proofs must name the Issuer or one of these
	SessionTTL     time.Duration    // owner sessions (default 30 days)
	ReadLimit      int              // credential reads per session per ReadWindow (default 100)
	ReadWindow     time.Duration    // default 1 minute
	MintLimit      int              // identity-token mints (refused ones included) per agent per MintWindow (default 60)
	MintWindow     time.Duration    // default 1 minute
	ApprovalTTL    time.Duration    // how long a pending approval request can be approved (default 10 min)
	ApprovalWindow time.Duration    // how long a grant allows one read (default 2 min)
	Now            func() time.Time // the broker's clock: every expiry, window, limit and timestamp it decides by (ledger entries too unless Ledger.Now is set); nil = time.Now; tests move a clock.Fake
	Anon           AnonLimits       // limits of requests without a session; kinds left out: DefaultAnonLimits
	SignupInvite   bool             // sign-up needs an operator's invite (agentkeys server --signup invite)
	PairTTL        time.Duration    // default lifetime of a pair request (default 10 min; max 1 h)
	AgentTTL       time.Duration    // default agent session TTL (default SessionTTL)
	OIDCAudiences  []string         // audiences identity tokens may be minted for
	OIDCMaxTTL     time.Duration    // longest identity token (default and cap 1 h)
	OIDCSkew       time.Duration    // clock skew allowed to relying parties (default 1 min); rotation windows ≥ OIDCMaxTTL + OIDCSkew

	// Several brokers on one store (§3): what one process keeps in memory by
	// default, a shared implementation makes common. nil: this process's memory.
	// A SharedStore (PostgreSQL) provides both when they are nil.
	Replays  dpop.ReplayStore // used DPoP proofs
	Limiters ratelimit.New    // the read, mint and anonymous limits (default NewMemoryLimiter)
	// On a SharedStore only: how often the ledger polls the store for other
	// brokers' entries besides their notifications (unless Ledger.FollowEvery
	// is set; default DefaultFollowEvery), and how far behind the store the
	// broker may fall before it says it is not ready (Ready, /readyz): the
	// time since its ledger last caught up with the store (ledger.Ledger.Lag;
	// default DefaultMaxLag).
	FollowEvery time.Duration
	MaxLag      time.Duration

	// Archive, when set, is where `agentkeys audit export` wrote the entries a
	// pruned store dropped: the broker reads them from there on request
	// (history.go). nil: entries below the cut are not served.
	Archive *archive.Archive
}

// SharedStore is a ledger store several broker processes open at once
// (PostgreSQL): it wakes the follower when another process commits, and holds
// the DPoP replay store and the limiters the brokers share, so that a proof
// one accepted is refused by all and each limit holds across them.
type SharedStore interface {
	ledger.Notifier
	Replays() dpop.ReplayStore
	Limiters() ratelimit.New
}

// On a SharedStore, unless configured: the follower's poll (the backstop when
// a notification is lost) and the lag past which the broker is not ready.
const (
	DefaultFollowEvery = time.Second
	DefaultMaxLag      = 5 * time.Second
)

// share takes what is shared from a store several brokers open.
func (c *Config) share(s SharedStore) {
	if c.Replays == nil {
		c.Replays = s.Replays()
	}
	if c.Limiters == nil {
		c.Limiters = s.Limiters()
	}
	if c.FollowEvery <= 0 {
		c.FollowEvery = DefaultFollowEvery
	}
	if c.Ledger.FollowEvery <= 0 {
		c.Ledger.FollowEvery = c.FollowEvery
	}
	if c.MaxLag <= 0 {
		c.MaxLag = DefaultMaxLag
	}
}

func (c *Config) defaults() {
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.SessionTTL <= 0 {
		c.SessionTTL = 30 * 24 * time.Hour
	}
	if c.ReadLimit <= 0 {
		c.ReadLimit = 100
	}
	if c.ReadWindow <= 0 {
		c.ReadWindow = time.Minute
	}
	if c.MintLimit <= 0 {
		c.MintLimit = 60
	}
	if c.MintWindow <= 0 {
		c.MintWindow = time.Minute
	}
	if c.ApprovalTTL <= 0 {
		c.ApprovalTTL = 10 * time.Minute
	}
	if c.ApprovalWindow <= 0 {
		c.ApprovalWindow = 2 * time.Minute
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	if c.PairTTL <= 0 {
		c.PairTTL = 10 * time.Minute
	}
	if c.OIDCMaxTTL <= 0 || c.OIDCMaxTTL > oidc.MaxTTL*time.Second {
		c.OIDCMaxTTL = oidc.MaxTTL * time.Second
	}
	if c.OIDCSkew <= 0 {
		c.OIDCSkew = time.Minute
	}
	if c.AgentTTL <= 0 || c.AgentTTL > c.SessionTTL {
		c.AgentTTL = c.SessionTTL
	}
}

// Broker is the running broker.
type Broker struct {
	enc      *enclave.Enclave // the keys; only the broker calls it
	cfg      Config
	log      *slog.Logger
	store    ledger.Driver
	ledger   atomic.Pointer[ledger.Ledger]
	tokens   *sessionKeys
	usage    *auditindex.Index
	archive  *archive.Reader // Config.Archive, checked with the ledger key; nil: none
	pos      position        // where the chain stands after the last entry usage observed
	snaps    snapshots
	kinds    ledger.Schema // Schema(), built once: which kinds are public
	accounts sync.Map      // omni → *account.Account, see (*Broker).account
	agents   agent.Memo
	index    *account.Index
	limiter  *rule // credential reads per session
	// approvalMu serializes looking for a caller's open approval request
	// and filing a new one (see grantFor).
	approvalMu sync.Mutex
	mints      *rule                  // identity-token mints per account
	signs      *rule                  // DKIM signings per agent (mail_sign.go), as many as mints
	anon       anonLimiters           // requests without a session, per source and in all
	proofs     *dpop.Verifier         // DPoP proofs: checks and replay cache
	htuBases   []string               // normalised Issuer and PublicURLs: a proof's htu is one of them + the request path
	status     atomic.Pointer[string] // why not ready; nil once ready
	metrics    *metrics
	oidc       oidcState
	// OperatorKeyCreated is set when this start created the operator key.
	OperatorKeyCreated bool
}

// Schema is every ledger kind the broker accepts: those of the module list
// (modules.Schema), which audit verify checks against too.
func Schema() ledger.Schema { return modules.Schema() }

// LedgerPath is where the embedded ledger lives in a data dir (the default store).
func LedgerPath(dataDir string) string { return filepath.Join(dataDir, "ledger.db") }

// OperatorKeyPath is where the first start puts the 1-of-1 governance key.
func OperatorKeyPath(dataDir string) string { return filepath.Join(dataDir, "operator.key") }

// Open unseals the enclave and opens the ledger store. The broker is not ready
// until Start has verified the chain.
func Open(cfg Config) (_ *Broker, err error) {
	defer func() {
		if err != nil && cfg.Store != nil { // not yet handed to the broker, whose Close closes it
			cfg.Store.Close()
		}
	}()
	cfg.defaults()
	var src ledgerstore.Source
	switch {
	case cfg.Store != nil && cfg.LedgerURL != "":
		return nil, errors.New("broker: set the ledger store or its URL, not both")
	case cfg.Store == nil:
		u := cfg.LedgerURL
		if u == "" {
			u = ledgerstore.SQLite(LedgerPath(cfg.DataDir))
		}
		if src, err = ledgerstore.Parse(u); err != nil {
			return nil, err
		}
	}
	for _, a := range cfg.OIDCAudiences {
		if !validAudience(a) {
			return nil, fmt.Errorf("OIDC audience %q: use 1-256 printable characters without spaces", a)
		}
	}
	bases, err := htuBases(cfg.Issuer, cfg.PublicURLs)
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return nil, fmt.Errorf("creating data dir %s: %w", cfg.DataDir, err)
	}
	// The store first: a database that cannot be reached refuses the start
	// before the enclave creates anything in a new data dir.
	if cfg.Store == nil {
		if cfg.Store, err = src.Open(); err != nil {
			return nil, err
		}
	}
	enc, err := enclave.Open(enclave.Config{Dir: cfg.DataDir, PlatformKeyFile: cfg.PlatformKeyFile, PlatformKeyHex: cfg.PlatformKeyHex,
		DevPlatformKeyInDir: cfg.DevPlatformKeyInDataDir, SignerPublicKey: cfg.SignerPublicKey, Handoff: cfg.Handoff, Now: cfg.Now})
	if err != nil {
		return nil, err
	}
	if s, ok := cfg.Store.(SharedStore); ok {
		cfg.share(s)
	} else {
		cfg.MaxLag = 0 // alone on its store, the broker is never behind it
	}
	mk := cfg.Limiters
	if mk == nil {
		mk = NewMemoryLimiter
	}
	b := &Broker{enc: enc, cfg: cfg, log: cfg.Logger, metrics: newMetrics(cfg.Registerer),
		index:   account.NewIndex(),
		limiter: newRule(mk, ratelimit.Rule{Name: "read", Count: cfg.ReadLimit, Window: cfg.ReadWindow}),
		mints:   newRule(mk, ratelimit.Rule{Name: "mint", Count: cfg.MintLimit, Window: cfg.MintWindow}),
		signs:   newRule(mk, ratelimit.Rule{Name: "dkim-sign", Count: cfg.MintLimit, Window: cfg.MintWindow}),
		anon:    newAnonLimiters(cfg.Anon, mk), proofs: dpop.NewVerifier(0, cfg.Now), htuBases: bases, kinds: Schema()}
	if cfg.Replays != nil {
		b.proofs = dpop.NewSharedVerifier(cfg.Replays, cfg.Now)
	}
	m := enc.Measurements()
	b.oidc.enclave = oidc.Enclave{MrEnclave: hex.EncodeToString(m.MrEnclave[:]), MrSigner: hex.EncodeToString(m.MrSigner[:]), Tier: string(m.Tier)}
	if b.tokens, err = newSessionKeys(enc, cfg.Issuer, cfg.Now, b.committedState); err != nil {
		enc.Close()
		return nil, err
	}
	notReady := "unsealed; verifying the ledger"
	b.status.Store(&notReady)
	b.store, cfg.Store = cfg.Store, nil
	b.usage = auditindex.New(usageSource{b})
	if cfg.Archive != nil {
		b.archive = archive.NewReader(cfg.Archive, signer{enc}.LedgerKey())
	}
	if _, ok, err := b.store.Head(context.Background()); err != nil {
		b.Close()
		return nil, err
	} else if !ok && cfg.Handoff == nil {
		if _, set, err := loadGenesisGovernance(cfg.DataDir); err != nil {
			b.Close()
			return nil, err
		} else if !set { // no governance set chosen (agentkeys governance init): the operator key, 1-of-1
			if b.OperatorKeyCreated, err = ensureOperatorKey(OperatorKeyPath(cfg.DataDir)); err != nil {
				b.Close()
				return nil, err
			}
		}
	}
	return b, nil
}

// Start verifies the stored chain (hashes, links, origins, signatures) and then
// opens the ledger for appends. On failure the broker stays not ready.
//
// Brokers starting at once on an empty shared store race to write genesis:
// the one that loses (or that found the store empty while walking it and
// filled by the time it opened the ledger) starts again on the winner's chain,
// which it joins only if its sealed seed is the same (else ErrForeignLedger).
func (b *Broker) Start(ctx context.Context) error {
	for attempt := 1; ; attempt++ {
		err := b.start(ctx)
		if !errors.Is(err, errGenesisRace) || attempt == 5 {
			return err
		}
		b.log.Info("another broker created the ledger while this one started; starting again on its chain")
	}
}

// errGenesisRace means another process wrote genesis while this one started.
var errGenesisRace = errors.New("another broker created the ledger while this one started")

func (b *Broker) start(ctx context.Context) error {
	start := time.Now()
	// Resume from this broker's start-up snapshot if it has a usable one: only
	// the entries after it are verified (§3.3).
	snap, why := b.loadSnapshot()
	var from *ledger.Position
	if snap != nil {
		from = &snap.Pos
		b.usage.Restore(snap.Usage)
	} else if err := b.observeArchived(ctx); err != nil {
		b.log.Warn("the usage index starts at the store's anchor", "err", err)
	}
	pos, n, err := ledger.VerifyFrom(ctx, Schema(), b.store, from, b.usage.Observe)
	if errors.Is(err, ledger.ErrNotAtPosition) {
		// The store no longer holds the entry the snapshot names (restored
		// from an older backup, or that entry changed): verify everything.
		why = "start-up snapshot ignored: " + err.Error()
		from = nil
		b.usage.Restore(auditindex.Snapshot{}) // empty: observe every entry again
		if err := b.observeArchived(ctx); err != nil {
			b.log.Warn("the usage index starts at the store's anchor", "err", err)
		}
		pos, n, err = ledger.VerifyFrom(ctx, Schema(), b.store, nil, b.usage.Observe)
	}
	if err != nil {
		msg := fmt.Sprintf("ledger verification failed: %v", err)
		b.status.Store(&msg)
		return problem.New(problem.LedgerInvalid, msg, "restore the ledger from a backup, or inspect it with `agentkeys audit verify --data-dir`; the server will not serve from a broken chain")
	}
	var walked *ledger.Head // the last entry verified: the ledger follows the store from there
	if pos.Next > 0 {
		walked = &ledger.Head{Seq: pos.Next - 1, Hash: pos.Prev, Time: pos.PrevTime}
	}
	b.pos.set(pos)
	walkedSnap, saveWalked := b.captureSnapshot() // before Open moves the indexes on
	saveWalked = saveWalked && n > 0
	opts := b.cfg.Ledger
	opts.Genesis, opts.Start = b.genesis, walked
	if opts.Now == nil {
		opts.Now = b.cfg.Now
	}
	var ownGenesis atomic.Bool // this process committed genesis (walked is nil)
	opts.OnCommit = func(es []ledger.Entry) {
		if es[0].Seq == 0 {
			ownGenesis.Store(true)
		}
		b.index.Observe(es)
		b.usage.Observe(es)
		b.pos.advance(es)
		b.snapshotCommitted(len(es))
		b.metrics.committed(es)
		b.oidcObserve(es)
		b.tokens.observe(es)
	}
	opts.CommitTook = b.metrics.commitTook
	if err := b.index.Load(ctx, ledger.View(ctx, b.store)); err != nil {
		return err
	}
	l, err := ledger.Open(ctx, b.store, b.schema(), signer{b.enc}, opts)
	if walked == nil && (errors.Is(err, ledger.ErrConflict) || err == nil && !ownGenesis.Load()) {
		// The store was empty when walked, and another process wrote genesis
		// since: walk again (indexes observe each entry once, by seq).
		if l != nil {
			l.Close()
		}
		return errGenesisRace
	}
	if errors.Is(err, ledger.ErrForeignLedger) {
		msg := err.Error()
		b.status.Store(&msg)
		return problem.Wrap(err, problem.LedgerInvalid, "this broker's sealed seed is not the one that created the ledger: give it a copy of seed.sealed from a broker on this ledger and the same platform key (docs/scale-out.md), or point --ledger at its own database",
			"%v", err)
	}
	if err != nil {
		msg := err.Error()
		b.status.Store(&msg)
		return err
	}
	// Before the ledger is served: no key is published or signs before it is on
	// the registry.
	if err := b.registerGenesisOidcKey(ctx, l); err != nil {
		l.Close()
		msg := err.Error()
		b.status.Store(&msg)
		return err
	}
	if err := b.dropOrphanOperatorKey(l.State(ctx)); err != nil {
		l.Close()
		msg := err.Error()
		b.status.Store(&msg)
		return err
	}
	b.warnGovernanceFile(l.State(ctx))
	b.ledger.Store(l)
	b.metrics.follow(l)
	b.status.Store(nil)
	b.metrics.ready.Set(1)
	verifiedFrom := uint64(0)
	if from != nil {
		verifiedFrom = from.Next
	}
	b.log.Info("ledger verified", "entries", n, "from_seq", verifiedFrom, "head_seq", l.Head().Seq, "took", time.Since(start).String(), "snapshot", cmp.Or(why, "used"))
	if saveWalked {
		b.snaps.background(func() { b.writeSnapshot(walkedSnap) })
	}
	return nil
}

// Ready reports whether the broker serves requests, and why not.
func (b *Broker) Ready() (bool, string) {
	if s := b.status.Load(); s != nil {
		return false, *s
	}
	if l := b.ledger.Load(); l != nil && b.cfg.MaxLag > 0 {
		if lag := l.Lag(); lag > b.cfg.MaxLag {
			return false, fmt.Sprintf("behind the ledger store: last caught up with it %s ago, more than %s; check the connection to the database",
				lag.Round(time.Millisecond), b.cfg.MaxLag)
		}
	}
	return true, ""
}

// Ledger returns the ledger, or a NOT_READY problem before Start succeeded.
func (b *Broker) Ledger() (*ledger.Ledger, error) {
	l := b.ledger.Load()
	if l == nil {
		_, why := b.Ready()
		return nil, problem.New(problem.NotReady, "the broker is not ready: "+why, "wait for /readyz to report ready; check the server log if it does not")
	}
	return l, nil
}

// committedState is the ledger's committed state once it is open.
func (b *Broker) committedState() (ledger.State, bool) {
	l := b.ledger.Load()
	if l == nil {
		return nil, false
	}
	return l.State(context.Background()), true
}

// Storage is read access to stored entries and state, available before ready.
func (b *Broker) Storage() ledger.Driver { return b.store }

// Close stops the ledger, closes the store and zeroes the enclave.
func (b *Broker) Close() {
	if l := b.ledger.Load(); l != nil {
		l.Close()
		b.snaps.wait()
		if s, ok := b.captureSnapshot(); ok { // the next start verifies only what is committed after this
			b.writeSnapshot(s)
		}
	}
	if b.store != nil {
		b.store.Close()
	}
	b.enc.Close()
}

func (b *Broker) genesis() (*ledger.Genesis, error) {
	gv, ok, err := loadGenesisGovernance(b.cfg.DataDir)
	if err != nil {
		return nil, err
	}
	if !ok {
		op, err := LoadOperatorKey(OperatorKeyPath(b.cfg.DataDir))
		if err != nil {
			return nil, err
		}
		gv = ledger.Governance{Threshold: 1, Keys: []string{hex.EncodeToString(op.Public().(ed25519.PublicKey))}}
	}
	m := b.oidc.enclave // the measurements, hex-encoded at Open
	g := &ledger.Genesis{
		MrEnclave:  m.MrEnclave,
		MrSigner:   m.MrSigner,
		Tier:       m.Tier,
		Governance: gv,
	}
	for _, k := range b.enc.Keys() {
		g.Keys = append(g.Keys, ledger.PublicKey(k))
	}
	return g, nil
}

// signer lets the ledger sign through the enclave.
type signer struct{ e *enclave.Enclave }

func (s signer) LedgerKey() string {
	k, err := s.e.PublicKey("ledger/v1")
	if err != nil {
		panic("enclave cannot derive ledger/v1: " + err.Error()) // derivation of a fixed path cannot fail on an open enclave
	}
	return k.Public
}

func (s signer) SignLedger(h ledger.Hash) ([]byte, error) { return s.e.SignEd25519("ledger/v1", h[:]) }

func (s signer) SignAccount(omni string, h ledger.Hash) ([]byte, error) {
	return s.e.SignWallet(omni, h)
}

var errNoOperatorKey = errors.New("operator key")

// Issuer returns the broker's URL as it appears in tokens.
func (b *Broker) Issuer() string { return b.cfg.Issuer }
