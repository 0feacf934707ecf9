package seaweedtest

import (
	"slices"
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

func TestPorts(t *testing.T) {
	ports, args := Ports(t)
	if !slices.Contains(args, "-admin.port.legacy") {
		t.Errorf("the admin's legacy listener is not turned off: %v", args)
	}
	seen := map[int]bool{}
	for f, p := range ports {
		if seen[p] {
			t.Errorf("port %d given twice", p)
		}
		seen[p] = true
		if i := slices.Index(args, "-"+f); i < 0 || args[i+1] == "" {
			t.Errorf("%s has no flag in %v", f, args)
		}
	}
}
