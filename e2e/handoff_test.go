package e2e

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/agentkeys/agentkeys/internal/apiv1"
	"github.com/agentkeys/agentkeys/internal/attest"
	"github.com/agentkeys/agentkeys/internal/cli"
	"github.com/agentkeys/agentkeys/internal/client"
	"github.com/agentkeys/agentkeys/internal/home"
	"github.com/agentkeys/agentkeys/internal/registry"
	"github.com/agentkeys/agentkeys/internal/seal"
)

// release is a copy of the binary signed with a release key of its own.
type release struct {
	exe, pub, mrsigner string
}

// signedRelease makes a release key and signs a copy of the binary with it.
func signedRelease(h *harness, work, name string) release {
	h.t.Helper()
	keyFile := filepath.Join(work, name+".key")
	var key cli.ReleaseKeyInfo
	if err := json.Unmarshal([]byte(h.akOK(work, "release", "keygen", "--out", keyFile, "--json")), &key); err != nil {
		h.t.Fatal(err)
	}
	plantPEM(h, name+" release key", keyFile)
	exe := copyBinary(h.t)
	h.akOK(work, "release", "sign", "--key", keyFile, "--binary", exe)
	return release{exe: exe, pub: key.PublicKey, mrsigner: key.MrSigner}
}

var platformFix = regexp.MustCompile(`authorize-successor ([0-9a-f]{64}) --platform-key ([0-9a-f]{64})`)

// refusedHandoff starts a successor of r against from, expects it to be refused
// (exit 1, nothing sealed) with reason in its error, and returns the platform key
// its fix names.
func refusedHandoff(t *testing.T, h *harness, r release, o serverOpts, from, reason string) string {
	t.Helper()
	o.exe, o.args = r.exe, []string{"--mrsigner-key", r.pub, "--handoff-from", from}
	s := h.spawn(o)
	if code := s.waitExit(startTimeout); code != 1 {
		t.Fatalf("refused successor: exit %d, want 1; stderr:\n%s", code, s.stderr.String())
	}
	h.plantServer(o)
	out := s.stderr.String()
	for _, want := range []string{"Error: START_REFUSED", "seed handoff refused", reason, "the attempt is on the ledger", "Fix: "} {
		if !strings.Contains(out, want) {
			t.Errorf("refusal does not say %q:\n%s", want, out)
		}
	}
	if _, err := os.Stat(filepath.Join(o.effectiveDataDir(), "seed.sealed")); !os.IsNotExist(err) {
		t.Fatalf("a refused successor has a seed.sealed (%v)", err)
	}
	m := platformFix.FindStringSubmatch(out)
	if m == nil || m[1] != r.mrsigner {
		t.Fatalf("the fix does not name the authorize-successor command for %s:\n%s", r.mrsigner, out)
	}
	return m[2]
}

// handoffs returns the successor.handoff records on s's ledger.
func handoffs(s *server) []registry.Handoff {
	var out []registry.Handoff
	for _, e := range s.allEntries() {
		if e.Kind == registry.KindSuccessorHandoff {
			var h registry.Handoff
			if err := json.Unmarshal(e.Payload, &h); err != nil {
				s.h.t.Fatal(err)
			}
			out = append(out, h)
		}
	}
	return out
}

// TestSeedHandoff (§10.3): a build signed by another key receives the seed only
// when governance authorized its mrsigner and platform key; it then serves the
// same JWKS, wallets and DKIM public keys from the same ledger, and the old sealed seed is
// untouched. Unauthorized, deauthorized and tampered attempts get nothing, and
// every attempt is on the ledger.
func TestSeedHandoff(t *testing.T) {
	h := newHarness(t)
	work := t.TempDir()
	oldOpts := serverOpts{home: t.TempDir()}
	old := h.start(oldOpts)
	h.plantServer(oldOpts)
	ctx := context.Background()
	owner := h.akNewOwner(old)
	jwks, err := old.client.JWKS(ctx)
	if err != nil {
		t.Fatal(err)
	}
	// The owner's mail domain: its DKIM public keys (what DNS publishes) must
	// survive the handoff too.
	const mailDomain = "agents.example.com"
	h.akOK(owner.home, "domain", "add", mailDomain)
	sess, err := home.Dir(owner.home).Session()
	if err != nil {
		t.Fatal(err)
	}
	dkim, err := old.client.WithToken(sess.Token).DKIMKeys(ctx, mailDomain)
	if err != nil || len(dkim) == 0 {
		t.Fatalf("the predecessor's DKIM keys for %s: %v %v", mailDomain, dkim, err)
	}
	oldSealed := filepath.Join(oldOpts.effectiveDataDir(), "seed.sealed")
	sealedBefore := fileBytes(t, oldSealed)

	succ := signedRelease(h, work, "successor")
	other := signedRelease(h, work, "other")

	if r := h.cli(work, "server", "--handoff-from", old.url); r.code != 2 || !strings.Contains(r.stderr, "--handoff-from needs --mrsigner-key") {
		t.Fatalf("--handoff-from without --mrsigner-key: exit %d %s", r.code, r.stderr)
	}

	// Not authorized: refused, recorded, nothing sealed.
	succOpts := serverOpts{home: t.TempDir()}
	succPlatform := refusedHandoff(t, h, succ, succOpts, old.url, "is not an authorized successor")
	if hs := handoffs(old); len(hs) != 1 || hs[0].Granted || hs[0].MrSigner != succ.mrsigner || hs[0].PlatformKey != succPlatform {
		t.Fatalf("ledger handoff records after an unauthorized attempt: %+v", hs)
	}

	// Deauthorized: authorized, then withdrawn: refused.
	otherOpts := serverOpts{home: t.TempDir()}
	otherPlatform := refusedHandoff(t, h, other, otherOpts, old.url, "is not an authorized successor")
	h.akOK(oldOpts.home, "governance", "authorize-successor", other.mrsigner, "--platform-key", otherPlatform, "--server", old.url)
	h.akOK(oldOpts.home, "governance", "deauthorize-successor", other.mrsigner, "--server", old.url)
	refusedHandoff(t, h, other, otherOpts, old.url, "is not an authorized successor")

	// Tampered quotes, sent as a successor would: a quote signed by the
	// authorized platform key, then altered, or committing to another key.
	tamperPub, tamperPriv, _ := ed25519.GenerateKey(rand.Reader)
	tamperSigner := randomHex(32)
	h.akOK(oldOpts.home, "governance", "authorize-successor", tamperSigner, "--platform-key", hex.EncodeToString(tamperPub), "--server", old.url)
	hk, err := seal.NewKey()
	if err != nil {
		t.Fatal(err)
	}
	hkPub := hk.PublicKey().Bytes()
	quote := func(rd [64]byte, tier attest.Tier) attest.Quote {
		q := attest.Quote{MrEnclave: randomHex(32), MrSigner: tamperSigner, ReportData: hex.EncodeToString(rd[:]), Tier: tier,
			Timestamp: time.Now().Unix(), PlatformKey: hex.EncodeToString(tamperPub)}
		m, err := attest.Message(q)
		if err != nil {
			t.Fatal(err)
		}
		q.Signature = hex.EncodeToString(ed25519.Sign(tamperPriv, m))
		return q
	}
	altered := quote(attest.HandoffReportData(hkPub), attest.TierDev)
	altered.Tier = attest.TierProduction // signed as dev, presented as production
	otherKey, _ := seal.NewKey()
	for name, c := range map[string]struct {
		req    apiv1.HandoffRequest
		reason string
	}{
		"altered tier":     {apiv1.HandoffRequest{Quote: altered, Key: hex.EncodeToString(hkPub)}, "does not verify"},
		"another HPKE key": {apiv1.HandoffRequest{Quote: quote(attest.HandoffReportData(hkPub), attest.TierProduction), Key: hex.EncodeToString(otherKey.PublicKey().Bytes())}, "does not commit to the offered HPKE key"},
		"dev tier":         {apiv1.HandoffRequest{Quote: quote(attest.HandoffReportData(hkPub), attest.TierDev), Key: hex.EncodeToString(hkPub)}, "tier dev"},
	} {
		status, body := old.postJSON("/v1/enclave/handoff", c.req)
		code, msg, _ := apiError(t, body)
		if status != http.StatusForbidden || code != "DENIED" || !strings.Contains(msg, c.reason) || strings.Contains(string(body), "sealed") {
			t.Errorf("%s: %d %s", name, status, body)
		}
	}
	recs := handoffs(old)
	if len(recs) != 6 || slices.ContainsFunc(recs, func(r registry.Handoff) bool { return r.Granted }) {
		t.Fatalf("want 6 refused handoff records, got %+v", recs)
	}

	// Authorized: the successor receives the seed and seals it under its own mrsigner.
	h.akOK(oldOpts.home, "governance", "authorize-successor", succ.mrsigner, "--platform-key", succPlatform, "--server", old.url)
	succOpts.exe, succOpts.args = succ.exe, []string{"--mrsigner-key", succ.pub, "--handoff-from", old.url}
	s := h.spawn(succOpts)
	if code := s.waitExit(startTimeout); code != 0 {
		t.Fatalf("authorized successor: exit %d; stderr:\n%s", code, s.stderr.String())
	}
	if out := s.stderr.String(); !strings.Contains(out, "received the seed by handoff") || !strings.Contains(out, "copy its ledger.db") {
		t.Fatalf("successor log:\n%s", out)
	}
	var sf struct{ MrSigner string }
	if err := json.Unmarshal(fileBytes(t, filepath.Join(succOpts.effectiveDataDir(), "seed.sealed")), &sf); err != nil || sf.MrSigner != succ.mrsigner {
		t.Fatalf("successor seed.sealed: mrsigner %q (%v), want %s", sf.MrSigner, err, succ.mrsigner)
	}
	recs = handoffs(old)
	if last := recs[len(recs)-1]; !last.Granted || last.MrSigner != succ.mrsigner || last.Tier != "production" {
		t.Fatalf("the grant is not on the ledger: %+v", last)
	}
	if !bytes.Equal(sealedBefore, fileBytes(t, oldSealed)) {
		t.Fatal("the old seed.sealed changed")
	}

	// The operator stops the old broker and gives the successor its ledger.
	if code := old.stop(syscall.SIGTERM); code != 0 {
		t.Fatalf("old broker exit %d", code)
	}
	dst := succOpts.effectiveDataDir()
	for _, f := range []string{"ledger.db", "ledger.db-wal", "ledger.db-shm"} {
		os.Remove(filepath.Join(dst, f))
	}
	copyFile(t, filepath.Join(oldOpts.effectiveDataDir(), "ledger.db"), filepath.Join(dst, "ledger.db"))
	// It serves at the old broker's public URL (its --issuer), as a
	// successor behind the same name does.
	succOpts.args = []string{"--mrsigner-key", succ.pub, "--issuer", old.url}
	ns := h.start(succOpts)
	if info := ns.enclaveInfo(); info.MrSigner != succ.mrsigner || info.Tier != "production" {
		t.Fatalf("successor enclave: %+v", info)
	}
	njwks, err := ns.client.JWKS(ctx)
	if err != nil {
		t.Fatal(err)
	}
	a, _ := json.Marshal(jwks)
	b, _ := json.Marshal(njwks)
	if !bytes.Equal(a, b) {
		t.Fatalf("JWKS changed:\nold %s\nnew %s", a, b)
	}
	c, err := client.New(ns.url)
	if err != nil {
		t.Fatal(err)
	}
	w, err := c.WithToken(sess.Token).Whoami(ctx)
	if err != nil {
		t.Fatalf("the owner's session on the successor: %v", err)
	}
	if w.Wallet != owner.wallet || w.Omni != owner.omni {
		t.Fatalf("successor wallet %s (omni %s), want %s (%s)", w.Wallet, w.Omni, owner.wallet, owner.omni)
	}
	ndkim, err := c.WithToken(sess.Token).DKIMKeys(ctx, mailDomain)
	if err != nil {
		t.Fatal(err)
	}
	a, _ = json.Marshal(dkim)
	b, _ = json.Marshal(ndkim)
	if !bytes.Equal(a, b) {
		t.Fatalf("DKIM public keys for %s changed:\nold %s\nnew %s", mailDomain, a, b)
	}
	if !bytes.Equal(sealedBefore, fileBytes(t, oldSealed)) {
		t.Fatal("the old seed.sealed changed")
	}
}

func copyFile(t *testing.T, src, dst string) {
	t.Helper()
	b := fileBytes(t, src)
	if err := os.WriteFile(dst, b, 0o600); err != nil {
		t.Fatal(err)
	}
}
