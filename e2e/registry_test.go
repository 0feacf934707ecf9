package e2e

import (
	"encoding/json"
	"net/http"
	"testing"

	"github.com/agentkeys/agentkeys/internal/apiv1"
	"github.com/agentkeys/agentkeys/internal/ledger"
	"github.com/agentkeys/agentkeys/internal/registry"
)

// TestOIDCGenesisKeyRevoke: on a fresh broker that never rotated, the genesis
// issuer key is on the public registry, the registry's active list is what the
// JWKS serves, and the first step of the incident runbook — governance revokes
// the key — works and withdraws it from the JWKS.
func TestOIDCGenesisKeyRevoke(t *testing.T) {
	h := newHarness(t)
	o := serverOpts{home: t.TempDir()}
	s := h.start(o)
	jwks := func() []string {
		code, body := s.get("/.well-known/jwks.json")
		var ks struct{ Keys []struct{ Kid string } }
		if code != http.StatusOK || json.Unmarshal(body, &ks) != nil {
			t.Fatalf("JWKS: %d %s", code, body)
		}
		var kids []string
		for _, k := range ks.Keys {
			kids = append(kids, k.Kid)
		}
		return kids
	}
	kids := jwks()
	if len(kids) != 1 {
		t.Fatalf("JWKS of a fresh broker: %q", kids)
	}
	code, body := s.get("/mock/oidc-pubkeys/active")
	var active []apiv1.ActiveKey
	if code != http.StatusOK || json.Unmarshal(body, &active) != nil || len(active) != 1 || active[0].Kid != kids[0] || active[0].Pubkey == "" {
		t.Fatalf("active: %d %s, want the JWKS key %s", code, body, kids[0])
	}
	n := 0
	for _, e := range s.allEntries() {
		if e.Kind == registry.KindOidcKeyRegister {
			var r registry.OidcRegister
			if e.Origin != ledger.OriginEnclave || json.Unmarshal(e.Payload, &r) != nil || r.Key.Kid != kids[0] {
				t.Fatalf("seq %d: register entry from %s: %s", e.Seq, e.Origin, e.Payload)
			}
			n++
		}
	}
	if n != 1 {
		t.Fatalf("%d oidc.key.register entries, want 1 for the genesis key", n)
	}
	if _, err := s.client.SubmitGovernance(t.Context(), registry.KindOidcKeyRevoke,
		registry.OidcRevoke{Kid: kids[0], Reason: "runbook: hijacked issuer URL"}, operatorKey(t, o.effectiveDataDir())); err != nil {
		t.Fatalf("governance revoke of the genesis key: %v", err)
	}
	if kids := jwks(); len(kids) != 0 {
		t.Fatalf("JWKS after the revoke: %q", kids)
	}
	if code, body := s.get("/mock/oidc-pubkeys/active"); code != http.StatusOK || string(body) != "[]\n" {
		t.Fatalf("active after the revoke: %d %s", code, body)
	}
	h.auditOK(o.home, "--server", s.url)
	h.auditOK(o.home, "--data-dir", o.effectiveDataDir())
}
