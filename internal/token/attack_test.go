package token

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/sha512"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"hash"
	"strings"
	"testing"

	"github.com/go-jose/go-jose/v4"

	"github.com/agentkeys/agentkeys/internal/enclave"
)

// attack is one token Verify must refuse.
type attack struct {
	name  string
	token string
	want  error  // ErrInvalid or ErrExpired
	why   string // fragment of the expected error text: the check that must catch it
}

// attackEnv is what the attack builders share.
type attackEnv struct {
	t     *testing.T
	e     *enclave.Enclave // the issuer's enclave
	other *enclave.Enclave // another enclave (different seed)
	kid   string           // kid of issuer/jwt/v1 in e
	good  string           // a valid agent token minted by the issuer
}

func TestAttacks(t *testing.T) {
	env := &attackEnv{t: t, e: openEnclave(t), other: openEnclave(t)}
	env.kid = kidOf(t, env.e, pathV1)
	clk := newClock(t0)
	iss := newIssuer(t, env.e, Options{Now: clk.Now})
	env.good, _ = mint(t, iss, agentClaims(t0))

	if _, err := iss.Verify(env.signed(validHeader(env.kid), claimsMap(t, fullAgentClaims(t0)))); err != nil {
		t.Fatalf("control: a hand-built valid token is refused: %v", err)
	}
	var all []attack
	for _, build := range []func() []attack{
		env.algAttacks, env.hmacAttacks, env.kidAttacks, env.headerAttacks,
		env.timeAttacks, env.claimAttacks, env.roleAttacks, env.keyAttacks, env.shapeAttacks,
	} {
		all = append(all, build()...)
	}
	for _, a := range all {
		t.Run(a.name, func(t *testing.T) {
			got, err := iss.Verify(a.token)
			if !errors.Is(err, a.want) || got != nil {
				t.Fatalf("Verify = %+v, %v; want %v", got, err, a.want)
			}
			if !strings.Contains(err.Error(), a.why) {
				t.Errorf("refused for the wrong reason: %q, want %q", err, a.why)
			}
			assertNoLeak(t, err, a.token)
		})
	}
	if _, err := iss.Verify(env.good); err != nil {
		t.Fatalf("the valid token no longer verifies: %v", err)
	}
}

// signed is signRaw with the issuer's own key.
func (env *attackEnv) signed(header, claims any) string {
	return signRaw(env.t, env.e, pathV1, header, claims)
}

// edited returns valid agent claims with edit applied.
func (env *attackEnv) edited(edit func(m map[string]any)) map[string]any {
	m := claimsMap(env.t, fullAgentClaims(t0))
	edit(m)
	return m
}

// claimAttack is a token really signed by the issuer key whose claims have
// one edit.
func (env *attackEnv) claimAttack(name, why string, edit func(m map[string]any)) attack {
	return attack{name, env.signed(validHeader(env.kid), env.edited(edit)), ErrInvalid, why}
}

// headerAttack is a token with valid claims, signed by the issuer key under
// header h.
func (env *attackEnv) headerAttack(name, why string, h map[string]any) attack {
	return attack{name, env.signed(h, claimsMap(env.t, fullAgentClaims(t0))), ErrInvalid, why}
}

func (env *attackEnv) algAttacks() []attack {
	payload := b64json(env.t, fullAgentClaims(t0))
	_, _, goodSig := segments(env.t, env.good)
	var out []attack
	for _, alg := range []string{"none", "None", "NONE", "nOnE"} {
		h := b64json(env.t, map[string]any{"alg": alg, "kid": env.kid, "typ": "JWT"})
		out = append(out,
			attack{"alg " + alg + " empty sig", h + "." + payload + ".", ErrInvalid, "empty JWS segment"},
			attack{"alg " + alg + " with sig", h + "." + payload + "." + goodSig, ErrInvalid, "alg is not ES256"})
	}
	noKid := b64json(env.t, map[string]any{"alg": "none"})
	out = append(out, attack{"alg none bare", noKid + "." + payload + ".", ErrInvalid, "empty JWS segment"})
	for _, alg := range []string{"es256", "ES384", "ES512", "PS256", "RS256", "EdDSA", "ES256K", "", "ES256 "} {
		h := map[string]any{"alg": alg, "kid": env.kid, "typ": "JWT"}
		out = append(out, env.headerAttack("alg "+alg, "alg is not ES256", h))
	}
	out = append(out, env.headerAttack("alg missing", "alg is not ES256", map[string]any{"kid": env.kid, "typ": "JWT"}))
	out = append(out, env.headerAttack("alg array", "not a string", map[string]any{"alg": []string{"ES256"}, "kid": env.kid}))
	return out
}

// publicKeyForms returns the encodings of the issuer's public key an
// attacker might try as an HMAC secret.
func (env *attackEnv) publicKeyForms() map[string][]byte {
	t := env.t
	info, err := env.e.PublicKey(pathV1)
	if err != nil {
		t.Fatal(err)
	}
	raw, err := hex.DecodeString(info.Public)
	if err != nil {
		t.Fatal(err)
	}
	pub, err := ecdsa.ParseUncompressedPublicKey(elliptic.P256(), raw)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	pemKey := pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})
	jwk, err := json.Marshal(jose.JSONWebKey{Key: pub, KeyID: info.Kid, Algorithm: "ES256", Use: "sig"})
	if err != nil {
		t.Fatal(err)
	}
	bareJWK, err := json.Marshal(jose.JSONWebKey{Key: pub})
	if err != nil {
		t.Fatal(err)
	}
	jwks, _ := json.Marshal(map[string]any{"keys": []json.RawMessage{jwk}})
	return map[string][]byte{
		"hex": []byte(info.Public), "HEX": []byte(strings.ToUpper(info.Public)), "raw": raw,
		"x||y": raw[1:], "compressed": compressed(raw),
		"der": der, "pem": pemKey, "pem no newline": []byte(strings.TrimSpace(string(pemKey))),
		"jwk": jwk, "bare jwk": bareJWK, "jwks": jwks, "kid": []byte(info.Kid),
		"b64url raw": []byte(base64.RawURLEncoding.EncodeToString(raw)),
		"b64 der":    []byte(base64.StdEncoding.EncodeToString(der)),
	}
}

// hmacToken signs valid claims with HMAC under alg and secret.
func (env *attackEnv) hmacToken(alg string, h func() hash.Hash, secret []byte, header map[string]any) string {
	input := b64json(env.t, header) + "." + b64json(env.t, fullAgentClaims(t0))
	mac := hmac.New(h, secret)
	mac.Write([]byte(input))
	return input + "." + base64.RawURLEncoding.EncodeToString(mac.Sum(nil))
}

func (env *attackEnv) hmacAttacks() []attack {
	var out []attack
	for form, secret := range env.publicKeyForms() {
		hdr := map[string]any{"alg": "HS256", "kid": env.kid, "typ": "JWT"}
		out = append(out, attack{"HS256 key " + form, env.hmacToken("HS256", sha256.New, secret, hdr), ErrInvalid, "alg is not ES256"})
		hdr = map[string]any{"alg": "HS512", "kid": env.kid, "typ": "JWT"}
		out = append(out, attack{"HS512 key " + form, env.hmacToken("HS512", sha512.New, secret, hdr), ErrInvalid, "alg is not ES256"})
		hdr = map[string]any{"alg": "HS256"}
		out = append(out, attack{"HS256 no kid key " + form, env.hmacToken("HS256", sha256.New, secret, hdr), ErrInvalid, "alg is not ES256"})
		hdr = map[string]any{"alg": "ES256", "kid": env.kid, "typ": "JWT"}
		out = append(out, attack{"HMAC under ES256 label key " + form, env.hmacToken("ES256", sha256.New, secret, hdr), ErrInvalid, "not 64 bytes"})
	}
	return out
}

func (env *attackEnv) kidAttacks() []attack {
	t := env.t
	claims := claimsMap(t, fullAgentClaims(t0))
	oidcKid := kidOf(t, env.e, oidcV1)
	out := []attack{
		{"kid of oidc/issuer/v1 signed by it", signRaw(t, env.e, oidcV1, validHeader(oidcKid), claims), ErrInvalid, "not an accepted session key"},
		{"session kid signed by oidc key", signRaw(t, env.e, oidcV1, validHeader(env.kid), claims), ErrInvalid, "bad signature"},
		{"kid of issuer/jwt/v2 signed by it", signRaw(t, env.e, pathV2, validHeader(kidOf(t, env.e, pathV2)), claims), ErrInvalid, "not an accepted session key"},
		env.headerAttack("no kid", "no kid", map[string]any{"alg": "ES256", "typ": "JWT"}),
		env.headerAttack("kid null", "not an accepted session key", map[string]any{"alg": "ES256", "kid": nil, "typ": "JWT"}),
		env.headerAttack("kid number", "not a string", map[string]any{"alg": "ES256", "kid": 1, "typ": "JWT"}),
		env.headerAttack("kid array", "not a string", map[string]any{"alg": "ES256", "kid": []string{env.kid}, "typ": "JWT"}),
		env.headerAttack("kid object", "not a string", map[string]any{"alg": "ES256", "kid": map[string]string{"kid": env.kid}, "typ": "JWT"}),
	}
	for _, kid := range []string{
		"unknown-kid", "", pathV1, oidcV1, "../../issuer/jwt/v1", "/dev/null", "../../../../etc/passwd",
		"' OR '1'='1", "x'; DROP TABLE sessions; --", `" OR ""="`, "http://evil.example/jwks.json",
		env.kid + " ", " " + env.kid, env.kid + "\x00", strings.ToUpper(env.kid), env.kid[:15], env.kid + "A",
		env.kid + "\u200b", strings.Repeat("A", 4000),
	} {
		out = append(out, env.headerAttack("kid "+printable(kid), "not an accepted session key", validHeader(kid)))
	}
	return out
}

// printable shortens and escapes s for a subtest name.
func printable(s string) string {
	if len(s) > 24 {
		s = s[:24] + "..."
	}
	return strings.ToValidUTF8(strings.Map(func(r rune) rune {
		if r < 0x20 {
			return '?'
		}
		return r
	}, s), "?")
}

func (env *attackEnv) headerAttacks() []attack {
	t := env.t
	attacker, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	// The classic embedded-key attack: the token carries its own key and is
	// signed by it.
	js, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.ES256, Key: attacker},
		(&jose.SignerOptions{EmbedJWK: true}).WithType("JWT").WithHeader("kid", env.kid))
	if err != nil {
		t.Fatal(err)
	}
	payload, _ := json.Marshal(fullAgentClaims(t0))
	obj, err := js.Sign(payload)
	if err != nil {
		t.Fatal(err)
	}
	embedded, err := obj.CompactSerialize()
	if err != nil {
		t.Fatal(err)
	}
	with := func(k string, v any) map[string]any {
		h := validHeader(env.kid)
		h[k] = v
		return h
	}
	out := []attack{{"embedded attacker jwk", embedded, ErrInvalid, "other than alg, kid and typ"}}
	for k, v := range map[string]any{
		"jwk": map[string]any{"kty": "EC"}, "jku": "http://evil/jwks", "x5u": "http://evil/cert",
		"x5c": []string{"MIIB"}, "crit": []string{"exp"}, "b64": false, "cty": "JWT", "nonce": "n",
		"ALG": "none", "Kid": "x", "zip": "DEF",
	} {
		out = append(out, env.headerAttack("header "+k, "other than alg, kid and typ", with(k, v)))
	}
	for _, typ := range []any{"at+jwt", "jwt", "JWS", "", "dpop+jwt", 1} {
		why := `typ is not "JWT"`
		if _, isNum := typ.(int); isNum {
			why = "not a string"
		}
		out = append(out, env.headerAttack("header typ "+printable(strings.Trim(string(mustJSON(t, typ)), `"`)), why, with("typ", typ)))
	}
	return out
}

// mustJSON marshals v.
func mustJSON(t *testing.T, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func (env *attackEnv) timeAttacks() []attack {
	set := func(k string, v any) func(m map[string]any) { return func(m map[string]any) { m[k] = v } }
	return []attack{
		{"expired", env.signed(validHeader(env.kid), env.edited(window(t0-day, t0-1))), ErrExpired, "expired"},
		{"exp now", env.signed(validHeader(env.kid), env.edited(window(t0-day, t0))), ErrExpired, "expired"},
		{"expired long ago", env.signed(validHeader(env.kid), env.edited(func(m map[string]any) { m["iat"], m["exp"] = 1, 2 })), ErrExpired, "expired"},
		env.claimAttack("iat far future", "iat is in the future", func(m map[string]any) { m["iat"], m["exp"] = t0+3600, t0+7200 }),
		env.claimAttack("iat 61s ahead", "iat is in the future", set("iat", t0+61)),
		env.claimAttack("iat year 2100", "iat is in the future", func(m map[string]any) { m["iat"], m["exp"] = 4102444800, 4102444900 }),
		env.claimAttack("iat missing", "iat is missing", func(m map[string]any) { delete(m, "iat") }),
		env.claimAttack("iat zero", "iat is missing", set("iat", 0)),
		env.claimAttack("iat negative", "iat is missing", set("iat", -1)),
		env.claimAttack("exp missing", "exp is not after iat", func(m map[string]any) { delete(m, "exp") }),
		env.claimAttack("exp before iat", "exp is not after iat", window(t0-10, t0-20)),
		env.claimAttack("exp equals iat", "exp is not after iat", window(t0+10, t0+10)),
		env.claimAttack("exp string", "not a JSON claims object", set("exp", "9999999999")),
		env.claimAttack("exp float", "not a JSON claims object", set("exp", 1.0e10+0.5)),
		env.claimAttack("exp huge", "not a JSON claims object", set("exp", json.Number("1e400"))),
	}
}

// window sets iat and exp.
func window(iat, exp int64) func(m map[string]any) {
	return func(m map[string]any) { m["iat"], m["exp"] = iat, exp }
}

func (env *attackEnv) claimAttacks() []attack {
	set := func(k string, v any) func(m map[string]any) { return func(m map[string]any) { m[k] = v } }
	del := func(k string) func(m map[string]any) { return func(m map[string]any) { delete(m, k) } }
	sub := testOmni(2)
	return []attack{
		env.claimAttack("aud other", "aud", set("aud", "cloud")),
		env.claimAttack("aud empty", "aud", set("aud", "")),
		env.claimAttack("aud missing", "aud", del("aud")),
		env.claimAttack("aud case", "aud", set("aud", "AgentKeys")),
		env.claimAttack("aud array exact", "not a JSON claims object", set("aud", []string{"agentkeys"})),
		env.claimAttack("aud array with ours", "not a JSON claims object", set("aud", []string{"agentkeys", "cloud"})),
		env.claimAttack("aud array other", "not a JSON claims object", set("aud", []string{"cloud"})),
		env.claimAttack("aud array empty", "not a JSON claims object", set("aud", []string{})),
		env.claimAttack("iss other", "wrong iss", set("iss", "http://evil.example")),
		env.claimAttack("iss trailing slash", "wrong iss", set("iss", testIss+"/")),
		env.claimAttack("iss case", "wrong iss", set("iss", strings.ToUpper(testIss))),
		env.claimAttack("iss missing", "wrong iss", del("iss")),
		env.claimAttack("typ REFRESH", "typ", set("typ", "REFRESH")),
		env.claimAttack("typ access", "typ", set("typ", "access")),
		env.claimAttack("typ missing", "typ", del("typ")),
		env.claimAttack("sid missing", "sid", del("sid")),
		env.claimAttack("sid empty", "sid", set("sid", "")),
		env.claimAttack("sid huge", "sid", set("sid", strings.Repeat("s", 257))),
		env.claimAttack("sid number", "not a JSON claims object", set("sid", 7)),
		env.claimAttack("jti missing", "jti", del("jti")),
		env.claimAttack("jti empty", "jti", set("jti", "")),
		env.claimAttack("sub missing", "sub", del("sub")),
		env.claimAttack("sub uppercase", "sub", set("sub", strings.ToUpper(sub))),
		env.claimAttack("sub short", "sub", set("sub", sub[1:])),
		env.claimAttack("sub long", "sub", set("sub", sub+"0")),
		env.claimAttack("sub non-hex", "sub", set("sub", strings.Repeat("g", 64))),
		env.claimAttack("sub 0x", "sub", set("sub", "0x"+sub[2:])),
		env.claimAttack("sub number", "not a JSON claims object", set("sub", 12)),
		env.claimAttack("payload empty object", "wrong iss", func(m map[string]any) { clear(m) }),
	}
}

func (env *attackEnv) roleAttacks() []attack {
	set := func(k string, v any) func(m map[string]any) { return func(m map[string]any) { m[k] = v } }
	del := func(k string) func(m map[string]any) { return func(m map[string]any) { delete(m, k) } }
	owner := func(edit func(m map[string]any)) func(m map[string]any) {
		return func(m map[string]any) { m["role"] = RoleOwner; delete(m, "cnf"); delete(m, "parent"); edit(m) }
	}
	return []attack{
		env.claimAttack("role admin", "role", set("role", "admin")),
		env.claimAttack("role Owner", "role", set("role", "Owner")),
		env.claimAttack("role empty", "role", set("role", "")),
		env.claimAttack("role missing", "role", del("role")),
		env.claimAttack("role array", "not a JSON claims object", set("role", []string{"owner"})),
		env.claimAttack("agent without cnf", "cnf", del("cnf")),
		env.claimAttack("agent cnf null", "cnf", set("cnf", nil)),
		env.claimAttack("agent cnf empty", "cnf", set("cnf", map[string]any{})),
		env.claimAttack("agent cnf short jkt", "cnf", set("cnf", map[string]any{"jkt": "abc"})),
		env.claimAttack("agent cnf padded jkt", "cnf", set("cnf", map[string]any{"jkt": testJKT(1)[:42] + "="})),
		env.claimAttack("agent cnf std b64 jkt", "cnf", set("cnf", map[string]any{"jkt": strings.Repeat("+", 43)})),
		env.claimAttack("agent cnf string", "not a JSON claims object", set("cnf", testJKT(1))),
		env.claimAttack("agent without parent", "parent", del("parent")),
		env.claimAttack("agent parent bad", "parent", set("parent", "owner")),
		env.claimAttack("agent parent is self", "parent", set("parent", testOmni(2))),
		env.claimAttack("owner with parent", "owner token with a parent", owner(set("parent", testOmni(9)))),
		env.claimAttack("owner with bad cnf", "cnf", owner(set("cnf", map[string]any{"jkt": ""}))),
	}
}

// keyAttacks are tokens signed by keys other than the issuer's.
func (env *attackEnv) keyAttacks() []attack {
	t := env.t
	claims := claimsMap(t, fullAgentClaims(t0))
	otherKid := kidOf(t, env.other, pathV1)
	otherIss := newIssuer(t, env.other, Options{Now: newClock(t0).Now})
	otherTok, _ := mint(t, otherIss, agentClaims(t0))
	return []attack{
		{"other enclave own kid", signRaw(t, env.other, pathV1, validHeader(otherKid), claims), ErrInvalid, "not an accepted session key"},
		{"other enclave minted", otherTok, ErrInvalid, "not an accepted session key"},
		{"other enclave our kid", signRaw(t, env.other, pathV1, validHeader(env.kid), claims), ErrInvalid, "bad signature"},
		{"other enclave sig spliced", splice(t, env.good, otherTok), ErrInvalid, "bad signature"},
	}
}

// splice returns a's header and payload with b's signature.
func splice(t *testing.T, a, b string) string {
	h, p, _ := segments(t, a)
	_, _, s := segments(t, b)
	return h + "." + p + "." + s
}

// tamper re-encodes tok with its payload claims edited, keeping the
// signature.
func (env *attackEnv) tamper(tok string, edit func(m map[string]any)) string {
	h, p, s := segments(env.t, tok)
	raw, err := base64.RawURLEncoding.DecodeString(p)
	if err != nil {
		env.t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(raw, &m); err != nil {
		env.t.Fatal(err)
	}
	edit(m)
	return h + "." + b64json(env.t, m) + "." + s
}

// shapeAttacks are tampered and malformed serializations.
func (env *attackEnv) shapeAttacks() []attack {
	t := env.t
	tok := env.good
	h, p, s := segments(t, tok)
	sig, _ := base64.RawURLEncoding.DecodeString(s)
	flipped := append([]byte(nil), sig...)
	flipped[10] ^= 1
	reordered := base64.RawURLEncoding.EncodeToString([]byte(`{"kid":"` + env.kid + `","alg":"ES256","typ":"JWT"}`))
	jws, err := jose.ParseSignedCompact(tok, []jose.SignatureAlgorithm{jose.ES256})
	if err != nil {
		t.Fatal(err)
	}
	flat := `{"protected":"` + h + `","payload":"` + p + `","signature":"` + s + `"}`
	bad := func(name, token, why string) attack { return attack{name, token, ErrInvalid, why} }
	return []attack{
		bad("tampered sub", env.tamper(tok, func(m map[string]any) { m["sub"] = testOmni(5) }), "bad signature"),
		bad("tampered role", env.tamper(tok, func(m map[string]any) { m["role"] = RoleOwner; delete(m, "parent") }), "bad signature"),
		bad("tampered exp", env.tamper(tok, func(m map[string]any) { m["exp"] = t0 + 365*day }), "bad signature"),
		bad("tampered cnf", env.tamper(tok, func(m map[string]any) { m["cnf"] = map[string]any{"jkt": testJKT(6)} }), "bad signature"),
		bad("reencoded same claims", env.tamper(tok, func(map[string]any) {}), "bad signature"),
		bad("header reordered", reordered+"."+p+"."+s, "bad signature"),
		bad("signature bit flip", h+"."+p+"."+base64.RawURLEncoding.EncodeToString(flipped), "bad signature"),
		bad("signature zero", h+"."+p+"."+base64.RawURLEncoding.EncodeToString(make([]byte, 64)), "bad signature"),
		bad("signature short", h+"."+p+"."+base64.RawURLEncoding.EncodeToString(sig[:63]), "not 64 bytes"),
		bad("signature long", h+"."+p+"."+base64.RawURLEncoding.EncodeToString(append(sig, 0)), "not 64 bytes"),
		bad("signature DER", h+"."+p+"."+base64.RawURLEncoding.EncodeToString(derSig(t, sig)), "not 64 bytes"),
		bad("signature non-canonical base64", h+"."+p+"."+nonCanonical(s), "canonical"),
		bad("signature padded", tok+"==", "not a JWS compact"),
		bad("signature std base64", h+"."+p+"."+base64.StdEncoding.EncodeToString(sig), "not a JWS compact"),
		bad("JWS JSON general", jws.FullSerialize(), "not a JWS compact"),
		bad("JWS JSON flattened", flat, "not a JWS compact"),
		bad("truncated one char", tok[:len(tok)-1], ""),
		bad("truncated half", tok[:len(tok)/2], ""),
		bad("no signature", h+"."+p+".", "empty JWS segment"),
		bad("no signature no dot", h+"."+p, "not a JWS compact"),
		bad("header only", h, "not a JWS compact"),
		bad("empty payload", h+".."+s, "empty JWS segment"),
		bad("dots", "..", "empty JWS segment"),
		bad("extra dot", tok+".", "not a JWS compact"),
		bad("extra segment", tok+"."+s, "not a JWS compact"),
		bad("five segments (JWE shape)", h+"."+p+"."+s+"."+p+"."+s, "not a JWS compact"),
		bad("empty", "", "empty"),
		bad("leading space", " "+tok, "not a JWS compact"),
		bad("trailing newline", tok+"\n", "not a JWS compact"),
		bad("embedded newline", h+".\n"+p+"."+s, "not a JWS compact"),
		bad("bearer prefix", "Bearer "+tok, "not a JWS compact"),
		bad("too long", h+"."+strings.Repeat("A", 9000)+"."+s, "too long"),
		bad("header not JSON", base64.RawURLEncoding.EncodeToString([]byte("ES256"))+"."+p+"."+s, "not a JSON object"),
		bad("header array", b64json(t, []string{"ES256"})+"."+p+"."+s, "not a JSON object"),
		bad("payload not JSON", env.signedRawPayload("not json"), "not a JSON claims object"),
		bad("payload array", env.signedRawPayload(`[{"sub":"x"}]`), "not a JSON claims object"),
		bad("payload trailing data", env.signedRawPayload(string(mustJSON(t, fullAgentClaims(t0)))+"{}"), "not a JSON claims object"),
		bad("payload null", env.signedRawPayload("null"), "wrong iss"),
	}
}

// signedRawPayload signs a valid header over payload bytes as given.
func (env *attackEnv) signedRawPayload(payload string) string {
	input := b64json(env.t, validHeader(env.kid)) + "." + base64.RawURLEncoding.EncodeToString([]byte(payload))
	sig, err := env.e.SignES256(pathV1, []byte(input))
	if err != nil {
		env.t.Fatal(err)
	}
	return input + "." + base64.RawURLEncoding.EncodeToString(sig)
}

// nonCanonical re-spells an unpadded base64url segment whose last
// character carries unused bits, setting one of those bits: the same bytes
// in a second spelling.
func nonCanonical(seg string) string {
	const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
	last := strings.IndexByte(alphabet, seg[len(seg)-1])
	return seg[:len(seg)-1] + string(alphabet[last|1])
}

// derSig converts a raw r||s signature to ASN.1 DER, the form ES256 forbids.
func derSig(t *testing.T, raw []byte) []byte {
	t.Helper()
	enc := func(b []byte) []byte {
		for len(b) > 1 && b[0] == 0 {
			b = b[1:]
		}
		if b[0]&0x80 != 0 {
			b = append([]byte{0}, b...)
		}
		return append([]byte{0x02, byte(len(b))}, b...)
	}
	body := append(enc(raw[:32]), enc(raw[32:])...)
	return append([]byte{0x30, byte(len(body))}, body...)
}

// compressed is the SEC1 compressed form of an uncompressed P-256 point.
func compressed(uncompressed []byte) []byte {
	return append([]byte{2 + uncompressed[64]&1}, uncompressed[1:33]...)
}
