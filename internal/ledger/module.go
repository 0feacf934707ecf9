package ledger

import (
	"encoding/json"
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
	by := map[string]string{KindGenesis: "ledger", KindCheckpoint: "ledger", KindGovernanceSet: "ledger"}
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

// OwnerMember is the Kind.Owner of kinds whose payload names its owner in an
// "owner" member; a payload without one is the signing account's.
func OwnerMember(e *Entry) (account, parent string, ok bool) {
	var p struct {
		Owner string `json:"owner"`
	}
	if json.Unmarshal(e.Payload, &p) != nil {
		return "", "", false
	}
	if p.Owner != "" {
		return p.Owner, "", true
	}
	return OwnerSigner(e)
}

// OwnerSigner is the Kind.Owner of kinds that are the signing account's own
// (sessions); entries the enclave or governance signs are no one's.
func OwnerSigner(e *Entry) (account, parent string, ok bool) {
	if omni, ok := AccountOf(e.Origin); ok {
		return omni, "", true
	}
	return "", "", false
}

// Usage is one row of an owner's usage trail, as `agentkeys usage` shows it.
// Rows are not folded into state: each kind's Usage derives its row from an
// entry, and package auditindex keeps them queryable by owner (a cache rebuilt
// from the ledger).
type Usage struct {
	Seq       uint64 `json:"seq"`
	Time      int64  `json:"time"` // unix nanos
	Actor     string `json:"actor"`
	ActorRole string `json:"actor_role"`
	Alias     string `json:"alias,omitempty"`
	Action    string `json:"action"`
	Service   string `json:"service"`
	Agent     string `json:"agent"`
	Result    string `json:"result"`
	Detail    string `json:"detail,omitempty"`
}

// UsageRow decodes e's payload into a P, leniently (rows are derived from entries
// the ledger already checked), and starts e's usage row: its seq and time, result
// "ok". ok is false when the payload does not decode. Kind.Usage functions start
// with it.
func UsageRow[P any](e *Entry) (p P, u Usage, ok bool) {
	err := json.Unmarshal(e.Payload, &p)
	return p, Usage{Seq: e.Seq, Time: e.Time, Result: "ok"}, err == nil
}
