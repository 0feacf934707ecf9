package broker

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"os"

	"github.com/agentkeys/agentkeys/internal/atomicfile"
)

// ensureOperatorKey creates the 1-of-1 governance key (PKCS#8 PEM, 0600) unless it
// exists; it reports whether it created one. An existing key is never replaced.
func ensureOperatorKey(path string) (bool, error) {
	if _, err := os.Stat(path); err == nil {
		_, err := LoadOperatorKey(path)
		return false, err
	} else if !errors.Is(err, fs.ErrNotExist) {
		return false, err
	}
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return false, err
	}
	der, err := x509.MarshalPKCS8PrivateKey(priv)
	if err != nil {
		return false, err
	}
	key := pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})
	defer clear(key)
	if err := atomicfile.CreateNew(path, key, 0o600); err != nil {
		return false, fmt.Errorf("creating operator key: %w", err)
	}
	return true, nil
}

// LoadOperatorKey reads an operator (governance) key written by the first start.
func LoadOperatorKey(path string) (ed25519.PrivateKey, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("%w %s: %v", errNoOperatorKey, path, err)
	}
	blk, _ := pem.Decode(b)
	if blk == nil || blk.Type != "PRIVATE KEY" {
		return nil, fmt.Errorf("%w %s: not a PEM PRIVATE KEY", errNoOperatorKey, path)
	}
	k, err := x509.ParsePKCS8PrivateKey(blk.Bytes)
	if err != nil {
		return nil, fmt.Errorf("%w %s: %v", errNoOperatorKey, path, err)
	}
	priv, ok := k.(ed25519.PrivateKey)
	if !ok {
		return nil, fmt.Errorf("%w %s: not an Ed25519 key", errNoOperatorKey, path)
	}
	return priv, nil
}
