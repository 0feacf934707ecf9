package ledger

import (
	"crypto/ed25519"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
)

// OriginSet says which origins may submit a kind.
type OriginSet uint8

// Origin classes.
const (
	FromEnclave OriginSet = 1 << iota
	FromAccount
	FromGovernance
)

// Kind declares one entry kind: who may submit it, whether anyone may read its
// payload, and how it changes state.
type Kind struct {
	Origins OriginSet
	// Public kinds (keys, registries, governance, checkpoints) are served to anyone
	// in full. Every other kind is owner-private: anonymous readers get its entries
	// redacted to the header and the payload commitment (§3.4). The zero value is
	// private, so a kind nobody classified leaks nothing.
	Public bool
	// Fold validates the payload against the current state and applies it. An error
	// rejects the entry; its writes are discarded.
	Fold func(st State, e *Entry) error
	// Owner says whose an entry of this kind is: the account that may read it in
	// full (§3.4) and in whose usage trail its row is. It returns that account's
	// omni; an agent's entries are its owner's, which the usage index learns from
	// the entries that create agents (parent set: the new agent's owner). Every
	// private kind has one (OwnerMember, OwnerSigner or its own); public kinds, which
	// everyone reads, have none.
	Owner func(e *Entry) (account, parent string, ok bool)
	// Usage derives the row an entry shows in its owner's usage trail (`agentkeys
	// usage`); nil for kinds that show none.
	Usage func(e *Entry) (Usage, bool)
	// Incident admits the governance set's incident keys for this kind: one
	// incident key's signature alone carries it out (the watchdog's revoke of a
	// drifted OIDC key, §10.2). On every other kind an incident key's
	// signature is refused.
	Incident bool
}

// Schema is the set of kinds a ledger accepts, plus how account origins map to the
// wallet address that must have signed them.
type Schema struct {
	Kinds map[string]Kind
	// Wallet returns the wallet address of account omni from state; nil means the
	// schema has no accounts and account origins are rejected.
	Wallet func(st State, omni string) (string, error)
}

// Core kinds that every ledger has.
const (
	KindGenesis    = "genesis"
	KindCheckpoint = "checkpoint"
)

// State keys written by the core kinds.
const (
	keyGenesis    = "ledger/genesis"
	keyCheckpoint = "ledger/checkpoint"
)

// Genesis is the payload of entry 0: the enclave's public identity and the
// governance keys. Its ledger key signs every enclave-origin entry.
type Genesis struct {
	LedgerKey  string      `json:"ledger_key"` // hex ed25519 public key of ledger/v1
	MrEnclave  string      `json:"mrenclave"`
	MrSigner   string      `json:"mrsigner"`
	Tier       string      `json:"tier"`
	Keys       []PublicKey `json:"keys"`
	Governance Governance  `json:"governance"`
}

// PublicKey is one enclave public key as listed in genesis and GET /v1/enclave.
type PublicKey struct {
	Path   string `json:"path"`
	Alg    string `json:"alg"`
	Kid    string `json:"kid"`
	Public string `json:"public"`
}

// Governance is an M-of-N set of Ed25519 member keys (hex), plus incident
// keys: a member kind of its own that signs only kinds declared Incident, each
// key alone, and counts toward nothing else (not the threshold, not invites).
type Governance struct {
	Threshold int      `json:"threshold"`
	Keys      []string `json:"keys"`
	Incident  []string `json:"incident,omitempty"`
}

// Checkpoint is the payload of a checkpoint entry: the head it vouches for.
type Checkpoint struct {
	Seq  uint64 `json:"seq"`
	Hash Hash   `json:"hash"`
}

func (g *Genesis) validate() error {
	if k, err := hex.DecodeString(g.LedgerKey); err != nil || len(k) != ed25519.PublicKeySize {
		return errors.New("genesis: ledger_key must be a hex ed25519 public key")
	}
	if err := g.Governance.validate(); err != nil {
		return fmt.Errorf("genesis: %w", err)
	}
	return nil
}

func foldGenesis(st State, e *Entry) error {
	if e.Seq != 0 {
		return errors.New("genesis is only valid as entry 0")
	}
	var g Genesis
	if err := decodeStrict(e.Payload, &g); err != nil {
		return fmt.Errorf("genesis payload: %w", err)
	}
	if err := g.validate(); err != nil {
		return err
	}
	return st.Put(keyGenesis, e.Payload)
}

func foldCheckpoint(st State, e *Entry) error {
	var c Checkpoint
	if err := decodeStrict(e.Payload, &c); err != nil {
		return fmt.Errorf("checkpoint payload: %w", err)
	}
	if e.Seq == 0 || c.Seq != e.Seq-1 || c.Hash != e.PrevHash {
		return errors.New("checkpoint must vouch for the entry right before it")
	}
	return st.Put(keyCheckpoint, e.Payload)
}

// LoadGenesis reads the genesis payload from state.
func LoadGenesis(st State) (*Genesis, error) {
	b, ok, err := st.Get(keyGenesis)
	if err != nil {
		return nil, err
	}
	if !ok {
		return nil, errors.New("ledger has no genesis entry")
	}
	var g Genesis
	if err := json.Unmarshal(b, &g); err != nil {
		return nil, fmt.Errorf("genesis in state: %w", err)
	}
	return &g, nil
}

// LastCheckpoint reads the newest checkpoint from state (ok=false when none yet).
func LastCheckpoint(st State) (c Checkpoint, ok bool, err error) {
	b, ok, err := st.Get(keyCheckpoint)
	if err != nil || !ok {
		return c, false, err
	}
	return c, true, json.Unmarshal(b, &c)
}

func (s Schema) kind(name string) (Kind, bool) {
	switch name {
	case KindGenesis:
		return Kind{Origins: FromEnclave, Public: true, Fold: foldGenesis}, true
	case KindCheckpoint:
		return Kind{Origins: FromEnclave, Public: true, Fold: foldCheckpoint}, true
	case KindGovernanceSet:
		return Kind{Origins: FromGovernance, Public: true, Fold: foldGovernanceSet}, true
	}
	k, ok := s.Kinds[name]
	return k, ok
}

// CoreKind reports whether the ledger core declares kind itself (genesis,
// checkpoint, governance.set) rather than a module.
func CoreKind(name string) bool {
	return name == KindGenesis || name == KindCheckpoint || name == KindGovernanceSet
}

// Public reports whether entries of kind may be served to anyone in full; unknown
// kinds are private.
func (s Schema) Public(kind string) bool {
	k, ok := s.kind(kind)
	return ok && k.Public
}

// DecodeStrict decodes a payload into v, rejecting unknown fields; folds use it so a
// payload with a typo never half-applies.
func DecodeStrict(p []byte, v any) error { return decodeStrict(p, v) }
