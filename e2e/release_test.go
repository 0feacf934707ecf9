package e2e

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	gooidc "github.com/coreos/go-oidc/v3/oidc"

	"github.com/agentkeys/agentkeys/internal/apiv1"
	"github.com/agentkeys/agentkeys/internal/broker"
	"github.com/agentkeys/agentkeys/internal/cli"
	"github.com/agentkeys/agentkeys/internal/oidc"
)

// copyBinary copies the built binary to a new directory and returns its path.
func copyBinary(t *testing.T) string {
	t.Helper()
	exe := filepath.Join(t.TempDir(), "agentkeys")
	copyExecutable(t, bin, exe)
	return exe
}

// wantUnsignedRefused starts exe with --mrsigner-key and checks that it refuses to
// start (exit 1, Error/Fix naming the signature and release sign) and created no seed.
func wantUnsignedRefused(t *testing.T, h *harness, exe, pub, reason string) {
	t.Helper()
	o := serverOpts{home: t.TempDir(), exe: exe, args: []string{"--mrsigner-key", pub}}
	s := h.spawn(o)
	if code := s.waitExit(startTimeout); code != 1 {
		t.Fatalf("exit code %d, want 1; stderr:\n%s", code, s.stderr.String())
	}
	out := s.stderr.String()
	for _, want := range []string{"Error: START_REFUSED\n", exe + ".sig does not verify", reason, "\n  Fix: ", "agentkeys release sign --key KEY --binary " + exe, "without --mrsigner-key"} {
		if !strings.Contains(out, want) {
			t.Errorf("refusal does not say %q:\n%s", want, out)
		}
	}
	if _, err := os.Stat(filepath.Join(o.effectiveDataDir(), "seed.sealed")); !os.IsNotExist(err) {
		t.Errorf("a refused start created a seed (%v)", err)
	}
}

// TestSignedRelease: release keygen and sign make a build that runs at tier
// production, reported in the quote, audit verify and every identity token's
// sub; a tampered copy with a valid-looking signature file, or one without a
// signature, refuses to start.
func TestSignedRelease(t *testing.T) {
	h := newHarness(t)
	work := t.TempDir()
	keyFile := filepath.Join(work, "release.key")
	var key cli.ReleaseKeyInfo
	if err := json.Unmarshal([]byte(h.akOK(work, "release", "keygen", "--out", keyFile, "--json")), &key); err != nil {
		t.Fatal(err)
	}
	if fileMode(t, keyFile) != 0o600 || len(key.PublicKey) != 64 {
		t.Fatalf("key file mode %o, public key %q", fileMode(t, keyFile), key.PublicKey)
	}
	plantPEM(h, "release-signing key", keyFile)
	pubRaw, _ := hex.DecodeString(key.PublicKey)
	mrsigner := sha256.Sum256(pubRaw)
	if key.MrSigner != hex.EncodeToString(mrsigner[:]) {
		t.Fatalf("keygen mrsigner %s, want SHA-256 of the public key", key.MrSigner)
	}
	// keygen never replaces a key
	before := fileBytes(t, keyFile)
	if r := h.cli(work, "release", "keygen", "--out", keyFile); r.code == 0 || !strings.Contains(r.stderr, "never replaced") {
		t.Fatalf("keygen over an existing key: exit %d %s", r.code, r.stderr)
	}
	if !bytes.Equal(before, fileBytes(t, keyFile)) {
		t.Fatal("keygen changed an existing key file")
	}
	// a key file others can read is refused
	loose := filepath.Join(work, "loose.key")
	os.WriteFile(loose, before, 0o644)
	if r := h.cli(work, "release", "sign", "--key", loose, "--binary", copyBinary(t)); r.code != 3 || !strings.Contains(r.stderr, "chmod 600") {
		t.Fatalf("sign with a 0644 key: exit %d %s", r.code, r.stderr)
	}

	t.Run("tampered", func(t *testing.T) {
		exe := copyBinary(t)
		h.akOK(work, "release", "sign", "--key", keyFile, "--binary", exe)
		b := fileBytes(t, exe)
		i := bytes.Index(b, []byte("Make a release-signing key"))
		if i < 0 {
			t.Fatal("help text not found in the binary")
		}
		b[i] ^= 0x20 // "make …": still runs, no longer the signed build
		if err := os.WriteFile(exe, b, 0o755); err != nil {
			t.Fatal(err)
		}
		if r := h.cli(work, "release", "verify", "--mrsigner-key", key.PublicKey, "--binary", exe); r.code != 3 {
			t.Fatalf("release verify of the tampered copy: exit %d %s", r.code, r.stderr)
		}
		wantUnsignedRefused(t, h, exe, key.PublicKey, "another build, or the executable was altered")
	})
	t.Run("no signature", func(t *testing.T) {
		wantUnsignedRefused(t, h, copyBinary(t), key.PublicKey, "no signature file")
	})
	t.Run("signed by another key", func(t *testing.T) {
		exe := copyBinary(t)
		other := filepath.Join(t.TempDir(), "other.key")
		h.akOK(work, "release", "keygen", "--out", other)
		plantPEM(h, "other release-signing key", other)
		h.akOK(work, "release", "sign", "--key", other, "--binary", exe)
		wantUnsignedRefused(t, h, exe, key.PublicKey, "not the configured release-signing key")
	})

	t.Run("signed", func(t *testing.T) {
		exe := copyBinary(t)
		var signed cli.ReleaseSigned
		if err := json.Unmarshal([]byte(h.akOK(work, "release", "sign", "--key", keyFile, "--binary", exe, "--json")), &signed); err != nil {
			t.Fatal(err)
		}
		digest := sha256.Sum256(fileBytes(t, exe))
		if signed.SHA256 != hex.EncodeToString(digest[:]) || signed.SignatureFile != exe+".sig" || signed.MrSigner != key.MrSigner {
			t.Fatalf("release sign --json: %+v", signed)
		}
		h.akOK(work, "release", "verify", "--mrsigner-key", key.PublicKey, "--binary", exe)
		s := h.start(serverOpts{home: t.TempDir(), exe: exe, args: []string{"--mrsigner-key", key.PublicKey, "--oidc-audience", "sts.amazonaws.com"}})
		info := s.enclaveInfo()
		if info.Tier != "production" || string(info.Quote.Tier) != "production" || info.MrSigner != key.MrSigner ||
			info.Quote.MrSigner != key.MrSigner || info.MrEnclave != signed.SHA256 {
			t.Fatalf("GET /v1/enclave: tier %s (quote %s), mrsigner %s, mrenclave %s", info.Tier, info.Quote.Tier, info.MrSigner, info.MrEnclave)
		}
		checkQuote(t, info.Quote, nil, info.Keys)
		if line := h.auditOK(work, "--server", s.url); !strings.Contains(line, "enclave tier production, mrsigner "+key.MrSigner[:16]) {
			t.Fatalf("audit verify does not show the tier: %s", line)
		}
		var sum struct{ Tier, MrSigner string }
		if r := h.cli(work, "audit", "verify", "--server", s.url, "--json"); r.code != 0 || json.Unmarshal([]byte(r.stdout), &sum) != nil ||
			sum.Tier != "production" || sum.MrSigner != key.MrSigner {
			t.Fatalf("audit verify --json: %+v %s", sum, r.stdout)
		}

		// an identity token's sub carries the release's mrsigner
		o := h.akNewOwner(s)
		a := h.oidcAgent(s, o, "bot", "oidc:sts.amazonaws.com")
		tok := strings.TrimSpace(h.akOK(a.home, "daemon", "oidc-token", "--audience", "sts.amazonaws.com"))
		ctx := context.Background()
		prov, err := gooidc.NewProvider(ctx, s.url)
		if err != nil {
			t.Fatal(err)
		}
		idt, err := prov.Verifier(&gooidc.Config{ClientID: "sts.amazonaws.com"}).Verify(ctx, tok)
		if err != nil {
			t.Fatal(err)
		}
		if want := apiv1.Subject(signed.SHA256, key.MrSigner, "agent", a.wallet); idt.Subject != want {
			t.Fatalf("sub %s, want %s", idt.Subject, want)
		}
		var cl oidc.Claims
		if err := idt.Claims(&cl); err != nil || cl.Tier != "production" {
			t.Fatalf("claims tier %q (%v)", cl.Tier, err)
		}
	})
}

// plantPEM plants every line of a PEM key file's body (and the whole body).
func plantPEM(h *harness, what, path string) {
	body := strings.TrimSpace(string(fileBytes(h.t, path)))
	body = strings.TrimPrefix(body, "-----BEGIN PRIVATE KEY-----")
	body = strings.TrimSuffix(body, "-----END PRIVATE KEY-----")
	for _, line := range strings.Fields(body) {
		h.plant(what+" PEM line", line)
	}
	h.plant(what+" PEM body", strings.Join(strings.Fields(body), ""))
	k, err := broker.LoadOperatorKey(path) // the same kind of file as the operator key
	if err != nil {
		h.t.Fatal(err)
	}
	h.plant(what+" (hex seed)", hex.EncodeToString(k.Seed()))
}
