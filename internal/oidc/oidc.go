// Package oidc is the broker's OpenID Connect issuer for cloud federation (§8): it
// builds the identity-token claims, the discovery document and the JWKS, and signs
// tokens through the enclave with an oidc/issuer/vN key. It decides nothing about
// who may mint (package broker does) and never holds a private key or a cloud
// credential; it also defines the audit entries of a mint.
package oidc

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"github.com/agentkeys/agentkeys/internal/apiv1"
)

// Tag keys and claim names.
const (
	ClaimAWSTags  = "https://aws.amazon.com/tags"
	ClaimFlatTags = "https://aws.amazon.com/tags/principal_tags"
)

// Token lifetimes.
const (
	DefaultTTL = 300  // seconds
	MaxTTL     = 3600 // seconds
	MaxToken   = 20000
)

// Tags are the principal tags of a token (values are arrays: AWS only turns
// them into session tags that way).
type Tags struct {
	UserWallet []string `json:"agentkeys_user_wallet"` // key apiv1.TagUserWallet
}

// AWSTags is the value of the https://aws.amazon.com/tags claim: AWS turns it
// into session tags.
type AWSTags struct {
	PrincipalTags     Tags     `json:"principal_tags"`
	TransitiveTagKeys []string `json:"transitive_tag_keys"`
}

// Claims are exactly the claims of an identity token. ClaimsSupported lists
// their JSON names; a test keeps the two in step.
type Claims struct {
	Issuer      string  `json:"iss"`
	Subject     string  `json:"sub"`
	Audience    string  `json:"aud"`
	IssuedAt    int64   `json:"iat"`
	NotBefore   int64   `json:"nbf"`
	Expiry      int64   `json:"exp"`
	ID          string  `json:"jti"`
	UserWallet  string  `json:"agentkeys_user_wallet"`
	OwnerWallet string  `json:"agentkeys_owner_wallet"`
	Omni        string  `json:"agentkeys_omni"`
	Tier        string  `json:"agentkeys_enclave_tier"`
	AWSTags     AWSTags `json:"https://aws.amazon.com/tags"`
	FlatTags    Tags    `json:"https://aws.amazon.com/tags/principal_tags"`
}

// ClaimsSupported is claims_supported of the discovery document.
var ClaimsSupported = []string{"iss", "sub", "aud", "iat", "nbf", "exp", "jti",
	"agentkeys_user_wallet", "agentkeys_owner_wallet", "agentkeys_omni", "agentkeys_enclave_tier",
	ClaimAWSTags, ClaimFlatTags}

// Subject is the sub of a token: enclave:<mrenclave>:<mrsigner>:<role>:<wallet lower-case>.
func Subject(mrenclave, mrsigner, role, wallet string) string {
	return "enclave:" + mrenclave + ":" + mrsigner + ":" + role + ":" + strings.ToLower(wallet)
}

// Identity is who a token is for.
type Identity struct {
	Role        string // "agent" or "owner"
	Wallet      string // the principal's wallet (agent wallet for agents)
	OwnerWallet string
	Omni        string
}

// Enclave is what the claims say about the signing enclave.
type Enclave struct {
	MrEnclave, MrSigner, Tier string
}

// NewClaims builds the claims of a token for id, valid [now, now+ttl).
func NewClaims(issuer, audience string, id Identity, enc Enclave, now, ttl int64) Claims {
	var b [16]byte
	rand.Read(b[:]) // never fails (crypto/rand)
	w := strings.ToLower(id.Wallet)
	tags := Tags{UserWallet: []string{w}}
	return Claims{Issuer: issuer, Subject: Subject(enc.MrEnclave, enc.MrSigner, id.Role, w), Audience: audience,
		IssuedAt: now, NotBefore: now, Expiry: now + ttl, ID: base64.RawURLEncoding.EncodeToString(b[:]),
		UserWallet: w, OwnerWallet: strings.ToLower(id.OwnerWallet), Omni: id.Omni, Tier: enc.Tier,
		AWSTags:  AWSTags{PrincipalTags: tags, TransitiveTagKeys: []string{apiv1.TagUserWallet}},
		FlatTags: tags}
}

// NewDiscovery returns the discovery document of issuer (no trailing slash).
func NewDiscovery(issuer string) apiv1.Discovery {
	return apiv1.Discovery{Issuer: issuer, JWKSURI: issuer + apiv1.JWKSPath, ResponseTypes: []string{"id_token"},
		SubjectTypes: []string{"public"}, SigningAlgs: []string{"ES256"}, ClaimsSupported: ClaimsSupported}
}

// NewJWK returns the JWK of a P-256 public key (hex uncompressed point).
func NewJWK(kid, publicHex string) (apiv1.JWK, error) {
	b, err := hex.DecodeString(publicHex)
	if err != nil {
		return apiv1.JWK{}, fmt.Errorf("oidc: public key is not hex: %w", err)
	}
	if _, err := ecdsa.ParseUncompressedPublicKey(elliptic.P256(), b); err != nil {
		return apiv1.JWK{}, errors.New("oidc: public key is not a 65-byte uncompressed P-256 point")
	}
	enc := base64.RawURLEncoding.EncodeToString
	return apiv1.JWK{Kty: "EC", Crv: "P-256", X: enc(b[1:33]), Y: enc(b[33:]), Kid: kid, Alg: "ES256", Use: "sig"}, nil
}

// SignerFunc signs a JWS signing input with the enclave key at path (ES256, r||s).
type SignerFunc func(path string, signingInput []byte) ([]byte, error)

// Key is one signing key, by enclave path.
type Key struct {
	Path string
	Kid  string
}

// Signer signs tokens with one enclave key; safe for concurrent use.
//
// A token is a compact JWS written here directly: the protected header is fixed
// per key ({"alg":"ES256","kid":…,"typ":"JWT"}, encoded once), so a mint costs one
// JSON encoding of the claims and one enclave signature. Tests verify the result
// with go-jose and coreos/go-oidc, as relying parties do.
type Signer struct {
	key  Key
	sign SignerFunc
	head string // base64url of the protected header
}

// NewSigner returns a signer for key k.
func NewSigner(k Key, sign SignerFunc) (*Signer, error) {
	if k.Kid == "" || k.Path == "" || sign == nil {
		return nil, errors.New("oidc: a signer needs a key path, a kid and a signing function")
	}
	h, err := json.Marshal(struct {
		Alg string `json:"alg"`
		Kid string `json:"kid"`
		Typ string `json:"typ"`
	}{"ES256", k.Kid, "JWT"})
	if err != nil {
		return nil, err
	}
	return &Signer{key: k, sign: sign, head: base64.RawURLEncoding.EncodeToString(h)}, nil
}

// Kid is the signing key's id.
func (s *Signer) Kid() string { return s.key.Kid }

// Sign serializes and signs c.
func (s *Signer) Sign(c Claims) (string, error) {
	payload, err := json.Marshal(c)
	if err != nil {
		return "", err
	}
	enc := base64.RawURLEncoding
	n := len(s.head) + 1 + enc.EncodedLen(len(payload))
	if n+1+enc.EncodedLen(64) > MaxToken {
		return "", fmt.Errorf("oidc: token would be %d characters, the limit is %d", n+1+enc.EncodedLen(64), MaxToken)
	}
	tok := make([]byte, 0, n+1+enc.EncodedLen(64))
	tok = append(tok, s.head...)
	tok = append(tok, '.')
	tok = enc.AppendEncode(tok, payload)
	sig, err := s.sign(s.key.Path, tok)
	if err != nil {
		return "", fmt.Errorf("oidc: sign with %s: %w", s.key.Path, err)
	}
	if len(sig) != 64 {
		return "", fmt.Errorf("oidc: sign with %s: the enclave returned a %d-byte signature, want 64", s.key.Path, len(sig))
	}
	tok = append(tok, '.')
	return string(enc.AppendEncode(tok, sig)), nil
}
