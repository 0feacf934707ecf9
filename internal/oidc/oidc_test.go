package oidc

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"slices"
	"strings"
	"testing"

	"github.com/agentkeys/agentkeys/internal/apiv1"
	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
)

// TestClaimsSupportedIsExact keeps claims_supported equal to what tokens carry.
func TestClaimsSupportedIsExact(t *testing.T) {
	c := NewClaims("https://iss.example", "sts.amazonaws.com", Identity{Role: "agent", Wallet: "0xABCDEF", OwnerWallet: "0x01", Omni: "aa"},
		Enclave{MrEnclave: "e", MrSigner: "s", Tier: "dev"}, 100, 300)
	b, _ := json.Marshal(c)
	var m map[string]any
	json.Unmarshal(b, &m)
	var keys []string
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	want := slices.Clone(ClaimsSupported)
	slices.Sort(want)
	if !slices.Equal(keys, want) {
		t.Fatalf("token claims %v, claims_supported %v", keys, want)
	}
	if c.Subject != "enclave:e:s:agent:0xabcdef" || c.UserWallet != "0xabcdef" || c.Expiry != 400 || c.NotBefore != 100 {
		t.Fatalf("claims: %+v", c)
	}
	if c.FlatTags.UserWallet[0] != "0xabcdef" || c.AWSTags.PrincipalTags.UserWallet[0] != "0xabcdef" {
		t.Fatalf("tags: %+v", c)
	}
	// The wire shape relying parties read (relying-party.md): arrays under the tag key.
	for _, want := range []string{
		`"https://aws.amazon.com/tags":{"principal_tags":{"` + apiv1.TagUserWallet + `":["0xabcdef"]},"transitive_tag_keys":["` + apiv1.TagUserWallet + `"]}`,
		`"https://aws.amazon.com/tags/principal_tags":{"` + apiv1.TagUserWallet + `":["0xabcdef"]}`,
	} {
		if !strings.Contains(string(b), want) {
			t.Fatalf("token claims %s lack %s", b, want)
		}
	}
}

// TestSignVerifies signs through the enclave-style signer and verifies with go-jose
// against the published JWK.
func TestSignVerifies(t *testing.T) {
	priv, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	pubBytes, _ := priv.PublicKey.Bytes()
	jwk, err := NewJWK("kid1", hex.EncodeToString(pubBytes))
	if err != nil {
		t.Fatal(err)
	}
	s, err := NewSigner(Key{Path: "oidc/issuer/v1", Kid: "kid1"}, func(path string, in []byte) ([]byte, error) {
		h := sha256.Sum256(in)
		r, ss, err := ecdsa.Sign(rand.Reader, priv, h[:])
		if err != nil {
			return nil, err
		}
		out := make([]byte, 64)
		r.FillBytes(out[:32])
		ss.FillBytes(out[32:])
		return out, nil
	})
	if err != nil {
		t.Fatal(err)
	}
	c := NewClaims("https://iss.example", "aud", Identity{Role: "agent", Wallet: "0x1"}, Enclave{}, 1, 60)
	tok, err := s.Sign(c)
	if err != nil {
		t.Fatal(err)
	}
	parsed, err := jwt.ParseSigned(tok, []jose.SignatureAlgorithm{jose.ES256})
	if err != nil {
		t.Fatal(err)
	}
	if h := parsed.Headers[0]; h.KeyID != "kid1" || h.Algorithm != "ES256" || h.ExtraHeaders[jose.HeaderType] != "JWT" {
		t.Fatalf("header %+v", h)
	}
	var jk jose.JSONWebKey
	b, _ := json.Marshal(jwk)
	if err := jk.UnmarshalJSON(b); err != nil {
		t.Fatal(err)
	}
	var got Claims
	if err := parsed.Claims(jk.Key, &got); err != nil {
		t.Fatalf("verify with published JWK: %v", err)
	}
	if got.Subject != c.Subject {
		t.Fatalf("sub %q", got.Subject)
	}
}
