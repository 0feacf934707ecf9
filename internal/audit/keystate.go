package audit

// A KeyView kept between runs: a one-shot command (the daemon's
// aws-credentials, which an SDK runs on every refresh) would otherwise walk
// the whole public chain again each time. What it keeps is what the walk
// carries from one entry to the next: the position (seq, head hash, the
// governance set in force), the account wallets the chain bound and the
// public state it folded (the registries). Resumed, the view checks the
// entries after the position as before, and first that the chain served still
// holds, at the position, the entry it verified (sync): a rolled-back or
// forked chain is refused, never adopted.

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/agentkeys/agentkeys/internal/ledger"
	"github.com/agentkeys/agentkeys/internal/modules"
)

// savedView is the form a KeyView is kept in.
type savedView struct {
	Version  int               `json:"version"`
	Pins     Pins              `json:"pins"`
	Position ledger.Position   `json:"position"`
	Wallets  map[string]string `json:"wallets"`
	State    map[string][]byte `json:"state"`
}

const savedViewVersion = 1

// Save returns the view as verified so far, for ResumeKeyView; nil when it has
// verified nothing yet. Save it only after a call that reached the head
// succeeded (VerifyToken, Active, Keys): a view is never judged mid-way, and
// neither is one resumed.
func (v *KeyView) Save() ([]byte, error) {
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.next == 0 {
		return nil, nil
	}
	s := savedView{Version: savedViewVersion, Pins: v.pins, Position: v.v.Position(), Wallets: v.v.Wallets(), State: map[string][]byte{}}
	if err := v.st.Scan("", func(k string, val []byte) error { s.State[k] = bytes.Clone(val); return nil }); err != nil {
		return nil, err
	}
	return json.Marshal(s)
}

// ResumeKeyView returns the view saved in data, to follow the chain src serves
// from where it stopped, trusted under pins. It refuses data saved under other
// pins, or that is not a saved view: the caller then starts a new view
// (NewKeyView) from genesis.
func ResumeKeyView(src EntrySource, pins Pins, data []byte) (*KeyView, error) {
	var s savedView
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&s); err != nil {
		return nil, fmt.Errorf("not a saved ledger view: %w", err)
	}
	if s.Version != savedViewVersion {
		return nil, fmt.Errorf("saved ledger view version %d, want %d", s.Version, savedViewVersion)
	}
	if s.Pins != pins {
		return nil, errors.New("the saved ledger view was verified under other pins (another broker, or the daemon paired again)")
	}
	st := ledger.NewMemState()
	for k, val := range s.State {
		if err := st.Put(k, val); err != nil {
			return nil, err
		}
	}
	if g, err := ledger.LoadGenesis(st); err != nil || g.LedgerKey != pins.LedgerKey || s.Position.LedgerID == (ledger.Hash{}) {
		return nil, errors.New("the saved ledger view does not start at the pinned enclave's genesis")
	}
	vr, err := ledger.NewPublicVerifierAt(modules.Schema(), st, s.Position, s.Wallets)
	if err != nil {
		return nil, err
	}
	return &KeyView{src: src, pins: pins, st: st, v: vr, next: s.Position.Next}, nil
}
