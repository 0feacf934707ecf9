// Package apiv1 holds the wire types of the broker's HTTP API (/v1 and the
// public /mock reads): every request and response body, and the statements a
// client signs for it (login, pair decision). The server (package api, with the
// broker's services) and every client (package client, the daemon, the CLI)
// share these types, so the JSON on the wire has one definition.
//
// apiv1 is a leaf: it imports only the standard library and other leaf
// packages, so a client that links it links neither the broker, the enclave,
// the ledger nor a SQL driver (TestDeps in package fence holds that).
package apiv1

import (
	"crypto/ed25519"
	"encoding/hex"
	"strconv"
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
