package apiv1

import "github.com/agentkeys/agentkeys/internal/attest"

// TagUserWallet is the claim (and AWS session tag) of an identity token that
// carries the agent's wallet address: what cloud policies key on.
const TagUserWallet = "agentkeys_user_wallet"

// AWSAudience is the audience AWS STS expects.
const AWSAudience = "sts.amazonaws.com"

// Discovery is the body of /.well-known/openid-configuration.
type Discovery struct {
	Issuer          string   `json:"issuer"`
	JWKSURI         string   `json:"jwks_uri"`
	ResponseTypes   []string `json:"response_types_supported"`
	SubjectTypes    []string `json:"subject_types_supported"`
	SigningAlgs     []string `json:"id_token_signing_alg_values_supported"`
	ClaimsSupported []string `json:"claims_supported"`
}

// JWKSPath is where the key set is served.
const JWKSPath = "/.well-known/jwks.json"

// DiscoveryPath is where the discovery document is served.
const DiscoveryPath = "/.well-known/openid-configuration"

// JWK is one published public key.
type JWK struct {
	Kty string `json:"kty"`
	Crv string `json:"crv"`
	X   string `json:"x"`
	Y   string `json:"y"`
	Kid string `json:"kid"`
	Alg string `json:"alg"`
	Use string `json:"use"`
}

// JWKS is the body of /.well-known/jwks.json.
type JWKS struct {
	Keys []JWK `json:"keys"`
}

// OIDCRotate is the payload of oidc.rotate: the operator's request.
type OIDCRotate struct {
	WindowSeconds int64  `json:"window_seconds"`
	Nonce         string `json:"nonce"`
}

// OIDCRotateKind is the ledger kind of an OIDCRotate request: the kind of the
// governance-signed entry POST /v1/oidc/rotate takes.
const OIDCRotateKind = "oidc.rotate"

// OIDCKey is one OIDC issuer key as the API lists it: the registry's record
// (registry.OidcKey), converted field for field.
type OIDCKey struct {
	Kid           string       `json:"kid"`
	Path          string       `json:"path"` // oidc/issuer/vN
	Version       int          `json:"version"`
	JWK           JWK          `json:"jwk"`
	Public        string       `json:"public"` // hex uncompressed point
	Quote         attest.Quote `json:"quote"`  // report_data = registry.OidcKeyReportData(kid, public)
	ActiveFrom    int64        `json:"active_from"`
	ActiveUntil   int64        `json:"active_until,omitempty"` // 0 = open-ended; else withdrawn from JWKS at this time
	RevokedReason string       `json:"revoked_reason,omitempty"`
}

// OIDCRequest is the body of POST /v1/oidc/token.
type OIDCRequest struct {
	Audience  string `json:"audience"`
	TTL       int64  `json:"ttl,omitempty"`        // seconds; default 300, at most the server's maximum (≤ 3600)
	OwnerSelf bool   `json:"owner_self,omitempty"` // an owner minting for itself must say so
}

// OIDCToken is a minted identity token.
type OIDCToken struct {
	Token     string `json:"token"`
	Kid       string `json:"kid"`
	JTI       string `json:"jti"`
	Audience  string `json:"audience"`
	Subject   string `json:"sub"`
	ExpiresAt int64  `json:"expires_at"` // unix seconds
}

// OIDCKeyInfo is one issuer key as GET /v1/oidc/keys lists it.
type OIDCKeyInfo struct {
	OIDCKey
	State string `json:"state"` // current, retiring, retired, revoked
}

// RotateResult is the answer of POST /v1/oidc/rotate.
type RotateResult struct {
	Key      OIDCKey `json:"key"`
	Previous OIDCKey `json:"previous"`
}

// OIDCKeyList is the body of GET /v1/oidc/keys.
type OIDCKeyList struct {
	Keys []OIDCKeyInfo `json:"keys"`
}

// ActiveKey is one element of GET /mock/oidc-pubkeys/active.
type ActiveKey struct {
	Kid    string `json:"kid"`
	Pubkey string `json:"pubkey"` // hex uncompressed P-256 point
}
