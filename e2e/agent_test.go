package e2e

import (
	"context"
	"crypto/ecdsa"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/agentkeys/agentkeys/internal/apiv1"
	"github.com/agentkeys/agentkeys/internal/daemon"
	"github.com/agentkeys/agentkeys/internal/dpop"
	"github.com/agentkeys/agentkeys/internal/home"
)

// agentTimeout bounds every wait of the agent tests.
const agentTimeout = 60 * time.Second

// akCLIIn runs the binary with stdin and AGENTKEYS_HOME=home.
func (h *harness) akCLIIn(home, stdin string, args ...string) cliResult {
	h.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), cliTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Env = childEnv("AGENTKEYS_HOME=" + home)
	cmd.Stdin = strings.NewReader(stdin)
	stdout, stderr := h.newOutput(), h.newOutput()
	cmd.Stdout, cmd.Stderr = stdout, stderr
	cmd.Run()
	if ctx.Err() != nil {
		h.t.Fatalf("agentkeys %s did not finish within %s", strings.Join(args, " "), cliTimeout)
	}
	return cliResult{stdout: stdout.String(), stderr: stderr.String(), code: cmd.ProcessState.ExitCode()}
}

// ok runs a CLI command that must succeed.
func (h *harness) akOK(home string, args ...string) string {
	h.t.Helper()
	r := h.cli(home, args...)
	if r.code != 0 {
		h.t.Fatalf("agentkeys %s: exit %d\nstdout: %s\nstderr: %s", strings.Join(args, " "), r.code, r.stdout, r.stderr)
	}
	return r.stdout
}

// owner is an owner's CLI home on a server.
type akOwner struct {
	home, omni, wallet string
}

func (h *harness) akNewOwner(s *server) akOwner {
	h.t.Helper()
	o := akOwner{home: h.t.TempDir()}
	h.akOK(o.home, "init", "--server", s.url)
	var w struct{ Omni, Wallet string }
	if err := json.Unmarshal([]byte(h.akOK(o.home, "whoami", "--json")), &w); err != nil {
		h.t.Fatalf("whoami --json: %v", err)
	}
	o.omni, o.wallet = w.Omni, w.Wallet
	return o
}

// store stores a planted secret.
func (h *harness) akStore(o akOwner, service, secret string, extra ...string) {
	h.t.Helper()
	h.plant("credential "+service, secret)
	r := h.akCLIIn(o.home, secret, append([]string{"store", service}, extra...)...)
	if r.code != 0 {
		h.t.Fatalf("store %s: exit %d: %s", service, r.code, r.stderr)
	}
}

// akPairing is a running `agentkeys daemon pair`.
type akPairing struct {
	cmd        *exec.Cmd
	stdout     *output
	stderr     *output
	done       chan struct{}
	id, vvc    string
	key        string // the daemon key's fingerprint, as printed
	daemonHome string
	exitCode   int
}

var pairLine = regexp.MustCompile(`Pair request ([0-9a-f]+) sent`)
var vvcLine = regexp.MustCompile(`VVC: ([0-9]{6})`)
var keyLine = regexp.MustCompile(`Daemon key: ([0-9a-f]{4}(?:-[0-9a-f]{4}){3})`)

// startPair starts `daemon pair` and waits until it printed the id, VVC and key.
func (h *harness) startPair(daemonHome string, args ...string) *akPairing {
	h.t.Helper()
	p := &akPairing{daemonHome: daemonHome, stdout: h.newOutput(), stderr: h.newOutput(), done: make(chan struct{})}
	p.cmd = exec.Command(bin, append([]string{"daemon", "pair"}, args...)...)
	p.cmd.Env = childEnv("AGENTKEYS_HOME=" + daemonHome)
	p.cmd.Stdout, p.cmd.Stderr = p.stdout, p.stderr
	if err := p.cmd.Start(); err != nil {
		h.t.Fatal(err)
	}
	go func() { p.cmd.Wait(); p.exitCode = p.cmd.ProcessState.ExitCode(); close(p.done) }()
	h.t.Cleanup(func() {
		select {
		case <-p.done:
		default:
			p.cmd.Process.Kill()
			<-p.done
		}
	})
	deadline := time.After(agentTimeout)
	for {
		text, changed := p.stdout.snapshot()
		m1, m2, m3 := pairLine.FindStringSubmatch(text), vvcLine.FindStringSubmatch(text), keyLine.FindStringSubmatch(text)
		if m1 != nil && m2 != nil && m3 != nil {
			p.id, p.vvc, p.key = m1[1], m2[1], m3[1]
			return p
		}
		var js struct{ Status, ID, VVC, Fingerprint string } // --json: the first line
		if line, _, ok := strings.Cut(text, "\n"); ok && json.Unmarshal([]byte(line), &js) == nil && js.Status == "pending" {
			p.id, p.vvc, p.key = js.ID, js.VVC, js.Fingerprint
			return p
		}
		select {
		case <-changed:
		case <-p.done:
			if text := p.stdout.String(); pairLine.MatchString(text) && vvcLine.MatchString(text) && keyLine.MatchString(text) {
				continue
			}
			h.t.Fatalf("daemon pair exited %d before printing the request: %s", p.exitCode, p.stdout.String())
		case <-deadline:
			h.t.Fatalf("daemon pair printed no request id, VVC and daemon key within %s", agentTimeout)
		}
	}
}

func (p *akPairing) wait(t *testing.T) int {
	t.Helper()
	select {
	case <-p.done:
	case <-time.After(agentTimeout):
		t.Fatalf("daemon pair did not finish within %s; stdout: %s", agentTimeout, p.stdout.String())
	}
	return p.exitCode
}

type akPendingReq struct {
	ID, VVC, Alias string
	Scope          []string
	Fingerprint    string
	Source         string
	RequestedAt    string `json:"requested_at"`
}

func (h *harness) akPending(o akOwner) []akPendingReq {
	h.t.Helper()
	var out struct{ Requests []akPendingReq }
	if err := json.Unmarshal([]byte(h.akOK(o.home, "agent", "pending", "--json")), &out); err != nil {
		h.t.Fatal(err)
	}
	return out.Requests
}

// pairAgent pairs a new daemon home as alias of o, approving with --yes.
func (h *harness) pairAgent(s *server, o akOwner, alias, scope string) string {
	h.t.Helper()
	return h.pairAgentIn(h.t.TempDir(), s, o, alias, scope)
}

// pairAgentIn pairs the daemon home dh as alias of o, approving with --yes.
func (h *harness) pairAgentIn(dh string, s *server, o akOwner, alias, scope string) string {
	h.t.Helper()
	p := h.startPair(dh, "--server", s.url, "--owner", o.wallet, "--alias", alias, "--scope", scope)
	var found bool
	for _, r := range h.akPending(o) {
		if r.ID == p.id {
			found = true
			if r.VVC != p.vvc || r.Alias != alias || r.Fingerprint != p.key {
				h.t.Fatalf("owner sees VVC %s alias %s key %s, daemon shows VVC %s alias %s key %s", r.VVC, r.Alias, r.Fingerprint, p.vvc, alias, p.key)
			}
		}
	}
	if !found {
		h.t.Fatalf("pair request %s is not in the owner's pending list", p.id)
	}
	h.akOK(o.home, "agent", "approve", p.id, "--yes")
	if code := p.wait(h.t); code != 0 || !strings.Contains(p.stdout.String(), "Paired: agent "+alias) {
		h.t.Fatalf("daemon pair: exit %d: %s", code, p.stdout.String())
	}
	sess, err := daemon.DirOf(dh).LoadSession()
	if err != nil {
		h.t.Fatal(err)
	}
	h.plant("agent session token of "+alias, sess.Token)
	h.plant("agent channel key of "+alias, sess.ChannelKey)
	h.plant("agent proof key of "+alias, sess.ProofKey)
	return dh
}

// mcpSession connects the SDK's MCP client to `agentkeys daemon mcp ARGS…` and
// returns the session and the daemon's log.
func (h *harness) mcpSession(daemonHome string, args ...string) (*mcp.ClientSession, *output) {
	h.t.Helper()
	return h.mcpSessionWith(daemonHome, nil, args...)
}

// mcpSessionWith is mcpSession with the client's options.
func (h *harness) mcpSessionWith(daemonHome string, opts *mcp.ClientOptions, args ...string) (*mcp.ClientSession, *output) {
	h.t.Helper()
	cmd := exec.Command(bin, append([]string{"daemon", "mcp"}, args...)...)
	cmd.Env = childEnv("AGENTKEYS_HOME=" + daemonHome)
	stderr := h.newOutput()
	cmd.Stderr = stderr
	c := mcp.NewClient(&mcp.Implementation{Name: "e2e", Version: "1"}, opts)
	ctx, cancel := context.WithTimeout(context.Background(), agentTimeout)
	defer cancel()
	cs, err := c.Connect(ctx, &mcp.CommandTransport{Command: cmd}, nil)
	if err != nil {
		h.t.Fatalf("connecting an MCP client to agentkeys daemon mcp: %v; stderr: %s", err, stderr.String())
	}
	h.t.Cleanup(func() { cs.Close() })
	return cs, stderr
}

// call calls a tool and returns its text and whether it is a tool error.
func mcpCall(t *testing.T, cs *mcp.ClientSession, tool string, args map[string]any) (string, bool) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), agentTimeout)
	defer cancel()
	res, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: tool, Arguments: args})
	if err != nil {
		t.Fatalf("MCP %s: %v", tool, err)
	}
	var sb strings.Builder
	for _, c := range res.Content {
		if tc, ok := c.(*mcp.TextContent); ok {
			sb.WriteString(tc.Text)
		}
	}
	return sb.String(), res.IsError
}

func getCredential(t *testing.T, cs *mcp.ClientSession, service string) (string, bool) {
	t.Helper()
	return mcpCall(t, cs, "get_credential", map[string]any{"service": service})
}

// wantToolError checks a tool error with a stable code and no secret.
func wantToolError(t *testing.T, cs *mcp.ClientSession, service, code string, errTexts *[]string) {
	t.Helper()
	text, isErr := getCredential(t, cs, service)
	if !isErr || !strings.HasPrefix(text, code+":") {
		t.Fatalf("get_credential %s: want a %s tool error, got error=%v %q", service, code, isErr, text)
	}
	*errTexts = append(*errTexts, text)
}

func unixClient(path string) *http.Client {
	return &http.Client{Timeout: agentTimeout, Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, "unix", path)
		}}}
}

func socketGet(t *testing.T, hc *http.Client, path string) (int, map[string]any) {
	t.Helper()
	resp, err := hc.Get("http://agentkeys" + path)
	if err != nil {
		t.Fatalf("GET %s over the socket: %v", path, err)
	}
	defer resp.Body.Close()
	var m map[string]any
	b, _ := io.ReadAll(resp.Body)
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatalf("GET %s over the socket: not JSON: %s", path, b)
	}
	return resp.StatusCode, m
}

// TestAgentPairAndMCP is the two-process path: server, owner CLI, daemon. The
// daemon pairs (VVC compared by the owner), the SDK's MCP client lists the tools
// and reads credentials through `agentkeys daemon mcp`, the same through the Unix
// socket and `agentkeys run`; scope changes and revocation act on the next call.
func TestAgentPairAndMCP(t *testing.T) {
	h := newHarness(t)
	s := h.start(serverOpts{home: t.TempDir()})
	o := h.akNewOwner(s)
	openai, github, stripe, slack := "sk-openai-"+randomHex(16), "ghp-"+randomHex(16), "sk-stripe-"+randomHex(16), "xoxb-"+randomHex(16)
	h.akStore(o, "openai", openai)
	h.akStore(o, "github", github, "--agent", "bot")
	h.akStore(o, "stripe", stripe)
	h.akStore(o, "slack", slack, "--agent", "other")

	dh := h.pairAgent(s, o, "bot", "openai,github")
	dir := filepath.Join(dh, "daemon")
	if m := fileMode(t, dir); m != 0o700 {
		t.Errorf("%s is %v, want 0700", dir, m)
	}
	if m := fileMode(t, filepath.Join(dir, "session.json")); m != 0o600 {
		t.Errorf("session.json is %v, want 0600", m)
	}

	cs, mcpLog := h.mcpSession(dh)
	ctx, cancel := context.WithTimeout(context.Background(), agentTimeout)
	defer cancel()
	tools, err := cs.ListTools(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	names := map[string]bool{}
	for _, tl := range tools.Tools {
		names[tl.Name] = true
	}
	if !names["get_credential"] || !names["list_credentials"] {
		t.Fatalf("tools: %v", names)
	}
	if text, isErr := mcpCall(t, cs, "list_credentials", map[string]any{}); isErr || !strings.Contains(text, `"github"`) || !strings.Contains(text, `"openai"`) || strings.Contains(text, "stripe") {
		t.Fatalf("list_credentials: error=%v %s", isErr, text)
	}
	if v, isErr := getCredential(t, cs, "openai"); isErr || v != openai {
		t.Fatalf("get_credential openai (owner-wide, in scope): error=%v, right value=%v", isErr, v == openai)
	}
	if v, isErr := getCredential(t, cs, "github"); isErr || v != github {
		t.Fatalf("get_credential github (stored for bot): error=%v, right value=%v", isErr, v == github)
	}
	var errTexts []string
	wantToolError(t, cs, "stripe", "DENIED", &errTexts)    // stored, out of scope
	wantToolError(t, cs, "anthropic", "DENIED", &errTexts) // not in scope at all
	h.akOK(o.home, "agent", "scope", "bot", "--add", "slack,anthropic")
	wantToolError(t, cs, "slack", "NOT_FOUND", &errTexts)     // in scope, but only stored for another agent
	wantToolError(t, cs, "anthropic", "NOT_FOUND", &errTexts) // in scope, not stored
	h.akOK(o.home, "agent", "scope", "bot", "--remove", "openai")
	wantToolError(t, cs, "openai", "DENIED", &errTexts) // the very next request sees the change
	// A 1 MB service name: refused by the daemon itself, with the broker's name
	// rule, not echoed (before: an UNREACHABLE repeating the megabyte).
	if text, isErr := getCredential(t, cs, strings.Repeat("x", 1<<20)); !isErr || !strings.HasPrefix(text, "BAD_REQUEST:") || len(text) > 512 {
		t.Fatalf("get_credential with a 1 MB name: error=%v %.200q (%d bytes)", isErr, text, len(text))
	}
	if out := strings.TrimSpace(h.akOK(o.home, "agent", "scope", "bot", "--list")); out != "github,slack,anthropic" {
		t.Errorf("scope --list = %q", out)
	}
	h.akOK(o.home, "agent", "scope", "bot", "--set", "openai,github")

	// The same through the Unix socket.
	sock := filepath.Join(t.TempDir(), "ak.sock")
	srv := exec.Command(bin, "daemon", "serve", "--socket", sock)
	srv.Env = childEnv("AGENTKEYS_HOME=" + dh)
	srvLog := h.newOutput()
	srv.Stdout, srv.Stderr = srvLog, srvLog
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Process.Kill(); srv.Wait() })
	if !waitFor(agentTimeout, func() bool { fi, err := os.Stat(sock); return err == nil && fi.Mode()&os.ModeSocket != 0 }) {
		t.Fatalf("daemon serve made no socket: %s", srvLog.String())
	}
	if m := fileMode(t, sock); m != 0o600 {
		t.Errorf("socket is %v, want 0600", m)
	}
	hc := unixClient(sock)
	if code, m := socketGet(t, hc, "/credentials"); code != 200 || fmt.Sprint(m["services"]) != "[github openai]" {
		t.Errorf("GET /credentials = %d %v", code, m["services"])
	}
	if code, m := socketGet(t, hc, "/credentials/openai"); code != 200 || m["value"] != openai || m["service"] != "openai" {
		t.Errorf("GET /credentials/openai = %d, right value=%v", code, m["value"] == openai)
	}
	code, m := socketGet(t, hc, "/credentials/stripe")
	if e, _ := m["error"].(map[string]any); code != http.StatusForbidden || e["code"] != "DENIED" {
		t.Errorf("GET /credentials/stripe = %d %v", code, m)
	} else {
		errTexts = append(errTexts, fmt.Sprint(e))
	}

	// agentkeys run inside the sandbox: values reach the child only.
	r := h.cli(dh, "run", "--", "sh", "-c", `test -n "$GITHUB_API_KEY" && test -n "$OPENAI_API_KEY" && exit 7`)
	if r.code != 7 {
		t.Errorf("run: exit %d (want the child's 7): %s", r.code, r.stderr)
	}
	r = h.cli(dh, "run", "--env", "TOKEN=github", "--", "sh", "-c", `printf %s "$TOKEN" | sha256sum`)
	if sum := sha256.Sum256([]byte(github)); !strings.HasPrefix(r.stdout, hex.EncodeToString(sum[:])) {
		t.Errorf("run --env TOKEN=github: the child did not see the credential (exit %d): %s", r.code, r.stderr)
	}
	if r.code != 0 {
		t.Errorf("run --env TOKEN=github: exit %d: %s", r.code, r.stderr)
	}
	// The child learns nothing that points at the daemon's keys: no AGENTKEYS_HOME,
	// no AGENTKEYS_ variable at all (only their names are printed).
	for _, home := range []string{dh, o.home} {
		r := h.cli(home, "run", "--env", "TOKEN=openai", "--", "sh", "-c", `env | grep ^AGENTKEYS_ | cut -d= -f1; exit 0`)
		if r.code != 0 || strings.TrimSpace(r.stdout) != "" {
			t.Errorf("run (home %s): the child sees %q (exit %d): %s", home, r.stdout, r.code, r.stderr)
		}
	}
	if r := h.cli(dh, "run", "--env", "X=stripe", "--", "true"); r.code != 3 || !strings.Contains(r.stderr, "DENIED") {
		t.Errorf("run with an out-of-scope service: exit %d %s", r.code, r.stderr)
	}
	// The owner side of run.
	if r := h.cli(o.home, "run", "--", "sh", "-c", `[ -n "$STRIPE_API_KEY" ] && [ -z "$SLACK_API_KEY" ]`); r.code != 0 {
		t.Errorf("owner run: exit %d: %s", r.code, r.stderr)
	}

	// Reads by the agent are in the owner's usage, with the agent as actor.
	var usage struct {
		Usage []struct{ Actor, Action, Service, Result string }
	}
	if err := json.Unmarshal([]byte(h.akOK(o.home, "usage", "--agent", "bot", "--json")), &usage); err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	for _, u := range usage.Usage {
		seen[u.Actor+" "+u.Action+" "+u.Service+" "+u.Result] = true
	}
	for _, want := range []string{"agent:bot read openai ok", "agent:bot read github ok", "agent:bot read stripe denied",
		"agent:bot pair.request  pending", "owner pair.approve  ok", "owner agent.scope  ok"} {
		if !seen[want] {
			t.Errorf("usage --agent bot lacks %q; has %v", want, seen)
		}
	}

	// Revocation acts on the next call.
	if v, isErr := getCredential(t, cs, "openai"); isErr || v != openai {
		t.Fatalf("before revoke: error=%v", isErr)
	}
	start := time.Now()
	h.akOK(o.home, "agent", "revoke", "bot", "--yes")
	revoked := time.Now()
	text, isErr := getCredential(t, cs, "openai")
	answered := time.Now()
	if !isErr || !strings.HasPrefix(text, "REVOKED:") {
		t.Fatalf("first get_credential after revoke: error=%v %q", isErr, text)
	}
	errTexts = append(errTexts, text)
	t.Logf("revocation delay: the first get_credential after `agent revoke` returned (%s after the command returned, %s after it started) with REVOKED",
		answered.Sub(revoked), answered.Sub(start))
	if text, isErr := mcpCall(t, cs, "list_credentials", map[string]any{}); !isErr || !strings.HasPrefix(text, "REVOKED:") {
		t.Errorf("list_credentials after revoke: %v %q", isErr, text)
	}
	if code, m := socketGet(t, hc, "/credentials/github"); code != http.StatusUnauthorized || fmt.Sprint(m["error"]) == "" {
		t.Errorf("socket after revoke: %d %v", code, m)
	}
	var agents struct {
		Agents []struct{ Alias, Status string }
	}
	json.Unmarshal([]byte(h.akOK(o.home, "agent", "list", "--json")), &agents)
	if len(agents.Agents) != 1 || agents.Agents[0].Status != "revoked" {
		t.Errorf("agent list after revoke: %+v", agents.Agents)
	}

	// Re-akPairing the alias makes a new generation; teardown deletes its own credentials.
	dh2 := h.pairAgent(s, o, "bot", "openai,github")
	cs2, mcpLog2 := h.mcpSession(dh2)
	if v, isErr := getCredential(t, cs2, "github"); isErr || v != github {
		t.Fatalf("after re-akPairing: error=%v", isErr)
	}
	text, isErr = getCredential(t, cs, "openai") // the old generation's daemon
	if !isErr || !strings.HasPrefix(text, "REVOKED:") {
		t.Errorf("old generation after re-akPairing: %v %q", isErr, text)
	}
	json.Unmarshal([]byte(h.akOK(o.home, "agent", "list", "--json")), &agents)
	h.akOK(o.home, "agent", "teardown", "bot", "--yes")
	wantToolError(t, cs2, "github", "REVOKED", &errTexts)
	var creds struct {
		Credentials []struct{ Service, Agent string }
	}
	json.Unmarshal([]byte(h.akOK(o.home, "list", "--json")), &creds)
	for _, c := range creds.Credentials {
		if c.Agent == "bot" {
			t.Errorf("teardown left credential %s of bot", c.Service)
		}
	}

	// No secret in MCP error messages; the harness also greps every process
	// output (server, CLI, daemon logs) for every planted secret at cleanup.
	for _, e := range errTexts {
		for _, sec := range []string{openai, github, stripe, slack} {
			if strings.Contains(e, sec) {
				t.Errorf("a tool error contains a secret: %q", e)
			}
		}
	}
	if !strings.Contains(mcpLog.String(), "get_credential") || !strings.Contains(mcpLog2.String(), "get_credential") {
		t.Errorf("daemon mcp logged nothing; the leak check proves less than it should")
	}
}

// agentRequest sends one request with an agent token and an optional proof.
func agentRequest(t *testing.T, s *server, method, path, token, proof string) (int, string) {
	t.Helper()
	var body io.Reader
	if method == http.MethodPost {
		body = strings.NewReader("{}") // a well-formed body: the refusal must be about who asks
	}
	req, _ := http.NewRequest(method, s.url+path, body)
	req.Header.Set("Authorization", "Bearer "+token)
	if proof != "" {
		req.Header.Set("DPoP", proof)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	code := ""
	if resp.StatusCode >= 300 {
		code, _, _ = apiError(t, b)
	}
	return resp.StatusCode, code
}

func proofFor(t *testing.T, key *ecdsa.PrivateKey, method, url, token string) string {
	t.Helper()
	p, err := dpop.Sign(key, method, url, token, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// TestAgentAttacks: stolen tokens, replayed and misdirected proofs, an agent
// acting as its owner, another owner's agents, expired, denied and misaddressed
// pair requests.
func TestAgentAttacks(t *testing.T) {
	h := newHarness(t)
	s := h.start(serverOpts{home: t.TempDir()})
	a, b := h.akNewOwner(s), h.akNewOwner(s)
	secA, secB := "sk-a-"+randomHex(16), "sk-b-"+randomHex(16)
	h.akStore(a, "openai", secA)
	h.akStore(b, "openai", secB)
	dhA := h.pairAgent(s, a, "bot", "openai")
	dhB := h.pairAgent(s, b, "bot", "openai") // same alias, another owner

	csA, _ := h.mcpSession(dhA)
	csB, _ := h.mcpSession(dhB)
	if v, _ := getCredential(t, csA, "openai"); v != secA {
		t.Fatal("agent of owner A did not get A's credential")
	}
	if v, _ := getCredential(t, csB, "openai"); v != secB {
		t.Fatal("agent of owner B did not get B's credential")
	}

	sess, key := agentSession(t, dhA)
	tok := sess.Token
	const list = "/v1/agent/credentials"
	// A valid proof works once.
	p := proofFor(t, key, "GET", s.url+list, tok)
	if code, _ := agentRequest(t, s, "GET", list, tok, p); code != 200 {
		t.Fatalf("valid proof: %d", code)
	}
	// Replayed proof.
	if code, c := agentRequest(t, s, "GET", list, tok, p); code != 401 || c != "UNAUTHENTICATED" {
		t.Errorf("replayed proof: %d %s", code, c)
	}
	// Stolen token, no proof.
	if code, c := agentRequest(t, s, "GET", list, tok, ""); code != 401 || c != "UNAUTHENTICATED" {
		t.Errorf("token without proof: %d %s", code, c)
	}
	// Stolen token, proof by another key (the thief's).
	thief, _ := dpop.NewKey()
	if code, c := agentRequest(t, s, "GET", list, tok, proofFor(t, thief, "GET", s.url+list, tok)); code != 401 || c != "UNAUTHENTICATED" {
		t.Errorf("proof by another key: %d %s", code, c)
	}
	// Proof for another URL, another method, another token.
	if code, _ := agentRequest(t, s, "GET", list, tok, proofFor(t, key, "GET", s.url+"/v1/whoami", tok)); code != 401 {
		t.Errorf("proof for another URL: %d", code)
	}
	if code, _ := agentRequest(t, s, "GET", list, tok, proofFor(t, key, "POST", s.url+list, tok)); code != 401 {
		t.Errorf("proof for another method: %d", code)
	}
	if code, _ := agentRequest(t, s, "GET", list, tok, proofFor(t, key, "GET", s.url+list, tok+"x")); code != 401 {
		t.Errorf("proof for another token: %d", code)
	}
	// Reading with the stolen token without the key releases nothing.
	if code, _ := agentRequest(t, s, "POST", "/v1/credentials/openai/read", tok, ""); code != 401 {
		t.Errorf("stolen-token read: %d", code)
	}

	// An agent (with a valid proof) cannot act as its owner.
	pendB := h.startPair(t.TempDir(), "--server", s.url, "--owner", a.omni, "--alias", "eve", "--scope", "openai", "--no-wait")
	pendB.wait(t)
	for _, req := range []struct{ method, path string }{
		{"GET", "/v1/pair/requests"},
		{"POST", "/v1/pair/requests/" + pendB.id + "/approve"},
		{"POST", "/v1/pair/requests/" + pendB.id + "/deny"},
		{"POST", "/v1/agents/bot/scope"},
		{"POST", "/v1/agents/bot/revoke"},
		{"GET", "/v1/agents"},
		{"GET", "/v1/credentials"},
		{"GET", "/v1/usage"},
	} {
		if code, c := agentRequest(t, s, req.method, req.path, tok, proofFor(t, key, req.method, s.url+req.path, tok)); code != 403 || c != "DENIED" {
			t.Errorf("agent token on %s %s: %d %s", req.method, req.path, code, c)
		}
	}
	stillPending := false
	for _, r := range h.akPending(a) {
		stillPending = stillPending || r.ID == pendB.id
	}
	if !stillPending {
		t.Fatalf("the agent's attempts changed the pending request %s", pendB.id)
	}

	// Hijack (issue 16): a look-alike request for the pending alias is refused
	// with the fix; the owner's view shows the key the real daemon printed, where
	// the request came from and when; the public ledger gives no VVC away.
	look := h.cli(t.TempDir(), "daemon", "pair", "--server", s.url, "--owner", a.omni, "--alias", "eve", "--scope", "openai", "--no-wait")
	if look.code == 0 || !strings.Contains(look.stderr, "CONFLICT") || !strings.Contains(look.stderr, "agentkeys agent deny") {
		t.Errorf("second pending request for alias eve: exit %d %s", look.code, look.stderr)
	}
	var eve *akPendingReq
	for _, r := range h.akPending(a) {
		if r.Alias == "eve" {
			if eve != nil {
				t.Errorf("owner A sees two pending requests for eve")
			}
			eve = &r
		}
	}
	if eve == nil || eve.ID != pendB.id || eve.VVC != pendB.vvc || eve.Fingerprint != pendB.key || eve.Source != "127.0.0.1" || eve.RequestedAt == "" {
		t.Errorf("owner's view of eve: %+v; the daemon printed id %s VVC %s key %s", eve, pendB.id, pendB.vvc, pendB.key)
	}
	if tbl := h.akOK(a.home, "agent", "pending"); !strings.Contains(tbl, pendB.key) || !strings.Contains(tbl, "127.0.0.1") || !strings.Contains(tbl, "ago") {
		t.Errorf("agent pending table lacks the key, source or time:\n%s", tbl)
	}
	pub, err := http.Get(s.url + "/v1/ledger/entries?from=0&limit=1000")
	if err != nil {
		t.Fatal(err)
	}
	pubBody, _ := io.ReadAll(pub.Body)
	pub.Body.Close()
	if strings.Contains(string(pubBody), `"vvc"`) || strings.Contains(string(pubBody), `"`+pendB.vvc+`"`) {
		t.Errorf("the public ledger carries a pending request's VVC")
	}

	// A request addressed to owner B never shows in A's pending list.
	wrong := h.startPair(t.TempDir(), "--server", s.url, "--owner", b.wallet, "--alias", "bot2", "--scope", "openai", "--no-wait")
	wrong.wait(t)
	for _, r := range h.akPending(a) {
		if r.ID == wrong.id {
			t.Errorf("owner A sees a request addressed to owner B")
		}
	}
	if r := h.cli(a.home, "agent", "approve", wrong.id, "--yes"); r.code == 0 {
		t.Errorf("owner A approved owner B's request")
	}
	var inB bool
	for _, r := range h.akPending(b) {
		inB = inB || r.ID == wrong.id
	}
	if !inB {
		t.Errorf("owner B does not see the request addressed to B")
	}

	// Denied: the daemon is told; the request cannot be approved afterwards.
	dd := t.TempDir()
	den := h.startPair(dd, "--server", s.url, "--owner", a.omni, "--alias", "mallory", "--scope", "openai")
	h.akOK(a.home, "agent", "deny", den.id)
	if code := den.wait(t); code != 3 || !strings.Contains(den.stdout.String()+h.allOutput(), "denied") {
		t.Errorf("daemon after deny: exit %d", code)
	}
	idKey, err := home.Dir(a.home).Identity()
	if err != nil {
		t.Fatal(err)
	}
	owSess, _ := home.Dir(a.home).Session()
	// approveAPI signs a decision over binding (a request's VVC hash; a denied or
	// expired request is refused before its binding is checked).
	approveAPI := func(id, binding string) (int, string) {
		d := apiv1.SignDecision(idKey, s.url, id, binding, "approve", time.Now().Unix())
		body, _ := json.Marshal(d)
		req, _ := http.NewRequest("POST", s.url+"/v1/pair/requests/"+id+"/approve", strings.NewReader(string(body)))
		req.Header.Set("Authorization", "Bearer "+owSess.Token)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		rb, _ := io.ReadAll(resp.Body)
		if resp.StatusCode >= 300 {
			c, _, _ := apiError(t, rb)
			return resp.StatusCode, c
		}
		return resp.StatusCode, ""
	}
	if code, c := approveAPI(den.id, den.vvc); code < 400 {
		t.Errorf("approving a denied request: %d %s", code, c)
	}
	if r := h.cli(a.home, "agent", "approve", den.id, "--yes"); r.code == 0 {
		t.Errorf("CLI approved a denied request")
	}

	// Expired: gone from pending, and the broker refuses the approval.
	exp := h.startPair(t.TempDir(), "--server", s.url, "--owner", a.omni, "--alias", "late", "--scope", "openai", "--expires", "2s", "--no-wait")
	exp.wait(t)
	if !waitFor(agentTimeout, func() bool {
		for _, r := range h.akPending(a) {
			if r.ID == exp.id {
				return false
			}
		}
		return true
	}) {
		t.Fatal("expired request still pending")
	}
	if code, c := approveAPI(exp.id, exp.vvc); code != 403 || c != "DENIED" {
		t.Errorf("approving an expired request: %d %s", code, c)
	}
	if r := h.cli(a.home, "agent", "approve", exp.id, "--yes"); r.code == 0 {
		t.Errorf("CLI approved an expired request")
	}
	// A forged decision (not signed by A's identity key) is refused.
	if code, c := approveAPI(pendB.id, "000000"); code != 403 || c != "DENIED" {
		t.Errorf("decision over the wrong VVC: %d %s", code, c)
	}

	// Rate limit per owner: the eleventh request within a minute is refused with Retry-After.
	c3 := h.akNewOwner(s)
	var last cliResult
	for i := 0; i < 11; i++ {
		last = h.cli(t.TempDir(), "daemon", "pair", "--server", s.url, "--owner", c3.omni, "--alias", fmt.Sprintf("r%d", i), "--scope", "openai", "--no-wait")
	}
	if last.code == 0 || !strings.Contains(last.stderr, "RATE_LIMITED") {
		t.Errorf("11th pair request in a minute: exit %d %s", last.code, last.stderr)
	}
}
