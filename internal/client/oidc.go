package client

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/hex"
	"net/http"

	"github.com/agentkeys/agentkeys/internal/apiv1"
	"github.com/agentkeys/agentkeys/internal/entry"
)

// OIDCToken mints an identity token for the agent session.
func (a *AgentSession) OIDCToken(ctx context.Context, audience string, ttl int64) (*apiv1.OIDCToken, error) {
	var t apiv1.OIDCToken
	return &t, a.do(ctx, http.MethodPost, "/v1/oidc/token", apiv1.OIDCRequest{Audience: audience, TTL: ttl}, &t)
}

// OIDCToken mints an identity token for the owner itself (owner_self).
func (s *Session) OIDCToken(ctx context.Context, audience string, ttl int64, self bool) (*apiv1.OIDCToken, error) {
	var t apiv1.OIDCToken
	return &t, s.do(ctx, http.MethodPost, "/v1/oidc/token", apiv1.OIDCRequest{Audience: audience, TTL: ttl, OwnerSelf: self}, &t)
}

// Discovery fetches the OpenID discovery document.
func (c *Client) Discovery(ctx context.Context) (*apiv1.Discovery, error) {
	var d apiv1.Discovery
	return &d, c.Do(ctx, http.MethodGet, apiv1.DiscoveryPath, nil, &d)
}

// JWKS fetches the issuer's key set.
func (c *Client) JWKS(ctx context.Context) (*apiv1.JWKS, error) {
	var k apiv1.JWKS
	return &k, c.Do(ctx, http.MethodGet, apiv1.JWKSPath, nil, &k)
}

// OIDCKeys lists the issuer key versions and their states.
func (c *Client) OIDCKeys(ctx context.Context) ([]apiv1.OIDCKeyInfo, error) {
	var l apiv1.OIDCKeyList
	err := c.Do(ctx, http.MethodGet, "/v1/oidc/keys", nil, &l)
	return l.Keys, err
}

// RotateOIDC asks the broker to rotate its OIDC issuer key, keeping the old one
// published for windowSeconds; the request is signed with the governance keys.
func (c *Client) RotateOIDC(ctx context.Context, windowSeconds int64, keys ...ed25519.PrivateKey) (*apiv1.RotateResult, error) {
	var nonce [16]byte
	rand.Read(nonce[:])
	p, err := entry.MarshalPayload(apiv1.OIDCRotate{WindowSeconds: windowSeconds, Nonce: hex.EncodeToString(nonce[:])})
	if err != nil {
		return nil, err
	}
	var out apiv1.RotateResult
	// The entry is built on the current head like SubmitGovernance does; a
	// moved head (CONFLICT) is retried there, so reuse its loop via submitWith.
	err = c.submitWith(ctx, apiv1.OIDCRotateKind, p, keys, func(e entry.Entry) error {
		return c.Do(ctx, http.MethodPost, "/v1/oidc/rotate", e, &out)
	})
	return &out, err
}
