package porttest

import (
	"fmt"
	"net"
	"testing"
)

func TestFree(t *testing.T) {
	lo := ephemeralStart()
	for range 20 {
		p := Free(t)
		if lo > 11000 && (p < 10000 || p >= lo) {
			t.Fatalf("port %d is not below the ephemeral range (from %d)", p, lo)
		}
		l, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", p))
		if err != nil {
			t.Fatalf("the port Free gave cannot be bound: %v", err)
		}
		l.Close()
	}
}
