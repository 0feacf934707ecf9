package ledger

import (
	"fmt"
	"maps"
	"slices"
)

// A Module is one part of the ledger — accounts, the vault, agents, OIDC, the
// registries — declared whole in its own package: every kind it adds, each with
// the origins that may submit it, whether anyone may read it, how it folds, whose
// it is and the usage row it shows. Package modules lists every module; the
// schema, the usage index and audit verify are all built from that list.
type Module struct {
	Name  string
	Kinds map[string]Kind
	// Wallet, set by the one module that holds accounts, returns the wallet
	// address of account omni from state (Schema.Wallet).
	Wallet func(st State, omni string) (string, error)
}

// NewSchema is the schema of mods: all their kinds, and the Wallet of the module
// that has one. The map is the caller's own. Two modules declaring one kind (or a
// core kind), or two declaring Wallet, is a bug in the module list, not input: it
// panics, as http.ServeMux does on conflicting patterns.
func NewSchema(mods ...Module) Schema {
	s := Schema{Kinds: map[string]Kind{}}
	by := map[string]string{KindGenesis: "ledger", KindCheckpoint: "ledger"}
	for _, m := range mods {
		for _, name := range slices.Sorted(maps.Keys(m.Kinds)) {
			if other, dup := by[name]; dup {
				panic(fmt.Sprintf("ledger: kind %q is declared by module %s and by %s", name, other, m.Name))
			}
			by[name] = m.Name
			s.Kinds[name] = m.Kinds[name]
		}
		if m.Wallet != nil {
			if s.Wallet != nil {
				panic(fmt.Sprintf("ledger: module %s declares Wallet, and another module already does", m.Name))
			}
			s.Wallet = m.Wallet
		}
	}
	return s
}
