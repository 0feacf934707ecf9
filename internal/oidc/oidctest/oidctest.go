// Package oidctest gives relying-party tests an identity-token issuer: a
// package oidc Signer over a fresh in-memory P-256 key (the broker's signer
// runs inside the enclave), with the JWK a JWKS would publish for it.
package oidctest

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"testing"

	"github.com/agentkeys/agentkeys/internal/apiv1"
	"github.com/agentkeys/agentkeys/internal/oidc"
)

// Issuer signs identity tokens as the broker does, with its own key.
type Issuer struct {
	Key    *ecdsa.PrivateKey
	Signer *oidc.Signer
	JWK    apiv1.JWK
}

// New returns an issuer whose tokens carry kid.
func New(t testing.TB, kid string) *Issuer {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	is := &Issuer{Key: k}
	is.Signer, err = oidc.NewSigner(oidc.Key{Path: "oidc/issuer/v1", Kid: kid}, func(_ string, in []byte) ([]byte, error) {
		h := sha256.Sum256(in)
		r, s, err := ecdsa.Sign(rand.Reader, k, h[:])
		if err != nil {
			return nil, err
		}
		sig := make([]byte, 64) // JWS ES256: r ‖ s, 32 bytes each
		r.FillBytes(sig[:32])
		s.FillBytes(sig[32:])
		return sig, nil
	})
	if err != nil {
		t.Fatal(err)
	}
	pub, err := k.PublicKey.Bytes()
	if err != nil {
		t.Fatal(err)
	}
	if is.JWK, err = oidc.NewJWK(kid, hex.EncodeToString(pub)); err != nil {
		t.Fatal(err)
	}
	return is
}
