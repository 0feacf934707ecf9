package broker

import (
	"maps"
	"slices"
	"testing"

	"github.com/agentkeys/agentkeys/internal/ledger"
	"github.com/agentkeys/agentkeys/internal/registry"
)

// TestKindClassification pins which kinds anyone may read in full (§3.4). Every
// other kind, including any added later without a decision, is owner-private.
func TestKindClassification(t *testing.T) {
	public := []string{
		ledger.KindGenesis, ledger.KindCheckpoint, ledger.KindGovernanceSet, registry.KindSessionKeyRotate,
		registry.KindSuccessorAuthorize, registry.KindSuccessorDeauthorize, registry.KindSuccessorHandoff,
		registry.KindOidcKeyRegister, registry.KindOidcKeyRevoke, registry.KindOidcRotate,
	}
	s := Schema()
	kinds := append(slices.Sorted(maps.Keys(s.Kinds)), ledger.KindGenesis, ledger.KindCheckpoint, ledger.KindGovernanceSet)
	for _, k := range kinds {
		if got, want := s.Public(k), slices.Contains(public, k); got != want {
			t.Errorf("kind %s: public=%v, want %v", k, got, want)
		}
	}
	for _, k := range []string{"session.issued", "credential.read", "pair.requested", "account.created", "oidc.minted", "no.such.kind"} {
		if s.Public(k) {
			t.Errorf("kind %s is public", k)
		}
	}
}
