package dpop

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"strconv"
	"time"
)

// Signer makes the proofs of one key for one access token ("" for requests
// without one). What is the same in all of them — the header with the public
// key, the token's hash — is encoded once, and each proof is written into one
// buffer: a proof then costs its signature and little else (a daemon signs one
// for every broker call). Every proof has a fresh random jti and the iat of the
// time it is made; nothing is signed ahead. It is safe for concurrent use.
type Signer struct {
	key  *ecdsa.PrivateKey
	head string // base64url(header) + "."
	ath  string // `,"ath":"…"`, or "" without a token
}

// NewSigner returns the signer of proofs by key for token.
func NewSigner(key *ecdsa.PrivateKey, token string) (*Signer, error) {
	if key == nil || key.Curve != elliptic.P256() {
		return nil, invalid("proof key is not a P-256 key")
	}
	pub, err := key.PublicKey.Bytes() // 0x04 || x || y
	if err != nil {
		return nil, invalid("proof key is not a P-256 key")
	}
	// The header go-jose writes, byte for byte (TestSignMatchesGoJose).
	enc := base64.RawURLEncoding
	header := `{"alg":"ES256","jwk":{"kty":"EC","crv":"P-256","x":"` + enc.EncodeToString(pub[1:33]) +
		`","y":"` + enc.EncodeToString(pub[33:]) + `"},"typ":"` + Type + `"}`
	s := &Signer{key: key, head: enc.EncodeToString([]byte(header)) + "."}
	if token != "" {
		s.ath = `,"ath":"` + ATH(token) + `"`
	}
	return s, nil
}

// Sign makes a proof for method and URL (its query and fragment are not part
// of it), dated now.
func (s *Signer) Sign(method, rawURL string, now time.Time) (string, error) {
	htu, err := HTU(rawURL)
	if err != nil {
		return "", err
	}
	var jti [16]byte
	rand.Read(jti[:])
	// The claims as json.Marshal writes Claims (TestSignerClaimsAsMarshal).
	var buf [256]byte
	c := append(buf[:0], `{"htm":`...)
	c = appendJSONString(c, method)
	c = append(c, `,"htu":`...)
	c = appendJSONString(c, htu)
	c = append(c, `,"iat":`...)
	c = strconv.AppendInt(c, now.Unix(), 10)
	c = append(c, `,"jti":"`...)
	c = hex.AppendEncode(c, jti[:])
	c = append(c, '"')
	c = append(c, s.ath...)
	c = append(c, '}')

	enc := base64.RawURLEncoding
	out := make([]byte, 0, len(s.head)+enc.EncodedLen(len(c))+1+enc.EncodedLen(64))
	out = append(out, s.head...)
	out = enc.AppendEncode(out, c)
	digest := sha256.Sum256(out)
	r, sv, err := ecdsa.Sign(rand.Reader, s.key, digest[:])
	if err != nil {
		return "", err
	}
	var sig [64]byte // ES256: r || s, 32 bytes each (RFC 7518 §3.4)
	r.FillBytes(sig[:32])
	sv.FillBytes(sig[32:])
	out = append(out, '.')
	out = enc.AppendEncode(out, sig[:])
	return string(out), nil
}

// appendJSONString appends v as encoding/json writes it: as it is between
// quotes when no byte of it needs escaping (a method, a normalised URL), else
// through json.Marshal.
func appendJSONString(b []byte, v string) []byte {
	for i := 0; i < len(v); i++ {
		if c := v[i]; c < 0x20 || c >= 0x7f || c == '"' || c == '\\' || c == '<' || c == '>' || c == '&' {
			q, _ := json.Marshal(v)
			return append(b, q...)
		}
	}
	b = append(b, '"')
	b = append(b, v...)
	return append(b, '"')
}
