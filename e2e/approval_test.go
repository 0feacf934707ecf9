package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"
)

var approveID = regexp.MustCompile(`agentkeys approve ([0-9a-f]{12})`)

// pendingApprovals is the owner's open approval requests' ids.
func (h *harness) pendingApprovals(o akOwner) []string {
	h.t.Helper()
	var out struct {
		Approvals []struct{ ID string }
	}
	if err := json.Unmarshal([]byte(h.akOK(o.home, "approve", "--list", "--json")), &out); err != nil {
		h.t.Fatal(err)
	}
	var ids []string
	for _, a := range out.Approvals {
		ids = append(ids, a.ID)
	}
	return ids
}

const readRoute = "POST /v1/credentials/{service}/read"

// polledAgain waits until the server has answered more credential reads than
// it had when asked: a waiting reader has asked once more.
func polledAgain(t *testing.T, s *server, what string) {
	t.Helper()
	n := s.requests(readRoute)
	if !waitFor(agentTimeout, func() bool { return s.requests(readRoute) > n }) {
		t.Fatalf("%s did not ask again within %s (%v reads answered)", what, agentTimeout, n)
	}
}

// TestReadWaitsForApproval: `read` of a credential stored with --approval
// required waits until the owner approves (one line on a non-terminal stderr,
// no countdown), --no-wait answers APPROVAL_REQUIRED at once, --timeout gives
// up, and however often a reader retries, it has one open request.
func TestReadWaitsForApproval(t *testing.T) {
	h := newHarness(t)
	s := h.start(serverOpts{home: t.TempDir()})
	o := h.akNewOwner(s)
	secret := "hv-" + randomHex(16)
	h.akStore(o, "bank", secret, "--approval", "required")

	var first string
	for i := range 3 {
		r := h.cliIn(o.home, "", true, "read", "bank", "--no-wait")
		m := approveID.FindStringSubmatch(r.stderr)
		if r.code != 3 || !strings.Contains(r.stderr, "APPROVAL_REQUIRED") || m == nil {
			t.Fatalf("read --no-wait %d: exit %d %q", i+1, r.code, r.stderr)
		}
		if i == 0 {
			first = m[1]
		} else if m[1] != first {
			t.Fatalf("retry %d filed request %s; the open one is %s", i, m[1], first)
		}
	}
	if p := h.pendingApprovals(o); len(p) != 1 || p[0] != first {
		t.Fatalf("three reads left pending requests %v, want [%s]", p, first)
	}

	// A waiting read: it keeps polling (still one request), and the owner's
	// approval releases it.
	cmd := exec.Command(bin, "read", "bank", "--timeout", "50s")
	cmd.Env = childEnv("AGENTKEYS_HOME=" + o.home)
	stdout, stderr := newOutput(), h.newOutput()
	cmd.Stdout, cmd.Stderr = stdout, stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	t.Cleanup(func() {
		select {
		case <-done:
		default:
			cmd.Process.Kill()
			<-done
		}
	})
	if !waitFor(agentTimeout, func() bool { return strings.Contains(stderr.String(), "agentkeys approve "+first) }) {
		t.Fatalf("the waiting read did not name its request %s: %q", first, stderr.String())
	}
	polledAgain(t, s, "the waiting read")
	select {
	case <-done:
		t.Fatalf("read stopped waiting: exit %d %q", cmd.ProcessState.ExitCode(), stderr.String())
	default:
	}
	if p := h.pendingApprovals(o); len(p) != 1 || p[0] != first {
		t.Fatalf("a waiting read left pending requests %v, want [%s]", p, first)
	}
	h.akOK(o.home, "approve", first, "--yes")
	select {
	case <-done:
	case <-time.After(agentTimeout):
		t.Fatal("the read did not finish after the approval")
	}
	if code := cmd.ProcessState.ExitCode(); code != 0 || strings.TrimSpace(stdout.String()) != secret {
		t.Fatalf("waiting read: exit %d, right value %v, stderr %q", code, strings.TrimSpace(stdout.String()) == secret, stderr.String())
	}
	if e := stderr.String(); strings.Contains(e, "\r") || strings.Count(e, "\n") > 2 {
		t.Errorf("piped stderr carries a countdown: %q", e)
	}

	// --timeout gives up with APPROVAL_REQUIRED and leaves one open request.
	r := h.cliIn(o.home, "", true, "read", "bank", "--timeout", "2s")
	if r.code != 3 || !strings.Contains(r.stderr, "APPROVAL_REQUIRED") || !strings.Contains(r.stderr, "2s") {
		t.Fatalf("read --timeout 2s: exit %d %q", r.code, r.stderr)
	}
	if p := h.pendingApprovals(o); len(p) != 1 {
		t.Fatalf("after a timed-out read: pending %v, want one", p)
	}
	for _, bad := range []string{"0s", "-1m", "2h"} {
		if r := h.cliIn(o.home, "", true, "read", "bank", "--timeout", bad); r.code != 2 || !strings.Contains(r.stderr, "--timeout") {
			t.Errorf("read --timeout %s: exit %d %q", bad, r.code, r.stderr)
		}
	}
}

// TestRunLeavesOutApprovalCredentials: `run` without --env exports what it
// may read without asking anyone, names on stderr what it left out for needing
// the owner's approval, and files no approval request; with the owner's session
// and inside a paired sandbox alike.
func TestRunLeavesOutApprovalCredentials(t *testing.T) {
	h := newHarness(t)
	s := h.start(serverOpts{home: t.TempDir()})
	o := h.akNewOwner(s)
	h.akStore(o, "openai", "sk-"+randomHex(16))
	h.akStore(o, "bank", "hv-"+randomHex(16), "--approval", "required")
	dh := h.pairAgent(s, o, "bot", "openai,bank")
	script := `printf '%s|%s' "${OPENAI_API_KEY:+set}" "${BANK_API_KEY:-unset}"`
	for _, home := range []string{o.home, dh} {
		r := h.cli(home, "run", "--", "sh", "-c", script)
		if r.code != 0 || r.stdout != "set|unset" || !strings.Contains(r.stderr, "bank") || !strings.Contains(r.stderr, "approv") {
			t.Errorf("run (home %s): exit %d stdout %q stderr %q", home, r.code, r.stdout, r.stderr)
		}
	}
	if p := h.pendingApprovals(o); len(p) != 0 {
		t.Fatalf("run without --env filed approval requests %v", p)
	}
}

// TestMCPWaitsForApproval: get_credential of a credential that needs the
// owner's approval answers DENIED at once (retries reuse one request), or with
// wait_seconds waits for the approval and returns the value.
func TestMCPWaitsForApproval(t *testing.T) {
	h := newHarness(t)
	s := h.start(serverOpts{home: t.TempDir()})
	o := h.akNewOwner(s)
	secret := "hv-" + randomHex(16)
	h.akStore(o, "bank", secret, "--approval", "required")
	dh := h.pairAgent(s, o, "bot", "bank")
	progress := make(chan string, 100)
	cs, _ := h.mcpSessionWith(dh, &mcp.ClientOptions{ProgressNotificationHandler: func(_ context.Context, r *mcp.ProgressNotificationClientRequest) {
		select {
		case progress <- r.Params.Message:
		default:
		}
	}})

	var first string
	for i := range 3 {
		text, isErr := getCredential(t, cs, "bank")
		m := approveID.FindStringSubmatch(text)
		if !isErr || !strings.HasPrefix(text, "DENIED:") || m == nil || !strings.Contains(text, "wait_seconds") {
			t.Fatalf("get_credential bank %d: error=%v %q", i+1, isErr, text)
		}
		if i == 0 {
			first = m[1]
		} else if m[1] != first {
			t.Fatalf("retry %d filed request %s; the open one is %s", i, m[1], first)
		}
	}
	if text, isErr := mcpCall(t, cs, "get_credential", map[string]any{"service": "bank", "wait_seconds": 301}); !isErr || !strings.HasPrefix(text, "BAD_REQUEST:") {
		t.Fatalf("wait_seconds 301: error=%v %q", isErr, text)
	}
	type answer struct {
		text  string
		isErr bool
	}
	got := make(chan answer, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), agentTimeout)
		defer cancel()
		params := &mcp.CallToolParams{Name: "get_credential", Arguments: map[string]any{"service": "bank", "wait_seconds": 50}}
		params.SetProgressToken("wait-1")
		res, err := cs.CallTool(ctx, params)
		if err != nil {
			got <- answer{err.Error(), true}
			return
		}
		got <- answer{res.Content[0].(*mcp.TextContent).Text, res.IsError}
	}()
	polledAgain(t, s, "the waiting get_credential")
	if p := h.pendingApprovals(o); len(p) != 1 || p[0] != first {
		t.Fatalf("a waiting get_credential left pending requests %v, want [%s]", p, first)
	}
	h.akOK(o.home, "approve", first, "--yes")
	select {
	case a := <-got:
		if a.isErr || a.text != secret {
			t.Fatalf("waiting get_credential: error=%v, right value=%v", a.isErr, a.text == secret)
		}
	case <-time.After(agentTimeout):
		t.Fatal("get_credential did not return after the approval")
	}
	select {
	case m := <-progress:
		if !strings.Contains(m, "agentkeys approve "+first) || !strings.Contains(m, "left") {
			t.Errorf("progress while waiting: %q", m)
		}
	default:
		t.Error("no progress notification while waiting, though the client asked for them")
	}
}

// TestDaemonMCPStopsQuietly: `daemon mcp` stopped by its client — SIGTERM,
// SIGINT or its stdin closed — exits 0 without an error.
func TestDaemonMCPStopsQuietly(t *testing.T) {
	h := newHarness(t)
	for _, stop := range []string{"SIGTERM", "SIGINT", "stdin"} {
		cmd := exec.Command(bin, "daemon", "mcp")
		cmd.Env = childEnv("AGENTKEYS_HOME=" + t.TempDir())
		stderr := h.newOutput()
		cmd.Stderr = stderr
		ctx, cancel := context.WithTimeout(context.Background(), agentTimeout)
		cs, err := mcp.NewClient(&mcp.Implementation{Name: "e2e", Version: "1"}, nil).Connect(ctx, &mcp.CommandTransport{Command: cmd}, nil)
		if err != nil {
			t.Fatalf("connecting: %v; stderr: %s", err, stderr.String())
		}
		if _, err := cs.ListTools(ctx, nil); err != nil {
			t.Fatal(err)
		}
		switch stop {
		case "SIGTERM":
			cmd.Process.Signal(syscall.SIGTERM)
		case "SIGINT":
			cmd.Process.Signal(syscall.SIGINT)
		}
		if stop != "stdin" {
			if !waitFor(agentTimeout, func() bool {
				b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", cmd.Process.Pid))
				return err != nil || strings.Contains(string(b), ") Z ") // exited, not yet reaped
			}) {
				t.Fatalf("daemon mcp did not exit on %s within %s", stop, agentTimeout)
			}
		}
		cs.Close() // closes stdin and waits for the process
		cancel()
		if cmd.ProcessState == nil {
			t.Fatalf("%s: daemon mcp still runs", stop)
		}
		if code, e := cmd.ProcessState.ExitCode(), stderr.String(); code != 0 || strings.Contains(e, "Error") || strings.Contains(e, "context canceled") {
			t.Errorf("daemon mcp stopped by %s: exit %d, stderr %q", stop, code, e)
		}
	}
}

// TestReadCountdownOnTerminal: on a terminal, a read waiting for the owner's
// approval shows a countdown rewritten in place, then the error when it gives up.
func TestReadCountdownOnTerminal(t *testing.T) {
	h := newHarness(t)
	s := h.start(serverOpts{home: t.TempDir()})
	o := h.akNewOwner(s)
	h.akStore(o, "bank", "hv-"+randomHex(16), "--approval", "required")
	master, slave := openPTY(t)
	cmd := exec.Command(bin, "read", "bank", "--timeout", "4s")
	cmd.Env = childEnv("AGENTKEYS_HOME=" + o.home)
	cmd.Stderr = slave
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	slave.Close()
	screen := make(chan string, 1)
	go func() { b, _ := io.ReadAll(master); screen <- string(b) }() // ends with EIO when the command exits
	cmd.Wait()
	var out string
	select {
	case out = <-screen:
	case <-time.After(agentTimeout):
		t.Fatal("the terminal did not close")
	}
	counts := regexp.MustCompile(`\r\x1b\[KWaiting for the owner's approval of bank: agentkeys approve [0-9a-f]{12} \((\d)s left\)`).FindAllStringSubmatch(out, -1)
	seen := map[string]bool{}
	for _, c := range counts {
		seen[c[1]] = true
	}
	if cmd.ProcessState.ExitCode() != 3 || len(seen) < 3 || !strings.Contains(out, "APPROVAL_REQUIRED") || !strings.Contains(out, "within 4s") {
		t.Fatalf("read on a terminal: exit %d, countdown values %v, screen %q", cmd.ProcessState.ExitCode(), seen, out)
	}
}
