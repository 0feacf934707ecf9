// Command agentkeys is the one AgentKeys binary: server, owner CLI and agent daemon.
package main

import (
	"os"
	"runtime"
	"runtime/debug"

	"github.com/agentkeys/agentkeys/internal/cli"
)

func main() {
	if os.Getenv("GOGC") == "" {
		// The broker's heap is small and its hot paths allocate: collect less
		// often (GC was ~10% of CPU on the read path at the default of 100).
		debug.SetGCPercent(400)
	}
	if os.Getenv("GOMAXPROCS") == "" {
		// One P more than CPUs: a P whose thread is blocked in the ledger's fsync
		// keeps its goroutines until the runtime takes it back (up to a sysmon tick
		// of 20 us to 10 ms); the spare keeps every core busy meanwhile
		// (docs/benchmarks.md, OIDC mint: 2.8k -> 3.5k tokens/s, p99 22 -> 11 ms).
		runtime.GOMAXPROCS(runtime.GOMAXPROCS(0) + 1)
	}
	os.Exit(cli.Main(os.Args[1:], os.Stdin, os.Stdout, os.Stderr))
}
