package agent

import (
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"fmt"
	"testing"
	"time"

	"github.com/agentkeys/agentkeys/internal/account"
	"github.com/agentkeys/agentkeys/internal/dpop"
)

func signed(t *testing.T) Request {
	t.Helper()
	k, err := dpop.NewKey()
	if err != nil {
		t.Fatal(err)
	}
	jwk, _ := dpop.PublicJWK(k)
	r := Request{Owner: "0xabc", Alias: "bot", Scope: []string{"openai", "github"}, ProofJWK: string(jwk),
		HPKEPublic: "cHVi", ValidUntil: time.Now().Add(time.Minute).Unix()}
	if err := Sign(&r, k); err != nil {
		t.Fatal(err)
	}
	return r
}

func TestSignVerify(t *testing.T) {
	r := signed(t)
	jkt, err := Verify(r)
	if err != nil || len(jkt) != 43 {
		t.Fatalf("Verify: %q %v", jkt, err)
	}
	for name, mut := range map[string]func(*Request){
		"alias": func(r *Request) { r.Alias = "eve" },
		"scope": func(r *Request) { r.Scope = append(r.Scope, "stripe") },
		"owner": func(r *Request) { r.Owner = "0xdef" },
		"hpke":  func(r *Request) { r.HPKEPublic = "b3RoZXI=" },
		"until": func(r *Request) { r.ValidUntil++ },
		"ttl":   func(r *Request) { r.TTLSeconds = 60 },
		"sig":   func(r *Request) { r.Sig = r.Sig[:10] },
		"keyswap": func(r *Request) {
			o := signed(t)
			r.ProofJWK = o.ProofJWK
		},
	} {
		c := r
		c.Scope = append([]string(nil), r.Scope...)
		mut(&c)
		if _, err := Verify(c); err == nil {
			t.Errorf("changed %s: still verifies", name)
		}
	}
}

func TestVVC(t *testing.T) {
	r := signed(t)
	v := VVC(r.Sig)
	raw, _ := base64.RawURLEncoding.DecodeString(r.Sig)
	h := sha256.Sum256(raw)
	if want := fmt.Sprintf("%06d", binary.BigEndian.Uint64(h[:8])%1_000_000); v != want || len(v) != 6 {
		t.Fatalf("VVC %q want %q", v, want)
	}
	if a, b := VVC(signed(t).Sig), VVC(signed(t).Sig); a == v && b == v { // two fresh requests
		t.Fatal("VVCs of different requests keep colliding")
	}
}

func TestScope(t *testing.T) {
	for _, ok := range [][]string{{}, {"openai"}, {"oidc:*", "oidc:s3", "a.b-c_d"}} {
		if err := CheckScope(ok); err != nil {
			t.Errorf("%v: %v", ok, err)
		}
	}
	for _, bad := range [][]string{{"Open AI"}, {"openai", "openai"}, {"oidc:"}, {"oidc:A"}, {"*"}, {""}} {
		if err := CheckScope(bad); err == nil {
			t.Errorf("%v accepted", bad)
		}
	}
}

func TestOmni(t *testing.T) {
	parent := fmt.Sprintf("%064x", 7)
	if OmniOf(parent, "bot", 1) != account.AgentOmni(parent, "bot", 1) {
		t.Fatal("two formulas for the agent omni")
	}
	if OmniOf(parent, "bot", 1) == OmniOf(parent, "bot", 2) {
		t.Fatal("a new generation must get a new omni")
	}
	h := sha256.Sum256([]byte("agentkeys/omni/v1|child|" + parent + "//bot/1"))
	if OmniOf(parent, "bot", 1) != fmt.Sprintf("%x", h) {
		t.Fatal("omni is not the §4.1 formula")
	}
}

func FuzzVerify(f *testing.F) {
	f.Add("owner", "bot", "openai", `{"kty":"EC"}`, "sig")
	f.Fuzz(func(t *testing.T, owner, alias, scope, jwk, sig string) {
		Verify(Request{Owner: owner, Alias: alias, Scope: []string{scope}, ProofJWK: jwk, Sig: sig})
	})
}
