package mailedge

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	gooidc "github.com/coreos/go-oidc/v3/oidc"
	jose "github.com/go-jose/go-jose/v4"

	"github.com/agentkeys/agentkeys/internal/apiv1"
	"github.com/agentkeys/agentkeys/internal/oidc"
)

// Agent is who an identity token the Verifier accepted speaks for.
type Agent struct {
	Omni   string    // the agent's omni: what Directory.Lookup takes
	Wallet string    // the agent's wallet, lowercase
	Expiry time.Time // the token's exp
}

// KeySource returns the issuer's current JWKS: the broker's JWKS method in
// its own process, RemoteJWKS for a separate edge.
type KeySource func(ctx context.Context) (apiv1.JWKS, error)

// Verifier checks the identity tokens agents authenticate with (SASL
// OAUTHBEARER on submission and IMAP), as any relying party would
// (coreos/go-oidc): ES256 only, a signature by a key of the issuer's JWKS, iss
// the broker's issuer, aud one of the edge's audiences (by default its mail
// domains), exp and nbf against the edge's clock. It says who the token is for, not what it may do: rights are
// the Directory's, asked per address. Safe for concurrent use.
type Verifier struct {
	v         *gooidc.IDTokenVerifier
	audiences []string
}

// NewVerifier returns a verifier of tokens issued by issuer for one of
// audiences. now is the clock (nil: time.Now).
func NewVerifier(issuer string, audiences []string, keys KeySource, now func() time.Time) *Verifier {
	if now == nil {
		now = time.Now
	}
	ks := &keySet{src: keys, now: now}
	return &Verifier{audiences: slices.Clone(audiences),
		v: gooidc.NewVerifier(issuer, ks, &gooidc.Config{SkipClientIDCheck: true, SupportedSigningAlgs: []string{"ES256"}, Now: now})}
}

// ErrToken is every refusal of a token (match with errors.Is); its message
// says why, never the token.
var ErrToken = errors.New("identity token refused")

// Verify checks token and returns its agent.
func (v *Verifier) Verify(ctx context.Context, token string) (*Agent, error) {
	if len(token) > oidc.MaxToken {
		return nil, fmt.Errorf("%w: longer than %d characters", ErrToken, oidc.MaxToken)
	}
	t, err := v.v.Verify(ctx, token)
	if err != nil {
		return nil, fmt.Errorf("%w: %s", ErrToken, why(err))
	}
	if len(t.Audience) != 1 || !slices.Contains(v.audiences, t.Audience[0]) {
		return nil, fmt.Errorf("%w: issued for another audience", ErrToken)
	}
	var c struct {
		Omni   string `json:"agentkeys_omni"`
		Wallet string `json:"agentkeys_user_wallet"`
	}
	if err := t.Claims(&c); err != nil || len(c.Omni) != 64 || strings.Trim(c.Omni, "0123456789abcdef") != "" {
		return nil, fmt.Errorf("%w: it names no agent (agentkeys_omni)", ErrToken)
	}
	if !strings.Contains(t.Subject, ":agent:") {
		return nil, fmt.Errorf("%w: it is not an agent's", ErrToken)
	}
	return &Agent{Omni: c.Omni, Wallet: strings.ToLower(c.Wallet), Expiry: t.Expiry}, nil
}

// why is a verification failure in a few words, without the token.
func why(err error) string {
	var exp *gooidc.TokenExpiredError
	switch s := err.Error(); {
	case errors.As(err, &exp):
		return "expired"
	case strings.Contains(s, "audience"):
		return "issued for another audience"
	case strings.Contains(s, "issued by a different provider"):
		return "issued by another issuer"
	case strings.Contains(s, "nbf"):
		return "not valid yet"
	case strings.Contains(s, "signature") || strings.Contains(s, "signing"):
		return "its signature does not verify with the issuer's keys"
	}
	return "malformed"
}

// keySet is the issuer's JWKS as go-oidc's KeySet: cached, fetched again for
// an unknown kid at most once per refreshEvery, so tokens naming made-up kids
// cost a caller nothing more than a map lookup.
type keySet struct {
	src     KeySource
	now     func() time.Time
	mu      sync.Mutex
	keys    map[string]*ecdsa.PublicKey
	fetched time.Time
}

const refreshEvery = 30 * time.Second

func (k *keySet) VerifySignature(ctx context.Context, jwt string) ([]byte, error) {
	sig, err := jose.ParseSignedCompact(jwt, []jose.SignatureAlgorithm{jose.ES256})
	if err != nil || len(sig.Signatures) != 1 {
		return nil, errors.New("malformed jwt signature")
	}
	key, err := k.key(ctx, sig.Signatures[0].Header.KeyID)
	if err != nil {
		return nil, err
	}
	return sig.Verify(key)
}

func (k *keySet) key(ctx context.Context, kid string) (*ecdsa.PublicKey, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if key := k.keys[kid]; key != nil {
		return key, nil
	}
	if now := k.now(); k.keys == nil || now.Sub(k.fetched) >= refreshEvery || now.Before(k.fetched) {
		set, err := k.src(ctx)
		if err != nil {
			return nil, fmt.Errorf("fetching the issuer's signing keys: %w", err)
		}
		k.keys, k.fetched = map[string]*ecdsa.PublicKey{}, now
		for _, j := range set.Keys {
			if pub, err := ecKey(j); err == nil {
				k.keys[j.Kid] = pub
			}
		}
	}
	if key := k.keys[kid]; key != nil {
		return key, nil
	}
	return nil, errors.New("no signing key with this kid")
}

func ecKey(j apiv1.JWK) (*ecdsa.PublicKey, error) {
	if j.Kty != "EC" || j.Crv != "P-256" || (j.Alg != "" && j.Alg != "ES256") {
		return nil, errors.New("not a P-256 key")
	}
	x, err1 := base64.RawURLEncoding.DecodeString(j.X)
	y, err2 := base64.RawURLEncoding.DecodeString(j.Y)
	if err1 != nil || err2 != nil || len(x) != 32 || len(y) != 32 {
		return nil, errors.New("malformed P-256 key")
	}
	return ecdsa.ParseUncompressedPublicKey(elliptic.P256(), append(append([]byte{4}, x...), y...))
}

// RemoteJWKS is the KeySource of a separate edge: the JWKS at jwksURL (the
// broker's /.well-known/jwks.json).
func RemoteJWKS(jwksURL string, hc *http.Client) KeySource {
	if hc == nil {
		hc = &http.Client{Timeout: 10 * time.Second}
	}
	return func(ctx context.Context) (apiv1.JWKS, error) {
		var set apiv1.JWKS
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, jwksURL, nil)
		if err != nil {
			return set, err
		}
		res, err := hc.Do(req)
		if err != nil {
			return set, err
		}
		defer res.Body.Close()
		if res.StatusCode != http.StatusOK {
			return set, fmt.Errorf("GET %s: %s", jwksURL, res.Status)
		}
		err = json.NewDecoder(io.LimitReader(res.Body, 1<<20)).Decode(&set)
		return set, err
	}
}
