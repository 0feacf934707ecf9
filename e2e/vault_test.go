package e2e

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/agentkeys/agentkeys/internal/apiv1"
	"github.com/agentkeys/agentkeys/internal/client"
	"github.com/agentkeys/agentkeys/internal/home"
)

// cliIn runs the CLI with stdin. Its output is searched for planted secrets unless
// private is set (for `read`, the one command that exists to print a secret).
func (h *harness) cliIn(home, stdin string, private bool, args ...string) cliResult {
	h.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), cliTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Env = childEnv("AGENTKEYS_HOME="+home, "AGENTKEYS_SESSION_STORE=file")
	cmd.Stdin = strings.NewReader(stdin)
	stdout, stderr := newOutput(), h.newOutput()
	if !private {
		stdout = h.newOutput()
	}
	cmd.Stdout, cmd.Stderr = stdout, stderr
	err := cmd.Run()
	var ee *exec.ExitError
	if err != nil && !errors.As(err, &ee) {
		h.t.Fatalf("running agentkeys %s: %v", strings.Join(args, " "), err)
	}
	return cliResult{stdout: stdout.String(), stderr: stderr.String(), code: cmd.ProcessState.ExitCode()}
}

// owner creates an owner account in a fresh home and plants its session token.
func (h *harness) owner(s *server) string {
	h.t.Helper()
	oh := h.t.TempDir()
	r := h.cliIn(oh, "", false, "init", "--server", s.url)
	if r.code != 0 || !strings.Contains(r.stdout, "Account created") {
		h.t.Fatalf("init: %d %q %q", r.code, r.stdout, r.stderr)
	}
	sess, err := home.Dir(oh).Session()
	if err != nil {
		h.t.Fatal(err)
	}
	h.plant("owner session token", sess.Token)
	id, _ := os.ReadFile(home.Dir(oh).IdentityPath())
	var f struct {
		PrivateKey string `json:"private_key"`
	}
	json.Unmarshal(id, &f)
	h.plant("owner identity key", f.PrivateKey)
	for _, p := range []string{home.Dir(oh).IdentityPath(), home.Dir(oh).SessionPath()} {
		if st, err := os.Stat(p); err != nil || st.Mode().Perm() != 0o600 {
			h.t.Fatalf("%s: mode %v, want 0600", p, st.Mode().Perm())
		}
	}
	return oh
}

func (h *harness) mustOK(r cliResult, what string) cliResult {
	h.t.Helper()
	if r.code != 0 {
		h.t.Fatalf("%s: exit %d\nstdout: %s\nstderr: %s", what, r.code, r.stdout, r.stderr)
	}
	return r
}

// noArgvHas checks that no process on the machine has secret in its argument list.
func noArgvHas(t *testing.T, secret string) {
	t.Helper()
	procs, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	for _, p := range procs {
		if b, err := os.ReadFile(p); err == nil && strings.Contains(string(b), secret) {
			t.Errorf("a process argument list (%s) contains a planted secret", p)
		}
	}
}

func TestVaultRoundTrip(t *testing.T) {
	h := newHarness(t)
	s := h.start(serverOpts{home: t.TempDir()})
	h.plantServer(s.opts)
	oh := h.owner(s)
	secret := "sk-e2e-" + randomHex(16)
	h.plant("stored credential", secret)

	again := h.mustOK(h.cliIn(oh, "", false, "init", "--server", s.url), "second init")
	if !strings.Contains(again.stdout, "already exists") {
		t.Fatalf("second init: %q", again.stdout)
	}
	var who map[string]string
	json.Unmarshal([]byte(h.mustOK(h.cliIn(oh, "", false, "whoami", "--json"), "whoami").stdout), &who)
	if len(who["omni"]) != 64 || !strings.HasPrefix(who["wallet"], "0x") || who["server"] != s.url || who["session_expires"] == "" {
		t.Fatalf("whoami: %v", who)
	}
	h.mustOK(h.cliIn(oh, secret+"\n", false, "store", "openai"), "store")
	noArgvHas(t, secret)
	if r := h.mustOK(h.cliIn(oh, "", true, "read", "openai"), "read"); r.stdout != secret+"\n" {
		t.Fatal("read returned other bytes than were stored")
	}
	var rj map[string]any
	json.Unmarshal([]byte(h.mustOK(h.cliIn(oh, "", true, "read", "openai", "--json"), "read --json").stdout), &rj)
	if rj["value"] != secret || rj["version"] != float64(1) {
		t.Fatal("read --json did not return the stored value at version 1")
	}
	list := h.mustOK(h.cliIn(oh, "", false, "list", "--json"), "list").stdout
	if !strings.Contains(list, `"service":"openai"`) {
		t.Fatalf("list: %s", list)
	}
	h.mustOK(h.cliIn(oh, "", false, "rm", "openai", "--yes"), "rm")
	r := h.cliIn(oh, "", true, "read", "openai")
	if r.code != 4 || !strings.Contains(r.stderr, "Error: NOT_FOUND") || !strings.Contains(r.stderr, "Fix:") {
		t.Fatalf("read after rm: exit %d stderr %q", r.code, r.stderr)
	}
	var usage struct {
		Usage []struct{ Action, Service, Result, Actor string }
	}
	json.Unmarshal([]byte(h.mustOK(h.cliIn(oh, "", false, "usage", "--json"), "usage").stdout), &usage)
	var got []string
	for _, u := range usage.Usage {
		got = append(got, u.Action+":"+u.Result)
	}
	if strings.Join(got, ",") != "store:ok,read:ok,read:ok,delete:ok,read:denied" {
		t.Fatalf("usage: %v", got)
	}
	filtered := h.mustOK(h.cliIn(oh, "", false, "usage", "--service", "nothing", "--since", "1h"), "usage filtered").stdout
	if strings.Contains(filtered, "openai") {
		t.Fatalf("usage --service nothing: %s", filtered)
	}
	h.auditOK(oh, "--server", s.url)
	h.auditOK(oh, "--data-dir", s.opts.effectiveDataDir())

	// logout revokes on the ledger: the old token is refused on the next call
	sess, _ := home.Dir(oh).Session()
	h.mustOK(h.cliIn(oh, "", false, "logout"), "logout")
	c, _ := client.New(s.url)
	if _, err := c.WithToken(sess.Token).Whoami(context.Background()); !strings.Contains(errString(err), "REVOKED") {
		t.Fatalf("token after logout: %v", err)
	}
	if r := h.cliIn(oh, "", false, "whoami"); r.code != 3 || !strings.Contains(r.stderr, "agentkeys init") {
		t.Fatalf("whoami after logout: %d %q", r.code, r.stderr)
	}
	// bad input changes nothing and says how to fix it
	for _, args := range [][]string{{"store", "Bad Name"}, {"store"}, {"read", "../x"}} {
		if r := h.cliIn(oh, "x", false, args...); r.code == 0 || !strings.Contains(r.stderr, "Error: ") {
			t.Fatalf("%v: exit %d %q", args, r.code, r.stderr)
		}
	}
}

func errString(err error) string {
	if err == nil {
		return "<nil>"
	}
	return err.Error()
}

func TestVaultApprovalAndIsolation(t *testing.T) {
	h := newHarness(t)
	s := h.start(serverOpts{home: t.TempDir()})
	a, b := h.owner(s), h.owner(s)
	secret := "hv-" + randomHex(16)
	h.plant("high-value credential", secret)
	h.mustOK(h.cliIn(a, secret, false, "store", "bank", "--approval", "required"), "store --approval required")

	r := h.cliIn(a, "", true, "read", "bank", "--no-wait")
	m := regexp.MustCompile(`agentkeys approve ([0-9a-f]+)`).FindStringSubmatch(r.stderr)
	if r.code != 3 || !strings.Contains(r.stderr, "APPROVAL_REQUIRED") || m == nil {
		t.Fatalf("read of a high-value credential: %d %q", r.code, r.stderr)
	}
	if r := h.cliIn(a, "", false, "approve", m[1]); r.code != 2 || !strings.Contains(r.stderr, "--yes") {
		t.Fatalf("approve without a terminal or --yes: %d %q", r.code, r.stderr)
	}
	if r := h.cliIn(b, "", false, "approve", m[1], "--yes"); r.code != 4 {
		t.Fatalf("another owner approved: %d %q", r.code, r.stderr)
	}
	h.mustOK(h.cliIn(a, "", false, "approve", m[1], "--yes"), "approve")
	if r := h.mustOK(h.cliIn(a, "", true, "read", "bank"), "approved read"); strings.TrimSpace(r.stdout) != secret {
		t.Fatal("approved read returned other bytes")
	}
	if r := h.cliIn(a, "", true, "read", "bank", "--no-wait"); r.code != 3 {
		t.Fatalf("second read on one approval: %d", r.code)
	}

	// owner B cannot read, list or delete A's credential
	if r := h.cliIn(b, "", true, "read", "bank"); r.code != 4 {
		t.Fatalf("B read A's credential: exit %d", r.code)
	}
	if r := h.mustOK(h.cliIn(b, "", false, "list", "--json"), "B list"); strings.Contains(r.stdout, "bank") {
		t.Fatal("B lists A's credential")
	}
	if r := h.cliIn(b, "", false, "rm", "bank"); r.code != 4 {
		t.Fatalf("B deleted A's credential: exit %d", r.code)
	}
	if r := h.mustOK(h.cliIn(a, "", false, "list", "--json"), "A list"); !strings.Contains(r.stdout, "bank") {
		t.Fatal("A lost its credential")
	}
}

func TestVaultRateLimit(t *testing.T) {
	h := newHarness(t)
	s := h.start(serverOpts{home: t.TempDir(), args: []string{"--read-rate", "100/20s"}})
	oh := h.owner(s)
	h.mustOK(h.cliIn(oh, "rate-limited-secret-value", false, "store", "svc"), "store")
	sess, _ := home.Dir(oh).Session()
	c, _ := client.New(s.url)
	sc := c.WithToken(sess.Token)
	for i := range 100 {
		if _, err := sc.Read(context.Background(), "svc", apiv1.ReadBody{}); err != nil {
			t.Fatalf("read %d: %v", i+1, err)
		}
	}
	req, _ := http.NewRequest(http.MethodPost, s.url+"/v1/credentials/svc/read", strings.NewReader(`{}`))
	req.Header.Set("Authorization", "Bearer "+sess.Token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	wait, _ := strconv.Atoi(resp.Header.Get("Retry-After"))
	if resp.StatusCode != http.StatusTooManyRequests || wait < 1 {
		t.Fatalf("101st read: HTTP %d, Retry-After %q", resp.StatusCode, resp.Header.Get("Retry-After"))
	}
	r := h.cliIn(oh, "", true, "read", "svc")
	if r.code == 0 || !strings.Contains(r.stderr, "RATE_LIMITED") || !regexp.MustCompile(`wait \d+ s`).MatchString(r.stderr) {
		t.Fatalf("CLI read while limited: %d %q", r.code, r.stderr)
	}
	// The refusal is in the owner's trail like any refused read: once per window.
	if out := h.mustOK(h.cliIn(oh, "", false, "usage", "--json"), "usage").stdout; strings.Count(out, `"rate_limited"`) != 1 {
		t.Fatalf("usage after two rate-limited reads: want one rate_limited row: %s", out)
	}
	if !waitFor(30*time.Second, func() bool { r = h.cliIn(oh, "", true, "read", "svc"); return r.code == 0 }) {
		t.Fatalf("reads did not resume after the window: %q", r.stderr)
	}
}

// TestMintRateLimit: identity-token mints are limited per account
// (--mint-rate); over the limit the CLI says RATE_LIMITED and when to retry,
// and a bad --mint-rate is refused at start.
func TestMintRateLimit(t *testing.T) {
	h := newHarness(t)
	s := h.start(serverOpts{home: t.TempDir(), args: []string{"--oidc-audience", "e2e-aud", "--mint-rate", "2/1h"}})
	oh := h.owner(s)
	for i := range 2 {
		if r := h.cliIn(oh, "", false, "oidc", "token", "--audience", "e2e-aud", "--self"); r.code != 0 {
			t.Fatalf("mint %d: %d %q", i+1, r.code, r.stderr)
		}
	}
	r := h.cliIn(oh, "", false, "oidc", "token", "--audience", "e2e-aud", "--self")
	if r.code == 0 || !strings.Contains(r.stderr, "RATE_LIMITED") || !regexp.MustCompile(`wait \d+ s`).MatchString(r.stderr) {
		t.Fatalf("the 3rd mint in the window: %d %q", r.code, r.stderr)
	}
	if out := h.mustOK(h.cliIn(oh, "", false, "usage", "--json"), "usage").stdout; strings.Count(out, `"rate_limited"`) != 1 {
		t.Fatalf("usage: want one rate_limited mint row: %s", out)
	}
	bad := h.spawn(serverOpts{home: t.TempDir(), args: []string{"--mint-rate", "lots"}})
	if code := bad.waitExit(startTimeout); code == 0 || !strings.Contains(bad.stderr.String(), `--mint-rate "lots" is not a rate`) {
		t.Fatalf("--mint-rate lots: exit %d %s", code, bad.stderr.String())
	}
}
