package token

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/agentkeys/agentkeys/internal/attest"
	"github.com/agentkeys/agentkeys/internal/enclave"
)

// Values of the fixed claims and of the role claim.
const (
	Audience   = "agentkeys"
	TypeAccess = "ACCESS"
	RoleOwner  = "owner"
	RoleAgent  = "agent"
)

const (
	// keyPrefix is the path prefix of every session-signing key:
	// issuer/jwt/v1, issuer/jwt/v2, ...
	keyPrefix = "issuer/jwt/v"
	// maxIssuerLen bounds Options.Issuer.
	maxIssuerLen = 1024
	// defaultCacheSize is the number of cached verifications when
	// Options.CacheSize is 0.
	defaultCacheSize = 1 << 16
)

var (
	// ErrInvalid: the token is malformed, not signed by an accepted key, or
	// carries a claim that is wrong or missing. Mint also returns it for
	// claims it will not sign.
	ErrInvalid = errors.New("token: invalid")
	// ErrExpired: the token is authentic but its exp has passed. It wraps
	// ErrInvalid, so errors.Is(err, ErrInvalid) holds for every refused
	// token and ErrExpired tells the expired ones apart.
	ErrExpired = fmt.Errorf("%w: expired", ErrInvalid)
)

// Claims is the payload of a session token (§4.2).
type Claims struct {
	Issuer    string `json:"iss"`
	Subject   string `json:"sub"` // omni: 64 lowercase hex
	Audience  string `json:"aud"`
	Type      string `json:"typ"`
	SessionID string `json:"sid"`
	Role      string `json:"role"`
	IssuedAt  int64  `json:"iat"`
	Expiry    int64  `json:"exp"`
	ID        string `json:"jti"`
	Parent    string `json:"parent,omitempty"` // agent sessions: the owner's omni
	Cnf       *Cnf   `json:"cnf,omitempty"`    // agent sessions: proof-key binding
}

// Cnf is the confirmation claim (RFC 7800) binding an agent token to the
// daemon's proof key.
type Cnf struct {
	JKT string `json:"jkt"` // RFC 7638 thumbprint (base64url) of the daemon's proof key
}

// clone returns a deep copy of c, so that callers never share the Cnf of a
// cached entry.
func (c *Claims) clone() *Claims {
	out := *c
	if c.Cnf != nil {
		cnf := *c.Cnf
		out.Cnf = &cnf
	}
	return &out
}

// Signer is the part of the enclave the issuer uses: ES256 signing and the
// public description of a key. *enclave.Enclave implements it.
type Signer interface {
	SignES256(path string, signingInput []byte) ([]byte, error)
	PublicKey(path string) (attest.KeyInfo, error)
}

// Options configures NewIssuer.
type Options struct {
	Issuer    string           // iss, e.g. "http://127.0.0.1:8090" (byte-identical in tokens)
	Current   string           // path of the signing key, e.g. "issuer/jwt/v1"
	Accepted  []string         // further key paths still accepted for verification (rotation); Current is always accepted
	Now       func() time.Time // nil = time.Now
	CacheSize int              // verified-signature cache entries; 0 = 65536, negative = no cache
}

// verifyKey is one key Verify accepts.
type verifyKey struct {
	path string
	kid  string
	pub  *ecdsa.PublicKey
}

// Issuer mints and verifies session tokens. Its key set is fixed at
// NewIssuer: rotating keys means building a new Issuer. It is safe for
// concurrent use.
type Issuer struct {
	iss     string
	now     func() time.Time
	current verifyKey
	signer  *opaqueSigner
	keys    map[string]verifyKey // by kid
	kids    []string             // AcceptedKids order: current first
	cache   *cache               // nil when disabled
}

// NewIssuer returns an Issuer that signs with o.Current and verifies tokens
// signed by o.Current or any key in o.Accepted. Every key path must be
// issuer/jwt/v<N> (N a positive decimal number) and name an ES256 key of s.
func NewIssuer(s Signer, o Options) (*Issuer, error) {
	if s == nil {
		return nil, errors.New("token: NewIssuer: nil Signer")
	}
	if err := checkIssuerName(o.Issuer); err != nil {
		return nil, err
	}
	i := &Issuer{iss: o.Issuer, now: o.Now, keys: make(map[string]verifyKey)}
	if i.now == nil {
		i.now = time.Now
	}
	for _, path := range append([]string{o.Current}, o.Accepted...) {
		if err := i.addKey(s, path); err != nil {
			return nil, err
		}
	}
	i.current = i.keys[i.kids[0]]
	i.signer = &opaqueSigner{s: s, key: i.current}
	i.cache = newCache(o.CacheSize)
	return i, nil
}

// checkIssuerName checks Options.Issuer.
func checkIssuerName(iss string) error {
	if iss == "" || len(iss) > maxIssuerLen {
		return fmt.Errorf("token: NewIssuer: Issuer must be 1 to %d bytes", maxIssuerLen)
	}
	for _, r := range iss {
		if r < 0x20 || r == 0x7f {
			return errors.New("token: NewIssuer: Issuer contains a control character")
		}
	}
	return nil
}

// addKey loads the key at path into the accepted set; a path already in the
// set is skipped.
func (i *Issuer) addKey(s Signer, path string) error {
	for _, k := range i.keys {
		if k.path == path {
			return nil
		}
	}
	k, err := loadKey(s, path)
	if err != nil {
		return err
	}
	if _, dup := i.keys[k.kid]; dup {
		return fmt.Errorf("token: NewIssuer: key %s has the same kid as another accepted key", path)
	}
	i.keys[k.kid] = k
	i.kids = append(i.kids, k.kid)
	return nil
}

// loadKey fetches and checks the public key at path.
func loadKey(s Signer, path string) (verifyKey, error) {
	if !validKeyPath(path) {
		return verifyKey{}, fmt.Errorf("token: NewIssuer: key path %q is not issuer/jwt/v<N>", path)
	}
	info, err := s.PublicKey(path)
	if err != nil {
		return verifyKey{}, fmt.Errorf("token: NewIssuer: key %s: %w", path, err)
	}
	if info.Alg != enclave.AlgES256 || info.Kid == "" {
		return verifyKey{}, fmt.Errorf("token: NewIssuer: key %s is %q, want an ES256 key with a kid", path, info.Alg)
	}
	raw, err := hex.DecodeString(info.Public)
	if err != nil {
		return verifyKey{}, fmt.Errorf("token: NewIssuer: key %s: public key is not hex", path)
	}
	pub, err := ecdsa.ParseUncompressedPublicKey(elliptic.P256(), raw)
	if err != nil {
		return verifyKey{}, fmt.Errorf("token: NewIssuer: key %s: %w", path, err)
	}
	return verifyKey{path: path, kid: info.Kid, pub: pub}, nil
}

// AcceptedKids lists the kids Verify accepts (for /v1/enclave and ops): the
// current signing key first, then the others in Options.Accepted order.
func (i *Issuer) AcceptedKids() []string {
	return append([]string(nil), i.kids...)
}

// validKeyPath reports whether path is issuer/jwt/v<N>, N a decimal number
// from 1 to 999999999 without leading zeros. Keeping session keys to this
// one family keeps them apart from every other enclave key.
func validKeyPath(path string) bool {
	n, ok := strings.CutPrefix(path, keyPrefix)
	if !ok || n == "" || len(n) > 9 || n[0] == '0' {
		return false
	}
	for i := 0; i < len(n); i++ {
		if n[i] < '0' || n[i] > '9' {
			return false
		}
	}
	return true
}
