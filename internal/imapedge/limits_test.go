package imapedge_test

import (
	"bufio"
	"context"
	"net"
	"strings"
	"sync"
	"testing"

	"github.com/agentkeys/agentkeys/internal/blobstore/localstore"
	"github.com/agentkeys/agentkeys/internal/imapedge"
)

// pipeListener hands the server in-memory connections (net.Pipe) from any
// source address a test names.
type pipeListener struct {
	conns chan net.Conn
	done  chan struct{}
	once  sync.Once
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

func (l *pipeListener) Addr() net.Addr { return &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 143} }

type fromConn struct {
	net.Conn
	remote net.Addr
}

func (c fromConn) RemoteAddr() net.Addr { return c.remote }

// TestConnsPerIPv6Prefix: the per-address connection limit counts an IPv6
// client by its /64 (one site's allocation), so walking its own prefix does
// not escape the limit; another /64 is another address.
func TestConnsPerIPv6Prefix(t *testing.T) {
	store, err := localstore.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	srv, err := imapedge.New(imapedge.Config{Store: store, Auth: &verifier{}, Directory: &directory{}, MaxConnsPerIP: 2})
	if err != nil {
		t.Fatal(err)
	}
	ln := &pipeListener{conns: make(chan net.Conn), done: make(chan struct{})}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx, ln) }()
	t.Cleanup(func() { cancel(); <-done })
	greet := func(ip string, port int) string {
		s, c := net.Pipe()
		t.Cleanup(func() { c.Close() })
		ln.conns <- fromConn{s, &net.TCPAddr{IP: net.ParseIP(ip), Port: port}}
		line, _ := bufio.NewReader(c).ReadString('\n')
		return line
	}
	for i, ip := range []string{"2001:db8:0:1::1", "2001:db8:0:1::2"} {
		if line := greet(ip, 40000+i); !strings.HasPrefix(line, "* OK") {
			t.Fatalf("connection %d: %q", i+1, line)
		}
	}
	if line := greet("2001:db8:0:1:ffff::3", 40002); !strings.HasPrefix(line, "* BYE") {
		t.Fatalf("a third connection from the same /64: %q, want BYE", line)
	}
	if line := greet("2001:db8:0:2::1", 40003); !strings.HasPrefix(line, "* OK") {
		t.Fatalf("a connection from another /64: %q", line)
	}
}
