package e2e

import (
	"net/http"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/agentkeys/agentkeys/internal/porttest"
)

// TestDPoPProofFromBeforeRestart: the broker's memory of used proofs is per
// process, so a proof used before a restart must not be accepted after it; the
// daemon goes on working (it makes new proofs).
func TestDPoPProofFromBeforeRestart(t *testing.T) {
	h := newHarness(t)
	opts := serverOpts{home: t.TempDir(), args: []string{"--listen", "127.0.0.1:" + strconv.Itoa(porttest.Free(t))}}
	s := h.start(opts)
	o := h.akNewOwner(s)
	secret := "sk-restart-" + randomHex(16)
	h.akStore(o, "openai", secret)
	dh := h.pairAgent(s, o, "bot", "openai")
	sess, key := agentSession(t, dh)
	const list = "/v1/agent/credentials"
	p := proofFor(t, key, "GET", s.url+list, sess.Token)
	if code, _ := agentRequest(t, s, "GET", list, sess.Token, p); code != http.StatusOK {
		t.Fatalf("first use: %d", code)
	}
	if code := s.stop(syscall.SIGTERM); code != 0 {
		t.Fatalf("SIGTERM: exit %d", code)
	}
	s = h.start(opts)
	if code, c := agentRequest(t, s, "GET", list, sess.Token, p); code != http.StatusUnauthorized || c != "UNAUTHENTICATED" {
		t.Fatalf("the proof used before the restart, again after it: %d %s, want 401 UNAUTHENTICATED", code, c)
	}
	cs, _ := h.mcpSession(dh)
	if v, isErr := getCredential(t, cs, "openai"); isErr || v != secret {
		t.Fatalf("the daemon after the restart: error=%v", isErr)
	}
}

// TestDPoPPublicURLs: a proof names the URL the daemon was given; the broker
// accepts its --issuer and each --public-url, and never a URL built from the
// Host header the sender chose.
func TestDPoPPublicURLs(t *testing.T) {
	h := newHarness(t)
	home := t.TempDir()
	for _, bad := range []string{"keys.example.com", "https://keys.example.com/?a=b", "http://keys.example.com"} {
		if r := h.cli(home, "server", "--listen", "127.0.0.1:0", "--public-url", bad); r.code != 2 || !strings.Contains(r.stderr, "--public-url") {
			t.Errorf("--public-url %s: exit %d, stderr %q", bad, r.code, r.stderr)
		}
	}
	port := strconv.Itoa(porttest.Free(t))
	s := h.start(serverOpts{home: home, args: []string{"--listen", "127.0.0.1:" + port, "--public-url", "http://localhost:" + port}})
	o := h.akNewOwner(s)
	secret := "sk-alias-" + randomHex(16)
	h.akStore(o, "openai", secret)
	// The daemon is given the other name: its proofs name http://localhost:PORT.
	alias := *s
	alias.url = "http://localhost:" + port
	dh := h.pairAgent(&alias, o, "bot", "openai")
	cs, _ := h.mcpSession(dh)
	if v, isErr := getCredential(t, cs, "openai"); isErr || v != secret {
		t.Fatalf("a daemon using the --public-url: error=%v", isErr)
	}
	sess, key := agentSession(t, dh)
	const list = "/v1/agent/credentials"
	send := func(host, htu string) int {
		req, _ := http.NewRequest("GET", s.url+list, nil)
		req.Host = host
		req.Header.Set("Authorization", "Bearer "+sess.Token)
		req.Header.Set("DPoP", proofFor(t, key, "GET", htu, sess.Token))
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	evil := "evil.example:" + port
	if code := send(evil, "http://"+evil+list); code != http.StatusUnauthorized {
		t.Errorf("a proof for the Host header's name, not a public URL: %d, want 401", code)
	}
	if code := send(evil, s.url+list); code != http.StatusOK {
		t.Errorf("a proof for the issuer, whatever the Host header: %d, want 200", code)
	}
}
