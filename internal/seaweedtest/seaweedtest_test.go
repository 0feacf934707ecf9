package seaweedtest

import (
	"slices"
	"strings"
	"testing"
)

func TestMoved(t *testing.T) {
	for _, c := range []struct {
		out   string
		moved bool
	}{
		// weed mini moved a gRPC port and ran on (a CI run's output)
		{"W1205 19:44:40.292848 mini.go:1151 gRPC port 42039 for Filer is not available, finding alternative...\n  Starting SeaweedFS Mini ...", true},
		// it refused a given HTTP port, or lost one at the bind
		{"port 20001 for Master (specified by flag master.port) is not available on 127.0.0.1 and cannot be used", true},
		{"listen tcp 127.0.0.1:20002: bind: address already in use", true},
		{"  Starting SeaweedFS Mini ...\n  Master       ready     0.2s\n  S3           ready     0.2s", false},
	} {
		if got := Moved(c.out); got != c.moved {
			t.Errorf("Moved(%q) = %v, want %v", c.out, got, c.moved)
		}
	}
}

func TestChoose(t *testing.T) {
	p := Choose(t)
	if !slices.Contains(p.Args, "-admin.port.legacy") {
		t.Errorf("the admin's legacy listener is not turned off: %v", p.Args)
	}
	seen := map[string]bool{}
	for i := 0; i+1 < len(p.Args); i += 2 {
		if f, v := p.Args[i], p.Args[i+1]; v != "0" && seen[v] {
			t.Errorf("port %s given twice (%s)", v, f)
		} else {
			seen[v] = true
		}
	}
	for _, addr := range []string{p.Master, p.Filer} {
		host, ports, ok := strings.Cut(addr, ":")
		http, grpc, ok2 := strings.Cut(ports, ".")
		if !ok || !ok2 || host != "127.0.0.1" || !seen[http] || !seen[grpc] {
			t.Errorf("shell address %q is not 127.0.0.1:PORT.GRPCPORT of the ports chosen", addr)
		}
	}
}
