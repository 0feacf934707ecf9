package enclave

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/agentkeys/agentkeys/internal/attest"
)

func TestOpenCreatesThenReopens(t *testing.T) {
	cfg := testConfig(t)
	e, err := Open(cfg)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	if !e.Created() {
		t.Fatal("first Open: Created() = false")
	}

	// Files and modes.
	if got := dirListing(t, cfg.Dir); !slices.Equal(got, []string{sealedName}) {
		t.Fatalf("data dir holds %v, want exactly seed.sealed (the platform key lives outside it)", got)
	}
	checkMode(t, cfg.Dir, 0o700|os.ModeDir)
	checkMode(t, filepath.Join(cfg.Dir, sealedName), 0o600)
	checkMode(t, cfg.PlatformKeyFile, 0o600)
	pk := readFile(t, cfg.PlatformKeyFile)
	if len(pk) != 65 || pk[64] != '\n' {
		t.Fatalf("platform.key is %d bytes, want 64 hex digits and a newline", len(pk))
	}
	if _, err := hex.DecodeString(string(pk[:64])); err != nil {
		t.Fatalf("platform.key is not hex: %v", err)
	}
	var sf sealedFile
	sealed := readFile(t, filepath.Join(cfg.Dir, sealedName))
	if err := json.Unmarshal(sealed, &sf); err != nil {
		t.Fatalf("seed.sealed is not JSON: %v", err)
	}
	if sf.V != 1 || sf.MrSigner != hex.EncodeToString(e.meas.MrSigner[:]) {
		t.Fatalf("seed.sealed header = %+v", sf)
	}
	platformID := sha256.Sum256(e.PlatformPublicKey())
	if sf.Platform != hex.EncodeToString(platformID[:]) {
		t.Fatalf("seed.sealed platform = %s, want SHA-256 of the attestation key", sf.Platform)
	}

	// Published keys.
	keys := e.Keys()
	var paths []string
	for _, k := range keys {
		paths = append(paths, k.Path)
	}
	if !slices.Equal(paths, []string{"issuer/jwt/v1", "ledger/v1", "oidc/issuer/v1", "shielding/v1"}) {
		t.Fatalf("Keys paths = %v", paths)
	}
	wantAlg := map[string]string{"issuer/jwt/v1": "ES256", "ledger/v1": "EdDSA", "oidc/issuer/v1": "ES256", "shielding/v1": "HPKE-MLKEM768X25519"}
	wantLen := map[string]int{"issuer/jwt/v1": 65, "ledger/v1": 32, "oidc/issuer/v1": 65, "shielding/v1": 1184 + 32}
	for _, k := range keys {
		if k.Alg != wantAlg[k.Path] {
			t.Errorf("%s: alg %s, want %s", k.Path, k.Alg, wantAlg[k.Path])
		}
		pub, err := hex.DecodeString(k.Public)
		if err != nil || len(pub) != wantLen[k.Path] {
			t.Errorf("%s: public is %d bytes (%v), want %d", k.Path, len(pub), err, wantLen[k.Path])
		}
		if k.Kid != attest.Kid(k.Path, pub) || len(k.Kid) != 16 {
			t.Errorf("%s: kid %q", k.Path, k.Kid)
		}
	}

	omni := testOmni(1)
	extra := []string{"wallet/eth/" + omni + "/v1", "dkim/example.com/v1", "oidc/issuer/v2"}
	infos := map[string]attest.KeyInfo{}
	for _, p := range extra {
		ki, err := e.PublicKey(p)
		if err != nil {
			t.Fatalf("PublicKey(%s): %v", p, err)
		}
		infos[p] = ki
	}
	addr, err := e.WalletAddress(omni)
	if err != nil {
		t.Fatal(err)
	}
	meas := e.Measurements()
	platformPub := e.PlatformPublicKey()
	e.Close()

	// Reopen: same seed, same keys, nothing rewritten.
	e2 := mustOpen(t, cfg)
	if e2.Created() {
		t.Fatal("second Open: Created() = true")
	}
	if !slices.Equal(e2.Keys(), keys) {
		t.Fatalf("Keys differ after reopen:\n%v\n%v", keys, e2.Keys())
	}
	for _, p := range extra {
		ki, err := e2.PublicKey(p)
		if err != nil {
			t.Fatal(err)
		}
		if ki != infos[p] {
			t.Fatalf("PublicKey(%s) differs after reopen: %v vs %v", p, infos[p], ki)
		}
	}
	if addr2, _ := e2.WalletAddress(omni); addr2 != addr {
		t.Fatalf("WalletAddress differs after reopen: %s vs %s", addr, addr2)
	}
	if e2.Measurements() != meas || !platformPub.Equal(e2.PlatformPublicKey()) {
		t.Fatal("measurements or platform key differ after reopen")
	}
	if !bytes.Equal(sealed, readFile(t, filepath.Join(cfg.Dir, sealedName))) {
		t.Fatal("seed.sealed was rewritten by a reopen")
	}
	if infos[extra[2]] == keys[2] {
		t.Fatal("oidc/issuer/v2 equals oidc/issuer/v1")
	}
}

func checkMode(t *testing.T, path string, want os.FileMode) {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if got := fi.Mode() & (os.ModePerm | os.ModeDir); got != want {
		t.Fatalf("%s: mode %v, want %v", path, got, want)
	}
}

func TestOpenExistingDirKeepsMode(t *testing.T) {
	cfg := testConfig(t)
	if err := os.Mkdir(cfg.Dir, 0o750); err != nil {
		t.Fatal(err)
	}
	mustOpen(t, cfg)
	checkMode(t, cfg.Dir, 0o750|os.ModeDir) // not ours to change
}

func TestPlatformKeyHex(t *testing.T) {
	cfg := testConfig(t)
	secret := make([]byte, 32)
	rand.Read(secret)
	cfg.PlatformKeyHex = hex.EncodeToString(secret)
	e := mustOpen(t, cfg)
	keys := e.Keys()
	e.Close()
	if got := dirListing(t, cfg.Dir); !slices.Equal(got, []string{sealedName}) {
		t.Fatalf("with AGENTKEYS_PLATFORM_KEY set the dir holds %v, want only seed.sealed", got)
	}

	// Same key in upper case and with surrounding whitespace: same platform.
	cfg2 := cfg
	cfg2.PlatformKeyHex = " " + strings.ToUpper(cfg.PlatformKeyHex) + "\n"
	e2 := mustOpen(t, cfg2)
	if !slices.Equal(e2.Keys(), keys) {
		t.Fatal("Keys differ after reopen")
	}
	e2.Close()

	// The same secret as a platform.key file is interchangeable.
	if err := os.WriteFile(cfg.PlatformKeyFile, []byte(cfg.PlatformKeyHex+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg3 := cfg
	cfg3.PlatformKeyHex = ""
	e3 := mustOpen(t, cfg3)
	if !slices.Equal(e3.Keys(), keys) {
		t.Fatal("Keys differ when the secret comes from platform.key")
	}
	e3.Close()

	// A different platform key.
	other := make([]byte, 32)
	rand.Read(other)
	cfg4 := cfg
	cfg4.PlatformKeyHex = hex.EncodeToString(other)
	err := expectOpenError(t, cfg4, ErrWrongPlatformKey)
	for _, w := range []string{"platform key", "AGENTKEYS_PLATFORM_KEY", "untouched"} {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("error %q does not mention %q", err, w)
		}
	}
	if strings.Contains(err.Error(), cfg4.PlatformKeyHex) || strings.Contains(err.Error(), cfg.PlatformKeyHex) {
		t.Fatal("error message contains a platform secret")
	}
}

func TestWrongPlatformKeyFile(t *testing.T) {
	cfg := testConfig(t)
	mustOpen(t, cfg).Close()
	other := make([]byte, 32)
	rand.Read(other)
	if err := os.WriteFile(cfg.PlatformKeyFile, []byte(hex.EncodeToString(other)+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	expectOpenError(t, cfg, ErrWrongPlatformKey)
}

func TestMalformedPlatformKey(t *testing.T) {
	cfg := testConfig(t)
	cfg.PlatformKeyHex = strings.Repeat("g7", 32)
	_, err := Open(cfg)
	if err == nil {
		t.Fatal("Open accepted a non-hex platform key")
	}
	if strings.Contains(err.Error(), "g7") {
		t.Fatalf("error echoes the secret: %v", err)
	}
	cfg.PlatformKeyHex = "abcd"
	if _, err := Open(cfg); err == nil {
		t.Fatal("Open accepted a 2-byte platform key")
	}
	// A malformed platform.key file.
	cfg.PlatformKeyHex = ""
	if err := os.MkdirAll(cfg.Dir, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(cfg.PlatformKeyFile, []byte("not a key"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Open(cfg); err == nil || strings.Contains(err.Error(), "not a key") {
		t.Fatalf("Open with malformed platform.key: %v", err)
	}
	if _, err := os.Stat(filepath.Join(cfg.Dir, sealedName)); !errors.Is(err, os.ErrNotExist) {
		t.Fatal("seed.sealed was created although the platform key is unusable")
	}
}

func TestForeignSigner(t *testing.T) {
	cfg := testConfig(t)
	e := mustOpen(t, cfg)
	if e.Measurements().Tier != attest.TierDev {
		t.Fatalf("tier = %s, want dev", e.Measurements().Tier)
	}
	if e.Measurements().MrSigner != sha256.Sum256(devSignerPublicKey) {
		t.Fatal("dev mrsigner is not SHA-256 of the dev signer key")
	}
	e.Close()

	pub, _ := signExecutable(t, cfg.Executable)
	cfg.SignerPublicKey = pub
	err := expectOpenError(t, cfg, ErrForeignSigner)
	for _, w := range []string{"mrsigner", "handoff", "untouched"} {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("error %q does not mention %q", err, w)
		}
	}
}

func TestProductionSigner(t *testing.T) {
	cfg := testConfig(t)
	pub, _ := signExecutable(t, cfg.Executable)
	cfg.SignerPublicKey = pub
	e := mustOpen(t, cfg)
	m := e.Measurements()
	if m.Tier != attest.TierProduction || m.MrSigner != sha256.Sum256(pub) {
		t.Fatalf("measurements = %+v", m)
	}
	e.Close()
	// The dev build cannot unseal a production seed either.
	cfg.SignerPublicKey = nil
	expectOpenError(t, cfg, ErrForeignSigner)

	bad := testConfig(t)
	bad.SignerPublicKey = pub[:31]
	if _, err := Open(bad); err == nil {
		t.Fatal("Open accepted a 31-byte signer key")
	}
	bad.SignerPublicKey = devSignerPublicKey
	if _, err := Open(bad); err == nil {
		t.Fatal("Open accepted the dev signer as a production signer")
	}
}

func TestCorruptSeal(t *testing.T) {
	cfg := testConfig(t)
	mustOpen(t, cfg).Close()
	sealPath := filepath.Join(cfg.Dir, sealedName)
	orig := readFile(t, sealPath)
	var sf sealedFile
	if err := json.Unmarshal(orig, &sf); err != nil {
		t.Fatal(err)
	}
	write := func(t *testing.T, b []byte) {
		t.Helper()
		if err := os.WriteFile(sealPath, b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	encode := func(f sealedFile) []byte {
		b, _ := json.Marshal(f)
		return b
	}
	flipHex := func(s string, i int) string {
		b := []byte(s)
		if b[i] == '0' {
			b[i] = '1'
		} else {
			b[i] = '0'
		}
		return string(b)
	}
	cases := []struct {
		name string
		data []byte
		want error
	}{
		{"ciphertext byte", encode(func() sealedFile { f := sf; f.CT = flipHex(f.CT, 3); return f }()), ErrCorruptSeal},
		{"tag byte", encode(func() sealedFile { f := sf; f.CT = flipHex(f.CT, len(f.CT)-1); return f }()), ErrCorruptSeal},
		{"nonce byte", encode(func() sealedFile { f := sf; f.Nonce = flipHex(f.Nonce, 0); return f }()), ErrCorruptSeal},
		{"truncated ct", encode(func() sealedFile { f := sf; f.CT = f.CT[:40]; return f }()), ErrCorruptSeal},
		{"version", encode(func() sealedFile { f := sf; f.V = 2; return f }()), ErrCorruptSeal},
		{"not json", []byte("{\"v\":1,"), ErrCorruptSeal},
		{"empty", nil, ErrCorruptSeal},
		{"unknown field", slices.Concat(orig[:len(orig)-2], []byte(`,"x":1}`)), ErrCorruptSeal},
		{"header mrsigner", encode(func() sealedFile { f := sf; f.MrSigner = flipHex(f.MrSigner, 5); return f }()), ErrForeignSigner},
		{"header platform", encode(func() sealedFile { f := sf; f.Platform = flipHex(f.Platform, 5); return f }()), ErrWrongPlatformKey},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			write(t, c.data)
			expectOpenError(t, cfg, c.want)
		})
	}
	write(t, orig)
	mustOpen(t, cfg)
}

func TestPlatformKeyMissing(t *testing.T) {
	cfg := testConfig(t)
	mustOpen(t, cfg).Close()
	if err := os.Remove(cfg.PlatformKeyFile); err != nil {
		t.Fatal(err)
	}
	err := expectOpenError(t, cfg, ErrPlatformKeyMissing)
	for _, w := range []string{"platform.key", "AGENTKEYS_PLATFORM_KEY"} {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("error %q does not mention %q", err, w)
		}
	}
	if _, err := os.Stat(cfg.PlatformKeyFile); !errors.Is(err, os.ErrNotExist) {
		t.Fatal("platform.key was recreated")
	}
}

func TestExistingPlatformKeyFileUsedForNewSeed(t *testing.T) {
	cfg := testConfig(t)
	if err := os.MkdirAll(cfg.Dir, 0o700); err != nil {
		t.Fatal(err)
	}
	secret := make([]byte, 32)
	rand.Read(secret)
	if err := os.WriteFile(cfg.PlatformKeyFile, []byte(hex.EncodeToString(secret)), 0o600); err != nil {
		t.Fatal(err)
	}
	e := mustOpen(t, cfg)
	if !e.Created() {
		t.Fatal("Created() = false")
	}
	e.Close()
	cfg.PlatformKeyHex = hex.EncodeToString(secret)
	e2 := mustOpen(t, cfg)
	if e2.Created() {
		t.Fatal("reopen created a seed")
	}
}

func TestMrEnclave(t *testing.T) {
	cfg := testConfig(t)
	e := mustOpen(t, cfg)
	if e.Measurements().MrEnclave != sha256.Sum256(readFile(t, cfg.Executable)) {
		t.Fatal("mrenclave is not SHA-256 of Config.Executable")
	}
	cfg2 := testConfig(t)
	cfg2.Executable = filepath.Join(t.TempDir(), "missing")
	if _, err := Open(cfg2); err == nil {
		t.Fatal("Open succeeded with a missing executable")
	}
}

func TestMrEnclaveDefaultExecutable(t *testing.T) {
	cfg := testConfig(t)
	cfg.Executable = ""
	e := mustOpen(t, cfg)
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	if e.Measurements().MrEnclave != sha256.Sum256(readFile(t, exe)) {
		t.Fatal("mrenclave is not SHA-256 of os.Executable()")
	}
}

func TestOpenEmptyDir(t *testing.T) {
	if _, err := Open(Config{}); err == nil {
		t.Fatal("Open accepted an empty Dir")
	}
	cfg := testConfig(t)
	if err := os.WriteFile(filepath.Join(filepath.Dir(cfg.Dir), "server"), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Open(cfg); err == nil {
		t.Fatal("Open accepted a file as Dir")
	}
}

func TestClose(t *testing.T) {
	e := mustOpen(t, testConfig(t))
	omni := testOmni(2)
	if _, err := e.SignWallet(omni, [32]byte{1}); err != nil {
		t.Fatal(err)
	}
	var cached []*key
	e.cacheMu.RLock()
	for _, k := range e.cache {
		cached = append(cached, k)
	}
	e.cacheMu.RUnlock()
	keys := e.Keys()
	sec := e.sec
	e.Close()
	e.Close() // idempotent

	if sec.seed != [32]byte{} {
		t.Fatal("seed not zeroed")
	}
	if sec.attestPriv != nil {
		t.Fatal("attestation key not dropped")
	}
	for _, k := range cached {
		if k.ed != nil || k.p256 != nil || k.k1 != nil || k.shield != nil {
			t.Fatalf("cached key %s not zeroed", k.info.Path)
		}
	}
	if len(e.cache) != 0 {
		t.Fatal("cache not emptied")
	}
	if !slices.Equal(e.Keys(), keys) {
		t.Fatal("Keys changed after Close")
	}
	checks := map[string]error{}
	_, checks["SignEd25519"] = e.SignEd25519("ledger/v1", nil)
	_, checks["SignES256"] = e.SignES256("issuer/jwt/v1", nil)
	_, checks["SignWallet"] = e.SignWallet(omni, [32]byte{})
	_, checks["WalletAddress"] = e.WalletAddress(omni)
	checks["CheckSealed"] = e.CheckSealed("shielding/v1", nil, nil)
	_, checks["Reseal"] = e.Reseal("shielding/v1", nil, nil, mustClientKey(t).PublicKey().Bytes(), nil)
	_, checks["ResealToSession"] = e.ResealToSession("shielding/v1", nil, nil, "sid", nil)
	_, checks["PublicKey"] = e.PublicKey("ledger/v1")
	for op, err := range checks {
		if !errors.Is(err, ErrClosed) {
			t.Errorf("%s after Close: %v, want ErrClosed", op, err)
		}
	}
	if q := e.Quote([64]byte{}); q.Signature != "" || attest.Verify(q, e.PlatformPublicKey()) == nil {
		t.Fatal("Quote after Close is signed")
	}
	if !strings.Contains(e.String(), "closed") {
		t.Fatalf("String after Close = %s", e)
	}
}

func TestCacheLimit(t *testing.T) {
	e := mustOpen(t, testConfig(t))
	old := maxCached
	maxCached = len(e.cache) + 1
	defer func() { maxCached = old }()

	var addrs []string
	for i := range 3 {
		a, err := e.WalletAddress(testOmni(100 + i))
		if err != nil {
			t.Fatal(err)
		}
		addrs = append(addrs, a)
	}
	if len(e.cache) != maxCached {
		t.Fatalf("cache holds %d keys, limit %d", len(e.cache), maxCached)
	}
	// Uncached keys still work and give the same answers.
	for i := range 3 {
		a, err := e.WalletAddress(testOmni(100 + i))
		if err != nil || a != addrs[i] {
			t.Fatalf("WalletAddress beyond the cache limit: %s, %v (want %s)", a, err, addrs[i])
		}
		sig, err := e.SignWallet(testOmni(100+i), [32]byte{9})
		if err != nil || len(sig) != 65 {
			t.Fatalf("SignWallet beyond the cache limit: %v", err)
		}
	}
}
