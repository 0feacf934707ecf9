package e2e

import (
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/agentkeys/agentkeys/internal/daemon"
)

// consoleURL is the login URL `agentkeys console` prints.
var consoleURL = regexp.MustCompile(`http://127\.0\.0\.1:[0-9]+/[0-9a-f]{32}/login\?token=[0-9a-f]{64}`)

// chromium finds the distribution's Chromium. Without it the test is skipped,
// except in CI (CI=true), where it fails: scripts/test installs it.
func chromium(t *testing.T) string {
	t.Helper()
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	if os.Getenv("CI") == "true" {
		t.Fatal("no Chromium on PATH: the console's browser test needs it (scripts/test installs it: apt-get install chromium)")
	}
	t.Skip("no Chromium on PATH: install it (apt-get install chromium) to run the console's browser test")
	return ""
}

// startConsole runs `agentkeys console --no-open` for the owner home and
// returns its login URL.
func (h *harness) startConsole(home string) string {
	h.t.Helper()
	cmd := exec.Command(bin, "console", "--no-open")
	cmd.Env = childEnv("AGENTKEYS_HOME=" + home)
	stdout, stderr := h.newOutput(), h.newOutput()
	cmd.Stdout, cmd.Stderr = stdout, stderr
	if err := cmd.Start(); err != nil {
		h.t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	h.t.Cleanup(func() {
		cmd.Process.Signal(os.Interrupt)
		select {
		case <-done:
		case <-time.After(stopTimeout):
			cmd.Process.Kill()
			<-done
		}
	})
	deadline := time.After(startTimeout)
	for {
		text, changed := stdout.snapshot()
		if u := consoleURL.FindString(text); u != "" {
			return u
		}
		select {
		case <-changed:
		case <-done:
			h.t.Fatalf("agentkeys console exited: %s %s", stdout.String(), stderr.String())
		case <-deadline:
			h.t.Fatalf("agentkeys console printed no login URL within %s", startTimeout)
		}
	}
}

// screenshots writes full-page screenshots to $AGENTKEYS_ARTIFACTS/console (or
// a temp dir), and with AGENTKEYS_UPDATE_SCREENSHOTS=1 to docs/console too.
type screenshots struct {
	t    *testing.T
	dirs []string
}

func newScreenshots(t *testing.T) *screenshots {
	dir := t.TempDir()
	if a := os.Getenv("AGENTKEYS_ARTIFACTS"); a != "" {
		dir = filepath.Join(a, "console")
	}
	s := &screenshots{t: t, dirs: []string{dir}}
	if os.Getenv("AGENTKEYS_UPDATE_SCREENSHOTS") == "1" {
		s.dirs = append(s.dirs, filepath.Join("..", "docs", "console"))
	}
	for _, d := range s.dirs {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	return s
}

func (s *screenshots) take(name string) chromedp.Action[chromedp.Void] {
	return chromedp.Func(func(ctx context.Context, t *chromedp.Target) error {
		png, err := chromedp.FullScreenshot(100)(ctx, t)
		if err != nil {
			return err
		}
		for _, d := range s.dirs {
			if err := os.WriteFile(filepath.Join(d, name+".png"), png, 0o644); err != nil {
				return err
			}
		}
		return nil
	})
}

// TestConsoleInBrowser drives the owner's console in headless Chromium against
// the real binary and broker: log in with the one-time URL, see a daemon's pair
// request appear without a reload and approve it by typing its VVC, see the
// agent, change its scope, approve a high-value read, see the chart of reads
// with one point per read, store a credential from the form, revoke the agent.
// No page ever shows a stored secret.
func TestConsoleInBrowser(t *testing.T) {
	browser := chromium(t)
	h := newHarness(t)
	s := h.start(serverOpts{home: t.TempDir(), args: []string{"--oidc-audience", "console-test"}})
	o := h.akNewOwner(s)
	openaiKey, bankKey, githubKey := "sk-"+randomHex(16), "hv-"+randomHex(16), "gh-"+randomHex(16)
	h.akStore(o, "openai", openaiKey)
	h.akStore(o, "bank", bankKey, "--approval", "required")
	h.plant("credential github", githubKey)
	login := h.startConsole(o.home)

	opts := append(chromedp.DefaultExecAllocatorOptions[:], chromedp.ExecPath(browser), chromedp.WindowSize(1100, 900))
	if os.Geteuid() == 0 {
		opts = append(opts, chromedp.NoSandbox) // Chromium refuses to run as root with its sandbox
	}
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	defer cancelAlloc()
	bctx, cancelBrowser := chromedp.NewContext(actx)
	defer cancelBrowser()
	if err := chromedp.Do(bctx); err != nil { // starts the browser: a timeout on this first call would stop it
		t.Fatalf("starting Chromium: %v", err)
	}
	ctx, cancel := context.WithTimeout(bctx, 3*time.Minute)
	defer cancel()
	shots := newScreenshots(t)
	base := strings.Split(login, "/login")[0]
	do := func(what string, steps ...chromedp.Action[chromedp.Void]) {
		t.Helper()
		if err := chromedp.Do(ctx, steps...); err != nil {
			t.Fatalf("%s: %v", what, err)
		}
	}
	// load runs steps that load a page (a link, a form) and waits for it.
	load := func(what string, steps ...chromedp.Action[chromedp.Void]) {
		t.Helper()
		resp, err := chromedp.RunResponse(ctx, steps...)
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		if resp.Status >= 400 {
			body, _ := chromedp.Run(ctx, chromedp.Text(chromedp.CSS("body")))
			t.Fatalf("%s: HTTP %d: %s", what, resp.Status, body)
		}
	}
	text := func(sel string) string {
		t.Helper()
		v, err := chromedp.Run(ctx, chromedp.Text(chromedp.CSS(sel)))
		if err != nil {
			t.Fatalf("reading %s: %v", sel, err)
		}
		return v
	}
	count := func(sel string) int {
		t.Helper()
		n, err := chromedp.Run(ctx, chromedp.Nodes(chromedp.CSSAll(sel), chromedp.AtLeast(0)))
		if err != nil {
			t.Fatalf("counting %s: %v", sel, err)
		}
		return len(n)
	}
	// noSecrets checks the page shown holds no stored secret.
	noSecrets := func(page string) {
		t.Helper()
		html, err := chromedp.Run(ctx, chromedp.OuterHTML(chromedp.CSS("html")))
		if err != nil {
			t.Fatal(err)
		}
		for _, secret := range []string{openaiKey, bankKey, githubKey} {
			if strings.Contains(html, secret) {
				t.Fatalf("the %s page shows a stored secret", page)
			}
		}
	}

	// Log in; the login URL does not work twice.
	load("logging in", chromedp.Navigate(login))
	if loc, err := chromedp.Run(ctx, chromedp.Location()); err != nil || loc != base+"/agents" {
		t.Fatalf("after login the browser is at %s (%v)", loc, err)
	}
	if _, err := chromedp.RunResponse(ctx, chromedp.Navigate(login)); err != nil {
		t.Fatal(err)
	}
	if refused := text("body"); !strings.Contains(refused, "used already") {
		t.Fatalf("the replayed login URL answered %q", refused)
	}

	// A daemon asks to pair while the Pairing page is open: its request appears
	// without a reload; the owner types the VVC the daemon shows.
	load("opening the Pairing page", chromedp.Navigate(base+"/pairing"))
	dh := t.TempDir()
	p := h.startPair(dh, "--server", s.url, "--owner", o.wallet, "--alias", "ci-bot", "--scope", "openai,oidc:*")
	row := `tr[data-id="` + p.id + `"]`
	do("waiting for the pair request to appear", chromedp.WaitVisible(chromedp.CSS(row)))
	if vvc, key := text(row+" .vvc"), text(row+" td:nth-child(4)"); vvc != p.vvc || key != p.key {
		t.Fatalf("the console shows VVC %s key %s; the daemon shows VVC %s key %s", vvc, key, p.vvc, p.key)
	}
	do("typing the VVC", chromedp.SendKeys(chromedp.ID("vvc-"+p.id), p.vvc), shots.take("pairing"))
	load("approving", chromedp.Click(chromedp.CSS(row+` form[action="pairing/approve"] button`)))
	do("seeing the agent", chromedp.WaitVisible(chromedp.ID("agent-ci-bot")))
	if code := p.wait(t); code != 0 || !strings.Contains(p.stdout.String(), "Paired: agent ci-bot") {
		t.Fatalf("daemon pair: exit %d: %s", code, p.stdout.String())
	}
	sess, err := daemon.DirOf(dh).LoadSession()
	if err != nil {
		t.Fatal(err)
	}
	h.plant("agent session token", sess.Token)
	h.plant("agent channel key", sess.ChannelKey)
	h.plant("agent proof key", sess.ProofKey)

	// The agent is listed; its scope changes to add bank.
	do("editing the scope", chromedp.SetValue(chromedp.ID("scope-ci-bot"), "openai, bank, oidc:*"))
	load("changing the scope", chromedp.Click(chromedp.CSS(`#agent-ci-bot ~ form[action="agents/scope"] button`)))
	if scope, flash := text("#agent-ci-bot ~ dl .scope"), text(".flash"); scope != "openai, bank, oidc:*" || !strings.Contains(flash, "Scope of ci-bot") {
		t.Fatalf("after the scope change: scope %q, message %q", scope, flash)
	}
	noSecrets("agents")
	do("screenshot of the agents", shots.take("agents"))

	// The agent reads: openai twice, github (not stored yet: refused), a token
	// mint, and bank, which waits for the owner's approval in the console.
	cs, _ := h.mcpSession(dh)
	for range 2 {
		if text, isErr := getCredential(t, cs, "openai"); isErr || text != openaiKey {
			t.Fatalf("get_credential openai: error=%v", isErr)
		}
	}
	if _, isErr := getCredential(t, cs, "github"); !isErr {
		t.Fatal("get_credential github (not stored) was not refused")
	}
	h.akOK(dh, "daemon", "oidc-token", "--audience", "console-test")
	got := make(chan string, 1)
	go func() {
		cctx, ccancel := context.WithTimeout(context.Background(), agentTimeout)
		defer ccancel()
		res, err := cs.CallTool(cctx, &mcp.CallToolParams{Name: "get_credential", Arguments: map[string]any{"service": "bank", "wait_seconds": 50}})
		if err != nil || res.IsError {
			got <- ""
			return
		}
		got <- res.Content[0].(*mcp.TextContent).Text
	}()
	if !waitFor(agentTimeout, func() bool { return len(h.pendingApprovals(o)) == 1 }) {
		t.Fatalf("the bank read's approval request did not appear within %s", agentTimeout)
	}
	approval := `tr[data-id="` + h.pendingApprovals(o)[0] + `"]`
	load("opening the Approvals page", chromedp.Navigate(base+"/approvals"))
	do("screenshot of the approvals", chromedp.WaitVisible(chromedp.CSS(approval)), shots.take("approvals"))
	load("approving the read", chromedp.Click(chromedp.CSS(approval+" button")))
	select {
	case v := <-got:
		if v != bankKey {
			t.Fatalf("the approved bank read did not return the secret")
		}
	case <-time.After(agentTimeout):
		t.Fatal("the bank read did not return after the approval in the console")
	}

	// Store a credential from the form: sealed by the console, read by the agent.
	load("opening the Credentials page", chromedp.Navigate(base+"/credentials"))
	do("filling the store form", chromedp.SendKeys(chromedp.ID("service"), "github"), chromedp.SendKeys(chromedp.ID("agent"), "ci-bot"),
		chromedp.SendKeys(chromedp.ID("secret"), githubKey))
	load("storing github", chromedp.Click(chromedp.CSS(`form[action="credentials/store"] button`)))
	if flash := text(".flash"); !strings.Contains(flash, "Stored github for agent ci-bot (version 1)") {
		t.Fatalf("after storing: %q", flash)
	}
	noSecrets("credentials")
	do("screenshot of the credentials", shots.take("credentials"))
	h.akOK(o.home, "agent", "scope", "ci-bot", "--add", "github")
	if text, isErr := getCredential(t, cs, "github"); isErr || text != githubKey {
		t.Fatalf("get_credential github after the console stored it: error=%v", isErr)
	}

	// The chart has one point per read and mint of the usage trail, refused
	// ones marked; the trail highlights the refused read; the ledger verifies.
	var usage struct {
		Usage []struct{ Action, Result string }
	}
	if err := json.Unmarshal([]byte(h.akOK(o.home, "usage", "--json")), &usage); err != nil {
		t.Fatal(err)
	}
	want, wantRefused := 0, 0
	for _, u := range usage.Usage {
		if u.Action == "read" || u.Action == "oidc.mint" {
			want++
			if u.Result == "denied" {
				wantRefused++
			}
		}
	}
	if want < 6 || wantRefused < 1 {
		t.Fatalf("the usage trail has %d reads and mints, %d refused; the test made at least 6 and 1", want, wantRefused)
	}
	load("opening the Activity page", chromedp.Navigate(base+"/activity"))
	if n, nr, rows := count("#chart circle.pt"), count("#chart circle.pt.refused"), count("#trail tr.refused"); n != want || nr != wantRefused || rows != wantRefused {
		t.Fatalf("the chart has %d points (%d refused) and the trail %d highlighted rows; the usage trail has %d reads and mints, %d refused",
			n, nr, rows, want, wantRefused)
	}
	if health := text("#health"); !strings.Contains(health, "ledger valid") || !strings.Contains(health, "Enclave tier") {
		t.Fatalf("the ledger health panel: %q", health)
	}
	noSecrets("activity")
	do("screenshot of the activity", shots.take("activity"))
	do("choosing a kind", chromedp.SetValue(chromedp.ID("f-kind"), "oidc.mint"))
	load("filtering by kind", chromedp.Click(chromedp.CSS("form.filters button")))
	if n := count("#chart circle.pt"); n != 1 {
		t.Fatalf("filtered to mints, the chart has %d points, want 1", n)
	}
	do("phone width", chromedp.EmulateViewport(390, 844))
	load("the activity at phone width", chromedp.Navigate(base+"/activity"))
	do("screenshot at phone width", shots.take("activity-phone"), chromedp.EmulateViewport(1100, 900))

	// Revoke the agent, after a confirmation naming it; its next read fails.
	load("opening the Agents page", chromedp.Navigate(base+"/agents"))
	load("asking to revoke", chromedp.Click(chromedp.CSS(`a[href="agents/revoke?alias=ci-bot"]`)))
	if q := text(".confirm h2"); !strings.Contains(q, "Revoke agent ci-bot") {
		t.Fatalf("the confirmation asks %q", q)
	}
	do("screenshot of the confirmation", shots.take("revoke-confirm"))
	load("revoking", chromedp.Click(chromedp.CSS(".confirm button")))
	if status := text("#agent-ci-bot ~ dl .status-revoked"); status != "revoked" {
		t.Fatalf("the agent's status shown: %q", status)
	}
	if text, isErr := getCredential(t, cs, "openai"); !isErr || !strings.HasPrefix(text, "REVOKED:") {
		t.Fatalf("get_credential after the revocation: error=%v %q", isErr, text)
	}
}

// TestConsoleListenRefused: the console does not serve on a wildcard address
// or a host name, whatever --listen says.
func TestConsoleListenRefused(t *testing.T) {
	h := newHarness(t)
	for _, addr := range []string{"0.0.0.0:0", "[::]:0", "localhost:0", ":0"} {
		if r := h.cli(t.TempDir(), "console", "--listen", addr, "--no-open"); r.code != 2 || !strings.Contains(r.stderr, "does not name one IP address") {
			t.Errorf("console --listen %s: exit %d %q", addr, r.code, r.stderr)
		}
	}
}
