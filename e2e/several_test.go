package e2e

import (
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/agentkeys/agentkeys/internal/ledger/postgres/pgtest"
	"github.com/agentkeys/agentkeys/internal/porttest"
)

// metric is the value of an unlabelled metric on s's /metrics (-1: absent).
func (s *server) metric(name string) float64 {
	s.h.t.Helper()
	code, body := s.get("/metrics")
	if code != http.StatusOK {
		s.h.t.Fatalf("/metrics = %d", code)
	}
	for line := range strings.Lines(string(body)) {
		if f := strings.Fields(line); len(f) == 2 && f[0] == name {
			v, err := strconv.ParseFloat(f[1], 64)
			if err != nil {
				s.h.t.Fatalf("metric line %q: %v", line, err)
			}
			return v
		}
	}
	return -1
}

// twoBrokers starts two `agentkeys server` processes on the PostgreSQL
// database ledgerURL, on different ports, as behind one load balancer: the same
// --issuer (A's URL) and each other's URL as --public-url, B provisioned with a
// copy of A's seed.sealed and the same platform key; args go to both. It
// returns both and A's options.
func twoBrokers(t *testing.T, h *harness, ledgerURL string, args ...string) (a, b *server, oa serverOpts) {
	t.Helper()
	urlA := "http://127.0.0.1:" + strconv.Itoa(porttest.Free(t))
	urlB := "http://127.0.0.1:" + strconv.Itoa(porttest.Free(t))
	common := append([]string{"--ledger", ledgerURL, "--issuer", urlA, "--public-url", urlB}, args...)
	oa = serverOpts{home: t.TempDir(), args: append([]string{"--listen", strings.TrimPrefix(urlA, "http://")}, common...)}
	a = h.start(oa)
	h.plantServer(oa)
	// The second broker: a copy of the sealed seed and the same platform key,
	// nothing else (the operator key stays with the operator).
	ob := serverOpts{home: t.TempDir(), args: append([]string{"--listen", strings.TrimPrefix(urlB, "http://"), "--platform-key", oa.platformKeyFile()}, common...)}
	sealed, err := os.ReadFile(filepath.Join(oa.effectiveDataDir(), "seed.sealed"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(ob.effectiveDataDir(), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(ob.effectiveDataDir(), "seed.sealed"), sealed, 0o600); err != nil {
		t.Fatal(err)
	}
	b = h.start(ob)
	// B refuses a proof dated in or before the second it started
	// (dpop.ErrBeforeStart; agents' clients wait and retry once). The tests'
	// hand-made proofs are dated after it: the pairing through A can finish
	// within that second.
	time.Sleep(time.Until(time.Now().Truncate(time.Second).Add(time.Second)))
	return a, b, oa
}

// TestTwoBrokersOnPostgres runs two `agentkeys server` processes on one
// throwaway PostgreSQL database, on different ports, as behind one load
// balancer: the same --issuer (A's URL) and each other's URL as --public-url,
// B provisioned with a copy of A's seed.sealed and the same platform key. An
// agent paired through A reads through B; `agent revoke` on A makes B refuse
// the next read (the delay is measured and logged); a DPoP proof A accepted,
// replayed to B, is refused; `audit verify --ledger` passes at the end.
func TestTwoBrokersOnPostgres(t *testing.T) {
	c := pgtest.Start(t)
	h := newHarness(t)
	h.plant("PostgreSQL password", c.Password())
	t.Setenv("PGPASSWORD", c.Password())
	ledgerURL := withoutPassword(t, c.NewDatabase(t))
	a, b, oa := twoBrokers(t, h, ledgerURL)
	urlA, urlB := a.url, b.url
	common := []string{"--ledger", ledgerURL, "--issuer", urlA, "--public-url", urlB}

	o := h.akNewOwner(a)
	secret := "sk-two-brokers-" + randomHex(16)
	h.akStore(o, "openai", secret)
	dh := h.pairAgent(a, o, "bot", "openai")
	sess, key := agentSession(t, dh)
	const read = "/v1/credentials/openai/read"
	// B knows the agent once it has followed the pairing (the notification's
	// latency; under load it has been seen to miss an immediate read).
	paired := float64(a.head().Seq)
	if !waitFor(10*time.Second, func() bool { return b.metric("agentkeys_ledger_head_seq") >= paired }) {
		t.Fatalf("B did not follow the pairing within 10 s (B's head %v, the store's %v)", b.metric("agentkeys_ledger_head_seq"), paired)
	}
	if code, c := agentRequest(t, b, http.MethodPost, read, sess.Token, proofFor(t, key, http.MethodPost, urlB+read, sess.Token)); code != http.StatusOK {
		t.Fatalf("the agent paired through A, reading through B: %d %s", code, c)
	}

	// A proof for the balancer's URL (A's here) accepted by A, replayed to B.
	p := proofFor(t, key, http.MethodPost, urlA+read, sess.Token)
	if code, c := agentRequest(t, a, http.MethodPost, read, sess.Token, p); code != http.StatusOK {
		t.Fatalf("read through A: %d %s", code, c)
	}
	if code, c := agentRequest(t, b, http.MethodPost, read, sess.Token, p); code != http.StatusUnauthorized || c != "UNAUTHENTICATED" {
		t.Fatalf("the proof A accepted, replayed to B: %d %s, want 401 UNAUTHENTICATED", code, c)
	}

	// Revocation on A; how long until B has followed it, and the next read on B.
	h.akOK(o.home, "agent", "revoke", "bot", "--yes")
	revoked := time.Now()
	head := float64(a.head().Seq) // the store's head: the revocation is in it
	if !waitFor(10*time.Second, func() bool { return b.metric("agentkeys_ledger_head_seq") >= head }) {
		t.Fatalf("B did not follow the revocation within 10 s (B's head %v, the store's %v)", b.metric("agentkeys_ledger_head_seq"), head)
	}
	followed := time.Since(revoked)
	code, errCode := agentRequest(t, b, http.MethodPost, read, sess.Token, proofFor(t, key, http.MethodPost, urlB+read, sess.Token))
	refused := time.Since(revoked)
	if code != http.StatusUnauthorized {
		t.Fatalf("the first read through B after `agent revoke` on A: %d %s, want 401", code, errCode)
	}
	t.Logf("revocation across brokers: B followed the entry %s after `agent revoke` on A returned; its next read was refused (%s) %s after", followed, errCode, refused)
	if followed > time.Second {
		t.Errorf("B followed the revocation %s after it was committed, target < 1 s", followed)
	}

	for _, s := range []*server{a, b} {
		if code, body := s.get("/readyz"); code != http.StatusOK {
			t.Errorf("%s /readyz: %d %s", s.url, code, body)
		}
	}
	// A broker given no copy of the seed makes its own, which did not create
	// this ledger: it refuses to serve, saying how to provision it.
	other := h.spawn(serverOpts{home: t.TempDir(), args: append([]string{"--listen", "127.0.0.1:0"}, common...)})
	other.waitListening()
	l, err := other.waitLog("the refusal", startTimeout, msgIs("broker is not ready"))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(l.str("err"), "different enclave ledger key") || !strings.Contains(l.str("fix"), "seed.sealed") {
		t.Errorf("a broker with another seed: err %q fix %q; want the cause and the fix (copy seed.sealed)", l.str("err"), l.str("fix"))
	}
	if code, _ := other.get("/readyz"); code != http.StatusServiceUnavailable {
		t.Errorf("a broker with another seed: /readyz %d, want 503", code)
	}
	t.Log(h.auditOK(oa.home, "--ledger", ledgerURL))
}
