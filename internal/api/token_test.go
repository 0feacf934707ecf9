package api_test

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"net/http"
	"testing"

	"github.com/agentkeys/agentkeys/internal/apiv1"
	"github.com/agentkeys/agentkeys/internal/broker"
	"github.com/agentkeys/agentkeys/internal/problem"
)

func b64(v any) string {
	b, _ := json.Marshal(v)
	return base64.RawURLEncoding.EncodeToString(b)
}

// forge builds a token with any header and claims; sign chooses the signature.
func forge(header, claims map[string]any, sign func(input []byte) []byte) string {
	input := b64(header) + "." + b64(claims)
	return input + "." + base64.RawURLEncoding.EncodeToString(sign([]byte(input)))
}

// TestTokenAttacksOverHTTP sends forged and misused session tokens to the real
// handler: every one is refused, and none reaches a credential.
func TestTokenAttacksOverHTTP(t *testing.T) {
	e := newEnv(t, broker.Config{})
	s, g := e.owner(t)
	e.store(t, s, g.Omni, "svc", []byte("never-for-attackers"), "")
	key, err := e.enclave(t).PublicKey("issuer/jwt/v1")
	if err != nil {
		t.Fatal(err)
	}
	now := e.now().Unix()
	valid := func() map[string]any {
		return map[string]any{"iss": e.srv.URL, "sub": g.Omni, "aud": "agentkeys", "typ": "ACCESS", "sid": g.SID,
			"role": "owner", "iat": now, "exp": now + 3600, "jti": "j1"}
	}
	hdr := map[string]any{"alg": "ES256", "kid": key.Kid, "typ": "JWT"}
	es256 := func(path string) func([]byte) []byte {
		return func(in []byte) []byte {
			sig, err := e.enclave(t).SignES256(path, in)
			if err != nil {
				t.Fatal(err)
			}
			return sig
		}
	}
	with := func(k string, v any) map[string]any { c := valid(); c[k] = v; return c }
	pubRaw, _ := hex.DecodeString(key.Public)
	oidc, _ := e.enclave(t).PublicKey("oidc/issuer/v1")

	// the forging itself works: a correctly built token is accepted
	if _, err := e.c.WithToken(forge(hdr, valid(), es256("issuer/jwt/v1"))).Whoami(context.Background()); err != nil {
		t.Fatalf("control token refused: %v", err)
	}
	attacks := map[string]string{
		"alg none": forge(map[string]any{"alg": "none", "typ": "JWT"}, valid(), func([]byte) []byte { return nil }),
		"HS256 keyed with the public key": forge(map[string]any{"alg": "HS256", "kid": key.Kid}, valid(), func(in []byte) []byte {
			m := hmac.New(sha256.New, pubRaw)
			m.Write(in)
			return m.Sum(nil)
		}),
		"unknown kid":            forge(map[string]any{"alg": "ES256", "kid": "nope"}, valid(), es256("issuer/jwt/v1")),
		"kid of the OIDC key":    forge(map[string]any{"alg": "ES256", "kid": oidc.Kid}, valid(), es256("oidc/issuer/v1")),
		"expired":                forge(hdr, with("exp", now-1), es256("issuer/jwt/v1")),
		"issued in the future":   forge(hdr, with("iat", now+3600), es256("issuer/jwt/v1")),
		"wrong aud":              forge(hdr, with("aud", "someone-else"), es256("issuer/jwt/v1")),
		"wrong typ":              forge(hdr, with("typ", "REFRESH"), es256("issuer/jwt/v1")),
		"wrong iss":              forge(hdr, with("iss", "http://evil.example"), es256("issuer/jwt/v1")),
		"signed by the OIDC key": forge(hdr, valid(), es256("oidc/issuer/v1")),
		"garbage":                "not.a.token",
		"tampered after signing": tamper(forge(hdr, valid(), es256("issuer/jwt/v1")), b64(with("role", "agent"))),
	}
	for name, tok := range attacks {
		_, err := e.c.WithToken(tok).Read(context.Background(), "svc", apiv1.ReadBody{})
		if code(err) != problem.Unauthenticated {
			t.Errorf("%s: %v", name, err)
		}
	}
	// a real token after logout is revoked, on the very next request
	_, g2 := e.owner(t)
	s2 := e.c.WithToken(g2.Token)
	if err := s2.Logout(context.Background()); err != nil {
		t.Fatal(err)
	}
	if _, err := s2.Whoami(context.Background()); code(err) != problem.Revoked {
		t.Fatalf("revoked session: %v", err)
	}
	// another account's valid token reaches only that account's (empty) vault
	if _, err := e.c.WithToken(forge(hdr, with("sub", g2.Omni), es256("issuer/jwt/v1"))).Read(context.Background(), "svc", apiv1.ReadBody{}); code(err) == "" {
		t.Fatal("a token for another subject read the credential")
	}
	resp, err := http.Get(e.srv.URL + "/v1/whoami")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("no token: %d", resp.StatusCode)
	}
}

// tamper replaces a token's claims segment, keeping header and signature.
func tamper(tok, claims string) string {
	var parts [3]string
	i, j := 0, 0
	for k := range tok {
		if tok[k] == '.' {
			parts[j] = tok[i:k]
			i, j = k+1, j+1
		}
	}
	parts[2] = tok[i:]
	return parts[0] + "." + claims + "." + parts[2]
}
