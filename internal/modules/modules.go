// Package modules is the one list of ledger modules. Each module declares, in
// its own package (its Module variable), every kind it adds: the origins that may
// submit it, whether anyone may read it in full (Public), how it folds into state,
// whose it is (Owner) and the row it shows in its owner's usage trail (Usage).
// Everything that must know every kind is built from All: the schema the broker
// appends with and audit verify checks against (Schema), and the usage index
// (package auditindex).
//
// Adding a kind touches only its module's package: one more entry in its
// Module.Kinds. Adding a module is its package plus one line in All. The tests
// here fail if a kind is declared but reaches no schema, or if a private kind
// has no owner.
//
// Only the server side (broker, audit) imports this package, and with it every
// module, the ledger and the enclave behind them; the Go client and the sandbox
// daemon must not: they see the ledger only through the HTTP API.
package modules

import (
	"github.com/agentkeys/agentkeys/internal/account"
	"github.com/agentkeys/agentkeys/internal/agent"
	"github.com/agentkeys/agentkeys/internal/ledger"
	"github.com/agentkeys/agentkeys/internal/mail"
	"github.com/agentkeys/agentkeys/internal/oidc"
	"github.com/agentkeys/agentkeys/internal/registry"
	"github.com/agentkeys/agentkeys/internal/vault"
)

// All is every ledger module.
var All = []ledger.Module{
	registry.Module,
	account.Module,
	vault.Module,
	mail.Module,
	agent.Module,
	oidc.Module,
}

// Schema is every kind of every module: what the broker accepts and audit verify
// checks. Each call returns a new map.
func Schema() ledger.Schema { return ledger.NewSchema(All...) }
