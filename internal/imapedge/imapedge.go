// Package imapedge is the mail edge's IMAP server (§9, local object store): it
// serves each inbox an agent may read as one read-only IMAP mailbox whose
// messages are the raw objects the SMTP edge wrote under the inbox's prefix
// ("<wallet>/<address>/<19-digit unix nanos>-<8 hex>.eml"). Agents sign in
// with SASL OAUTHBEARER and their identity token (audience = the edge); there
// are no passwords. Which mailboxes a session sees is asked of a Directory on
// every mailbox command, so a revoked grant acts on the next command.
//
// It never writes, deletes or logs a message, and parses one only as far as a
// FETCH or SEARCH asks (headers for ENVELOPE, the MIME tree for BODYSTRUCTURE
// and body sections). Flags live in the server's memory (see UIDVALIDITY on
// Server). Anonymous callers get a bounded cost: a connection limit (in all
// and per address), a deadline and a byte budget before authentication, and
// limits on failed authentications per address and in all.
package imapedge

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"time"

	"github.com/agentkeys/agentkeys/internal/blobstore"
	imapserver "github.com/emersion/go-imap/server"
)

// Agent is who a token authenticates: an agent, by its wallet.
type Agent struct {
	Omni    string    // the agent's omni, for the Directory (may be empty)
	Wallet  string    // 0x-prefixed wallet address, lowercase
	Expires time.Time // the token's expiry: the session ends then
}

// Authenticator checks an identity token presented with OAUTHBEARER: its
// signature, issuer, audience (the edge), expiry, and that the agent is not
// revoked. An error refuses the sign-in; its text is not shown to the caller.
type Authenticator interface {
	Authenticate(ctx context.Context, token string) (Agent, error)
}

// Mailbox is an inbox an agent may read.
type Mailbox struct {
	Address string // the inbox address; the IMAP mailbox name
	Prefix  string // its object-store prefix, "<wallet>/<address>/"
}

// Directory answers which live inboxes an agent holds the Read right on.
// It is asked on every mailbox command, so it should answer from memory.
type Directory interface {
	Mailboxes(ctx context.Context, agent Agent) ([]Mailbox, error)
}

// Config configures a Server. Store, Auth and Directory are required; every
// limit has a default.
type Config struct {
	Store     blobstore.Store
	Auth      Authenticator
	Directory Directory
	// TLS, when set, makes every connection implicit TLS (IMAPS). Without it
	// Serve accepts only a loopback listener: tokens never cross a network in
	// the clear.
	TLS *tls.Config

	MaxConns      int           // open connections in all (default 256)
	MaxConnsPerIP int           // open connections per remote address (default 16)
	AuthTimeout   time.Duration // a connection must authenticate within this (default 30 s)
	PreAuthBytes  int           // bytes a connection may send before it authenticates (default 64 KiB)
	MaxInput      int           // bytes a signed-in client may send without an answer between (default 1 MiB)
	IdleTimeout   time.Duration // an authenticated connection's silence allowed (default 30 min)
	WriteTimeout  time.Duration // one write to a slow reader (default 2 min)
	FailedAuths   int           // failed sign-ins per remote address per FailWindow (default 10)
	FailedInAll   int           // failed sign-ins from all addresses per FailWindow (default 1,000)
	FailWindow    time.Duration // default 10 min
	MaxReads      int           // objects read from the store at once, in all (default 8)
	MaxBoxes      int           // mailboxes whose UID table is kept in memory (default 10,000)

	Now func() time.Time // the clock (default time.Now)
	Log *slog.Logger     // default slog.Default()
}

func (c *Config) defaults() error {
	if c.Store == nil || c.Auth == nil || c.Directory == nil {
		return errors.New("imapedge: a Store, an Authenticator and a Directory are required")
	}
	def := func(v *int, d int) {
		if *v <= 0 {
			*v = d
		}
	}
	defD := func(v *time.Duration, d time.Duration) {
		if *v <= 0 {
			*v = d
		}
	}
	def(&c.MaxConns, 256)
	def(&c.MaxConnsPerIP, 16)
	def(&c.PreAuthBytes, 64<<10)
	def(&c.MaxInput, 1<<20)
	def(&c.FailedAuths, 10)
	def(&c.FailedInAll, 1000)
	def(&c.MaxReads, 8)
	def(&c.MaxBoxes, 10000)
	defD(&c.AuthTimeout, 30*time.Second)
	defD(&c.IdleTimeout, 30*time.Minute)
	defD(&c.WriteTimeout, 2*time.Minute)
	defD(&c.FailWindow, 10*time.Minute)
	if c.Now == nil {
		c.Now = time.Now
	}
	if c.Log == nil {
		c.Log = slog.Default()
	}
	return nil
}

// Server serves the inboxes over IMAP4rev1.
//
// UIDs and UIDVALIDITY: a mailbox's UIDs are assigned in the server's memory
// the first time a session opens it: its messages sorted by object name (so by
// arrival time) get 1..n, and messages found later get the next UIDs in the
// order they are found, even if a late write sorts before an earlier one, so a
// UID never changes and never goes back while its UIDVALIDITY stands. The
// UIDVALIDITY is the unix second the table was built (one more than the last
// one handed out, if that is not later): a restarted edge, or a table dropped
// to stay under MaxBoxes, starts a new UIDVALIDITY and clients resynchronise,
// as RFC 3501 asks. Flags (\Seen, \Flagged, \Answered, \Draft and keywords)
// are kept with the table: shared by the agent's sessions, gone with it.
// \Deleted is refused: messages are read-only here.
type Server struct {
	cfg   Config
	reads chan struct{} // semaphore of store reads

	mu       sync.Mutex
	conns    map[string]*conn // by local|remote address
	perIP    map[string]int
	total    int
	fails    failures
	boxes    map[string]*box // by object prefix
	validity uint32          // the last UIDVALIDITY handed out
}

// New returns a server for cfg.
func New(cfg Config) (*Server, error) {
	if err := cfg.defaults(); err != nil {
		return nil, err
	}
	return &Server{cfg: cfg, reads: make(chan struct{}, cfg.MaxReads), conns: map[string]*conn{},
		perIP: map[string]int{}, fails: failures{max: 10000, byIP: map[string]*failCount{}}, boxes: map[string]*box{}}, nil
}

// Serve answers IMAP on ln until ctx ends (then it closes ln and every
// connection and returns nil). Without Config.TLS, ln must be a loopback
// listener.
func (s *Server) Serve(ctx context.Context, ln net.Listener) error {
	if s.cfg.TLS == nil {
		if a, ok := ln.Addr().(*net.TCPAddr); !ok || !a.IP.IsLoopback() {
			ln.Close()
			return fmt.Errorf("imapedge: %s is not a loopback address: serve IMAP beyond this machine only with TLS (a certificate), so tokens never cross a network in the clear", ln.Addr())
		}
	}
	srv := imapserver.New(&imapBackend{s: s})
	srv.ErrorLog = logger{s.cfg.Log}
	srv.AllowInsecureAuth = false // the library's own PLAIN/LOGIN stay off; AUTHENTICATE is ours
	srv.MaxLiteralSize = 64 << 10 // no command this server takes needs more (APPEND is refused)
	srv.Enable(&authExtension{s: s})
	stop := context.AfterFunc(ctx, func() { srv.Close() })
	defer stop()
	err := srv.Serve(&listener{Listener: ln, s: s})
	if ctx.Err() != nil {
		return nil
	}
	return err
}

// logger sends the IMAP library's messages to slog at debug level (they are
// connection errors; the library's wire trace, which would carry tokens, stays
// off).
type logger struct{ l *slog.Logger }

func (l logger) Printf(format string, v ...any) { l.l.Debug("imap: " + fmt.Sprintf(format, v...)) }
func (l logger) Println(v ...any)               { l.l.Debug("imap: " + fmt.Sprint(v...)) }

// listener admits connections within the limits, wrapping each so the
// library never sees TLS (it would offer its own PLAIN login over TLS).
type listener struct {
	net.Listener
	s *Server
}

func (l *listener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		if w, ok := l.s.admit(c); ok {
			return w, nil
		}
	}
}

// hostOf is the source address limits count: IPv4 whole, IPv6 by its /64
// (one site's allocation, so a host cannot walk its own prefix to escape a
// limit or the failed sign-in count).
func hostOf(a net.Addr) string {
	if t, ok := a.(*net.TCPAddr); ok {
		if t.IP.To4() == nil && t.IP != nil {
			return t.IP.Mask(net.CIDRMask(64, 128)).String() + "/64"
		}
		return t.IP.String()
	}
	h, _, err := net.SplitHostPort(a.String())
	if err != nil {
		return a.String()
	}
	return h
}

func connKey(local, remote net.Addr) string { return local.String() + "|" + remote.String() }

// admit counts c against the limits; a refused connection is told why and closed.
func (s *Server) admit(c net.Conn) (net.Conn, bool) {
	ip := hostOf(c.RemoteAddr())
	now := s.cfg.Now()
	s.mu.Lock()
	why := ""
	switch {
	case s.total >= s.cfg.MaxConns:
		why = "too many connections to this server; try again later"
	case s.perIP[ip] >= s.cfg.MaxConnsPerIP:
		why = "too many connections from your address; close some and try again"
	case s.fails.blocked(ip, now, s.cfg.FailedAuths, s.cfg.FailWindow):
		why = "too many failed sign-ins from your address; wait and sign in with a fresh token (agentkeys daemon oidc-token)"
	}
	if why != "" {
		s.mu.Unlock()
		c.SetWriteDeadline(time.Now().Add(time.Second))
		fmt.Fprintf(c, "* BYE %s\r\n", why)
		c.Close()
		return nil, false
	}
	s.total++
	s.perIP[ip]++
	w := &conn{s: s, ip: ip, authBy: time.Now().Add(s.cfg.AuthTimeout), budget: s.cfg.PreAuthBytes}
	if s.cfg.TLS != nil {
		w.Conn = tls.Server(c, s.cfg.TLS)
	} else {
		w.Conn = c
	}
	s.conns[connKey(c.LocalAddr(), c.RemoteAddr())] = w
	s.mu.Unlock()
	return w, true
}

// conn bounds one connection: before authentication a fixed deadline and a
// byte budget, after it an idle deadline per read and at most MaxInput bytes
// read between two writes (the library reads a command's atoms without a
// limit), and a deadline per write.
type conn struct {
	net.Conn
	s      *Server
	ip     string
	authBy time.Time

	mu      sync.Mutex
	authed  bool
	budget  int // bytes left: before authentication in all, after it until the next write
	expiry  *time.Timer
	closed  bool
	release sync.Once
}

func (c *conn) Read(p []byte) (int, error) {
	c.mu.Lock()
	authed := c.authed
	if c.budget <= 0 {
		c.mu.Unlock()
		return 0, errors.New("imapedge: too much input without an answer")
	}
	if len(p) > c.budget {
		p = p[:c.budget]
	}
	c.mu.Unlock()
	if authed {
		c.Conn.SetReadDeadline(time.Now().Add(c.s.cfg.IdleTimeout))
	} else {
		c.Conn.SetReadDeadline(c.authBy)
	}
	n, err := c.Conn.Read(p)
	c.mu.Lock()
	c.budget -= n
	c.mu.Unlock()
	return n, err
}

func (c *conn) Write(p []byte) (int, error) {
	c.mu.Lock()
	if c.authed {
		c.budget = c.s.cfg.MaxInput
	}
	c.mu.Unlock()
	c.Conn.SetWriteDeadline(time.Now().Add(c.s.cfg.WriteTimeout))
	return c.Conn.Write(p)
}

func (c *conn) Close() error {
	c.release.Do(func() {
		c.mu.Lock()
		c.closed = true
		if c.expiry != nil {
			c.expiry.Stop()
		}
		c.mu.Unlock()
		s := c.s
		s.mu.Lock()
		s.total--
		if s.perIP[c.ip]--; s.perIP[c.ip] <= 0 {
			delete(s.perIP, c.ip)
		}
		delete(s.conns, connKey(c.LocalAddr(), c.RemoteAddr()))
		s.mu.Unlock()
	})
	return c.Conn.Close()
}

// signedIn lifts the pre-authentication bounds and ends the session when the
// token expires (the client signs in again with a fresh token).
func (c *conn) signedIn(expires time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.authed = true
	c.budget = c.s.cfg.MaxInput
	if !c.closed {
		c.expiry = time.AfterFunc(expires.Sub(c.s.cfg.Now()), func() { c.Conn.Close() })
	}
}

// connOf finds the wrapper of a library connection.
func (s *Server) connOf(local, remote net.Addr) *conn {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.conns[connKey(local, remote)]
}

// failures counts failed sign-ins per address in fixed windows, for at most
// max addresses (a full table is pruned of old windows, then refuses); the
// key allKey counts them from every address.
type failures struct {
	max  int
	byIP map[string]*failCount
}

const allKey = "*"

type failCount struct {
	n     int
	start time.Time
}

func (f *failures) blocked(ip string, now time.Time, limit int, window time.Duration) bool {
	fc := f.byIP[ip]
	if fc == nil || now.Sub(fc.start) >= window {
		return false
	}
	return fc.n >= limit
}

// add records a failure; it reports false when the table is full of live
// windows (the caller then treats the address as blocked).
func (f *failures) add(ip string, now time.Time, window time.Duration) bool {
	fc := f.byIP[ip]
	if fc != nil && now.Sub(fc.start) < window {
		fc.n++
		return true
	}
	if fc == nil && len(f.byIP) >= f.max && ip != allKey {
		for k, v := range f.byIP {
			if now.Sub(v.start) >= window {
				delete(f.byIP, k)
			}
		}
		if len(f.byIP) >= f.max {
			return false
		}
	}
	f.byIP[ip] = &failCount{n: 1, start: now}
	return true
}
