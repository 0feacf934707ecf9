package enclave

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/agentkeys/agentkeys/internal/attest"
)

// successorConfig is a signed (tier production) successor that receives its seed
// through handoff.
func successorConfig(t *testing.T, handoff func(attest.Quote, []byte) ([]byte, error)) Config {
	cfg := testConfig(t)
	pub, _ := signExecutable(t, cfg.Executable)
	cfg.SignerPublicKey, cfg.Handoff = pub, handoff
	return cfg
}

// pinned trusts the platform key a quote names (the registry's role in the broker).
func pinned(q attest.Quote) ed25519.PublicKey {
	b, _ := hex.DecodeString(q.PlatformKey)
	return b
}

func TestHandoff(t *testing.T) {
	old := mustOpen(t, testConfig(t))
	cfg := successorConfig(t, func(q attest.Quote, k []byte) ([]byte, error) { return old.SealSeedTo(q, k, pinned(q)) })
	succ := mustOpen(t, cfg)
	if !succ.HandedOff() || succ.Measurements().MrSigner == old.Measurements().MrSigner {
		t.Fatalf("handed off %v, mrsigners %x %x", succ.HandedOff(), succ.Measurements().MrSigner, old.Measurements().MrSigner)
	}
	for _, p := range publishedPaths {
		a, _ := old.PublicKey(p)
		b, _ := succ.PublicKey(p)
		if a != b {
			t.Errorf("%s differs after the handoff", p)
		}
	}
	w1, err1 := old.WalletAddress(testOmni(1))
	w2, err2 := succ.WalletAddress(testOmni(1))
	if err1 != nil || err2 != nil || w1 != w2 {
		t.Errorf("wallet %s became %s (%v, %v)", w1, w2, err1, err2)
	}
	succ.Close()
	// The successor's seed is sealed under its own mrsigner: it opens without a handoff.
	cfg.Handoff = nil
	again := mustOpen(t, cfg)
	if a, b := old.Keys(), again.Keys(); len(a) != len(b) || a[0] != b[0] {
		t.Fatal("the successor's sealed seed does not reopen to the same keys")
	}
	again.Close()
	// A data dir with a seed never takes one by handoff.
	cfg.Handoff = func(attest.Quote, []byte) ([]byte, error) {
		t.Fatal("asked for a seed over an existing one")
		return nil, nil
	}
	before := readFile(t, filepath.Join(cfg.Dir, sealedName))
	if _, err := Open(cfg); err == nil || !strings.Contains(err.Error(), "never replaces") {
		t.Fatalf("handoff over an existing seed: %v", err)
	}
	if string(before) != string(readFile(t, filepath.Join(cfg.Dir, sealedName))) {
		t.Fatal("seed.sealed changed")
	}
}

func TestHandoffRefusals(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	ocfg := testConfig(t)
	ocfg.Now = func() time.Time { return now }
	old := mustOpen(t, ocfg)
	otherPlatform, _, _ := ed25519.GenerateKey(rand.Reader)
	// capture a genuine successor request, refused by the test so that nothing is sealed
	var q attest.Quote
	var key []byte
	cfg := successorConfig(t, func(gq attest.Quote, k []byte) ([]byte, error) {
		q, key = gq, k
		return nil, errors.New("captured")
	})
	cfg.Now = ocfg.Now
	if _, err := Open(cfg); err == nil || err.Error() != "captured" {
		t.Fatalf("Open: %v", err)
	}
	if _, err := os.Stat(filepath.Join(cfg.Dir, sealedName)); !os.IsNotExist(err) {
		t.Fatalf("a failed handoff left seed.sealed (%v)", err)
	}
	if _, err := old.SealSeedTo(q, key, pinned(q)); err != nil {
		t.Fatalf("the genuine request: %v", err)
	}
	otherKey := append([]byte(nil), key...)
	otherKey[len(otherKey)-1] ^= 1
	tamper := func(f func(*attest.Quote)) attest.Quote { c := q; f(&c); return c }
	cases := map[string]struct {
		q    attest.Quote
		key  []byte
		pin  ed25519.PublicKey
		want string
	}{
		"another platform key pinned": {q, key, otherPlatform, "does not verify"},
		"mrsigner altered":            {tamper(func(c *attest.Quote) { c.MrSigner = strings.Repeat("ab", 32) }), key, pinned(q), "does not verify"},
		"report data altered":         {tamper(func(c *attest.Quote) { c.ReportData = strings.Repeat("00", 64) }), key, pinned(q), "does not verify"},
		"another HPKE key":            {q, otherKey, pinned(q), "does not commit"},
	}
	for name, c := range cases {
		if _, err := old.SealSeedTo(c.q, c.key, c.pin); !errors.Is(err, ErrHandoffRefused) || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v", name, err)
		}
	}
	now = now.Add(MaxHandoffQuoteAge + time.Second)
	if _, err := old.SealSeedTo(q, key, pinned(q)); !errors.Is(err, ErrHandoffRefused) || !strings.Contains(err.Error(), "more than") {
		t.Errorf("stale quote: %v", err)
	}

	// A dev-tier build is no successor: refused before it asks.
	dev := testConfig(t)
	dev.Handoff = func(attest.Quote, []byte) ([]byte, error) { t.Fatal("a dev build asked for the seed"); return nil, nil }
	if _, err := Open(dev); err == nil || !strings.Contains(err.Error(), "tier production") {
		t.Fatalf("dev successor: %v", err)
	}
	// An answer that is not the seed sealed to its key: refused, nothing sealed.
	bad := successorConfig(t, func(attest.Quote, []byte) ([]byte, error) { return []byte("not sealed"), nil })
	if _, err := Open(bad); err == nil || !strings.Contains(err.Error(), "does not open") {
		t.Fatalf("garbage answer: %v", err)
	}
	if _, err := os.Stat(filepath.Join(bad.Dir, sealedName)); !os.IsNotExist(err) {
		t.Fatalf("a garbage answer left seed.sealed (%v)", err)
	}
}
