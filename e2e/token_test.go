package e2e

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/agentkeys/agentkeys/internal/client"
	"github.com/agentkeys/agentkeys/internal/enclave"
	"github.com/agentkeys/agentkeys/internal/home"
)

func seg(v any) string {
	b, _ := json.Marshal(v)
	return base64.RawURLEncoding.EncodeToString(b)
}

// TestSessionTokenAttacks sends forged and misused tokens to the real server.
// Forgeries with valid ES256 signatures come from the same sealed seed, opened
// in this process from the server's data dir: the strongest attacker short of the
// enclave itself, so only claim and key checks can stop them.
func TestSessionTokenAttacks(t *testing.T) {
	h := newHarness(t)
	s := h.start(serverOpts{home: t.TempDir()})
	a, b := h.owner(s), h.owner(s)
	h.mustOK(h.cliIn(a, "a-secret-for-token-attacks", false, "store", "svc"), "store")
	sa, _ := home.Dir(a).Session()

	enc, err := enclave.Open(enclave.Config{Dir: s.opts.effectiveDataDir(), PlatformKeyFile: s.opts.platformKeyFile()})
	if err != nil {
		t.Fatal(err)
	}
	defer enc.Close()
	key, _ := enc.PublicKey("issuer/jwt/v1")
	pub, _ := hex.DecodeString(key.Public)
	now := time.Now().Unix()
	claims := func(k string, v any) map[string]any {
		c := map[string]any{"iss": s.url, "sub": sa.Omni, "aud": "agentkeys", "typ": "ACCESS", "sid": sa.SID,
			"role": "owner", "iat": now, "exp": now + 600, "jti": randomHex(8)}
		if k != "" {
			c[k] = v
		}
		return c
	}
	es256 := func(path string, hdr, c map[string]any) string {
		in := seg(hdr) + "." + seg(c)
		sig, err := enc.SignES256(path, []byte(in))
		if err != nil {
			t.Fatal(err)
		}
		return in + "." + base64.RawURLEncoding.EncodeToString(sig)
	}
	hdr := map[string]any{"alg": "ES256", "kid": key.Kid, "typ": "JWT"}
	c, _ := client.New(s.url)
	ctx := context.Background()
	if _, err := c.WithToken(es256("issuer/jwt/v1", hdr, claims("", nil))).Whoami(ctx); err != nil {
		t.Fatalf("control: a correct token is refused: %v", err)
	}
	hs := func() string {
		in := seg(map[string]any{"alg": "HS256", "kid": key.Kid}) + "." + seg(claims("", nil))
		m := hmac.New(sha256.New, pub)
		m.Write([]byte(in))
		return in + "." + base64.RawURLEncoding.EncodeToString(m.Sum(nil))
	}
	attacks := map[string]string{
		"alg none":              seg(map[string]any{"alg": "none"}) + "." + seg(claims("", nil)) + ".",
		"HS256 with public key": hs(),
		"unknown kid":           es256("issuer/jwt/v1", map[string]any{"alg": "ES256", "kid": "AAAAAAAAAAAAAAAA"}, claims("", nil)),
		"OIDC key":              es256("oidc/issuer/v1", hdr, claims("", nil)),
		"expired":               es256("issuer/jwt/v1", hdr, claims("exp", now-5)),
		"wrong aud":             es256("issuer/jwt/v1", hdr, claims("aud", "sts.amazonaws.com")),
		"wrong typ":             es256("issuer/jwt/v1", hdr, claims("typ", "ID")),
	}
	for name, tok := range attacks {
		if _, err := c.WithToken(tok).Whoami(ctx); !strings.Contains(errString(err), "UNAUTHENTICATED") {
			t.Errorf("%s: %v", name, err)
		}
	}
	// B's genuine token reaches only B's vault
	if r := h.cliIn(b, "", true, "read", "svc"); r.code != 4 {
		t.Fatalf("B's token read A's credential: %d", r.code)
	}
	// a revoked sid is refused even with a fresh, correctly signed token
	h.mustOK(h.cliIn(a, "", false, "logout"), "logout")
	if _, err := c.WithToken(es256("issuer/jwt/v1", hdr, claims("", nil))).Whoami(ctx); !strings.Contains(errString(err), "REVOKED") {
		t.Fatalf("revoked sid: %v", err)
	}
}
