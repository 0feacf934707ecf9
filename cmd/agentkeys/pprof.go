//go:build pprof

// A profiling build (go build -tags pprof ./cmd/agentkeys): with
// AGENTKEYS_PPROF=127.0.0.1:6060 set, any agentkeys process (server, daemon,
// bench) serves net/http/pprof on that loopback address. Release builds do
// not contain this file. Contended locks are sampled (/debug/pprof/mutex).
package main

import (
	"net"
	"net/http"
	_ "net/http/pprof"
	"os"
	"runtime"
)

func init() {
	addr := os.Getenv("AGENTKEYS_PPROF")
	if addr == "" {
		return
	}
	host, _, err := net.SplitHostPort(addr)
	if ip := net.ParseIP(host); err != nil || ip == nil || !ip.IsLoopback() {
		os.Stderr.WriteString("AGENTKEYS_PPROF must be a loopback address, e.g. 127.0.0.1:6060\n")
		os.Exit(2)
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		os.Stderr.WriteString("AGENTKEYS_PPROF: " + err.Error() + "\n")
		os.Exit(2)
	}
	// Contended locks are sampled too (/debug/pprof/mutex): one in 10.
	runtime.SetMutexProfileFraction(10)
	go http.Serve(ln, nil)
}
