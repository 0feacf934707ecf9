package enclave

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/agentkeys/agentkeys/internal/attest"
)

// TestReleaseSignature: with a release-signing key configured the enclave opens
// only an executable whose <exe>.sig is that key's signature over its digest;
// every other case is refused before a seed is created, naming the executable
// and the signature file.
func TestReleaseSignature(t *testing.T) {
	cfg := testConfig(t)
	pub, priv := signExecutable(t, cfg.Executable)
	good := readFile(t, cfg.Executable+ReleaseSigSuffix)
	digest := sha256.Sum256(readFile(t, cfg.Executable))
	_, otherPriv, _ := ed25519.GenerateKey(rand.Reader)

	refusals := map[string]struct {
		prepare func(c *Config)
		want    string
	}{
		"no signature file": {func(c *Config) { os.Remove(c.Executable + ReleaseSigSuffix) }, "no signature file"},
		"executable altered after signing": {func(c *Config) {
			b := readFile(t, c.Executable)
			b[3] ^= 1
			os.WriteFile(c.Executable, b, 0o700)
		}, "another build"},
		"signed by another key": {func(c *Config) { writeSig(t, c.Executable, SignRelease(otherPriv, digest)) }, "not the configured"},
		"signature of another key, relabelled": {func(c *Config) {
			s := SignRelease(otherPriv, digest)
			s.Signer = SignRelease(priv, digest).Signer
			writeSig(t, c.Executable, s)
		}, "does not verify"},
		"signature for another digest": {func(c *Config) {
			s := SignRelease(priv, sha256.Sum256([]byte("another build")))
			s.SHA256 = SignRelease(priv, digest).SHA256
			writeSig(t, c.Executable, s)
		}, "does not verify"},
		"version 2":       {func(c *Config) { s := SignRelease(priv, digest); s.Version = 2; writeSig(t, c.Executable, s) }, "version 2"},
		"unknown field":   {func(c *Config) { os.WriteFile(c.Executable+ReleaseSigSuffix, []byte(`{"v":1,"x":1}`), 0o644) }, "not a release signature"},
		"trailing data":   {func(c *Config) { os.WriteFile(c.Executable+ReleaseSigSuffix, append(good, []byte(` {}`)...), 0o644) }, "after"},
		"oversized file":  {func(c *Config) { os.WriteFile(c.Executable+ReleaseSigSuffix, make([]byte, MaxReleaseSigSize+1), 0o644) }, "more than"},
		"empty file":      {func(c *Config) { os.WriteFile(c.Executable+ReleaseSigSuffix, nil, 0o644) }, "not a release signature"},
		"signature bytes": {func(c *Config) { s := SignRelease(priv, digest); s.Sig = s.Sig[:10]; writeSig(t, c.Executable, s) }, "does not verify"},
	}
	for name, r := range refusals {
		t.Run(name, func(t *testing.T) {
			c := testConfig(t)
			os.WriteFile(c.Executable, readFile(t, cfg.Executable), 0o700)
			os.WriteFile(c.Executable+ReleaseSigSuffix, good, 0o644)
			c.SignerPublicKey = pub
			r.prepare(&c)
			_, err := Open(c)
			var re *ReleaseError
			if !errors.Is(err, ErrReleaseSignature) || !errors.As(err, &re) || re.Executable != c.Executable ||
				re.SigFile != c.Executable+ReleaseSigSuffix || !strings.Contains(re.Reason, r.want) {
				t.Fatalf("Open: %v, want a release-signature refusal saying %q", err, r.want)
			}
			if _, err := os.Stat(filepath.Join(c.Dir, sealedName)); !errors.Is(err, os.ErrNotExist) {
				t.Fatal("a seed was created for a build that may not run")
			}
		})
	}

	// A symbolic link to the executable: the signature sits beside the file it names.
	link := filepath.Join(t.TempDir(), "agentkeys")
	if err := os.Symlink(cfg.Executable, link); err != nil {
		t.Fatal(err)
	}
	c := cfg
	c.Executable, c.SignerPublicKey = link, pub
	e := mustOpen(t, c)
	if m := e.Measurements(); m.Tier != attest.TierProduction || m.MrSigner != sha256.Sum256(pub) || m.MrEnclave != digest {
		t.Fatalf("measurements %+v", m)
	}
	if q := e.Quote([64]byte{}); q.Tier != attest.TierProduction || attest.Verify(q, e.PlatformPublicKey()) != nil {
		t.Fatalf("quote %+v", q)
	}
	e.Close()
	// Without a configured key the signature file plays no part: tier dev.
	dev := testConfig(t)
	signExecutable(t, dev.Executable)
	if m := mustOpen(t, dev).Measurements(); m.Tier != attest.TierDev {
		t.Fatalf("tier %s without --mrsigner-key", m.Tier)
	}
}
