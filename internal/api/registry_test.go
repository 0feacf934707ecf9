package api_test

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/agentkeys/agentkeys/internal/apiv1"
	"github.com/agentkeys/agentkeys/internal/attest"
	"github.com/agentkeys/agentkeys/internal/broker"
	"github.com/agentkeys/agentkeys/internal/daemon"
	"github.com/agentkeys/agentkeys/internal/ledger"
	"github.com/agentkeys/agentkeys/internal/problem"
	"github.com/agentkeys/agentkeys/internal/registry"
)

// registered returns the kids the ledger's oidc.key.register entries put on the
// registry (the new key and, on a rotation, the retiring one), in order, and
// checks that each entry is the enclave's and carries a quote from this
// enclave's platform key that commits to its key.
func registered(t *testing.T, e *env) []string {
	t.Helper()
	ctx := context.Background()
	var kids []string
	pk := e.enclave(t).PlatformPublicKey()
	for from := uint64(0); ; {
		es, err := e.b.Storage().Entries(ctx, from, 1000)
		if err != nil {
			t.Fatal(err)
		}
		for _, en := range es {
			if en.Kind != registry.KindOidcKeyRegister {
				continue
			}
			if en.Origin != ledger.OriginEnclave {
				t.Fatalf("seq %d: oidc.key.register from %s", en.Seq, en.Origin)
			}
			var r registry.OidcRegister
			if err := json.Unmarshal(en.Payload, &r); err != nil {
				t.Fatal(err)
			}
			rd := registry.OidcKeyReportData(r.Key.Kid, r.Key.Public)
			if attest.Verify(r.Key.Quote, pk) != nil || r.Key.Quote.ReportData != hex.EncodeToString(rd[:]) {
				t.Fatalf("seq %d: the quote of %s does not verify or commit to it", en.Seq, r.Key.Kid)
			}
			kids = append(kids, r.Key.Kid)
		}
		if len(es) < 1000 {
			return kids
		}
		from = es[len(es)-1].Seq + 1
	}
}

// governanceEntry builds an entry of kind on the current head, from origin, signed
// as governance by key (unsigned when key is nil).
func governanceEntry(t *testing.T, e *env, kind, origin string, payload any, key ed25519.PrivateKey) []byte {
	t.Helper()
	h, ok, err := e.b.Storage().Head(context.Background())
	if err != nil || !ok {
		t.Fatalf("head: %v", err)
	}
	p, err := ledger.MarshalPayload(payload)
	if err != nil {
		t.Fatal(err)
	}
	en := ledger.Entry{Seq: h.Seq + 1, PrevHash: h.Hash, Time: max(e.now().UnixNano(), h.Time),
		Kind: kind, Origin: origin, Payload: p}
	if key != nil {
		ledger.SignGovernance(&en, key)
	}
	b, _ := json.Marshal(en)
	return b
}

// get serves GET path in process and returns the answer.
func (e *env) get(path string) *httptest.ResponseRecorder {
	rec := httptest.NewRecorder()
	e.handler.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, path, nil))
	return rec
}

func jwksKids(t *testing.T, e *env) []string {
	t.Helper()
	ks, err := e.c.JWKS(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	kids := []string{}
	for _, k := range ks.Keys {
		kids = append(kids, k.Kid)
	}
	return kids
}

// activeKids reads GET /mock/oidc-pubkeys/active, checking its shape: a JSON
// array of objects with exactly kid and pubkey.
func activeKids(t *testing.T, e *env) map[string]string {
	t.Helper()
	rec := e.get("/mock/oidc-pubkeys/active")
	var raw []map[string]json.RawMessage
	if rec.Code != http.StatusOK || json.Unmarshal(rec.Body.Bytes(), &raw) != nil || raw == nil {
		t.Fatalf("active: %d %s", rec.Code, rec.Body)
	}
	out := map[string]string{}
	for _, o := range raw {
		var kid, pub string
		if len(o) != 2 || json.Unmarshal(o["kid"], &kid) != nil || json.Unmarshal(o["pubkey"], &pub) != nil || kid == "" || pub == "" {
			t.Fatalf("active element is not {kid, pubkey}: %s", rec.Body)
		}
		out[kid] = pub
	}
	return out
}

// TestOIDCKeyRegistryRoutes plays §10.1 on a broker that never rotated: the
// genesis key is on the registry (enclave origin, with its quote) from the first
// start, once; GET active and {kid} answer as specified; only governance may
// revoke, and revoking the genesis key withdraws it from the JWKS and stops
// minting until governance rotates in a new key.
func TestOIDCKeyRegistryRoutes(t *testing.T) {
	e := newEnv(t, broker.Config{OIDCAudiences: []string{"aud"}, OIDCMaxTTL: 2 * time.Second, OIDCSkew: time.Second, Anon: unlimited()})
	ctx := context.Background()
	owner, g, idKey := e.ownerKey(t)
	a := e.source(e.pairAgent(t, owner, idKey, g.Wallet, "bot", "oidc:aud"))
	op, err := broker.LoadOperatorKey(broker.OperatorKeyPath(e.dataDir))
	if err != nil {
		t.Fatal(err)
	}
	v1, err := e.enclave(t).PublicKey("oidc/issuer/v1")
	if err != nil {
		t.Fatal(err)
	}

	// The genesis key is registered at the first start, exactly once, and it is
	// what the JWKS and active serve.
	if kids := registered(t, e); !slices.Equal(kids, []string{v1.Kid}) {
		t.Fatalf("registered kids after the first start: %q, want the genesis key %s", kids, v1.Kid)
	}
	if act := activeKids(t, e); len(act) != 1 || act[v1.Kid] != v1.Public {
		t.Fatalf("active: %v, want {%s: %s}", act, v1.Kid, v1.Public)
	}
	if kids := jwksKids(t, e); !slices.Equal(kids, []string{v1.Kid}) {
		t.Fatalf("JWKS kids %q", kids)
	}
	e.restart(t)
	if kids := registered(t, e); !slices.Equal(kids, []string{v1.Kid}) {
		t.Fatalf("registered kids after a restart: %q, want one entry for %s", kids, v1.Kid)
	}

	// GET {kid}: the record; an unknown kid is 404.
	rec := e.get("/mock/oidc-pubkeys/" + v1.Kid)
	var k apiv1.OIDCKeyInfo
	if rec.Code != http.StatusOK || json.Unmarshal(rec.Body.Bytes(), &k) != nil || k.Kid != v1.Kid || k.State != "current" || k.Public != v1.Public {
		t.Fatalf("GET {kid}: %d %s", rec.Code, rec.Body)
	}
	if rec := e.get("/mock/oidc-pubkeys/no-such-kid"); rec.Code != http.StatusNotFound {
		t.Fatalf("GET {kid} of an unknown kid: %d %s", rec.Code, rec.Body)
	}

	// Refused writes change nothing.
	before, _, _ := e.b.Storage().Head(ctx)
	_, stranger, _ := ed25519.GenerateKey(rand.Reader)
	revoke := registry.OidcRevoke{Kid: v1.Kid, Reason: "test: suspected compromise"}
	rec1, _ := e.enclave(t).PublicKey("oidc/issuer/v1")
	refusals := []struct {
		name, route string
		body        []byte
		code        problem.Code
	}{
		{"revoke signed by a key that is not governance's", "/mock/oidc-pubkeys/revoke",
			governanceEntry(t, e, registry.KindOidcKeyRevoke, ledger.OriginGovernance, revoke, stranger), problem.Denied},
		{"revoke signed by an owner's identity key", "/mock/oidc-pubkeys/revoke",
			governanceEntry(t, e, registry.KindOidcKeyRevoke, ledger.OriginGovernance, revoke, idKey), problem.Denied},
		{"revoke claiming the enclave origin", "/mock/oidc-pubkeys/revoke",
			governanceEntry(t, e, registry.KindOidcKeyRevoke, ledger.OriginEnclave, revoke, op), problem.Denied},
		{"revoke claiming an account origin", "/mock/oidc-pubkeys/revoke",
			governanceEntry(t, e, registry.KindOidcKeyRevoke, ledger.AccountOrigin(g.Omni), revoke, idKey), problem.Denied},
		{"revoke without a signature", "/mock/oidc-pubkeys/revoke",
			governanceEntry(t, e, registry.KindOidcKeyRevoke, ledger.OriginGovernance, revoke, nil), problem.Denied},
		{"revoke of a kid that is not printable ASCII", "/mock/oidc-pubkeys/revoke",
			governanceEntry(t, e, registry.KindOidcKeyRevoke, ledger.OriginGovernance, registry.OidcRevoke{Kid: "no such kid", Reason: "x"}, op), problem.BadRequest},
		{"revoke without a reason", "/mock/oidc-pubkeys/revoke",
			governanceEntry(t, e, registry.KindOidcKeyRevoke, ledger.OriginGovernance, registry.OidcRevoke{Kid: v1.Kid}, op), problem.BadRequest},
		{"register signed by governance (enclave only)", "/mock/oidc-pubkeys/register",
			governanceEntry(t, e, registry.KindOidcKeyRegister, ledger.OriginGovernance, registry.OidcRegister{Key: registry.OidcKey{Kid: rec1.Kid}}, op), problem.Denied},
		{"register claiming the enclave origin", "/mock/oidc-pubkeys/register",
			governanceEntry(t, e, registry.KindOidcKeyRegister, ledger.OriginEnclave, registry.OidcRegister{Key: registry.OidcKey{Kid: rec1.Kid}}, op), problem.Denied},
		{"a revoke sent to the register route", "/mock/oidc-pubkeys/register",
			governanceEntry(t, e, registry.KindOidcKeyRevoke, ledger.OriginGovernance, revoke, op), problem.BadRequest},
	}
	for _, c := range refusals {
		rec := e.post(c.route, "", c.body)
		var body struct{ Error problem.Error }
		if json.Unmarshal(rec.Body.Bytes(), &body) != nil || body.Error.Code != c.code || body.Error.Fix == "" {
			t.Errorf("%s: %d %s, want %s with a fix", c.name, rec.Code, rec.Body, c.code)
		}
	}
	if after, _, _ := e.b.Storage().Head(ctx); after.Seq != before.Seq {
		es, _ := e.b.Storage().Entries(ctx, before.Seq+1, 100)
		for _, en := range es {
			if en.Kind != ledger.KindCheckpoint {
				t.Fatalf("a refused write appended seq %d (%s)", en.Seq, en.Kind)
			}
		}
	}
	if tok, err := a.OIDCToken(ctx, "aud", 0); err != nil || tok.Kid != v1.Kid {
		t.Fatalf("mint before the revoke: %+v %v", tok, err)
	}

	// Governance revokes the genesis key on this broker that never rotated.
	body := governanceEntry(t, e, registry.KindOidcKeyRevoke, ledger.OriginGovernance, revoke, op)
	if rec := e.post("/mock/oidc-pubkeys/revoke", "", body); rec.Code != http.StatusCreated {
		t.Fatalf("governance revoke of the genesis key: %d %s", rec.Code, rec.Body)
	}
	if rec := e.post("/mock/oidc-pubkeys/revoke", "", body); rec.Code != http.StatusConflict {
		t.Fatalf("the same revoke entry replayed: %d %s, want 409", rec.Code, rec.Body)
	}
	if kids := jwksKids(t, e); len(kids) != 0 {
		t.Fatalf("JWKS after the revoke still serves %q", kids)
	}
	if act := activeKids(t, e); len(act) != 0 {
		t.Fatalf("active after the revoke: %v", act)
	}
	if rec := e.get("/mock/oidc-pubkeys/" + v1.Kid); rec.Code != http.StatusOK || json.Unmarshal(rec.Body.Bytes(), &k) != nil ||
		k.State != "revoked" || k.RevokedReason != revoke.Reason {
		t.Fatalf("GET {kid} after the revoke: %d %s", rec.Code, rec.Body)
	}
	if tok, err := a.OIDCToken(ctx, "aud", 0); err == nil || !strings.Contains(daemon.Stable(err).Fix, "oidc rotate") {
		t.Fatalf("mint with the only key revoked: %+v %v, want refused with the rotate fix", tok, err)
	}

	// Governance rotates in a new key: registered before it is published.
	res, err := e.c.RotateOIDC(ctx, 4, op)
	if err != nil {
		t.Fatal(err)
	}
	if res.Key.Version != 2 || res.Previous.Kid != "" {
		t.Fatalf("rotation after a revoke: %+v", res)
	}
	if kids := registered(t, e); !slices.Equal(kids, []string{v1.Kid, res.Key.Kid}) {
		t.Fatalf("registered: %q", kids)
	}
	if act := activeKids(t, e); len(act) != 1 || act[res.Key.Kid] != res.Key.Public {
		t.Fatalf("active after the rotation: %v", act)
	}
	if kids := jwksKids(t, e); !slices.Equal(kids, []string{res.Key.Kid}) {
		t.Fatalf("JWKS after the rotation: %q", kids)
	}
	tok, err := a.OIDCToken(ctx, "aud", 0)
	if err != nil || tok.Kid != res.Key.Kid {
		t.Fatalf("mint after the rotation: %+v %v", tok, err)
	}
	verifyWith(t, e, tok.Token)
	var list []apiv1.ActiveKey
	if err := json.Unmarshal(e.get("/mock/oidc-pubkeys/active").Body.Bytes(), &list); err != nil || len(list) != 1 {
		t.Fatalf("active as []apiv1.ActiveKey: %v %v", list, err)
	}
}

// TestOIDCGenesisKeyRegisteredOnOldLedger: a data dir from before genesis-key
// registration (testdata/legacy-data) gets one oidc.key.register entry for
// oidc/issuer/v1 at its first start with this code, none at later starts, and
// keeps serving the same key.
func TestOIDCGenesisKeyRegisteredOnOldLedger(t *testing.T) {
	dir := copyLegacy(t)
	e := newEnv(t, broker.Config{DataDir: dir, PlatformKeyHex: legacyHex(t, "legacy-platform.hex")})
	v1, err := e.enclave(t).PublicKey("oidc/issuer/v1")
	if err != nil {
		t.Fatal(err)
	}
	if kids := registered(t, e); !slices.Equal(kids, []string{v1.Kid}) {
		t.Fatalf("registered on the old ledger: %q, want %s once", kids, v1.Kid)
	}
	e.restart(t)
	if kids := registered(t, e); !slices.Equal(kids, []string{v1.Kid}) {
		t.Fatalf("registered after a restart: %q, want %s once", kids, v1.Kid)
	}
	if act := activeKids(t, e); len(act) != 1 || act[v1.Kid] != v1.Public {
		t.Fatalf("active: %v", act)
	}
	if kids := jwksKids(t, e); !slices.Equal(kids, []string{v1.Kid}) {
		t.Fatalf("JWKS: %q", kids)
	}
}
