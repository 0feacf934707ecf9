package apiv1

import (
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"math/big"
	"slices"
	"strconv"
	"strings"

	"github.com/agentkeys/agentkeys/internal/dpop"
)

// Pair request states, as PairStatus.Status reports them.
const (
	PairPending  = "pending"
	PairApproved = "approved"
	PairDenied   = "denied"
	PairExpired  = "expired" // never stored: a pending request past its expiry
)

// PairRequest is what a daemon signs to ask for pairing.
type PairRequest struct {
	Owner      string   `json:"owner"` // omni or wallet address of the owner
	Alias      string   `json:"alias"`
	Scope      []string `json:"scope"`
	TTLSeconds int64    `json:"ttl_seconds,omitempty"` // requested session TTL; 0 = default
	ProofJWK   string   `json:"proof_jwk"`             // public P-256 JWK (JSON text)
	HPKEPublic string   `json:"hpke_public"`           // base64 hybrid ML-KEM-768+X25519 public key
	ValidUntil int64    `json:"valid_until"`           // unix seconds: the daemon stops waiting then
	Sig        string   `json:"sig"`                   // base64url ES256 (r||s) by the proof key over PairMessage
}

// PairMessage is the canonical encoding a daemon signs.
func PairMessage(r PairRequest) []byte {
	return []byte("agentkeys/pair/v1\n" + r.Owner + "\n" + r.Alias + "\n" + strings.Join(r.Scope, ",") + "\n" +
		strconv.FormatInt(r.TTLSeconds, 10) + "\n" + r.ProofJWK + "\n" + r.HPKEPublic + "\n" + strconv.FormatInt(r.ValidUntil, 10))
}

// SignPairRequest fills r.Sig with key's ES256 signature over PairMessage(r).
func SignPairRequest(r *PairRequest, key *ecdsa.PrivateKey) error {
	h := sha256.Sum256(PairMessage(*r))
	rr, ss, err := ecdsa.Sign(nil, key, h[:])
	if err != nil {
		return err
	}
	sig := make([]byte, 64)
	rr.FillBytes(sig[:32])
	ss.FillBytes(sig[32:])
	r.Sig = base64.RawURLEncoding.EncodeToString(sig)
	return nil
}

// VerifyPairRequest checks r.Sig and returns the proof key's thumbprint.
func VerifyPairRequest(r PairRequest) (jkt string, err error) {
	pub, jkt, err := dpop.ParseJWK([]byte(r.ProofJWK))
	if err != nil {
		return "", err
	}
	sig, err := base64.RawURLEncoding.DecodeString(r.Sig)
	if err != nil || len(sig) != 64 {
		return "", errors.New("sig is not a base64url ES256 signature")
	}
	h := sha256.Sum256(PairMessage(r))
	if !ecdsa.Verify(pub, h[:], new(big.Int).SetBytes(sig[:32]), new(big.Int).SetBytes(sig[32:])) {
		return "", errors.New("sig does not verify under proof_jwk")
	}
	return jkt, nil
}

// VVCNonceSize is the size of the broker's VVC nonce.
const VVCNonceSize = 32

// VVCHash binds a request's VVC: SHA-256(nonce || signature bytes), where nonce
// is drawn by the broker after the signed request arrived (§6). The requester
// cannot grind it: it does not know the nonce when it signs. The owner's
// decision signs this hash, not the 6 digits, so a public decision does not
// give the digits away either.
func VVCHash(nonce []byte, sig string) [32]byte {
	raw, err := base64.RawURLEncoding.DecodeString(sig)
	if err != nil {
		raw = []byte(sig)
	}
	h := sha256.New()
	h.Write(nonce)
	h.Write(raw)
	var out [32]byte
	h.Sum(out[:0])
	return out
}

// VVCDigits is the 6-digit code of a VVC hash: its first 8 bytes as a
// big-endian integer, mod 10^6.
func VVCDigits(h [32]byte) string {
	return fmt.Sprintf("%06d", binary.BigEndian.Uint64(h[:8])%1_000_000)
}

// VVC is the 6-digit visual verification code of a request signature under the
// broker's nonce.
func VVC(nonce []byte, sig string) string { return VVCDigits(VVCHash(nonce, sig)) }

// Fingerprint is the short form of a daemon key's JWK thumbprint (jkt) that the
// daemon prints and the owner compares: its first 8 bytes in hex, in groups of
// four (64 bits: a look-alike key costs ~2^64 key generations).
func Fingerprint(jkt string) string {
	raw, err := base64.RawURLEncoding.DecodeString(jkt)
	if err != nil || len(raw) < 8 {
		return jkt
	}
	x := hex.EncodeToString(raw[:8])
	return x[:4] + "-" + x[4:8] + "-" + x[8:12] + "-" + x[12:]
}

// Delivery is what an approved request hands its daemon: only sealed material.
type Delivery struct {
	Agent            string `json:"agent"` // agent omni
	Wallet           string `json:"wallet"`
	SID              string `json:"sid"`
	Generation       int    `json:"generation"`
	ExpiresAt        int64  `json:"expires_at"`         // session expiry, unix seconds
	SealedToken      string `json:"sealed_token"`       // base64, HPKE to hpke_public with TokenInfo
	SealedChannelKey string `json:"sealed_channel_key"` // base64, HPKE to hpke_public with ChannelInfo
	ChannelInfo      string `json:"channel_info"`
}

// TokenInfo is the HPKE info of a sealed agent token.
func TokenInfo(pairID string) string { return "agentkeys/agent-token/v1|" + pairID }

// InScope reports whether scope allows service.
func InScope(scope []string, service string) bool { return slices.Contains(scope, service) }

// AllowsOIDC reports whether scope allows identity tokens for audience:
// oidc:* or oidc:<audience>.
func AllowsOIDC(scope []string, audience string) bool {
	return slices.Contains(scope, "oidc:*") || slices.Contains(scope, "oidc:"+audience)
}

// PairCreated answers a pair request. Only the requester gets Nonce and VVC
// (the owner sees the VVC in its authenticated pending view); the daemon checks
// VVC = VVC(Nonce, its signature) and Fingerprint against its own key.
type PairCreated struct {
	ID          string `json:"id"`
	VVC         string `json:"vvc"`
	Nonce       string `json:"nonce"`       // hex: the broker's VVC nonce
	Fingerprint string `json:"fingerprint"` // Fingerprint of the proof key
	ExpiresAt   int64  `json:"expires_at"`  // unix seconds
}

// PendingPair is the owner's view of a pending pair request: what to compare
// with the daemon (VVC, key fingerprint) and what tells requests apart (id,
// source address, time).
type PendingPair struct {
	ID          string   `json:"id"`
	Alias       string   `json:"alias"`
	Scope       []string `json:"scope"`
	TTLSeconds  int64    `json:"ttl_seconds,omitempty"`
	VVC         string   `json:"vvc"`
	VVCHash     string   `json:"vvc_hash"`    // hex VVCHash: what a decision signs
	Fingerprint string   `json:"fingerprint"` // Fingerprint(JKT)
	JKT         string   `json:"jkt"`         // the daemon's proof key thumbprint
	Source      string   `json:"source"`      // the address the request came from
	CreatedAt   int64    `json:"created_at"`  // unix seconds
	ExpiresAt   int64    `json:"expires_at"`  // unix seconds
}

// Decision is the owner's signed answer to a pair request: the identity key
// signs DecisionMessage, which names the broker, the request, its VVC hash (the
// VVC the owner compared is its 6 digits; the hash does not give them away to
// anyone who reads the public decision) and the decision.
type Decision struct {
	Time int64  `json:"time"`
	Sig  string `json:"sig"` // hex Ed25519
}

// DecisionMessage is what the owner's identity key signs.
// vvcHash is the hex PendingPair.VVCHash of the request.
func DecisionMessage(server, id, vvcHash, decision string, t int64) []byte {
	return []byte("agentkeys/pair-decision/v2\n" + server + "\n" + id + "\n" + vvcHash + "\n" + decision + "\n" + strconv.FormatInt(t, 10))
}

// SignDecision signs a decision with the owner's identity key.
func SignDecision(key ed25519.PrivateKey, server, id, vvcHash, decision string, t int64) Decision {
	return Decision{Time: t, Sig: hex.EncodeToString(ed25519.Sign(key, DecisionMessage(server, id, vvcHash, decision, t)))}
}

// PairStatus is what a daemon's poll sees.
type PairStatus struct {
	ID        string    `json:"id"`
	Status    string    `json:"status"` // pending, approved, denied, expired
	Alias     string    `json:"alias"`
	Scope     []string  `json:"scope"`
	ExpiresAt int64     `json:"expires_at"`
	Delivery  *Delivery `json:"delivery,omitempty"` // approved: sealed token and channel key
}

// PairList is the body of GET /v1/pair/requests.
type PairList struct {
	Requests []PendingPair `json:"requests"`
}

// AgentList is the body of GET /v1/agents.
type AgentList struct {
	Agents []Agent `json:"agents"`
}

// ServiceList is the body of GET /v1/agent/credentials.
type ServiceList struct {
	Services         []string `json:"services"`
	ApprovalRequired []string `json:"approval_required"` // those of Services whose every read needs the owner's approval
}

// TeardownResult is the body of POST /v1/agents/{alias}/teardown.
type TeardownResult struct {
	Alias   string `json:"alias"`
	Deleted int    `json:"deleted"`
}

// ScopeEdit changes an agent's scope: Set replaces it (when non-nil), then Add
// and Remove apply.
type ScopeEdit struct {
	Set    []string `json:"set,omitempty"`
	Add    []string `json:"add,omitempty"`
	Remove []string `json:"remove,omitempty"`
}
