package registry

import (
	"strings"
	"testing"

	"github.com/agentkeys/agentkeys/internal/ledger"
)

// TestSuccessorRegistry: a successor's pinned platform key is read back, a
// malformed one is refused, deauthorize removes it, at most MaxSuccessors, and a
// handoff record needs a well-formed mrsigner.
func TestSuccessorRegistry(t *testing.T) {
	st := ledger.NewMemState()
	signer, platform := strings.Repeat("ab", 32), strings.Repeat("cd", 32)
	if err := fold(st, KindSuccessorAuthorize, Successor{MrSigner: signer, PlatformKey: strings.ToUpper(platform)}); err == nil {
		t.Fatal("an upper-case platform key was accepted")
	}
	if err := fold(st, KindSuccessorAuthorize, Successor{MrSigner: signer, PlatformKey: platform[:62]}); err == nil {
		t.Fatal("a short platform key was accepted")
	}
	if err := fold(st, KindSuccessorAuthorize, Successor{MrSigner: signer, PlatformKey: platform, EffectiveFrom: 5}); err != nil {
		t.Fatal(err)
	}
	if s, ok, err := AuthorizedSuccessor(st, signer); err != nil || !ok || s.PlatformKey != platform {
		t.Fatalf("AuthorizedSuccessor: %+v %v %v", s, ok, err)
	}
	if err := fold(st, KindSuccessorDeauthorize, Deauthorize{MrSigner: signer}); err != nil {
		t.Fatal(err)
	}
	if _, ok, err := AuthorizedSuccessor(st, signer); err != nil || ok {
		t.Fatalf("a deauthorized successor is still authorized (%v)", err)
	}
	for i := range MaxSuccessors {
		if err := fold(st, KindSuccessorAuthorize, Successor{MrSigner: strings.Repeat(string("0123456789"[i]), 64)}); err != nil {
			t.Fatal(err)
		}
	}
	if err := fold(st, KindSuccessorAuthorize, Successor{MrSigner: signer, PlatformKey: platform}); err == nil || !strings.Contains(err.Error(), "deauthorize one first") {
		t.Fatalf("a ninth successor: %v", err)
	}
	if err := fold(st, KindSuccessorHandoff, Handoff{MrSigner: "nothex", Reason: "x"}); err == nil {
		t.Fatal("a handoff record with a malformed mrsigner was accepted")
	}
	if err := fold(st, KindSuccessorHandoff, Handoff{MrSigner: signer, MrEnclave: signer, PlatformKey: platform, Tier: "production", Granted: true}); err != nil {
		t.Fatal(err)
	}
}
