// Command agentkeys is the one AgentKeys binary: server, owner CLI and agent daemon.
package main

import (
	"os"
	"runtime/debug"

	"github.com/agentkeys/agentkeys/internal/cli"
)

func main() {
	if os.Getenv("GOGC") == "" {
		// The broker's heap is small and its hot paths allocate: collect less
		// often (GC was ~10% of CPU on the read path at the default of 100).
		debug.SetGCPercent(400)
	}
	os.Exit(cli.Main(os.Args[1:], os.Stdin, os.Stdout, os.Stderr))
}
