package mailedge

import (
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// Default per-connection limits (Limits). The idle timeout is the server
// timeout of RFC 5321 §4.5.3.2.7; the others are what a well-behaved MTA
// never reaches and what bounds an anonymous caller's cost.
const (
	DefaultMaxConnsPerIP  = 10
	DefaultIdleTimeout    = 5 * time.Minute
	DefaultSessionTimeout = 15 * time.Minute
	DefaultMaxCommands    = 1000
	DefaultMaxBadRcpts    = 5
	DefaultMaxAuthFails   = 3
	writeTimeout          = time.Minute
)

func (l *Limits) defaults() {
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
	def(&l.MaxConnsPerIP, DefaultMaxConnsPerIP)
	def(&l.MaxCommands, DefaultMaxCommands)
	def(&l.MaxBadRcpts, DefaultMaxBadRcpts)
	def(&l.MaxAuthFails, DefaultMaxAuthFails)
	defD(&l.IdleTimeout, DefaultIdleTimeout)
	defD(&l.SessionTimeout, DefaultSessionTimeout)
}

// ipKey is the key of a client address for rates and connection counts:
// IPv4 whole, IPv6 by its /64 (one site's allocation, so a host cannot walk
// its own prefix to escape a limit).
func ipKey(ip net.IP) string {
	if v4 := ip.To4(); v4 != nil || ip == nil {
		return "ip:" + ip.String()
	}
	return "ip:" + ip.Mask(net.CIDRMask(64, 128)).String() + "/64"
}

func remoteIP(c net.Conn) net.IP {
	if a, ok := c.RemoteAddr().(*net.TCPAddr); ok {
		return a.IP
	}
	return nil
}

// listener admits at most maxConns open connections, and MaxConnsPerIP from
// one source address (loopback excepted: processes on this host, such as a
// local filter); one more is told 421 and closed, so connections cost a
// bounded number of goroutines and one address cannot take every slot.
type listener struct {
	net.Listener
	lim      Limits
	maxConns int
	mu       sync.Mutex
	total    int
	perIP    map[string]int
}

func (l *listener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		key := ipKey(remoteIP(c))
		l.mu.Lock()
		refuse := ""
		switch {
		case l.total >= l.maxConns:
			refuse = "421 4.3.2 Too many connections, try again later\r\n"
		case l.perIP[key] >= l.lim.MaxConnsPerIP && !remoteIP(c).IsLoopback():
			refuse = fmt.Sprintf("421 4.7.0 Too many connections from your address (at most %d at once), try again later\r\n", l.lim.MaxConnsPerIP)
		default:
			l.total++
			l.perIP[key]++
		}
		l.mu.Unlock()
		if refuse != "" {
			c.SetWriteDeadline(time.Now().Add(time.Second))
			io.WriteString(c, refuse)
			c.Close()
			continue
		}
		return &conn{Conn: c, lim: &l.lim, end: time.Now().Add(l.lim.SessionTimeout), release: sync.OnceFunc(func() {
			l.mu.Lock()
			defer l.mu.Unlock()
			l.total--
			if l.perIP[key]--; l.perIP[key] <= 0 {
				delete(l.perIP, key)
			}
		})}, nil
	}
}

// conn is one admitted connection. It bounds the connection's life (every
// deadline go-smtp sets is clamped to end) and counts its commands since the
// last message it accepted: go-smtp sets the read deadline once before it
// reads each command line (and each line of an AUTH exchange), never while
// it reads a message, so each SetReadDeadline is one command. Its counters
// other than commands are touched only by the connection's own goroutine
// (go-smtp's, which also runs the session's MAIL, RCPT and AUTH; DATA after
// BDAT runs on another).
type conn struct {
	net.Conn
	lim      *Limits
	end      time.Time
	release  func()
	commands atomic.Int64
	bad      int  // refused recipients
	fails    int  // failed AUTHs
	tls      bool // STARTTLS is on: nothing may be written below it
	ending   bool // a 421 was answered, or a deadline passed: end at the next command
}

// errEnd ends the connection quietly (go-smtp closes it on net.ErrClosed).
var errEnd = fmt.Errorf("mail edge: connection ended: %w", net.ErrClosed)

func (c *conn) SetReadDeadline(t time.Time) error {
	if n := c.commands.Add(1); c.ending || n > int64(c.lim.MaxCommands) {
		if c.ending {
			return errEnd
		}
		if !c.tls {
			c.Conn.SetWriteDeadline(time.Now().Add(time.Second))
			fmt.Fprintf(c.Conn, "421 4.7.0 Too many commands without a message (at most %d); connect again\r\n", c.lim.MaxCommands)
		}
		return errEnd
	}
	return c.Conn.SetReadDeadline(c.clamp(t))
}

func (c *conn) clamp(t time.Time) time.Time {
	if t.IsZero() || t.After(c.end) {
		return c.end
	}
	return t
}

// Read marks the connection ending when a deadline passes. (go-smtp reads
// commands with textproto, which hands back a partial line without its
// timeout error, and the next read starts with a fresh deadline: a client
// dribbling a byte at a time would never time out.)
func (c *conn) Read(b []byte) (int, error) {
	n, err := c.Conn.Read(b)
	if ne, ok := err.(net.Error); ok && ne.Timeout() {
		c.ending = true
	}
	return n, err
}

// SetWriteDeadline lets the last reply go out a little after the session's
// end.
func (c *conn) SetWriteDeadline(t time.Time) error {
	if end := c.end.Add(10 * time.Second); t.IsZero() || t.After(end) {
		t = end
	}
	return c.Conn.SetWriteDeadline(t)
}

func (c *conn) SetDeadline(t time.Time) error {
	if err := c.Conn.SetReadDeadline(c.clamp(t)); err != nil {
		return err
	}
	return c.SetWriteDeadline(t)
}

func (c *conn) Close() error {
	c.release()
	return c.Conn.Close()
}

// edgeConn is the conn under a go-smtp connection (below its TLS, if any).
func edgeConn(nc net.Conn) *conn {
	if tc, ok := nc.(*tls.Conn); ok {
		nc = tc.NetConn()
		if c, ok := nc.(*conn); ok {
			c.tls = true
		}
	}
	c, _ := nc.(*conn)
	return c
}

// maxBlocked bounds the addresses whose AUTH is refused remembered at once.
const maxBlocked = 10_000

// authBlocked reports whether AUTH from key is refused for now (its failed
// logins spent its rate), and for how long.
func (e *Edge) authBlocked(key string) (time.Duration, bool) {
	now := e.cfg.Now()
	e.blockMu.Lock()
	defer e.blockMu.Unlock()
	until, ok := e.blocked[key]
	if ok && now.Before(until) {
		return until.Sub(now), true
	}
	delete(e.blocked, key)
	return 0, false
}

// blockAuth refuses AUTH from key until until. Full, it forgets the expired
// blocks first, and remembers no more if none has expired (the rate still
// counts every failure). A full table is swept only once its earliest block
// may have expired, so addresses that keep failing while it is full of live
// blocks cost a comparison each, not a sweep.
func (e *Edge) blockAuth(key string, until time.Time) {
	e.blockMu.Lock()
	defer e.blockMu.Unlock()
	if len(e.blocked) >= maxBlocked {
		now := e.cfg.Now()
		if now.Before(e.blockedSoonest) {
			return // none has expired yet
		}
		soonest := time.Time{}
		for k, u := range e.blocked {
			switch {
			case !now.Before(u):
				delete(e.blocked, k)
			case soonest.IsZero() || u.Before(soonest):
				soonest = u
			}
		}
		e.blockedSoonest = soonest
		if len(e.blocked) >= maxBlocked {
			return
		}
	}
	e.blocked[key] = until
	if until.Before(e.blockedSoonest) {
		e.blockedSoonest = until
	}
}
