// Command agentkeys is the one AgentKeys binary: server, owner CLI and agent daemon.
package main

import (
	"os"

	"github.com/agentkeys/agentkeys/internal/cli"
)

func main() {
	os.Exit(cli.Main(os.Args[1:], os.Stdin, os.Stdout, os.Stderr))
}
