package registry

import (
	"encoding/json"
	"fmt"
	"path/filepath"
	"strings"
	"testing"

	"github.com/agentkeys/agentkeys/internal/enclave"
	"github.com/agentkeys/agentkeys/internal/ledger"
	"github.com/agentkeys/agentkeys/internal/oidc"
)

func oidcKey(t *testing.T, e *enclave.Enclave, v int) OidcKey {
	t.Helper()
	path := fmt.Sprintf("oidc/issuer/v%d", v)
	ki, err := e.PublicKey(path)
	if err != nil {
		t.Fatal(err)
	}
	jwk, err := oidc.NewJWK(ki.Kid, ki.Public)
	if err != nil {
		t.Fatal(err)
	}
	return OidcKey{Kid: ki.Kid, Path: path, Version: v, JWK: jwk, Public: ki.Public,
		Quote: e.Quote(OidcKeyReportData(ki.Kid, ki.Public)), ActiveFrom: 1}
}

func fold(st ledger.State, kind string, payload any) error {
	b, _ := json.Marshal(payload)
	return Module.Kinds[kind].Fold(st, &ledger.Entry{Kind: kind, Payload: b})
}

// TestOidcKeyRegistry: a key registers only with a quote that verifies and
// commits to it; rotation retires the previous key; revoke needs a reason.
func TestOidcKeyRegistry(t *testing.T) {
	base := t.TempDir()
	e, err := enclave.Open(enclave.Config{Dir: filepath.Join(base, "server"), PlatformKeyFile: filepath.Join(base, "platform.key")})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	st := ledger.NewMemState()
	v1, v2 := oidcKey(t, e, 1), oidcKey(t, e, 2)

	bad := map[string]func(k *OidcKey){
		"quote for another key": func(k *OidcKey) { k.Quote = v2.Quote },
		"tampered quote":        func(k *OidcKey) { k.Quote.MrEnclave = strings.Repeat("0", 64) },
		"kid of another key":    func(k *OidcKey) { k.Kid = v2.Kid },
		"jwk of another key":    func(k *OidcKey) { k.JWK = v2.JWK },
		"path not oidc":         func(k *OidcKey) { k.Path = "issuer/jwt/v1" },
	}
	for name, mutate := range bad {
		k := v1
		mutate(&k)
		if err := fold(st, KindOidcKeyRegister, OidcRegister{Key: k}); err == nil {
			t.Errorf("%s: registered", name)
		}
	}
	if err := fold(st, KindOidcKeyRegister, OidcRegister{Key: v1}); err != nil {
		t.Fatal(err)
	}
	if err := fold(st, KindOidcKeyRegister, OidcRegister{Key: v1}); err == nil {
		t.Fatal("registered twice")
	}
	prev := v1
	if err := fold(st, KindOidcKeyRegister, OidcRegister{Key: v2, Previous: &prev}); err == nil {
		t.Fatal("rotation without a retirement time accepted")
	}
	prev.ActiveUntil = 100
	if err := fold(st, KindOidcKeyRegister, OidcRegister{Key: v2, Previous: &prev}); err != nil {
		t.Fatal(err)
	}
	keys, _ := OidcKeys(st)
	if len(keys) != 2 || keys[0].State(99) != "retiring" || keys[0].State(100) != "retired" || keys[1].State(100) != "current" {
		t.Fatalf("keys: %+v", keys)
	}
	if err := fold(st, KindOidcKeyRevoke, OidcRevoke{Kid: v2.Kid}); err == nil {
		t.Fatal("revoke without a reason accepted")
	}
	if err := fold(st, KindOidcKeyRevoke, OidcRevoke{Kid: v2.Kid, Reason: "compromise"}); err != nil {
		t.Fatal(err)
	}
	var k OidcKey
	if ledger.GetJSON(st, oidcKeyPrefix+v2.Kid, &k); k.Active(0) || k.State(0) != "revoked" {
		t.Fatalf("revoked key: %+v", k)
	}
	if Module.Kinds[KindOidcKeyRegister].Origins != ledger.FromEnclave || Module.Kinds[KindOidcKeyRevoke].Origins != ledger.FromGovernance {
		t.Fatal("origins of the OIDC registry kinds changed")
	}
}

// A kid the enclave never registered (a hijacked issuer URL's key) can be
// revoked: the revocation is remembered, OidcRevoked reports it, a second one
// is refused, and the kid can never be registered afterwards.
func TestRevokeUnregisteredKid(t *testing.T) {
	base := t.TempDir()
	e, err := enclave.Open(enclave.Config{Dir: filepath.Join(base, "server"), PlatformKeyFile: filepath.Join(base, "platform.key")})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	st := ledger.NewMemState()
	v1 := oidcKey(t, e, 1)
	if ok, err := OidcRevoked(st, v1.Kid); err != nil || ok {
		t.Fatalf("revoked before any revoke: %v %v", ok, err)
	}
	for _, bad := range []string{"", "has space", strings.Repeat("k", maxKid+1), "tab\tkid"} {
		if err := fold(st, KindOidcKeyRevoke, OidcRevoke{Kid: bad, Reason: "x"}); err == nil {
			t.Errorf("revoke of kid %q accepted", bad)
		}
	}
	if err := fold(st, KindOidcKeyRevoke, OidcRevoke{Kid: v1.Kid, Reason: "watchdog: drift"}); err != nil {
		t.Fatalf("revoke of an unregistered kid: %v", err)
	}
	if ok, err := OidcRevoked(st, v1.Kid); err != nil || !ok {
		t.Fatalf("OidcRevoked after the revoke: %v %v", ok, err)
	}
	if err := fold(st, KindOidcKeyRevoke, OidcRevoke{Kid: v1.Kid, Reason: "again"}); err == nil {
		t.Fatal("a second revoke of the same unregistered kid was accepted")
	}
	if err := fold(st, KindOidcKeyRegister, OidcRegister{Key: v1}); err == nil {
		t.Fatal("a revoked kid was registered afterwards")
	}
	if ks, _ := OidcKeys(st); len(ks) != 0 {
		t.Fatalf("the revocation shows as a registered key: %+v", ks)
	}
}
