package e2e

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/agentkeys/agentkeys/internal/attest"
	"github.com/agentkeys/agentkeys/internal/registry"
)

// rogueIssuer is a key that is not on the ledger: what a hijacked issuer URL
// (or a man in the middle) signs with.
type rogueIssuer struct {
	key *ecdsa.PrivateKey
	pub string // hex uncompressed point
	kid string
}

func newRogue(t *testing.T) *rogueIssuer {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	b, err := k.PublicKey.Bytes()
	if err != nil {
		t.Fatal(err)
	}
	return &rogueIssuer{key: k, pub: hex.EncodeToString(b), kid: attest.Kid("oidc/issuer/v1", b)}
}

// jwks is the rogue key as a JWKS document.
func (r *rogueIssuer) jwks() []byte {
	b, _ := hex.DecodeString(r.pub)
	enc := base64.RawURLEncoding.EncodeToString
	out, _ := json.Marshal(map[string]any{"keys": []map[string]string{{"kty": "EC", "crv": "P-256", "x": enc(b[1:33]), "y": enc(b[33:]),
		"kid": r.kid, "alg": "ES256", "use": "sig"}}})
	return out
}

// resign returns tok's claims signed by the rogue key under its kid.
func (r *rogueIssuer) resign(t *testing.T, tok string) string {
	parts := strings.Split(tok, ".")
	if len(parts) != 3 {
		t.Errorf("minted token is not a JWS")
		return tok
	}
	hdr, _ := json.Marshal(map[string]string{"alg": "ES256", "kid": r.kid, "typ": "JWT"})
	input := base64.RawURLEncoding.EncodeToString(hdr) + "." + parts[1]
	d := sha256.Sum256([]byte(input))
	rr, ss, err := ecdsa.Sign(rand.Reader, r.key, d[:])
	if err != nil {
		t.Error(err)
		return tok
	}
	sig := make([]byte, 64)
	rr.FillBytes(sig[:32])
	ss.FillBytes(sig[32:])
	return input + "." + base64.RawURLEncoding.EncodeToString(sig)
}

// mitm sits between daemon and broker. In mode "pass" it forwards everything
// and records the last minted token; in "resign" it re-signs minted tokens with
// the rogue key and answers the registry and JWKS routes with that key as the
// only active one; in "replay" it answers a mint with the recorded token and
// keeps listing the recorded token's key as active.
type mitm struct {
	t     *testing.T
	rogue *rogueIssuer
	mu    sync.Mutex
	mode  string
	last  []byte // last genuine mint answer
	kid   string // its kid
	pub   string // its key, from the registry route while in pass mode
	mints int
}

func (m *mitm) set(mode string) { m.mu.Lock(); m.mode = mode; m.mu.Unlock() }

// start serves the proxy on loopback; the broker behind it comes later (to):
// the broker must list the proxy's URL as a --public-url, as a man in the
// middle sits at an address the daemon was given for the broker.
func (m *mitm) start(t *testing.T) (proxyURL string, to func(target string)) {
	var h http.Handler
	var mu sync.Mutex
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		hh := h
		mu.Unlock()
		hh.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	return srv.URL, func(target string) { mu.Lock(); h = m.handler(target); mu.Unlock() }
}

func (m *mitm) handler(target string) http.Handler {
	u, _ := url.Parse(target)
	rp := httputil.NewSingleHostReverseProxy(u)
	rp.ModifyResponse = func(res *http.Response) error {
		if res.Request.URL.Path != "/v1/oidc/token" || res.StatusCode != http.StatusOK {
			return nil
		}
		body, err := io.ReadAll(res.Body)
		res.Body.Close()
		if err != nil {
			return err
		}
		var tok map[string]any
		if err := json.Unmarshal(body, &tok); err != nil {
			return err
		}
		m.mu.Lock()
		m.mints++
		switch m.mode {
		case "pass":
			m.last = body
			m.kid, _ = tok["kid"].(string)
		case "resign":
			tok["token"], tok["kid"] = m.rogue.resign(m.t, tok["token"].(string)), m.rogue.kid
		}
		m.mu.Unlock()
		body, _ = json.Marshal(tok)
		res.Body = io.NopCloser(bytes.NewReader(body))
		res.ContentLength = int64(len(body))
		res.Header.Set("Content-Length", strconv.Itoa(len(body)))
		return nil
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		m.mu.Lock()
		mode, kid, pub := m.mode, m.kid, m.pub
		m.mu.Unlock()
		switch {
		case mode == "resign" && r.URL.Path == "/mock/oidc-pubkeys/active":
			json.NewEncoder(w).Encode([]map[string]string{{"kid": m.rogue.kid, "pubkey": m.rogue.pub}})
			return
		case mode == "resign" && r.URL.Path == "/.well-known/jwks.json":
			w.Write(m.rogue.jwks())
			return
		case mode == "replay" && r.URL.Path == "/v1/oidc/token": // the broker would refuse: the kid is revoked
			m.mu.Lock()
			m.mints++
			last := m.last
			m.mu.Unlock()
			w.Header().Set("Content-Type", "application/json")
			w.Write(last)
			return
		case mode == "replay" && r.URL.Path == "/mock/oidc-pubkeys/active":
			json.NewEncoder(w).Encode([]map[string]string{{"kid": kid, "pubkey": pub}})
			return
		}
		rp.ServeHTTP(w, r)
	})
}

// TestDualVerifyRefusesForgedTokens: a man in the middle between daemon and
// broker re-signs minted tokens with its own key and lists that key as active
// on the registry route; the daemon refuses them before writing the token
// file. A token of a kid that governance revoked on the ledger, replayed with
// the registry route still listing the key, is refused too. Genuine tokens,
// and (with --chain-verified-oidc=false, for bring-your-own issuers) any
// token, are written.
func TestDualVerifyRefusesForgedTokens(t *testing.T) {
	h := newHarness(t)
	m := &mitm{t: t, rogue: newRogue(t), mode: "pass"}
	proxyURL, to := m.start(t)
	o := serverOpts{home: t.TempDir(), args: []string{"--public-url", proxyURL, "--oidc-audience", "sts.amazonaws.com"}}
	s := h.start(o)
	to(s.url)
	own := h.akNewOwner(s)
	dh := h.pairAgentIn(t.TempDir(), &server{h: h, url: proxyURL}, own, "bot", "oidc:*")
	out := filepath.Join(t.TempDir(), "token")
	write := func(extra ...string) cliResult {
		os.Remove(out)
		return h.cli(dh, append([]string{"daemon", "oidc-token", "--audience", "sts.amazonaws.com", "--out", out}, extra...)...)
	}
	written := func() string {
		b, err := os.ReadFile(out)
		if err != nil {
			return ""
		}
		return string(b)
	}

	// genuine: through a proxy that only forwards
	if r := write(); r.code != 0 || written() == "" {
		t.Fatalf("genuine token: exit %d: %s", r.code, r.stderr)
	}
	code, body := s.get("/mock/oidc-pubkeys/" + m.kid)
	var key registry.OidcKey
	if code != http.StatusOK || json.Unmarshal(body, &key) != nil || key.Public == "" {
		t.Fatalf("registry key %s: %d %s", m.kid, code, body)
	}
	m.mu.Lock()
	m.pub = key.Public
	m.mu.Unlock()

	// forged token and forged registry answer
	m.set("resign")
	before := m.mints
	r := write()
	if m.mints != before+1 {
		t.Fatalf("the daemon did not mint through the proxy (%d mints)", m.mints-before)
	}
	if got := written(); got != "" {
		t.Fatalf("the daemon wrote a token signed by a key the ledger does not vouch for (kid %s)", kidOf(t, got))
	}
	if r.code == 0 || !strings.Contains(r.stderr, "DualVerifyRejected") || !strings.Contains(r.stderr, "not active on the ledger") {
		t.Fatalf("forged token: exit %d: %s", r.code, r.stderr)
	}
	// bring-your-own issuer: the check is off on request
	if r := write("--chain-verified-oidc=false"); r.code != 0 || kidOf(t, written()) != m.rogue.kid {
		t.Fatalf("--chain-verified-oidc=false: exit %d: %s", r.code, r.stderr)
	}

	// a kid governance revoked on the ledger: the proxy replays a token of it
	if _, err := s.client.SubmitGovernance(t.Context(), registry.KindOidcKeyRevoke,
		registry.OidcRevoke{Kid: m.kid, Reason: "test: compromised"}, operatorKey(t, o.effectiveDataDir())); err != nil {
		t.Fatal(err)
	}
	m.set("replay")
	if r := write(); r.code == 0 || written() != "" || !strings.Contains(r.stderr, "DualVerifyRejected") {
		t.Fatalf("token of a revoked kid: exit %d: %s", r.code, r.stderr)
	}
}

// TestPairPinsThePlatformKey: daemon pair --platform-key refuses a broker whose
// quote names another attestation key before it sends anything; with the
// right key the request is sent.
func TestPairPinsThePlatformKey(t *testing.T) {
	h := newHarness(t)
	s := h.start(serverOpts{home: t.TempDir()})
	own := h.akNewOwner(s)
	code, body := s.get("/v1/enclave")
	var info struct {
		Quote struct {
			PlatformKey string `json:"platform_key"`
		}
	}
	if code != http.StatusOK || json.Unmarshal(body, &info) != nil || len(info.Quote.PlatformKey) != 64 {
		t.Fatalf("GET /v1/enclave: %d %s", code, body)
	}
	dh := t.TempDir()
	pair := []string{"daemon", "pair", "--server", s.url, "--owner", own.wallet, "--alias", "pinned", "--scope", "oidc:*", "--no-wait"}
	r := h.cli(dh, append(pair, "--platform-key", strings.Repeat("ab", 32))...)
	if r.code != 3 || !strings.Contains(r.stderr, "not the pinned one") || len(h.akPending(own)) != 0 {
		t.Fatalf("another platform key: exit %d, %d pending: %s", r.code, len(h.akPending(own)), r.stderr)
	}
	if r := h.cli(dh, append(pair, "--platform-key", info.Quote.PlatformKey)...); r.code != 0 || len(h.akPending(own)) != 1 {
		t.Fatalf("the right platform key: exit %d: %s", r.code, r.stderr)
	}
}
