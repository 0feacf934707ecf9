// Package mailedge is the SMTP side of the mail edge (§9): the inbound MX
// that writes each message, raw and unparsed, into the object store under its
// inbox's prefix, and the submission server agents send through.
//
// Inbound it takes mail only for its configured domains and only for live
// inboxes (550 at RCPT otherwise), refuses a message over the size limit
// (552) and a sender address or recipient over its rate (451), records
// SPF, DKIM and DMARC as one Authentication-Results header field prepended to
// the message, and answers 250 only once the store holds the message durably.
// It writes nothing to the ledger and parses no body.
//
// Submission takes an agent's identity token (SASL OAUTHBEARER, checked by a
// Verifier), lets it send only as an inbox it holds the send right on
// (envelope and header From), delivers to our own inboxes the same way as
// inbound and relays every other recipient to the configured smarthost.
//
// What it asks the broker goes through a Directory (in process, or over HTTP
// for agentkeys mail-edge). It never logs a message's bytes or a token.
package mailedge

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/emersion/go-smtp"

	"github.com/agentkeys/agentkeys/internal/blobstore"
	"github.com/agentkeys/agentkeys/internal/mail"
	"github.com/agentkeys/agentkeys/internal/ratelimit"
)

// Defaults.
const (
	DefaultMaxSize       = 25 << 20 // bytes of one message (--mail-max-size)
	DefaultMaxConns      = 200      // open connections per listener
	DefaultMaxRecipients = 50       // recipients per message
	dnsTimeout           = 10 * time.Second
)

// Rate is a limit: Count per Window.
type Rate struct {
	Count  int
	Window time.Duration
}

// String is COUNT/WINDOW, e.g. 100/1m.
func (r Rate) String() string {
	w := r.Window.String()
	switch {
	case r.Window%time.Hour == 0:
		w = fmt.Sprintf("%dh", r.Window/time.Hour)
	case r.Window%time.Minute == 0:
		w = fmt.Sprintf("%dm", r.Window/time.Minute)
	}
	return fmt.Sprintf("%d/%s", r.Count, w)
}

// Default rates (messages per source address, per recipient, per sending agent).
var (
	DefaultIPRate        = Rate{100, time.Minute}
	DefaultRecipientRate = Rate{100, time.Minute}
	DefaultSenderRate    = Rate{100, time.Minute}
)

// Config configures an Edge. Store, Directory, Limiters and Domains are
// required.
type Config struct {
	Domains   []string        // the mail domains it takes mail for (lowercase)
	Hostname  string          // its name in the greeting and Authentication-Results (default: the first domain)
	Store     blobstore.Store // where messages go
	Directory Directory       // who the inboxes and rights are
	// Verifier checks submission tokens; nil refuses every AUTH.
	Verifier *Verifier
	// Resolver answers the DNS queries of SPF, DKIM and DMARC (default
	// net.DefaultResolver), behind a small cache; tests pass their own.
	Resolver Resolver
	MaxSize  int64 // default DefaultMaxSize
	// Rates: per source address (inbound, and failed AUTHs), per recipient,
	// per sending agent (submission). Zero values take the defaults.
	IPRate, RecipientRate, SenderRate Rate
	Limiters                          ratelimit.New
	// TLS offers STARTTLS with this certificate. Without it the edge listens
	// on loopback addresses only.
	TLS *tls.Config
	// Relay is the smarthost (host:port) submission relays other domains to;
	// "" refuses them.
	Relay string
	// RelayAuth, when set, signs in to the smarthost (SASL PLAIN) before
	// relaying; credentials go only over TLS, or in the clear to loopback.
	RelayAuth *RelayAuth
	// RelayTLS is the TLS configuration for the smarthost (default: system
	// roots, the relay's host name); tests pass their own roots.
	RelayTLS *tls.Config
	// RelayImplicitTLS speaks TLS to the smarthost from the first byte (its
	// port 465, RFC 8314) instead of STARTTLS; the CLI sets it for port 465.
	RelayImplicitTLS bool
	Limits           Limits // per-connection bounds; zero values take the defaults
	MaxConns         int    // per listener (default DefaultMaxConns)
	MaxInFlight      int64  // message bytes held in memory at once, all connections (default 8 × MaxSize)
	Now              func() time.Time
	Logger           *slog.Logger
}

// Limits bound what one connection may cost, whoever opens it.
type Limits struct {
	MaxConnsPerIP  int           // open connections per source address (IPv6: per /64; loopback exempt) on each listener
	IdleTimeout    time.Duration // to send one command (or a whole message after DATA)
	SessionTimeout time.Duration // a connection's whole life
	MaxCommands    int           // commands between two accepted messages on one connection
	MaxBadRcpts    int           // refused recipients per connection, then 421 and the connection is closed
	MaxAuthFails   int           // failed AUTHs per connection, then 421 and the connection is closed
}

// Edge serves inbound SMTP and submission.
type Edge struct {
	cfg                       Config
	domains                   map[string]bool
	ipLim, rcptLim, senderLim ratelimit.Limiter
	inflight                  atomic.Int64
	blockMu                   sync.Mutex
	blocked                   map[string]time.Time // source addresses refused AUTH until then
	blockedSoonest            time.Time            // no later than the earliest until in blocked (zero: unknown)
	mu                        sync.Mutex
	servers                   []*smtp.Server
	closed                    bool
}

// New checks cfg and returns an edge.
func New(cfg Config) (*Edge, error) {
	if cfg.Store == nil || cfg.Directory == nil || cfg.Limiters == nil || len(cfg.Domains) == 0 {
		return nil, errors.New("mailedge: a store, a directory, limiters and at least one domain are required")
	}
	e := &Edge{domains: map[string]bool{}, blocked: map[string]time.Time{}}
	for _, d := range cfg.Domains {
		d = strings.ToLower(strings.TrimSuffix(d, "."))
		if !mail.ValidDomain(d) {
			return nil, fmt.Errorf("mailedge: %q is not a domain name", d)
		}
		e.domains[d] = true
	}
	if cfg.Hostname == "" {
		cfg.Hostname = strings.ToLower(cfg.Domains[0])
	}
	if cfg.MaxSize <= 0 {
		cfg.MaxSize = DefaultMaxSize
	}
	if cfg.MaxConns <= 0 {
		cfg.MaxConns = DefaultMaxConns
	}
	if cfg.MaxInFlight <= 0 {
		cfg.MaxInFlight = 8 * cfg.MaxSize
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	cfg.Limits.defaults()
	if cfg.Resolver == nil {
		cfg.Resolver = net.DefaultResolver
	}
	cfg.Resolver = newDNSCache(cfg.Resolver, dnsCacheSize, cfg.Now)
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if a := cfg.RelayAuth; a != nil && (cfg.Relay == "" || a.User == "" || a.Password == "") {
		return nil, errors.New("mailedge: relay credentials need a relay (host:port), a user and a password")
	}
	for _, r := range []*Rate{&cfg.IPRate, &cfg.RecipientRate, &cfg.SenderRate} {
		if r.Count < 0 || r.Window < 0 {
			return nil, errors.New("mailedge: a rate is a positive count per positive window")
		}
	}
	cfg.IPRate = orRate(cfg.IPRate, DefaultIPRate)
	cfg.RecipientRate = orRate(cfg.RecipientRate, DefaultRecipientRate)
	cfg.SenderRate = orRate(cfg.SenderRate, DefaultSenderRate)
	e.ipLim = cfg.Limiters(ratelimit.Rule{Name: "mail/ip", Count: cfg.IPRate.Count, Window: cfg.IPRate.Window, MaxKeys: 100_000})
	e.rcptLim = cfg.Limiters(ratelimit.Rule{Name: "mail/recipient", Count: cfg.RecipientRate.Count, Window: cfg.RecipientRate.Window, MaxKeys: 100_000})
	e.senderLim = cfg.Limiters(ratelimit.Rule{Name: "mail/sender", Count: cfg.SenderRate.Count, Window: cfg.SenderRate.Window, MaxKeys: 100_000})
	e.cfg = cfg
	return e, nil
}

func orRate(r, def Rate) Rate {
	if r.Count == 0 || r.Window == 0 {
		return def
	}
	return r
}

// Hostname is the edge's name (the authserv-id of its Authentication-Results).
func (e *Edge) Hostname() string { return e.cfg.Hostname }

// ServeInbound serves the MX on ln until Close. Without TLS, ln must be a
// loopback address.
func (e *Edge) ServeInbound(ln net.Listener) error { return e.serve(ln, false) }

// ServeSubmission serves submission on ln until Close. AUTH is offered over
// TLS (STARTTLS), or in the clear on a loopback listener only.
func (e *Edge) ServeSubmission(ln net.Listener) error { return e.serve(ln, true) }

func (e *Edge) serve(ln net.Listener, submission bool) error {
	loop := IsLoopback(ln.Addr())
	if e.cfg.TLS == nil && !loop {
		return fmt.Errorf("mailedge: %s is not a loopback address, and mail off loopback needs a certificate for STARTTLS", ln.Addr())
	}
	var be smtp.BackendFunc = func(c *smtp.Conn) (smtp.Session, error) { return e.newSession(c, submission), nil }
	s := smtp.NewServer(be)
	s.Domain = e.cfg.Hostname
	s.MaxMessageBytes = e.cfg.MaxSize
	s.MaxRecipients = DefaultMaxRecipients
	s.ReadTimeout, s.WriteTimeout = e.cfg.Limits.IdleTimeout, writeTimeout
	s.TLSConfig = e.cfg.TLS
	s.ErrorLog = slog.NewLogLogger(e.cfg.Logger.Handler(), slog.LevelDebug)
	if submission {
		s.AllowInsecureAuth = loop
		s.MaxLineLength = 12288 // RFC 4954: an AUTH line with a token
	}
	e.mu.Lock()
	if e.closed {
		e.mu.Unlock()
		return smtp.ErrServerClosed
	}
	e.servers = append(e.servers, s)
	e.mu.Unlock()
	err := s.Serve(&listener{Listener: ln, lim: e.cfg.Limits, maxConns: e.cfg.MaxConns, perIP: map[string]int{}})
	if errors.Is(err, smtp.ErrServerClosed) {
		return nil
	}
	return err
}

// Close stops every listener and connection.
func (e *Edge) Close() error {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.closed = true
	var errs []error
	for _, s := range e.servers {
		if err := s.Close(); err != nil && !errors.Is(err, smtp.ErrServerClosed) {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// IsLoopback reports whether addr is a loopback TCP address.
func IsLoopback(addr net.Addr) bool {
	ap, err := netip.ParseAddrPort(addr.String())
	return err == nil && ap.Addr().Unmap().IsLoopback()
}

// smtpErr is an SMTP reply.
func smtpErr(code int, enh smtp.EnhancedCode, format string, args ...any) *smtp.SMTPError {
	return &smtp.SMTPError{Code: code, EnhancedCode: enh, Message: fmt.Sprintf(format, args...)}
}

var (
	errTempFail = smtpErr(451, smtp.EnhancedCode{4, 3, 0}, "Temporary failure on our side, nothing was kept; try again later")
	errBusy     = smtpErr(451, smtp.EnhancedCode{4, 3, 1}, "Too much mail in flight right now, nothing was kept; try again later")
)

// allow spends one request of key on lim; refused, it is the 451 to answer.
func (e *Edge) allow(ctx context.Context, lim ratelimit.Limiter, key, what string) error {
	ok, wait, err := lim.Allow(ctx, key, e.cfg.Now())
	if err != nil {
		e.cfg.Logger.Warn("mail edge: the rate limiter did not answer", "err", err.Error())
		return errTempFail
	}
	if !ok {
		return smtpErr(451, smtp.EnhancedCode{4, 7, 1}, "Too many messages %s; try again in %d s", what, int(wait.Seconds())+1)
	}
	return nil
}

// splitAddress lowercases an address and returns it with its domain; ok is
// false unless it is local@domain with a valid domain and a plain local part.
func splitAddress(addr string) (string, string, bool) {
	addr = strings.ToLower(addr)
	local, domain, ok := strings.Cut(addr, "@")
	if !ok || local == "" || len(addr) > 254 || !mail.ValidDomain(domain) {
		return "", "", false
	}
	for i := 0; i < len(local); i++ {
		c := local[i]
		if c <= ' ' || c >= 0x7f || strings.IndexByte("\"\\()<>[]:;@,/", c) >= 0 {
			return "", "", false
		}
	}
	return addr, domain, true
}

// read reads a message, holding its bytes against MaxInFlight; release gives
// them back. Over the size limit it returns go-smtp's 552.
func (e *Edge) read(r io.Reader) (raw []byte, release func(), err error) {
	var held int64
	release = func() { e.inflight.Add(-held) }
	buf := make([]byte, 0, 16<<10)
	for {
		if len(buf) == cap(buf) {
			grow := min(cap(buf), 1<<20)
			if e.inflight.Add(int64(grow)) > e.cfg.MaxInFlight {
				e.inflight.Add(-int64(grow))
				release()
				return nil, nil, errBusy
			}
			held += int64(grow)
			buf = slices.Grow(buf, grow)
		}
		n, err := r.Read(buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+n]
		if err == io.EOF {
			return buf, release, nil
		}
		if err != nil {
			release()
			return nil, nil, err
		}
	}
}

// deliver stores object under each prefix, durably, or fails with a 451. A
// key taken already (the same bytes in the same nanosecond) moves on by a
// nanosecond.
func (e *Edge) deliver(ctx context.Context, prefixes []string, object []byte) error {
	for _, p := range prefixes {
		n := e.cfg.Now().UnixNano()
		for try := 0; ; try++ {
			err := e.cfg.Store.PutIfAbsent(ctx, mail.MessageKey(p, n, object), object)
			if errors.Is(err, blobstore.ErrExists) && try < 64 {
				n++
				continue
			}
			if err != nil {
				e.cfg.Logger.Error("mail edge: storing a message failed", "prefix", p, "err", err.Error())
				return errTempFail
			}
			break
		}
	}
	return nil
}
