package mailedge

import (
	"bufio"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"syscall"
	"testing"
	"testing/synctest"
	"time"

	"github.com/agentkeys/agentkeys/internal/blobstore/localstore"
	"github.com/agentkeys/agentkeys/internal/broker"
)

// raw is a client that speaks SMTP by hand over conn.
type raw struct {
	t    testing.TB
	conn net.Conn
	r    *bufio.Reader
}

func newRaw(t testing.TB, conn net.Conn) *raw {
	t.Cleanup(func() { conn.Close() })
	return &raw{t: t, conn: conn, r: bufio.NewReader(conn)}
}

func dialRaw(t testing.TB, addr string) *raw {
	t.Helper()
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	conn.SetDeadline(time.Now().Add(30 * time.Second))
	return newRaw(t, conn)
}

// reply reads one reply (all its lines); err is set when the connection ends
// first.
func (c *raw) reply() (string, error) {
	var sb strings.Builder
	for {
		line, err := c.r.ReadString('\n')
		sb.WriteString(line)
		if err != nil {
			return sb.String(), err
		}
		if len(line) < 4 || line[3] != '-' {
			return sb.String(), nil
		}
	}
}

// cmd sends line and reads the reply.
func (c *raw) cmd(line string) (string, error) {
	if _, err := io.WriteString(c.conn, line+"\r\n"); err != nil {
		return "", err
	}
	return c.reply()
}

// closed reports whether the server closed the connection (reading hits EOF
// after whatever it wrote).
func (c *raw) closed() bool {
	_, err := io.ReadAll(c.r)
	return err == nil || errors.Is(err, syscall.ECONNRESET)
}

// TestConnsPerIP: one source address holds at most MaxConnsPerIP connections
// on a listener (an IPv6 one by its /64); the next is told 421 and closed,
// and a slot frees when one closes. Loopback (this host) is not limited.
func TestConnsPerIP(t *testing.T) {
	ln := pipeEdge(t, Limits{MaxConnsPerIP: 2})
	greet := func(ip string) *raw {
		c := newRaw(t, ln.dial(ip))
		return c
	}
	a := greet("192.0.2.1")
	for _, ip := range []string{"192.0.2.1", "2001:db8:0:1::1", "2001:db8:0:1::2", "192.0.2.2", "127.0.0.1", "127.0.0.1", "127.0.0.1"} {
		if r, err := greet(ip).reply(); !strings.HasPrefix(r, "220 ") {
			t.Fatalf("greeting from %s: %q %v", ip, r, err)
		}
	}
	for _, ip := range []string{"192.0.2.1", "2001:db8:0:1:ffff::3"} {
		c := greet(ip)
		if r, _ := c.reply(); !strings.HasPrefix(r, "421 ") || !strings.Contains(r, "from your address") || !c.closed() {
			t.Fatalf("a third connection from %s: %q, want 421 and closed", ip, r)
		}
	}
	a.reply()
	a.cmd("QUIT")
	a.closed()
	// The slot is given back once the server has closed a's connection.
	for i := 0; ; i++ {
		r, _ := greet("192.0.2.1").reply()
		if strings.HasPrefix(r, "220 ") {
			break
		}
		if i == 100 {
			t.Fatalf("after one closed: %q", r)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestCommandLimit: a connection may send MaxCommands commands; the next ends
// it (a NOOP flood costs a bounded amount).
func TestCommandLimit(t *testing.T) {
	v := newEnv(t, func(c *Config) { c.Limits.MaxCommands = 20 })
	c := dialRaw(t, v.mx)
	c.reply()
	for i := range 20 {
		if r, err := c.cmd("NOOP"); !strings.HasPrefix(r, "250 ") {
			t.Fatalf("NOOP %d: %q %v", i+1, r, err)
		}
	}
	r, _ := c.cmd("NOOP")
	if !strings.HasPrefix(r, "421 ") || !c.closed() {
		t.Fatalf("command 21: %q, want 421 and the connection closed", r)
	}
	// An accepted message starts the count again: a busy sender keeps its
	// connection.
	sender := dial(t, v.mx)
	for i := range 10 {
		if n, err := send(sender, "s@example.net", []string{addrA}, message("s@example.net", addrA, fmt.Sprint("m", i), "x")); n != 250 {
			t.Fatalf("message %d on one connection: %d %v", i, n, err)
		}
	}
}

// TestHarvest: a connection that names MaxBadRcpts unknown recipients is told
// 421 and closed at the next one; the directory is asked no more.
func TestHarvest(t *testing.T) {
	v := newEnv(t, func(c *Config) { c.Limits.MaxBadRcpts = 3 })
	c := dialRaw(t, v.mx)
	c.reply()
	c.cmd("EHLO harvester.example.net")
	c.cmd("MAIL FROM:<h@example.net>")
	for i := range 3 {
		if r, _ := c.cmd(fmt.Sprintf("RCPT TO:<guess%d@%s>", i, domain)); !strings.HasPrefix(r, "550 ") {
			t.Fatalf("unknown recipient %d: %q", i, r)
		}
	}
	v.dir.mu.Lock()
	calls := v.dir.calls
	v.dir.mu.Unlock()
	r, _ := c.cmd("RCPT TO:<" + addrA + ">")
	if !strings.HasPrefix(r, "421 ") || !strings.Contains(r, "unknown recipients") || !c.closed() {
		t.Fatalf("after 3 unknown recipients: %q, want 421 and closed", r)
	}
	v.dir.mu.Lock()
	defer v.dir.mu.Unlock()
	if v.dir.calls != calls {
		t.Fatalf("the directory was asked %d more times after the limit", v.dir.calls-calls)
	}
}

// TestAuthFailures: a submission connection gets MaxAuthFails failed AUTHs,
// then 421 and is closed; and an address whose failures spent its rate is
// refused AUTH before any token is checked.
func TestAuthFailures(t *testing.T) {
	v := newEnv(t, func(c *Config) {
		c.Limits.MaxAuthFails = 2
		c.IPRate = Rate{5, time.Minute}
	})
	bogus := "AUTH OAUTHBEARER " + base64.StdEncoding.EncodeToString([]byte("n,,\x01auth=Bearer bogus\x01\x01"))
	fail := func(c *raw) string {
		r, _ := c.cmd(bogus)
		if strings.HasPrefix(r, "334 ") {
			r, _ = c.cmd("=")
		}
		return r
	}
	c := dialRaw(t, v.sub)
	c.reply()
	c.cmd("EHLO client")
	for i := range 2 {
		if r := fail(c); !strings.HasPrefix(r, "535 ") {
			t.Fatalf("failed AUTH %d: %q", i+1, r)
		}
	}
	if r := fail(c); !strings.HasPrefix(r, "421 ") || !c.closed() {
		t.Fatalf("third AUTH on the connection: %q, want 421 and closed", r)
	}
	// 2 failures spent; 3 more from new connections spend the rate of 5.
	for i := range 3 {
		c := dialRaw(t, v.sub)
		c.reply()
		c.cmd("EHLO client")
		if r := fail(c); !strings.HasPrefix(r, "535 ") {
			t.Fatalf("failed AUTH %d: %q", i+3, r)
		}
	}
	// The sixth failure is over the rate: from then on AUTH is refused, a
	// good token too, before it is checked.
	c = dialRaw(t, v.sub)
	c.reply()
	c.cmd("EHLO client")
	if r := fail(c); !strings.HasPrefix(r, "535 ") {
		t.Fatalf("failed AUTH 6: %q", r)
	}
	c = dialRaw(t, v.sub)
	c.reply()
	c.cmd("EHLO client")
	r, _ := c.cmd("AUTH OAUTHBEARER " + base64.StdEncoding.EncodeToString([]byte("n,,\x01auth=Bearer "+v.key.token(t, issuer, audience, omniA, walletA, t0, 300)+"\x01\x01")))
	if !strings.HasPrefix(r, "421 ") || !strings.Contains(r, "failed logins") {
		t.Fatalf("AUTH from an address over its rate (with a good token): %q, want 421", r)
	}
}

// pipeListener is a listener of in-memory connections (net.Pipe), so a
// synctest bubble's fake clock drives the edge's deadlines.
type pipeListener struct {
	conns chan net.Conn
	done  chan struct{}
	once  sync.Once
}

func newPipeListener() *pipeListener {
	return &pipeListener{conns: make(chan net.Conn), done: make(chan struct{})}
}

func (l *pipeListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.done:
		return nil, net.ErrClosed
	}
}

func (l *pipeListener) Close() error {
	l.once.Do(func() { close(l.done) })
	return nil
}

func (l *pipeListener) Addr() net.Addr { return &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 25} }

// dial connects a client from ip.
func (l *pipeListener) dial(ip string) net.Conn {
	s, c := net.Pipe()
	l.conns <- addrConn{s, &net.TCPAddr{IP: net.ParseIP(ip), Port: 40000}}
	return c
}

type addrConn struct {
	net.Conn
	remote net.Addr
}

func (c addrConn) RemoteAddr() net.Addr { return c.remote }

// pipeEdge serves an inbound edge on a pipe listener, inside a synctest
// bubble.
func pipeEdge(t *testing.T, lim Limits) *pipeListener {
	st, err := localstore.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	e, err := New(Config{Domains: []string{domain}, Store: st, Directory: &directory{}, Resolver: &resolver{}, Limiters: broker.NewMemoryLimiter, Limits: lim})
	if err != nil {
		t.Fatal(err)
	}
	ln := newPipeListener()
	go e.ServeInbound(ln)
	t.Cleanup(func() { e.Close() })
	return ln
}

// TestSlowLoris: a client that keeps a connection alive by sending a command
// just inside the idle timeout is cut off at the session timeout; one that
// dribbles a command a byte at a time is cut off at the idle timeout.
func TestSlowLoris(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ln := pipeEdge(t, Limits{IdleTimeout: 5 * time.Minute, SessionTimeout: 10 * time.Minute})
		c := newRaw(t, ln.dial("192.0.2.1"))
		start := time.Now()
		c.reply()
		for range 30 { // 2 hours, if nothing stops it
			time.Sleep(4 * time.Minute)
			if r, err := c.cmd("NOOP"); err != nil || !strings.HasPrefix(r, "250 ") {
				break
			}
		}
		if d := time.Since(start); d > 10*time.Minute+4*time.Minute {
			t.Errorf("a NOOP every 4 minutes kept the connection for %v; the session timeout is 10m", d)
		}

		c = newRaw(t, ln.dial("192.0.2.2"))
		start = time.Now()
		go io.Copy(io.Discard, c.r) // whatever it answers
		for _, b := range []byte("NOOP NOOP NOOP NOOP NOOP NOOP NOOP NOOP\r\n") {
			time.Sleep(10 * time.Second)
			if _, err := c.conn.Write([]byte{b}); err != nil {
				break
			}
		}
		if d := time.Since(start); d > 5*time.Minute+10*time.Second {
			t.Errorf("a command dribbled a byte every 10 s kept the connection for %v; the idle timeout is 5m", d)
		}
	})
}

// TestLineAndRecipientLimits: a command line over 2,000 bytes ends the
// connection; a message takes at most DefaultMaxRecipients recipients (the
// next is told 452), and the directory is asked only for those.
func TestLineAndRecipientLimits(t *testing.T) {
	v := newEnv(t, nil)
	c := dialRaw(t, v.mx)
	c.reply()
	if r, _ := c.cmd("NOOP " + strings.Repeat("x", 3000)); !strings.HasPrefix(r, "500 ") || !c.closed() {
		t.Fatalf("a 3,000-byte line: %q, want 500 and closed", r)
	}
	v.dir.mu.Lock()
	for i := range DefaultMaxRecipients {
		v.dir.inboxes[fmt.Sprintf("r%02d@%s", i, domain)] = &inbox{live: true, wallet: walletA}
	}
	v.dir.mu.Unlock()
	c = dialRaw(t, v.mx)
	c.reply()
	c.cmd("EHLO client.example.net")
	c.cmd("MAIL FROM:<s@example.net>")
	for i := range DefaultMaxRecipients {
		if r, _ := c.cmd(fmt.Sprintf("RCPT TO:<r%02d@%s>", i, domain)); !strings.HasPrefix(r, "250 ") {
			t.Fatalf("recipient %d: %q", i+1, r)
		}
	}
	v.dir.mu.Lock()
	calls := v.dir.calls
	v.dir.mu.Unlock()
	if r, _ := c.cmd("RCPT TO:<" + addrA + ">"); !strings.HasPrefix(r, "452 ") {
		t.Fatalf("recipient %d: %q, want 452", DefaultMaxRecipients+1, r)
	}
	v.dir.mu.Lock()
	defer v.dir.mu.Unlock()
	if v.dir.calls != calls {
		t.Fatal("the directory was asked for a recipient over the limit")
	}
}
