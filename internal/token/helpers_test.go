package token

import (
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/agentkeys/agentkeys/internal/enclave"
)

const (
	testIss = "http://127.0.0.1:8090"
	pathV1  = "issuer/jwt/v1"
	pathV2  = "issuer/jwt/v2"
	oidcV1  = "oidc/issuer/v1"
	// t0 is the tests' fixed "now" (2026-01-01T00:00:00Z).
	t0 = 1767225600
	// day is a session lifetime used throughout.
	day = 24 * 3600
)

// openEnclave opens a fresh enclave (new seed) in a temporary directory. It
// hashes a small stand-in executable rather than the test binary.
func openEnclave(t testing.TB) *enclave.Enclave {
	t.Helper()
	base := t.TempDir()
	exe := filepath.Join(base, "agentkeys")
	if err := os.WriteFile(exe, []byte("stand-in agentkeys executable"), 0o700); err != nil {
		t.Fatal(err)
	}
	e, err := enclave.Open(enclave.Config{Dir: filepath.Join(base, "server"), PlatformKeyFile: filepath.Join(base, "platform.key"), Executable: exe})
	if err != nil {
		t.Fatalf("enclave.Open: %v", err)
	}
	t.Cleanup(e.Close)
	return e
}

// clock is a settable Options.Now, safe for concurrent use.
type clock struct{ sec atomic.Int64 }

func newClock(sec int64) *clock {
	c := &clock{}
	c.sec.Store(sec)
	return c
}

func (c *clock) Now() time.Time      { return time.Unix(c.sec.Load(), 0) }
func (c *clock) Unix() int64         { return c.sec.Load() }
func (c *clock) set(sec int64)       { c.sec.Store(sec) }
func (c *clock) add(d time.Duration) { c.sec.Add(int64(d / time.Second)) }

// newIssuer builds an Issuer over s with o, filling Issuer and Current when
// empty.
func newIssuer(t testing.TB, s Signer, o Options) *Issuer {
	t.Helper()
	if o.Issuer == "" {
		o.Issuer = testIss
	}
	if o.Current == "" {
		o.Current = pathV1
	}
	i, err := NewIssuer(s, o)
	if err != nil {
		t.Fatalf("NewIssuer: %v", err)
	}
	return i
}

// testOmni returns a deterministic omni.
func testOmni(n int) string {
	h := sha256.Sum256([]byte{byte(n), byte(n >> 8), 'o'})
	return hex.EncodeToString(h[:])
}

// testJKT returns a deterministic RFC 7638-shaped thumbprint.
func testJKT(n int) string {
	h := sha256.Sum256([]byte{byte(n), 'j'})
	return base64.RawURLEncoding.EncodeToString(h[:])
}

// ownerClaims are mintable owner claims expiring a day after now.
func ownerClaims(now int64) Claims {
	return Claims{Subject: testOmni(1), SessionID: "sess-owner-1", Role: RoleOwner, Expiry: now + day}
}

// agentClaims are mintable agent claims expiring a day after now.
func agentClaims(now int64) Claims {
	return Claims{
		Subject: testOmni(2), SessionID: "sess-agent-1", Role: RoleAgent, Expiry: now + day,
		Parent: testOmni(1), Cnf: &Cnf{JKT: testJKT(1)},
	}
}

// mint mints c or fails the test.
func mint(t testing.TB, i *Issuer, c Claims) (string, Claims) {
	t.Helper()
	tok, got, err := i.Mint(c)
	if err != nil {
		t.Fatalf("Mint: %v", err)
	}
	return tok, got
}

// b64json is base64url(JSON(v)).
func b64json(t testing.TB, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return base64.RawURLEncoding.EncodeToString(b)
}

// signRaw builds a compact JWS over arbitrary header and claims, signed for
// real by the enclave key at path. Attacks built with it differ from a valid
// token only in what they change.
func signRaw(t testing.TB, e *enclave.Enclave, path string, header, claims any) string {
	t.Helper()
	input := b64json(t, header) + "." + b64json(t, claims)
	sig, err := e.SignES256(path, []byte(input))
	if err != nil {
		t.Fatalf("SignES256: %v", err)
	}
	return input + "." + base64.RawURLEncoding.EncodeToString(sig)
}

// validHeader is the header Mint produces for kid.
func validHeader(kid string) map[string]any {
	return map[string]any{"alg": "ES256", "kid": kid, "typ": "JWT"}
}

// claimsMap returns c as a JSON object that tests can edit.
func claimsMap(t testing.TB, c Claims) map[string]any {
	t.Helper()
	b, err := json.Marshal(c)
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	return m
}

// fullClaims are owner claims with everything Mint would fill, as of now.
func fullClaims(now int64) Claims {
	c := ownerClaims(now)
	c.Issuer, c.Audience, c.Type, c.IssuedAt, c.ID = testIss, Audience, TypeAccess, now, "jti-1"
	return c
}

// fullAgentClaims are agent claims with everything Mint would fill.
func fullAgentClaims(now int64) Claims {
	c := agentClaims(now)
	c.Issuer, c.Audience, c.Type, c.IssuedAt, c.ID = testIss, Audience, TypeAccess, now, "jti-2"
	return c
}

// segments splits a compact token.
func segments(t testing.TB, tok string) (h, p, s string) {
	t.Helper()
	parts := strings.Split(tok, ".")
	if len(parts) != 3 {
		t.Fatalf("token has %d segments", len(parts))
	}
	return parts[0], parts[1], parts[2]
}

// otherSig returns another signature segment of the same length: its first
// character, the top six bits of r, changed.
func otherSig(s string) string {
	if s[0] == 'A' {
		return "B" + s[1:]
	}
	return "A" + s[1:]
}

// kidOf returns the kid of the enclave key at path.
func kidOf(t testing.TB, e *enclave.Enclave, path string) string {
	t.Helper()
	info, err := e.PublicKey(path)
	if err != nil {
		t.Fatal(err)
	}
	return info.Kid
}

// assertNoLeak fails if err's text contains tok or any long segment of it.
func assertNoLeak(t testing.TB, err error, tok string) {
	t.Helper()
	if err == nil || tok == "" {
		return
	}
	msg := err.Error()
	pieces := append([]string{tok}, strings.FieldsFunc(tok, func(r rune) bool { return r == '.' })...)
	for _, p := range pieces {
		if len(p) >= 12 && strings.Contains(msg, p) {
			t.Errorf("error text contains token material: %q", msg)
			return
		}
	}
}
