package token

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestRoundTrip(t *testing.T) {
	e := openEnclave(t)
	clk := newClock(t0)
	iss := newIssuer(t, e, Options{Now: clk.Now})
	kid := kidOf(t, e, pathV1)
	for name, in := range map[string]Claims{"owner": ownerClaims(t0), "agent": agentClaims(t0)} {
		t.Run(name, func(t *testing.T) {
			tok, minted := mint(t, iss, in)
			checkMinted(t, in, minted)
			checkHeader(t, tok, kid)
			got, err := iss.Verify(tok)
			if err != nil {
				t.Fatalf("Verify: %v", err)
			}
			if !reflect.DeepEqual(*got, minted) {
				t.Fatalf("Verify = %+v, Mint returned %+v", *got, minted)
			}
			again, err := iss.Verify(tok) // from the cache
			if err != nil || !reflect.DeepEqual(*again, minted) {
				t.Fatalf("cached Verify = %+v, %v", again, err)
			}
		})
	}
}

// checkMinted checks the claims Mint filled in.
func checkMinted(t *testing.T, in, out Claims) {
	t.Helper()
	if out.Issuer != testIss || out.Audience != Audience || out.Type != TypeAccess || out.IssuedAt != t0 {
		t.Errorf("filled claims: %+v", out)
	}
	if jti, err := base64.RawURLEncoding.DecodeString(out.ID); err != nil || len(jti) != 16 {
		t.Errorf("jti %q is not 16 base64url bytes", out.ID)
	}
	in.Issuer, in.Audience, in.Type, in.IssuedAt, in.ID = out.Issuer, out.Audience, out.Type, out.IssuedAt, out.ID
	if !reflect.DeepEqual(in, out) {
		t.Errorf("Mint changed caller claims: in %+v, out %+v", in, out)
	}
}

// checkHeader checks that tok's header is exactly what §4.2 prescribes.
func checkHeader(t *testing.T, tok, kid string) {
	t.Helper()
	h, _, _ := segments(t, tok)
	raw, err := base64.RawURLEncoding.DecodeString(h)
	if err != nil {
		t.Fatal(err)
	}
	want := `{"alg":"ES256","kid":"` + kid + `","typ":"JWT"}`
	if string(raw) != want {
		t.Errorf("header = %s, want %s", raw, want)
	}
}

func TestMintKeepsGivenIatAndJti(t *testing.T) {
	e := openEnclave(t)
	iss := newIssuer(t, e, Options{Now: newClock(t0).Now})
	c := ownerClaims(t0)
	c.IssuedAt, c.ID = t0-10, "my-jti"
	_, got := mint(t, iss, c)
	if got.IssuedAt != t0-10 || got.ID != "my-jti" {
		t.Errorf("Mint overwrote iat/jti: %+v", got)
	}
	_, a := mint(t, iss, ownerClaims(t0))
	_, b := mint(t, iss, ownerClaims(t0))
	if a.ID == b.ID {
		t.Error("two mints produced the same jti")
	}
}

func TestMintRefuses(t *testing.T) {
	e := openEnclave(t)
	iss := newIssuer(t, e, Options{Now: newClock(t0).Now})
	cases := map[string]func(c *Claims){
		"no sub":          func(c *Claims) { c.Subject = "" },
		"uppercase sub":   func(c *Claims) { c.Subject = strings.ToUpper(c.Subject) },
		"short sub":       func(c *Claims) { c.Subject = c.Subject[1:] },
		"no sid":          func(c *Claims) { c.SessionID = "" },
		"huge sid":        func(c *Claims) { c.SessionID = strings.Repeat("s", 257) },
		"role admin":      func(c *Claims) { c.Role = "admin" },
		"no role":         func(c *Claims) { c.Role = "" },
		"exp = iat":       func(c *Claims) { c.IssuedAt, c.Expiry = t0, t0 },
		"exp before iat":  func(c *Claims) { c.IssuedAt, c.Expiry = t0, t0-1 },
		"no exp":          func(c *Claims) { c.Expiry = 0 },
		"already expired": func(c *Claims) { c.IssuedAt, c.Expiry = t0-100, t0-1 },
		"iat in future":   func(c *Claims) { c.IssuedAt = t0 + 3600; c.Expiry = t0 + 7200 },
		"negative iat":    func(c *Claims) { c.IssuedAt = -5 },
		"other iss":       func(c *Claims) { c.Issuer = "http://evil" },
		"other aud":       func(c *Claims) { c.Audience = "cloud" },
		"typ REFRESH":     func(c *Claims) { c.Type = "REFRESH" },
		"agent no parent": func(c *Claims) { c.Role = RoleAgent; c.Cnf = &Cnf{JKT: testJKT(1)} },
		"agent no cnf":    func(c *Claims) { c.Role = RoleAgent; c.Parent = testOmni(9) },
		"agent bad jkt":   func(c *Claims) { c.Role, c.Parent, c.Cnf = RoleAgent, testOmni(9), &Cnf{JKT: "abc"} },
		"agent own parent": func(c *Claims) {
			c.Role, c.Parent, c.Cnf = RoleAgent, c.Subject, &Cnf{JKT: testJKT(1)}
		},
		"owner with parent": func(c *Claims) { c.Parent = testOmni(9) },
	}
	for name, edit := range cases {
		t.Run(name, func(t *testing.T) {
			c := ownerClaims(t0)
			edit(&c)
			tok, _, err := iss.Mint(c)
			if !errors.Is(err, ErrInvalid) || tok != "" {
				t.Fatalf("Mint = %q, %v; want ErrInvalid", tok, err)
			}
		})
	}
}

func TestMintDoesNotAliasCnf(t *testing.T) {
	e := openEnclave(t)
	iss := newIssuer(t, e, Options{Now: newClock(t0).Now})
	in := agentClaims(t0)
	tok, out := mint(t, iss, in)
	in.Cnf.JKT = testJKT(7)
	if out.Cnf.JKT != testJKT(1) {
		t.Fatal("Mint's returned claims share Cnf with the caller's")
	}
	got, err := iss.Verify(tok)
	if err != nil {
		t.Fatal(err)
	}
	got.Cnf.JKT, got.Role = testJKT(8), RoleOwner
	again, err := iss.Verify(tok)
	if err != nil || again.Cnf.JKT != testJKT(1) || again.Role != RoleAgent {
		t.Fatalf("mutating Verify's result changed the cache: %+v, %v", again, err)
	}
}

func TestNewIssuerRefuses(t *testing.T) {
	e := openEnclave(t)
	cases := map[string]Options{
		"no issuer":          {Current: pathV1},
		"control in issuer":  {Issuer: "http://x\n", Current: pathV1},
		"no current":         {Issuer: testIss},
		"oidc current":       {Issuer: testIss, Current: oidcV1},
		"oidc accepted":      {Issuer: testIss, Current: pathV1, Accepted: []string{oidcV1}},
		"ledger key":         {Issuer: testIss, Current: "issuer/jwt/v1", Accepted: []string{"ledger/v1"}},
		"bare prefix":        {Issuer: testIss, Current: "issuer/jwt/"},
		"traversal":          {Issuer: testIss, Current: "issuer/jwt/../../oidc/issuer/v1"},
		"not an enclave key": {Issuer: testIss, Current: "issuer/jwt/V1"},
		"leading zero":       {Issuer: testIss, Current: "issuer/jwt/v01"},
		"v0":                 {Issuer: testIss, Current: "issuer/jwt/v0"},
		"deeper":             {Issuer: testIss, Current: "issuer/jwt/v1/x"},
	}
	for name, o := range cases {
		t.Run(name, func(t *testing.T) {
			if i, err := NewIssuer(e, o); err == nil {
				t.Fatalf("NewIssuer accepted %+v: %v", o, i.AcceptedKids())
			}
		})
	}
	if _, err := NewIssuer(nil, Options{Issuer: testIss, Current: pathV1}); err == nil {
		t.Error("NewIssuer accepted a nil Signer")
	}
}

func TestAcceptedKids(t *testing.T) {
	e := openEnclave(t)
	k1, k2, k3 := kidOf(t, e, pathV1), kidOf(t, e, pathV2), kidOf(t, e, "issuer/jwt/v3")
	iss := newIssuer(t, e, Options{Current: pathV2, Accepted: []string{pathV1, pathV2, "issuer/jwt/v3", pathV1}})
	if got, want := iss.AcceptedKids(), []string{k2, k1, k3}; !slices.Equal(got, want) {
		t.Fatalf("AcceptedKids = %v, want %v", got, want)
	}
	iss.AcceptedKids()[0] = "mutated"
	if iss.AcceptedKids()[0] != k2 {
		t.Fatal("AcceptedKids returned the internal slice")
	}
}

func TestRotation(t *testing.T) {
	e := openEnclave(t)
	clk := newClock(t0)
	k1, k2 := kidOf(t, e, pathV1), kidOf(t, e, pathV2)
	v1 := newIssuer(t, e, Options{Current: pathV1, Now: clk.Now})
	old, _ := mint(t, v1, ownerClaims(t0))

	both := newIssuer(t, e, Options{Current: pathV2, Accepted: []string{pathV1}, Now: clk.Now})
	if _, err := both.Verify(old); err != nil {
		t.Fatalf("v2 issuer accepting v1 refused a v1 token: %v", err)
	}
	fresh, _ := mint(t, both, ownerClaims(t0))
	checkHeader(t, fresh, k2)
	if k1 == k2 {
		t.Fatal("v1 and v2 share a kid")
	}

	v2only := newIssuer(t, e, Options{Current: pathV2, Now: clk.Now})
	if _, err := v2only.Verify(old); !errors.Is(err, ErrInvalid) {
		t.Fatalf("v1 token after v1 was retired: %v, want ErrInvalid", err)
	}
	if _, err := v2only.Verify(fresh); err != nil {
		t.Fatalf("v2 token on v2-only issuer: %v", err)
	}
	if _, err := v1.Verify(fresh); !errors.Is(err, ErrInvalid) {
		t.Fatalf("v2 token on v1-only issuer: %v, want ErrInvalid", err)
	}
}

func TestErrorsNeverContainToken(t *testing.T) {
	e := openEnclave(t)
	clk := newClock(t0)
	iss := newIssuer(t, e, Options{Now: clk.Now})
	tok, _ := mint(t, iss, agentClaims(t0))
	h, p, s := segments(t, tok)
	inputs := []string{
		tok + "x", h + "." + p + ".", "{" + tok, tok + "." + s, h + "." + p + "." + otherSig(s),
		strings.Repeat(tok, 20), tok + "\n", "Bearer " + tok, h + "." + "!" + p + "." + s,
	}
	for _, in := range inputs {
		_, err := iss.Verify(in)
		if !errors.Is(err, ErrInvalid) {
			t.Errorf("Verify(variant) = %v, want ErrInvalid", err)
		}
		assertNoLeak(t, err, in)
		assertNoLeak(t, err, tok)
	}
	clk.add(2 * day * time.Second)
	_, err := iss.Verify(tok)
	if !errors.Is(err, ErrExpired) {
		t.Fatalf("expired: %v", err)
	}
	assertNoLeak(t, err, tok)
	var syn *json.SyntaxError
	if errors.As(err, &syn) {
		t.Error("Verify leaked a decoder error")
	}
}
