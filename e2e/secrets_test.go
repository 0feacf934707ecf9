package e2e

import (
	"net/http"
	"strings"
	"syscall"
	"testing"

	"github.com/agentkeys/agentkeys/internal/ledger"
	"github.com/agentkeys/agentkeys/internal/registry"
)

// TestSecretsNeverPrinted runs a server with a platform key from the environment
// and debug logging through accepted and refused work, stops it, runs the CLI
// against it, and then refuses a malformed platform key. The harness checks that
// neither platform key nor the operator key (PEM body or raw) appears in any
// output of any of these processes.
func TestSecretsNeverPrinted(t *testing.T) {
	h := newHarness(t)
	home := t.TempDir()
	pk := randomHex(32)
	h.plant("AGENTKEYS_PLATFORM_KEY", pk)
	o := serverOpts{home: home, platformKey: pk, args: []string{"--log-level", "debug"}}
	dir := o.effectiveDataDir()
	s := h.start(o) // also plants the operator key's PEM body and seed
	op := operatorKey(t, dir)

	governanceEntries(t, s, op, 4)
	bad := newEntry(t, s.head(), registry.KindSuccessorAuthorize, authorize(randomHex(32)))
	ledger.SignGovernance(&bad, op)
	bad.Payload, _ = ledger.MarshalPayload(authorize(randomHex(32)))
	if code, body := s.postJSON("/v1/ledger/entries", bad); code != http.StatusForbidden {
		t.Errorf("tampered entry: %d %s", code, body)
	}
	for _, p := range []string{"/v1/enclave", "/v1/attestation?nonce=n1", "/v1/ledger/entries?limit=9999", "/nope", "/metrics"} {
		s.get(p)
	}
	h.auditOK(home, "--server", s.url)
	h.auditOK(home, "--data-dir", dir)
	if r := h.cli(home, "audit", "verify", "--server", "not a url"); r.code == 0 {
		t.Error("audit verify with a bad URL succeeded")
	}
	if code := s.stop(syscall.SIGTERM); code != 0 {
		t.Fatalf("stop: exit %d", code)
	}
	if !strings.Contains(s.stderr.String(), `"level":"DEBUG"`) {
		t.Error("--log-level debug produced no debug lines, so the check above proves less than it should")
	}

	// A malformed platform key is refused without being echoed.
	malformed := "zz" + randomHex(31)
	h.plant("malformed AGENTKEYS_PLATFORM_KEY", malformed)
	o2 := serverOpts{home: t.TempDir(), platformKey: malformed}
	line := refused(t, h, o2)
	if !strings.Contains(line, "AGENTKEYS_PLATFORM_KEY") {
		t.Errorf("refusal does not name AGENTKEYS_PLATFORM_KEY: %s", line)
	}
}
