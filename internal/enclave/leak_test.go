package enclave

import (
	"bytes"
	"crypto/ed25519"
	"crypto/hkdf"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/agentkeys/agentkeys/internal/attest"
	"github.com/agentkeys/agentkeys/internal/enclave/internal/slip10"
	"github.com/agentkeys/agentkeys/internal/seal"
)

// leakChecker holds every secret the enclave knows and finds any of them in
// an output, raw or in common text encodings.
type leakChecker struct {
	t       *testing.T
	secrets map[string][]byte
}

func (c *leakChecker) addSecret(name string, s []byte) {
	if len(s) < 16 {
		c.t.Fatalf("secret %s is only %d bytes", name, len(s))
	}
	c.secrets[name] = bytes.Clone(s)
}

// encodings returns the forms in which s could appear in an output.
func encodings(s []byte) [][]byte {
	return [][]byte{
		s,
		[]byte(hex.EncodeToString(s)),
		[]byte(strings.ToUpper(hex.EncodeToString(s))),
		[]byte(base64.StdEncoding.EncodeToString(s)[:len(s)*4/3-2]),
		[]byte(base64.RawURLEncoding.EncodeToString(s)[:len(s)*4/3-2]),
		[]byte(strings.Trim(fmt.Sprint(s), "[]")), // %v of a byte slice
	}
}

// leaks returns the names of the secrets found in out.
func (c *leakChecker) leaks(out []byte) []string {
	var found []string
	for name, s := range c.secrets {
		for _, enc := range encodings(s) {
			if bytes.Contains(out, enc) {
				found = append(found, name)
				break
			}
		}
	}
	return found
}

func TestLeakCheckerWorks(t *testing.T) {
	c := &leakChecker{t: t, secrets: map[string][]byte{}}
	s := bytes.Repeat([]byte{0xab, 0x01, 0x7f}, 11)
	c.addSecret("s", s)
	for _, out := range []string{
		string(s), "x" + hex.EncodeToString(s) + "y", strings.ToUpper(hex.EncodeToString(s)),
		base64.StdEncoding.EncodeToString(s), fmt.Sprintf("%v", s), fmt.Sprintf("%d", s),
	} {
		if len(c.leaks([]byte(out))) == 0 {
			t.Errorf("planted leak not found in %q", out)
		}
	}
	if l := c.leaks([]byte("harmless")); len(l) != 0 {
		t.Fatalf("false positive: %v", l)
	}
}

// TestNoSecretInAnyOutput drives every exported method, collects everything
// they return (values, errors, formatting) and checks that none of it contains
// the seed, the platform secret, the sealing or attestation keys, or any
// derived private key.
func TestNoSecretInAnyOutput(t *testing.T) {
	cfg := testConfig(t)
	e := mustOpen(t, cfg)
	omni := testOmni(77)
	paths := []string{
		"shielding/v1", "shielding/v2", "ledger/v1", "dkim/example.com/v1", "issuer/jwt/v1",
		"oidc/issuer/v1", "oidc/issuer/v2", "wallet/eth/" + omni + "/v1", "wallet/eth/" + testOmni(78) + "/v1",
	}

	// --- Secrets (the test is in-package, so it can read the internals).
	c := &leakChecker{t: t, secrets: map[string][]byte{}}
	c.addSecret("seed", e.sec.seed[:])
	c.addSecret("attest key", e.sec.attestPriv)
	c.addSecret("attest seed", e.sec.attestPriv.Seed())
	platform, ok := decodeSecretHex(readFile(t, cfg.PlatformKeyFile))
	if !ok {
		t.Fatal("platform.key unreadable")
	}
	c.addSecret("platform secret", platform)
	sealKey, _ := hkdf.Key(sha256.New, platform, nil, sealInfo+string(e.meas.MrSigner[:]), 32)
	c.addSecret("seal key", sealKey)
	c.addSecret("read cache key", e.reads.key[:])
	for _, p := range paths {
		k, err := parsePath(p)
		if err != nil {
			t.Fatal(err)
		}
		curve := map[kind]slip10.Curve{kindShielding: slip10.Ed25519, kindEd25519: slip10.Ed25519, kindP256: slip10.NIST256p1, kindSecp256k1: slip10.Secp256k1}[k]
		node, err := slip10.DeriveString(curve, e.sec.seed[:], p)
		if err != nil {
			t.Fatal(err)
		}
		priv := node.PrivateKey()
		node.Zero()
		c.addSecret(p+" private", priv[:])
		switch k {
		case kindEd25519:
			c.addSecret(p+" ed25519", ed25519.NewKeyFromSeed(priv[:]))
		case kindShielding:
			xs, _ := hkdf.Key(sha256.New, priv[:], nil, shieldingX25519Info, 32)
			ms, _ := hkdf.Key(sha256.New, priv[:], nil, shieldingMLKEMInfo, 64)
			c.addSecret(p+" x25519", xs)
			c.addSecret(p+" mlkem seed", ms)
		}
	}

	// --- Outputs.
	var outs []string
	add := func(v any) {
		switch v := v.(type) {
		case string:
			outs = append(outs, v)
		case []byte:
			outs = append(outs, string(v))
		case error:
			if v != nil {
				outs = append(outs, v.Error(), fmt.Sprintf("%+v %#v", v, v))
			}
		default:
			b, err := json.Marshal(v)
			if err != nil {
				t.Fatal(err)
			}
			outs = append(outs, string(b), fmt.Sprintf("%v %+v %#v", v, v, v))
		}
	}
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	add(e.Keys())
	for _, p := range paths {
		ki, err := e.PublicKey(p)
		must(err)
		add(ki)
	}
	msg := []byte("message")
	sig, err := e.SignEd25519("ledger/v1", msg)
	must(err)
	add(sig)
	sig, err = e.SignEd25519("dkim/example.com/v1", msg)
	must(err)
	add(sig)
	for _, p := range []string{"issuer/jwt/v1", "oidc/issuer/v1", "oidc/issuer/v2"} {
		sig, err = e.SignES256(p, msg)
		must(err)
		add(sig)
	}
	sig, err = e.SignWallet(omni, sha256.Sum256(msg))
	must(err)
	add(sig)
	addr, err := e.WalletAddress(omni)
	must(err)
	add(addr)
	shield := publicBytes(t, e, "shielding/v1")
	ct, err := seal.To(shield, msg, []byte("credential"))
	must(err)
	add(ct)
	must(e.CheckSealed("shielding/v1", msg, ct))
	box, err := e.ResealToSession("shielding/v1", msg, ct, "sid-leak", []byte("aad"))
	must(err)
	add(box)
	client := mustClientKey(t)
	rs, err := e.Reseal("shielding/v1", msg, ct, client.PublicKey().Bytes(), []byte("r"))
	must(err)
	add(rs)
	add(e.Quote([64]byte{7}))
	add(e.Attest([]byte("nonce")))
	add(e.Measurements())
	add([]byte(e.PlatformPublicKey()))
	add(fmt.Sprintf("%v %+v %#v %s %d %x %X %q %T %p", e, e, e, e, e, e, e, e, e, e))
	add(e.String())
	add(e.GoString())
	//lint:ignore SA9005 the point is that marshaling reveals nothing
	if b, err := json.Marshal(e); err == nil {
		add(b)
	}

	// Errors of failing calls.
	_, err = e.SignEd25519("issuer/jwt/v1", msg)
	add(err)
	_, err = e.SignES256("ledger/v1", msg)
	add(err)
	_, err = e.SignES256("seed/v1", msg)
	add(err)
	_, err = e.SignWallet("zz", [32]byte{})
	add(err)
	_, err = e.WalletAddress(strings.ToUpper(omni))
	add(err)
	_, err = e.PublicKey("wallet/eth/x/v1")
	add(err)
	add(e.CheckSealed("shielding/v1", []byte("wrong"), ct))
	add(e.CheckSealed("shielding/v1", msg, ct[:40]))
	_, err = e.ResealToSession("shielding/v1", msg, ct[:40], "sid-leak", nil)
	add(err)
	_, err = e.Reseal("shielding/v1", msg, ct, []byte("bad"), nil)
	add(err)
	_, err = e.Reseal("shielding/v1", []byte("wrong"), ct, client.PublicKey().Bytes(), nil)
	add(err)
	add(attest.Verify(attest.Quote{}, e.PlatformPublicKey()))

	// Open errors, on copies of the data directory.
	sealed := readFile(t, filepath.Join(cfg.Dir, sealedName))
	pkText := readFile(t, cfg.PlatformKeyFile)
	copyDir := func(withPlatform bool, sealedData []byte) Config {
		c2 := cfg
		base := t.TempDir()
		c2.Dir = filepath.Join(base, "copy")
		c2.PlatformKeyFile = filepath.Join(base, platformKeyName)
		must(os.Mkdir(c2.Dir, 0o700))
		must(os.WriteFile(filepath.Join(c2.Dir, sealedName), sealedData, 0o600))
		if withPlatform {
			must(os.WriteFile(c2.PlatformKeyFile, pkText, 0o600))
		}
		return c2
	}
	inDir := copyDir(false, sealed)
	must(os.WriteFile(filepath.Join(inDir.Dir, platformKeyName), pkText, 0o600))
	_, err = Open(inDir)
	add(err)
	exposed := copyDir(true, sealed)
	must(os.Chmod(exposed.PlatformKeyFile, 0o644))
	_, err = Open(exposed)
	add(err)
	wrong := copyDir(true, sealed)
	wrong.PlatformKeyHex = strings.Repeat("5a", 32)
	_, err = Open(wrong)
	add(err)
	foreign := copyDir(true, sealed)
	foreign.SignerPublicKey, _ = signExecutable(t, foreign.Executable)
	_, err = Open(foreign)
	add(err)
	_, err = Open(copyDir(false, sealed))
	add(err)
	corrupt := bytes.Clone(sealed)
	corrupt[bytes.Index(corrupt, []byte(`"ct":"`))+8] ^= 1
	_, err = Open(copyDir(true, corrupt))
	add(err)
	bad := copyDir(true, sealed)
	bad.PlatformKeyHex = "zz"
	_, err = Open(bad)
	add(err)

	e.Close()
	add(e.String())
	add(e.Quote([64]byte{}))
	_, err = e.SignEd25519("ledger/v1", msg)
	add(err)

	if len(outs) < 40 {
		t.Fatalf("only %d outputs collected", len(outs))
	}
	for i, o := range outs {
		if found := c.leaks([]byte(o)); len(found) > 0 {
			t.Errorf("output %d leaks %v: %.200q", i, found, o)
		}
	}
	// The sealed file itself holds the seed only encrypted.
	if found := c.leaks(sealed); len(found) > 0 {
		t.Errorf("seed.sealed contains %v in the clear", found)
	}
}
