// Package home keeps a user's local AgentKeys state under $AGENTKEYS_HOME
// (default ~/.agentkeys): the owner's identity key, the session and the platform
// key pinned at first contact. Files are 0600 and directories 0700; files are
// replaced atomically. Secrets here never go to logs or argv.
package home

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/agentkeys/agentkeys/internal/atomicfile"
)

// Dir is an AgentKeys home directory.
type Dir string

// ErrMissing means the file does not exist yet.
var ErrMissing = errors.New("not found")

// CheckStore validates AGENTKEYS_SESSION_STORE. Only the 0600 file store exists on
// this platform: "" and "file" select it, "auto" too (no OS keychain is reachable
// from a sandbox without a desktop session), anything else is an error.
func CheckStore(v string) error {
	switch v {
	case "", "file", "auto":
		return nil
	}
	return fmt.Errorf("AGENTKEYS_SESSION_STORE=%q is not supported here: use file (the default)", v)
}

func (d Dir) path(parts ...string) string {
	return filepath.Join(append([]string{string(d)}, parts...)...)
}

// WriteFile replaces path atomically with data, mode 0600, creating missing
// parents 0700: a crash leaves the old file or the new one, never half of one.
func WriteFile(path string, data []byte) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return err
	}
	return atomicfile.WriteFile(path, data, 0o600)
}

func readJSON(path string, v any) error {
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return ErrMissing
	}
	if err != nil {
		return err
	}
	if err := json.Unmarshal(b, v); err != nil {
		return fmt.Errorf("%s is damaged: %v", path, err)
	}
	return nil
}

type identityFile struct {
	Type       string `json:"type"`
	PublicKey  string `json:"public_key"`
	PrivateKey string `json:"private_key"` // hex Ed25519 seed
}

// IdentityPath is where the owner identity key lives.
func (d Dir) IdentityPath() string { return d.path("owner", "identity.json") }

// Identity loads the owner identity key.
func (d Dir) Identity() (ed25519.PrivateKey, error) {
	var f identityFile
	if err := readJSON(d.IdentityPath(), &f); err != nil {
		return nil, err
	}
	seed, err := hex.DecodeString(f.PrivateKey)
	if err != nil || len(seed) != ed25519.SeedSize {
		return nil, fmt.Errorf("%s is damaged: private_key is not an Ed25519 seed", d.IdentityPath())
	}
	return ed25519.NewKeyFromSeed(seed), nil
}

// NewIdentity creates the owner identity key; it refuses to replace one.
func (d Dir) NewIdentity() (ed25519.PrivateKey, error) {
	if _, err := os.Stat(d.IdentityPath()); err == nil {
		return nil, fmt.Errorf("%s already exists", d.IdentityPath())
	}
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, err
	}
	b, _ := json.MarshalIndent(identityFile{Type: "ed25519", PublicKey: hex.EncodeToString(pub), PrivateKey: hex.EncodeToString(priv.Seed())}, "", "  ")
	return priv, WriteFile(d.IdentityPath(), b)
}

// Session is a stored session. Token is secret.
type Session struct {
	Server      string `json:"server"`
	Omni        string `json:"omni"`
	Wallet      string `json:"wallet"`
	SID         string `json:"sid"`
	Token       string `json:"token"`
	ExpiresAt   int64  `json:"expires_at"`
	PlatformKey string `json:"platform_key"` // hex, pinned at first contact
}

// SessionPath is where the owner session lives.
func (d Dir) SessionPath() string { return d.path("owner", "session.json") }

// Session loads the owner session.
func (d Dir) Session() (*Session, error) {
	var s Session
	return &s, readJSON(d.SessionPath(), &s)
}

// SaveSession stores the owner session.
func (d Dir) SaveSession(s *Session) error {
	b, _ := json.MarshalIndent(s, "", "  ")
	return WriteFile(d.SessionPath(), b)
}
