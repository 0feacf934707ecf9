package e2e

import (
	"encoding/json"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// daemonStatus is `agentkeys daemon status --json`.
type daemonStatus struct {
	State      string `json:"state"`
	Server     string `json:"server"`
	Owner      string `json:"owner"`
	Alias      string `json:"alias"`
	Agent      string `json:"agent"`
	Wallet     string `json:"wallet"`
	S3Prefix   string `json:"s3_prefix"`
	Generation int    `json:"generation"`
	Scope      []string
	ExpiresAt  string `json:"expires_at"`
	Detail     string `json:"detail"`
}

func (h *harness) status(home string) (daemonStatus, cliResult) {
	h.t.Helper()
	r := h.cli(home, "daemon", "status", "--json")
	var st daemonStatus
	if err := json.Unmarshal([]byte(r.stdout), &st); err != nil {
		h.t.Fatalf("daemon status --json: exit %d, not JSON: %q (stderr %q)", r.code, r.stdout, r.stderr)
	}
	return st, r
}

// startServe starts `agentkeys daemon serve --socket` for daemon home dh and
// returns an HTTP client of its socket.
func (h *harness) startServe(dh string, args ...string) *http.Client {
	t := h.t
	t.Helper()
	sock := filepath.Join(t.TempDir(), "ak.sock")
	srv := exec.Command(bin, append([]string{"daemon", "serve", "--socket", sock}, args...)...)
	srv.Env = childEnv("AGENTKEYS_HOME=" + dh)
	log := h.newOutput()
	srv.Stdout, srv.Stderr = log, log
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Process.Kill(); srv.Wait() })
	if !waitFor(agentTimeout, func() bool { fi, err := os.Stat(sock); return err == nil && fi.Mode()&os.ModeSocket != 0 }) {
		t.Fatalf("daemon serve made no socket: %s", log.String())
	}
	return unixClient(sock)
}

// TestDaemonStatusHonest: `daemon status` asks the broker (paired, revoked,
// expired, unreachable), and a revoked agent's daemon stops handing out the
// cloud credentials it has cached, through credential_process and its socket.
func TestDaemonStatusHonest(t *testing.T) {
	h := newHarness(t)
	s := h.start(serverOpts{home: t.TempDir(), args: []string{"--oidc-audience", weedAudience}})
	o := h.akNewOwner(s)
	A := h.oidcAgent(s, o, "alice", "oidc:"+weedAudience)

	st, r := h.status(A.home)
	if r.code != 0 || st.State != "paired" || st.Alias != "alice" || st.Wallet == "" || st.S3Prefix != A.wallet+"/" ||
		st.Generation != 1 || st.Server != s.url || st.ExpiresAt == "" {
		t.Errorf("status of a paired daemon: exit %d %+v", r.code, st)
	}
	if txt := h.akOK(A.home, "daemon", "status"); !strings.Contains(txt, "paired") || !strings.Contains(txt, A.wallet+"/") {
		t.Errorf("daemon status text: %q", txt)
	}

	doc := h.registerAWS(o.home, s.url)
	w := h.startWeed(&doc, s.url)
	creds := h.awsCreds(A, w)
	if again := h.awsCreds(A, w); again.AccessKeyID != creds.AccessKeyID {
		t.Fatal("aws-credentials did not use its cache")
	}
	hc := h.startServe(A.home, "--sts-endpoint", w.endpoint)
	path := "/cloud/aws?role_arn=" + url.QueryEscape(w.roleARN)
	if code, m := socketGet(t, hc, path); code != 200 || m["AccessKeyId"] == "" {
		t.Fatalf("socket cloud credentials: %d %v", code, m["error"])
	}
	if code, _ := socketGet(t, hc, path); code != 200 { // now from the cache
		t.Fatalf("socket cloud credentials again: %d", code)
	}

	// a scope that no longer allows the audience: DENIED, not the cache
	h.akOK(o.home, "agent", "scope", "alice", "--remove", "oidc:"+weedAudience)
	r = h.cli(A.home, "daemon", "aws-credentials", "--role-arn", w.roleARN, "--sts-endpoint", w.endpoint)
	if r.code != 3 || !strings.Contains(r.stderr, "DENIED") || strings.Contains(r.stdout, creds.AccessKeyID) {
		t.Errorf("aws-credentials without the oidc scope: exit %d, served the cache: %v, stderr %q", r.code, strings.Contains(r.stdout, creds.AccessKeyID), r.stderr)
	}
	h.akOK(o.home, "agent", "scope", "alice", "--add", "oidc:"+weedAudience)
	creds = h.awsCreds(A, w)
	D := h.oidcAgent(s, o, "dave", "oidc:"+weedAudience)
	credsD := h.awsCreds(D, w)

	h.akOK(o.home, "agent", "revoke", "alice", "--yes")
	st, r = h.status(A.home)
	if st.State != "revoked" || r.code != 3 || st.Detail == "" || st.Alias != "alice" {
		t.Errorf("status after revoke: exit %d %+v", r.code, st)
	}
	if r := h.cli(A.home, "daemon", "status"); r.code != 3 || !strings.Contains(r.stdout, "revoked") {
		t.Errorf("daemon status text after revoke: exit %d %q %q", r.code, r.stdout, r.stderr)
	}
	r = h.cli(A.home, "daemon", "aws-credentials", "--role-arn", w.roleARN, "--sts-endpoint", w.endpoint)
	if r.code != 3 || !strings.Contains(r.stderr, "REVOKED") || strings.Contains(r.stdout, creds.AccessKeyID) {
		t.Errorf("aws-credentials after revoke: exit %d, served the cache: %v, stderr %q", r.code, strings.Contains(r.stdout, creds.AccessKeyID), r.stderr)
	}
	if cached, _ := filepath.Glob(filepath.Join(A.home, "daemon", "cloud", "*.json")); len(cached) != 0 {
		t.Errorf("a revoked daemon kept its cloud credentials: %v", cached)
	}
	// the long-running daemon checks its session at most a few seconds late
	var code int
	var m map[string]any
	waitFor(15*time.Second, func() bool { code, m = socketGet(t, hc, path); return code != 200 })
	if e, _ := m["error"].(map[string]any); code != http.StatusUnauthorized || e["code"] != "REVOKED" {
		t.Errorf("socket cloud credentials after revoke: %d %v", code, m["error"])
	}

	// expired: a session of a few seconds
	dh := t.TempDir()
	p := h.startPair(dh, "--server", s.url, "--owner", o.wallet, "--alias", "carol", "--scope", "openai", "--ttl", "2s")
	h.akOK(o.home, "agent", "approve", p.id, "--yes")
	if code := p.wait(t); code != 0 {
		t.Fatalf("daemon pair --ttl 2s: exit %d", code)
	}
	waitFor(agentTimeout, func() bool { st, r = h.status(dh); return st.State == "expired" })
	if st.State != "expired" || r.code != 3 {
		t.Errorf("status of an expired session: exit %d %+v", r.code, st)
	}

	// unreachable: the broker is down
	s.stop(os.Interrupt)
	if st, r := h.status(D.home); st.State != "unreachable" || r.code != 5 || st.Alias != "dave" {
		t.Errorf("status with the broker down: exit %d %+v", r.code, st)
	}
	if r := h.cli(D.home, "daemon", "status"); r.code != 5 || !strings.Contains(r.stdout, "unreachable") {
		t.Errorf("daemon status text with the broker down: exit %d %q", r.code, r.stdout)
	}
	// nothing is served unchecked: the cache waits for the broker
	r = h.cli(D.home, "daemon", "aws-credentials", "--role-arn", w.roleARN, "--sts-endpoint", w.endpoint)
	if r.code != 5 || !strings.Contains(r.stderr, "UNREACHABLE") || strings.Contains(r.stdout, credsD.AccessKeyID) {
		t.Errorf("aws-credentials with the broker down: exit %d, served the cache: %v, stderr %q", r.code, strings.Contains(r.stdout, credsD.AccessKeyID), r.stderr)
	}
}

// TestDaemonStatusUnpaired: an unpaired daemon says so, in JSON too.
func TestDaemonStatusUnpaired(t *testing.T) {
	h := newHarness(t)
	st, r := h.status(t.TempDir())
	if st.State != "unpaired" || r.code != 3 || !strings.Contains(st.Detail, "not paired") {
		t.Errorf("status --json of an unpaired daemon: exit %d %+v", r.code, st)
	}
	if r := h.cli(t.TempDir(), "daemon", "status"); r.code != 3 || !strings.Contains(r.stderr, "daemon pair") {
		t.Errorf("status of an unpaired daemon: exit %d %q", r.code, r.stderr)
	}
}
