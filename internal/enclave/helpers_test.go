package enclave

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// testConfig returns a Config for a data directory that does not exist yet
// and a small stand-in executable (hashing the test binary on every Open
// would only slow the tests down; TestMrEnclaveDefaultExecutable covers it).
func testConfig(t testing.TB) Config {
	t.Helper()
	base := t.TempDir()
	exe := filepath.Join(base, "agentkeys")
	if err := os.WriteFile(exe, []byte("stand-in agentkeys executable"), 0o700); err != nil {
		t.Fatal(err)
	}
	return Config{Dir: filepath.Join(base, "server"), PlatformKeyFile: filepath.Join(base, "platform.key"), Executable: exe}
}

func mustOpen(t testing.TB, cfg Config) *Enclave {
	t.Helper()
	e, err := Open(cfg)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(e.Close)
	return e
}

func readFile(t testing.TB, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// dirListing returns the names in dir, sorted.
func dirListing(t testing.TB, dir string) []string {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	return names
}

// expectOpenError opens cfg, expects an error wrapping want that is one line,
// and checks that seed.sealed is byte-for-byte unchanged and no file appeared.
func expectOpenError(t *testing.T, cfg Config, want error) error {
	t.Helper()
	sealPath := filepath.Join(cfg.Dir, sealedName)
	before := readFile(t, sealPath)
	listing := strings.Join(dirListing(t, cfg.Dir), ",")
	e, err := Open(cfg)
	if err == nil {
		e.Close()
		t.Fatalf("Open succeeded, want %v", want)
	}
	if !errors.Is(err, want) {
		t.Fatalf("Open error = %v, want errors.Is %v", err, want)
	}
	if msg := err.Error(); strings.ContainsAny(msg, "\r\n") {
		t.Fatalf("error message is not one line: %q", msg)
	}
	if after := readFile(t, sealPath); !bytes.Equal(before, after) {
		t.Fatalf("seed.sealed changed after a failed Open")
	}
	if got := strings.Join(dirListing(t, cfg.Dir), ","); got != listing {
		t.Fatalf("directory changed after a failed Open: %s -> %s", listing, got)
	}
	return err
}

// testOmni returns a deterministic account id.
func testOmni(i int) string {
	h := sha256.Sum256([]byte{byte(i), byte(i >> 8), byte(i >> 16), byte(i >> 24)})
	return hex.EncodeToString(h[:])
}

// signExecutable signs exe with a new release-signing key, writes exe.sig and
// returns the key pair.
func signExecutable(t testing.TB, exe string) (ed25519.PublicKey, ed25519.PrivateKey) {
	t.Helper()
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	writeSig(t, exe, SignRelease(priv, sha256.Sum256(readFile(t, exe))))
	return pub, priv
}

func writeSig(t testing.TB, exe string, s ReleaseSignature) {
	t.Helper()
	b, err := json.Marshal(s)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(exe+ReleaseSigSuffix, b, 0o644); err != nil {
		t.Fatal(err)
	}
}
