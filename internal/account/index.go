package account

import (
	"context"
	"encoding/json"
	"strings"
	"sync"

	"github.com/agentkeys/agentkeys/internal/ledger"
)

// Index is the in-memory revocation index: the set of revoked session ids, kept in
// step with the ledger (Load at start, Observe on every commit). Token checks read
// it instead of the database, so revocation acts on the very next request.
type Index struct {
	mu      sync.RWMutex
	revoked map[string]bool
}

// NewIndex returns an empty index.
func NewIndex() *Index { return &Index{revoked: map[string]bool{}} }

// Load fills the index from folded state.
func (x *Index) Load(ctx context.Context, st ledger.State) error {
	x.mu.Lock()
	defer x.mu.Unlock()
	return st.Scan("session/", func(k string, v []byte) error {
		var s Session
		if err := json.Unmarshal(v, &s); err != nil {
			return err
		}
		if s.Revoked {
			x.revoked[strings.TrimPrefix(k, "session/")] = true
		}
		return nil
	})
}

// Observe applies committed entries (ledger.Options.OnCommit).
func (x *Index) Observe(es []ledger.Entry) {
	for _, e := range es {
		if e.Kind != KindSessionRevoke {
			continue
		}
		var r Revocation
		if json.Unmarshal(e.Payload, &r) == nil {
			x.mu.Lock()
			x.revoked[r.SID] = true
			x.mu.Unlock()
		}
	}
}

// Revoked reports whether sid was revoked.
func (x *Index) Revoked(sid string) bool {
	x.mu.RLock()
	defer x.mu.RUnlock()
	return x.revoked[sid]
}
