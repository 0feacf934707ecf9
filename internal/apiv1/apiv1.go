// Package apiv1 holds the wire types of the broker's HTTP API (/v1 and the
// public /mock reads): every request and response body, and the statements a
// client signs for it (login, pair decision). The server (package api, with the
// broker's services) and every client (package client, the daemon, the CLI)
// share these types, so the JSON on the wire has one definition.
//
// apiv1 is a leaf: it imports only the standard library and other leaf
// packages, so a client that links it links neither the broker, the enclave,
// the ledger nor a SQL driver (TestDeps in package client holds that).
package apiv1

import (
	"crypto/ed25519"
	"encoding/hex"
	"strconv"

	"github.com/agentkeys/agentkeys/internal/attest"
	"github.com/agentkeys/agentkeys/internal/entry"
)

// Login is a statement signed by an owner's identity key to open a session. It
// names the broker it is meant for, so it cannot be replayed elsewhere, and a
// nonce, so it opens at most one session (the ledger remembers its hash).
type Login struct {
	PublicKey  string `json:"public_key"`            // hex Ed25519
	Server     string `json:"server"`                // the broker URL the client addressed; must be the issuer
	Time       int64  `json:"time"`                  // unix seconds; within LoginSkew of the broker's clock
	Nonce      string `json:"nonce"`                 // hex, 16 random bytes
	ChannelKey string `json:"channel_key,omitempty"` // base64 hybrid HPKE public key: also return the session channel key sealed to it
	Sig        string `json:"sig"`                   // hex Ed25519 over LoginMessage
	Invite     string `json:"invite,omitempty"`      // sign-up on a broker with --signup invite: the operator's invite code
}

// LoginMessage is what the identity key signs.
func LoginMessage(l Login) []byte {
	return []byte("agentkeys/login/v1\n" + l.PublicKey + "\n" + l.Server + "\n" + strconv.FormatInt(l.Time, 10) +
		"\n" + l.Nonce + "\n" + l.ChannelKey)
}

// SignLogin fills Sig with the identity key's signature.
func SignLogin(l *Login, key ed25519.PrivateKey) {
	l.Sig = hex.EncodeToString(ed25519.Sign(key, LoginMessage(*l)))
}

// SessionGrant is what a successful login returns to the client.
type SessionGrant struct {
	Omni        string `json:"omni"`
	Wallet      string `json:"wallet"`
	SID         string `json:"sid"`
	Token       string `json:"token"`
	ExpiresAt   int64  `json:"expires_at"`             // unix seconds
	ChannelKey  string `json:"channel_key,omitempty"`  // base64, HPKE-sealed to Login.ChannelKey
	ChannelInfo string `json:"channel_info,omitempty"` // the HPKE info used
}

// Whoami describes the caller's session; never the token. Agent sessions add
// the agent's alias, generation and current scope (from state: what the next
// request may do).
type Whoami struct {
	Omni       string   `json:"omni"`
	Wallet     string   `json:"wallet"`
	Role       string   `json:"role"`
	SID        string   `json:"sid"`
	ExpiresAt  int64    `json:"expires_at"`
	Parent     string   `json:"parent,omitempty"`
	Alias      string   `json:"alias,omitempty"`
	Generation int      `json:"generation,omitempty"`
	Scope      []string `json:"scope,omitempty"`
}

// PairCreated answers a pair request. Only the requester gets Nonce and VVC
// (the owner sees the VVC in its authenticated pending view); the daemon checks
// VVC = agent.VVC(Nonce, its signature) and Fingerprint against its own key.
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

// StoreBody is the body of POST /v1/credentials.
type StoreBody struct {
	Service    string `json:"service"`
	Agent      string `json:"agent,omitempty"`
	Ciphertext []byte `json:"ciphertext"` // base64: HPKE to shielding/v1 with seal.CredentialInfo
	Approval   string `json:"approval,omitempty"`
}

// ReadBody is the body of POST /v1/credentials/{service}/read.
type ReadBody struct {
	Agent     string `json:"agent,omitempty"`
	Recipient []byte `json:"recipient,omitempty"` // base64 hybrid HPKE public key; omit to use the session channel
}

// ReadResult is a credential re-encrypted for the caller.
type ReadResult struct {
	Service string `json:"service"`
	Agent   string `json:"agent"`
	Version int    `json:"version"`
	Mode    string `json:"mode"`   // "hpke" (to Recipient) or "session" (session channel box)
	Sealed  []byte `json:"sealed"` // base64 in JSON
	Info    string `json:"info"`   // HPKE info / AEAD associated data
}

// CredentialList is the body of GET /v1/credentials.
type CredentialList struct {
	Credentials []Credential `json:"credentials"`
}

// ApprovalList is the body of GET /v1/approvals.
type ApprovalList struct {
	Approvals []Approval `json:"approvals"`
}

// UsageList is the body of GET /v1/usage. Next, when set, is the from of the
// next page: the page was full, so more rows may follow.
type UsageList struct {
	Usage []Usage `json:"usage"`
	Next  *uint64 `json:"next,omitempty"`
}

// MaxUsagePage caps limit on GET /v1/usage (also its default).
const MaxUsagePage = 1000

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

// EnclaveInfo is the body of GET /v1/enclave.
type EnclaveInfo struct {
	MrEnclave string           `json:"mrenclave"`
	MrSigner  string           `json:"mrsigner"`
	Tier      string           `json:"tier"`
	Keys      []attest.KeyInfo `json:"keys"`
	Quote     attest.Quote     `json:"quote"` // report_data commits to the empty nonce and the keys
}

// HeadInfo is the body of GET /v1/ledger/head.
type HeadInfo struct {
	Seq  uint64     `json:"seq"`
	Hash entry.Hash `json:"hash"`
	Time string     `json:"time"`
}

// EntriesPage is the body of GET /v1/ledger/entries.
type EntriesPage struct {
	Entries []entry.Entry `json:"entries"`
	Next    uint64        `json:"next"` // seq to ask for next
}

// MaxEntriesPage caps limit on GET /v1/ledger/entries.
const MaxEntriesPage = 1000
