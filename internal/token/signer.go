package token

import (
	"fmt"

	"github.com/go-jose/go-jose/v4"
)

// es256Sig is the length of an ES256 JWS signature (r || s, RFC 7518 §3.4).
const es256Sig = 64

// opaqueSigner is a jose.OpaqueSigner that signs in the enclave with one
// fixed key, so the private key never leaves it.
type opaqueSigner struct {
	s   Signer
	key verifyKey
}

var _ jose.OpaqueSigner = (*opaqueSigner)(nil)

// Public returns the public JWK of the signing key; go-jose copies its kid
// into the protected header.
func (o *opaqueSigner) Public() *jose.JSONWebKey {
	return &jose.JSONWebKey{Key: o.key.pub, KeyID: o.key.kid, Algorithm: string(jose.ES256), Use: "sig"}
}

// Algs returns ES256, the only algorithm session tokens use.
func (o *opaqueSigner) Algs() []jose.SignatureAlgorithm {
	return []jose.SignatureAlgorithm{jose.ES256}
}

// SignPayload signs the JWS signing input with the enclave key.
func (o *opaqueSigner) SignPayload(payload []byte, alg jose.SignatureAlgorithm) ([]byte, error) {
	if alg != jose.ES256 {
		return nil, fmt.Errorf("token: sign: algorithm %q is not ES256", alg)
	}
	sig, err := o.s.SignES256(o.key.path, payload)
	if err != nil {
		return nil, err
	}
	if len(sig) != es256Sig {
		return nil, fmt.Errorf("token: sign: enclave returned a %d-byte signature, want %d", len(sig), es256Sig)
	}
	return sig, nil
}
