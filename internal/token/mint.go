package token

import (
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"fmt"

	"github.com/go-jose/go-jose/v4"
)

// jtiBytes is the number of random bytes in a generated jti.
const jtiBytes = 16

// Mint fills iss, aud, typ, iat (if 0), jti (if "", 16 random bytes base64url) and signs; requires sub (valid omni), sid, role (owner|agent), exp > iat; agent role requires Parent and Cnf.
//
// iss, aud and typ may be left empty or set to the values Mint would fill
// in; anything else is refused. Mint only returns tokens Verify would accept
// at the moment of minting, so exp must also lie in the future and iat at
// most a minute ahead. The returned claims are exactly those signed.
func (i *Issuer) Mint(c Claims) (token string, claims Claims, err error) {
	now := i.now().Unix()
	c, err = i.fill(c, now)
	if err != nil {
		return "", Claims{}, err
	}
	if err := checkStatic(&c, i.iss); err != nil {
		return "", Claims{}, err
	}
	if err := checkTime(&c, now); err != nil {
		return "", Claims{}, err
	}
	token, err = i.sign(&c)
	if err != nil {
		return "", Claims{}, err
	}
	return token, *c.clone(), nil
}

// fill sets the claims Mint owns (iat from now, in Unix seconds), refusing
// conflicting values. The result shares nothing with the caller's c.
func (i *Issuer) fill(c Claims, now int64) (Claims, error) {
	if !settable(c.Issuer, i.iss) || !settable(c.Audience, Audience) || !settable(c.Type, TypeAccess) {
		return Claims{}, invalid("Mint sets iss, aud and typ itself; leave them empty")
	}
	c.Issuer, c.Audience, c.Type = i.iss, Audience, TypeAccess
	if c.IssuedAt == 0 {
		c.IssuedAt = now
	}
	if c.ID == "" {
		var b [jtiBytes]byte
		if _, err := rand.Read(b[:]); err != nil {
			return Claims{}, fmt.Errorf("token: Mint: jti: %w", err)
		}
		c.ID = base64.RawURLEncoding.EncodeToString(b[:])
	}
	return *c.clone(), nil
}

// settable reports whether a claim given as v may be set to want.
func settable(v, want string) bool {
	return v == "" || v == want
}

// sign serializes c and has the current key sign it.
func (i *Issuer) sign(c *Claims) (string, error) {
	payload, err := json.Marshal(c)
	if err != nil {
		return "", fmt.Errorf("token: Mint: encode claims: %w", err)
	}
	signer, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.ES256, Key: i.signer}, (&jose.SignerOptions{}).WithType("JWT"))
	if err != nil {
		return "", fmt.Errorf("token: Mint: %w", err)
	}
	jws, err := signer.Sign(payload)
	if err != nil {
		return "", fmt.Errorf("token: Mint: sign with %s: %w", i.current.path, err)
	}
	return jws.CompactSerialize()
}
