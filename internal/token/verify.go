package token

import (
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"strings"

	"github.com/go-jose/go-jose/v4"
)

// maxTokenLen bounds the token text Verify looks at; session tokens are
// well under 1 KiB.
const maxTokenLen = 8 << 10

// acceptedAlgs is the explicit list of JWS algorithms Verify accepts.
var acceptedAlgs = []jose.SignatureAlgorithm{jose.ES256}

// b64 decodes canonical unpadded base64url only, so that each token has
// exactly one spelling per signature.
var b64 = base64.RawURLEncoding.Strict()

// Verify checks: compact JWS, header alg exactly ES256 (explicit accepted-algorithm list; alg none, HS256 etc. refused), header typ "JWT" if present, kid in the accepted set (unknown or injected kids refused, including kids of other enclave keys such as oidc/issuer/v1), signature, then claims: iss exact, aud exactly "agentkeys", typ "ACCESS", exp > now, iat ≤ now+60s, sub a valid omni, sid and jti non-empty, role owner|agent, agent ⇒ parent and cnf present. Errors wrap ErrInvalid (or ErrExpired for exp) and never include the token text.
//
// Further, the header may hold no parameter besides alg, kid and typ, every
// segment must be canonical base64url, aud must be a string (not an array)
// and an owner token may not name a parent. Successful verifications are
// cached by SHA-256 of the token; exp and iat are re-checked on every call.
// The returned Claims are the caller's own copy.
func (i *Issuer) Verify(token string) (*Claims, error) {
	if token == "" || len(token) > maxTokenLen {
		return nil, invalid("token is empty or too long")
	}
	now := i.now().Unix()
	sum := sha256.Sum256([]byte(token))
	if c, ok := i.cache.get(sum); ok {
		if err := checkTime(c, now); err != nil {
			return nil, err
		}
		return c.clone(), nil
	}
	c, err := i.verifyCold(token)
	if err != nil {
		return nil, err
	}
	if err := checkTime(c, now); err != nil {
		return nil, err
	}
	i.cache.put(sum, c)
	return c.clone(), nil
}

// verifyCold does the work Verify caches: token shape, header, signature and
// the clock-independent claims.
func (i *Issuer) verifyCold(token string) (*Claims, error) {
	header, _, sig, err := splitCompact(token)
	if err != nil {
		return nil, err
	}
	key, err := i.headerKey(header)
	if err != nil {
		return nil, err
	}
	if len(sig) != es256Sig {
		return nil, invalid("signature is not 64 bytes")
	}
	payload, err := verifySignature(token, key)
	if err != nil {
		return nil, err
	}
	return i.parseClaims(payload)
}

// splitCompact splits a JWS compact serialization into its three decoded
// segments. Every segment must be non-empty canonical base64url.
func splitCompact(token string) (header, payload, sig []byte, err error) {
	if !isB64URLDots(token) || strings.Count(token, ".") != 2 {
		return nil, nil, nil, invalid("not a JWS compact serialization")
	}
	h, rest, _ := strings.Cut(token, ".")
	p, s, _ := strings.Cut(rest, ".")
	var segs [3][]byte
	for n, seg := range [3]string{h, p, s} {
		if seg == "" {
			return nil, nil, nil, invalid("empty JWS segment")
		}
		if segs[n], err = b64.DecodeString(seg); err != nil {
			return nil, nil, nil, invalid("JWS segment is not canonical base64url")
		}
	}
	return segs[0], segs[1], segs[2], nil
}

// tokenHeader is the protected header of a session token.
type tokenHeader struct {
	Alg string `json:"alg"`
	Kid string `json:"kid"`
	Typ string `json:"typ"`
}

// headerKey checks the protected header and returns the verification key
// its kid names. Parameter names are matched exactly (not case-folded) and
// only alg, kid and typ may appear.
func (i *Issuer) headerKey(raw []byte) (verifyKey, error) {
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(raw, &fields); err != nil {
		return verifyKey{}, invalid("header is not a JSON object")
	}
	for name := range fields {
		if name != "alg" && name != "kid" && name != "typ" {
			return verifyKey{}, invalid("header has a parameter other than alg, kid and typ")
		}
	}
	var h tokenHeader
	if err := json.Unmarshal(raw, &h); err != nil {
		return verifyKey{}, invalid("header alg, kid or typ is not a string")
	}
	return i.checkHeader(h, fields)
}

// checkHeader applies the header rules to a decoded header.
func (i *Issuer) checkHeader(h tokenHeader, fields map[string]json.RawMessage) (verifyKey, error) {
	if h.Alg != string(jose.ES256) {
		return verifyKey{}, invalid("header alg is not ES256")
	}
	if _, has := fields["typ"]; has && h.Typ != "JWT" {
		return verifyKey{}, invalid(`header typ is not "JWT"`)
	}
	if _, has := fields["kid"]; !has {
		return verifyKey{}, invalid("header has no kid")
	}
	key, ok := i.keys[h.Kid]
	if !ok {
		return verifyKey{}, invalid("header kid is not an accepted session key")
	}
	return key, nil
}

// verifySignature verifies token with key through go-jose, restricted to
// ES256, and returns the signed payload.
func verifySignature(token string, key verifyKey) ([]byte, error) {
	jws, err := jose.ParseSignedCompact(token, acceptedAlgs)
	if err != nil {
		return nil, invalid("malformed JWS")
	}
	payload, err := jws.Verify(key.pub)
	if err != nil {
		return nil, invalid("bad signature")
	}
	return payload, nil
}

// parseClaims decodes the verified payload and checks the clock-independent
// claims.
func (i *Issuer) parseClaims(payload []byte) (*Claims, error) {
	var c Claims
	if err := json.Unmarshal(payload, &c); err != nil {
		return nil, invalid("payload is not a JSON claims object")
	}
	if err := checkStatic(&c, i.iss); err != nil {
		return nil, err
	}
	return &c, nil
}

// isB64URLDots reports whether s holds only base64url characters and dots.
func isB64URLDots(s string) bool {
	for i := 0; i < len(s); i++ {
		if !isB64URLByte(s[i]) && s[i] != '.' {
			return false
		}
	}
	return true
}

// isB64URL reports whether s holds only base64url characters.
func isB64URL(s string) bool {
	for i := 0; i < len(s); i++ {
		if !isB64URLByte(s[i]) {
			return false
		}
	}
	return true
}

// isB64URLByte reports whether c is in the base64url alphabet.
func isB64URLByte(c byte) bool {
	return c >= 'A' && c <= 'Z' || c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' || c == '_'
}
