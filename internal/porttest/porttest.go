// Package porttest chooses loopback ports for the servers that tests start as
// their own processes (the agentkeys binary, SeaweedFS, MinIO), which must be
// told a port rather than listen on :0 and report it.
package porttest

import (
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"strconv"
	"strings"
	"testing"
)

// Free returns a loopback port nothing listens on, chosen below the
// kernel's ephemeral range: the ports of listeners on :0 and the local ports
// of outgoing connections (of this test and of any test running beside it)
// come from that range, and one of them could take a port between this check
// and the server's bind.
func Free(t testing.TB) int {
	t.Helper()
	if lo := ephemeralStart(); lo > 11000 {
		for range 100 {
			p := 10000 + rand.IntN(lo-10000)
			if l, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", p)); err == nil {
				l.Close()
				return p
			}
		}
	}
	l, err := net.Listen("tcp", "127.0.0.1:0") // no room below the range: any free port
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// ephemeralStart is the first port of the kernel's ephemeral range.
func ephemeralStart() int {
	if b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range"); err == nil {
		if f := strings.Fields(string(b)); len(f) == 2 {
			if n, err := strconv.Atoi(f[0]); err == nil {
				return n
			}
		}
	}
	return 32768 // Linux's default
}
