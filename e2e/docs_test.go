package e2e

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"reflect"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/agentkeys/agentkeys/internal/porttest"
)

// This file runs the README's and docs/connect-your-agent.md's commands as
// written: each sh block is taken from the markdown when the test runs, changed
// only by an explicit table (directories, the broker's port, user names, and the
// values a reader copies from one command's output into the next), and run by
// bash on a terminal, the way a reader pastes it. A confirmation question is
// answered "y", as the reader would, after checking what it asks.

// docTimeout bounds one block; blocks that wait (pairing) wait within it.
const docTimeout = 2 * time.Minute

// docBlocks returns the fenced blocks of language lang in the section of doc
// whose heading line is heading, up to the next heading of any level (a line
// starting with # outside a fenced block). A fence indented in a list item
// has its indentation taken off its lines.
func docBlocks(t *testing.T, doc, heading, lang string) []string {
	t.Helper()
	lines := strings.Split(string(fileBytes(t, doc)), "\n")
	start := -1
	for i, l := range lines {
		if l == heading {
			start = i + 1
			break
		}
	}
	if start < 0 {
		t.Fatalf("%s has no section %q", doc, heading)
	}
	var blocks []string
	var cur []string
	fence := ""  // the language of the open fence, "" outside one
	indent := "" // the open fence's indentation (a block in a list item)
	inFence := false
	for _, l := range lines[start:] {
		switch {
		case !inFence && strings.HasPrefix(strings.TrimLeft(l, " "), "```"):
			rest := strings.TrimLeft(l, " ")
			inFence, fence, cur, indent = true, strings.TrimPrefix(rest, "```"), nil, l[:len(l)-len(rest)]
		case inFence && l == indent+"```":
			inFence = false
			if fence == lang {
				blocks = append(blocks, strings.Join(cur, "\n")+"\n")
			}
		case inFence:
			cur = append(cur, strings.TrimPrefix(l, indent))
		case strings.HasPrefix(l, "#"):
			return checkBlocks(t, doc, heading, lang, blocks)
		}
	}
	return checkBlocks(t, doc, heading, lang, blocks)
}

func checkBlocks(t *testing.T, doc, heading, lang string, blocks []string) []string {
	t.Helper()
	if len(blocks) == 0 {
		t.Fatalf("section %q of %s has no %s block", heading, doc, lang)
	}
	return blocks
}

// substitute applies table to text in order; each old string must occur, so
// that a guide that changes is noticed instead of silently run unchanged.
func substitute(t *testing.T, what, text string, table [][2]string) string {
	t.Helper()
	for _, c := range table {
		if !strings.Contains(text, c[0]) {
			t.Fatalf("%s no longer says %q: update the test's substitution table", what, c[0])
		}
		text = strings.ReplaceAll(text, c[0], c[1])
	}
	return text
}

// terminal is a reader's shell: bash on a pseudo-terminal, as some user, in a
// directory; exported variables and the working directory carry from one block
// to the next, as they do in a terminal. Every process it starts, background
// jobs included, is killed when the test ends.
type terminal struct {
	t      *testing.T
	name   string
	master *os.File
	tty    *os.File
	out    *output // everything the terminal showed
	state  string  // file holding `export -p` and the directory after each block
	env    []string
	cred   *syscall.Credential
}

// newTerminal opens a terminal whose blocks start in dir with env (and no
// AGENTKEYS_ variable); cred, when not nil, is the user it runs as.
func (h *harness) newTerminal(name, dir string, cred *syscall.Credential, env ...string) *terminal {
	t := h.t
	t.Helper()
	m, s := openPTY(t)
	tm := &terminal{t: t, name: name, master: m, tty: s, out: h.newOutput(), cred: cred,
		env: childEnv(append([]string{"TERM=dumb"}, env...)...)}
	go func() {
		buf := make([]byte, 4096)
		for {
			n, err := m.Read(buf)
			tm.out.Write(buf[:n])
			if err != nil {
				return
			}
		}
	}()
	f, err := os.CreateTemp("", "agentkeys-terminal-")
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprintf(f, "cd %q\n", dir)
	f.Close()
	tm.state = f.Name()
	t.Cleanup(func() { os.Remove(tm.state) })
	if cred != nil {
		if err := os.Chown(tm.state, int(cred.Uid), int(cred.Gid)); err != nil {
			t.Fatal(err)
		}
	}
	return tm
}

// blockRun is one block running in a terminal.
type blockRun struct {
	tm    *terminal
	block string
	from  int    // where its output starts in the terminal's
	end   string // printed when the block exits: all its output has been read
	cmd   *exec.Cmd
	done  chan struct{}
	err   error
	exit  time.Time // when bash exited
}

// start runs block in the terminal without waiting for it.
func (tm *terminal) start(block string) *blockRun {
	tm.t.Helper()
	r := &blockRun{tm: tm, block: block, from: len(tm.out.String()), done: make(chan struct{}),
		end: "--- end of block " + randomHex(8) + " ---"}
	script := "trap 'printf \"\\n%s\\n\" \"" + r.end + "\"' EXIT\nset -eo pipefail\n. " + tm.state + "\n" + block +
		"\n{ export -p; printf 'cd %q\\n' \"$PWD\"; } > " + tm.state + "\n"
	r.cmd = exec.Command("bash", "-c", script)
	r.cmd.Env = tm.env
	r.cmd.Stdin, r.cmd.Stdout, r.cmd.Stderr = tm.tty, tm.tty, tm.tty
	r.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Credential: tm.cred}
	if err := r.cmd.Start(); err != nil {
		tm.t.Fatalf("%s terminal: %v", tm.name, err)
	}
	pgid := r.cmd.Process.Pid
	go func() { r.err = r.cmd.Wait(); r.exit = time.Now(); close(r.done) }()
	// The block's process group, background jobs included, ends with the test.
	tm.t.Cleanup(func() { syscall.Kill(-pgid, syscall.SIGKILL); <-r.done })
	return r
}

// output is what the terminal showed since the block started, with the
// terminal's \r\n as \n.
func (r *blockRun) output() string {
	out := strings.ReplaceAll(r.tm.out.String()[r.from:], "\r\n", "\n")
	if i := strings.Index(out, "\n"+r.end+"\n"); i >= 0 {
		out = out[:i]
	}
	return out
}

// ended reports whether the block has exited and all its output has been read
// from the terminal (or bash, killed, could not say so for a second).
func (r *blockRun) ended() bool {
	select {
	case <-r.done:
		return strings.Contains(r.tm.out.String()[r.from:], r.end) || time.Since(r.exit) > time.Second
	default:
		return false
	}
}

// waitFor waits until the block's output matches re and returns the submatches.
func (r *blockRun) waitFor(re *regexp.Regexp) []string {
	t := r.tm.t
	t.Helper()
	deadline := time.After(docTimeout)
	for {
		_, changed := r.tm.out.snapshot()
		if m := re.FindStringSubmatch(r.output()); m != nil {
			return m
		}
		if r.ended() {
			t.Fatalf("%s terminal: the block ended (%v) without printing %s:\n%s\n--- output:\n%s", r.tm.name, r.err, re, r.block, r.output())
		}
		select {
		case <-changed:
		case <-r.done: // its last output may still be on the way
			time.Sleep(10 * time.Millisecond)
		case <-deadline:
			t.Fatalf("%s terminal: no %s within %s:\n%s\n--- output:\n%s", r.tm.name, re, docTimeout, r.block, r.output())
		}
	}
}

var yesNo = regexp.MustCompile(`([^\n]*)\[y/N\] `)

// wait waits for the block to end and fails the test unless it succeeded. Each
// [y/N] question it asks is passed to confirm (which checks it) and answered y.
func (r *blockRun) wait(confirm func(question string)) string {
	t := r.tm.t
	t.Helper()
	deadline := time.After(docTimeout)
	answered := 0
	for {
		_, changed := r.tm.out.snapshot()
		if qs := yesNo.FindAllStringSubmatch(r.output(), -1); len(qs) > answered {
			if confirm == nil {
				t.Fatalf("%s terminal: unexpected question %q in:\n%s", r.tm.name, qs[answered][1], r.block)
			}
			confirm(qs[answered][1])
			answered++
			r.tm.master.Write([]byte("y\n"))
			continue
		}
		if r.ended() {
			if r.err != nil {
				t.Fatalf("%s terminal: the block failed (%v):\n%s\n--- output:\n%s", r.tm.name, r.err, r.block, r.output())
			}
			return r.output()
		}
		select {
		case <-changed:
		case <-r.done: // its last output may still be on the way
			time.Sleep(10 * time.Millisecond)
		case <-deadline:
			t.Fatalf("%s terminal: the block did not finish within %s:\n%s\n--- output:\n%s", r.tm.name, docTimeout, r.block, r.output())
		}
	}
}

// run runs block to its end (see wait).
func (tm *terminal) run(block string, confirm func(question string)) string {
	tm.t.Helper()
	return tm.start(block).wait(confirm)
}

// wantIn fails the test unless out contains each of want.
func wantIn(t *testing.T, what, out string, want ...string) {
	t.Helper()
	for _, w := range want {
		if !strings.Contains(out, w) {
			t.Errorf("%s: the output lacks %q:\n%s", what, w, out)
		}
	}
}

// TestReadmeQuickStart runs the README's "Quick start" and "Keep a credential"
// blocks as written, as one user with two terminals: the broker in the first
// (stopped with Ctrl-C at the end), the commands in the second. Only the
// broker's port is changed (made explicit on `agentkeys server`).
func TestReadmeQuickStart(t *testing.T) {
	h := newHarness(t)
	port := porttest.Free(t)
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	ports := [][2]string{{"127.0.0.1:8090", addr}}
	quick := docBlocks(t, "../README.md", "## Quick start", "sh")
	keep := docBlocks(t, "../README.md", "### Keep a credential", "sh")
	if len(quick) != 2 || len(keep) != 1 {
		t.Fatalf("want 2 sh blocks in Quick start and 1 in Keep a credential, found %d and %d: update the test", len(quick), len(keep))
	}
	serverBlock := substitute(t, "the README's Quick start", quick[0], [][2]string{{"agentkeys server\n", "agentkeys server --listen " + addr + "\n"}})
	checkBlock := substitute(t, "the README's Quick start", quick[1], ports)
	keepBlock := substitute(t, "the README's Keep a credential", keep[0], ports)

	home, work := t.TempDir(), t.TempDir()
	path := "PATH=" + binDir + string(os.PathListSeparator) + os.Getenv("PATH")
	first := h.newTerminal("first", work, nil, "HOME="+home, path)
	second := h.newTerminal("second", work, nil, "HOME="+home, path)

	srv := first.start(serverBlock)
	srv.waitFor(regexp.MustCompile(`msg=ready`))
	out := second.run(checkBlock, nil)
	wantIn(t, "curl readyz; audit verify", out, `{"ready":true}`, "ledger valid: ")

	// "a file holding the key"
	key := "sk-readme-" + randomHex(16)
	if err := os.WriteFile(filepath.Join(work, "openai.key"), []byte(key+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	out = second.run(keepBlock, nil)
	wantIn(t, "Keep a credential", out, key, "openai")
	if n := strings.Count(out, key); n != 1 {
		t.Errorf("Keep a credential: the key appears %d times, want once (read):\n%s", n, out)
	}
	for _, kind := range []string{"store", "read"} {
		if !regexp.MustCompile(`(?m)` + kind + `\b.*openai`).MatchString(out) {
			t.Errorf("Keep a credential: usage shows no %s of openai:\n%s", kind, out)
		}
	}

	if strings.Contains(first.out.String(), key) {
		t.Error("the broker's log shows the stored key")
	}

	// Ctrl-C stops the broker gracefully.
	syscall.Kill(-srv.cmd.Process.Pid, syscall.SIGINT)
	select {
	case <-srv.done:
	case <-time.After(stopTimeout):
		t.Fatalf("the broker did not stop on Ctrl-C:\n%s", srv.output())
	}
	wantIn(t, "the broker after Ctrl-C", srv.output(), "msg=stopped")
}

// TestReadmeSignedRelease runs the README's "Run a signed release" block as
// written: a key in a directory of its own, the build signed where it is, and
// the broker started from it with the public key keygen printed (which the
// reader copies into the last command), at tier production.
func TestReadmeSignedRelease(t *testing.T) {
	h := newHarness(t)
	blocks := docBlocks(t, "../README.md", "### Run a signed release", "sh")
	if len(blocks) != 1 {
		t.Fatalf("want 1 sh block in Run a signed release, found %d: update the test", len(blocks))
	}
	secure, work, home := t.TempDir(), t.TempDir(), t.TempDir()
	addr := fmt.Sprintf("127.0.0.1:%d", porttest.Free(t))
	block := substitute(t, "the README's Run a signed release", blocks[0], [][2]string{
		{"/secure", secure}, {"./agentkeys server ", "./agentkeys server --listen " + addr + " "}})
	i := strings.Index(block, "\n./agentkeys server ")
	if i < 0 || !strings.Contains(block[i:], "HEX") {
		t.Fatalf("the block no longer starts ./agentkeys server with the key it printed (HEX) last: update the test:\n%s", block)
	}
	copyExecutable(t, bin, filepath.Join(work, "agentkeys")) // ./agentkeys: the build to ship
	path := "PATH=" + binDir + string(os.PathListSeparator) + os.Getenv("PATH")
	term := h.newTerminal("release", work, nil, "HOME="+home, path)
	out := term.run(block[:i+1], nil)
	key := regexp.MustCompile(`--mrsigner-key ([0-9a-f]{64})\b`).FindStringSubmatch(out)
	if key == nil {
		t.Fatalf("release keygen printed no --mrsigner-key HEX:\n%s", out)
	}
	if _, err := os.Stat(filepath.Join(work, "agentkeys.sig")); err != nil {
		t.Fatalf("release sign wrote no ./agentkeys.sig: %v\n%s", err, out)
	}
	srv := term.start(strings.ReplaceAll(block[i+1:], "HEX", key[1]))
	srv.waitFor(regexp.MustCompile(`msg=listening .*tier=production`))
	srv.waitFor(regexp.MustCompile(`msg=ready`))
	syscall.Kill(-srv.cmd.Process.Pid, syscall.SIGINT)
	select {
	case <-srv.done:
	case <-time.After(stopTimeout):
		t.Fatalf("the signed broker did not stop on Ctrl-C:\n%s", srv.output())
	}
}

// The users TestGuideConnectAgent creates in place of the guide's agentkeys
// (the daemon's) and agent, and removes.
const (
	guideDaemonUser = "agentkeys-guide-daemon"
	guideAgentUser  = "agentkeys-guide-agent"
)

// userdel removes a user (and its group) the test created.
func userdel(t *testing.T, name string) {
	if _, err := user.Lookup(name); err != nil {
		return
	}
	if out, err := exec.Command("userdel", name).CombinedOutput(); err != nil {
		t.Errorf("userdel %s: %v: %s", name, err, out)
	}
}

// TestGuideConnectAgent runs docs/connect-your-agent.md as written: the owner's
// steps in one terminal, the sandbox's as root in another (creating the
// daemon's user as the guide says), the agent's as the agent's user in a third,
// then the single-user setup. The tables below are all that is changed: the
// directories and port, the user names, and what the reader copies from one
// output into the next command (the wallet, the pair request's id).
func TestGuideConnectAgent(t *testing.T) {
	if os.Geteuid() != 0 {
		if testing.Short() {
			t.Skip("needs root to create users (-short)")
		}
		t.Fatal("TestGuideConnectAgent must run as root (CI runs .ci/run as root): it creates the guide's users and runs the daemon and the agent as them. Run the e2e tests as root, or pass -short to skip it")
	}
	const doc = "../docs/connect-your-agent.md"
	h := newHarness(t)

	// A root-owned directory every user may traverse, outside the temp dir (as
	// /usr/local/bin and /var/lib are: daemon mcp-config refuses a binary in a
	// temp dir), with the binary, the daemon's home and the socket's directory.
	root, err := os.MkdirTemp("/var/lib", "agentkeys-guide-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(root) })
	if err := os.Chmod(root, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(filepath.Join(root, "bin"), 0o755); err != nil {
		t.Fatal(err)
	}
	akBin := filepath.Join(root, "bin", "agentkeys")
	copyExecutable(t, bin, akBin)
	daemonHome, runDir, agentHome := filepath.Join(root, "daemon"), filepath.Join(root, "run"), filepath.Join(root, "agent-home")
	ownerHome, sandboxHome := filepath.Join(t.TempDir(), "owner"), filepath.Join(t.TempDir(), "sandbox")
	sock := filepath.Join(runDir, "agentkeys.sock")

	// The guide assumes the agent's user and group exist; the daemon's user it
	// creates. Users left by an interrupted run are removed first.
	userdel(t, guideDaemonUser)
	userdel(t, guideAgentUser)
	t.Cleanup(func() { userdel(t, guideDaemonUser); userdel(t, guideAgentUser) })
	if out, err := exec.Command("useradd", "--system", "--user-group", "--no-create-home", "--home-dir", agentHome,
		"--shell", "/usr/sbin/nologin", guideAgentUser).CombinedOutput(); err != nil {
		t.Fatalf("useradd %s: %v: %s", guideAgentUser, err, out)
	}
	agentUser := ensureUser(t, guideAgentUser)
	mkdirOwned(t, agentHome, 0o700, int(agentUser.cred.Uid), agentUser.gid)

	port := porttest.Free(t)
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	table := [][2]string{
		{"agentkeys server &", "agentkeys server --listen 127.0.0.1:8090 &"}, // the default, explicit
		{"127.0.0.1:8090", addr},
		{"/tmp/owner", ownerHome},
		{"/tmp/sandbox", sandboxHome},
		{"/var/lib/agentkeys", daemonHome},
		{"/run/agentkeys", runDir},
		{"/usr/local/bin/agentkeys", akBin},
		{"nologin agentkeys\n", "nologin " + guideDaemonUser + "\n"},
		{"-o agentkeys -g agentkeys ", "-o " + guideDaemonUser + " -g " + guideDaemonUser + " "},
		{"--groups agent agentkeys", "--groups " + guideAgentUser + " " + guideDaemonUser},
		{"-o agentkeys -g agent ", "-o " + guideDaemonUser + " -g " + guideAgentUser + " "},
		{"runuser -u agentkeys ", "runuser -u " + guideDaemonUser + " "},
		{"--socket-group agent", "--socket-group " + guideAgentUser},
	}
	// The table applies to the guide as a whole; the sections are cut from the result.
	guide := substitute(t, doc, string(fileBytes(t, doc)), table)
	subst := filepath.Join(t.TempDir(), "connect-your-agent.md")
	if err := os.WriteFile(subst, []byte(guide), 0o600); err != nil {
		t.Fatal(err)
	}
	section := func(heading string, n int) []string {
		t.Helper()
		b := docBlocks(t, subst, heading, "sh")
		if len(b) != n {
			t.Fatalf("section %q has %d sh blocks, want %d: update the test", heading, len(b), n)
		}
		return b
	}
	s1 := section("## 1. Owner: log in and store credentials", 1)[0]
	s2 := section("## 2. Sandbox (as root): a user for the daemon", 1)[0]
	s3 := section("## 3. Sandbox: ask to pair, as the daemon's user", 1)[0]
	s4 := section("## 4. Owner: compare the VVC and daemon key, and approve", 1)[0]
	s5 := section("## 5. Sandbox: start the daemon and connect the agent", 3)
	s6 := section("## 6. Owner: watch and control the agent", 1)[0]
	s7 := section("## 7. Single-user setup (trying it out)", 2)
	wantConfig := docBlocks(t, subst, "## 5. Sandbox: start the daemon and connect the agent", "json")[0]

	path := "PATH=" + filepath.Dir(akBin) + string(os.PathListSeparator) + os.Getenv("PATH")
	owner := h.newTerminal("owner", t.TempDir(), nil, "HOME="+t.TempDir(), path)
	sandbox := h.newTerminal("sandbox (root)", t.TempDir(), nil, "HOME="+t.TempDir(), path)
	agent := h.newTerminal("agent", agentHome, agentUser.cred, "HOME="+agentHome, "USER="+guideAgentUser, path)

	// 1. The owner starts the broker, logs in and stores two credentials.
	out := owner.run(s1, nil)
	wallet := regexp.MustCompile(`0x[0-9a-fA-F]{40}`).FindString(out)
	if wallet == "" {
		t.Fatalf("whoami printed no wallet:\n%s", out)
	}

	// 2-4. Root creates the daemon's user, the daemon asks to pair (and waits);
	// the owner compares the VVC and approves.
	sandbox.run(s2, nil)
	pair := func(tm *terminal, block string) *blockRun {
		t.Helper()
		r := tm.start(strings.ReplaceAll(block, "0xYOUR_WALLET", wallet))
		m := r.waitFor(regexp.MustCompile(`Pair request ([0-9a-f]+) sent(?s:.*)\nVVC: (\d{6})\nDaemon key: (\S+)\n`))
		approve := substitute(t, "step 4", s4, [][2]string{{"f95823fc6eda736b", m[1]}})
		out := owner.run(approve, func(q string) {
			if !strings.Contains(q, "VVC "+m[2]+" and daemon key "+m[3]) {
				t.Errorf("approve asks %q, not naming the VVC %s and daemon key %s the daemon showed", q, m[2], m[3])
			}
		})
		wantIn(t, "agent pending", out, m[1], m[2], "ci-bot", "openai,github")
		r.waitFor(regexp.MustCompile(`Paired: agent ci-bot`))
		return r
	}
	if !strings.Contains(s3, "0xYOUR_WALLET") || !strings.Contains(s7[0], "0xYOUR_WALLET") {
		t.Fatal("steps 3 and 7 no longer name 0xYOUR_WALLET: update the test")
	}
	pair(sandbox, s3).wait(nil)
	if uid, _, mode := ownerOf(t, filepath.Join(daemonHome, "daemon", "session.json")); mode != 0o600 || uid == 0 {
		t.Errorf("the daemon's session is owned by uid %d with mode %v, want its user's and 0600", uid, mode)
	}

	// 5. The daemon serves the agent's group; the agent's user configures MCP and reads.
	sandbox.run(s5[0], nil)
	if !waitFor(startTimeout, func() bool { fi, err := os.Lstat(sock); return err == nil && fi.Mode()&os.ModeSocket != 0 }) {
		t.Fatalf("daemon serve made no socket at %s:\n%s", sock, sandbox.out.String())
	}
	var got, want map[string]any
	if err := json.Unmarshal([]byte(wantConfig), &want); err != nil {
		t.Fatalf("the guide's MCP configuration is not JSON: %v\n%s", err, wantConfig)
	}
	cfg := agent.run(s5[1], nil)
	if err := json.Unmarshal([]byte(cfg), &got); err != nil || !reflect.DeepEqual(got, want) {
		t.Errorf("mcp-config as the agent printed (%v)\n%s\nthe guide says\n%s", err, cfg, wantConfig)
	}
	out = agent.run(s5[2], nil)
	wantIn(t, "the agent's reads", out, "the child has the key", `"services":["github","openai"]`, `"value":"sk-your-openai-key"`)

	// 6. The owner watches, narrows, revokes and tears down the agent.
	asked := map[string]bool{}
	out = owner.run(s6, func(q string) {
		for _, w := range []string{"Revoke agent ci-bot", "Tear down agent ci-bot"} {
			if strings.HasPrefix(q, w) {
				asked[w] = true
			}
		}
	})
	if len(asked) != 2 {
		t.Errorf("step 6: revoke and teardown should each ask first; asked %v", asked)
	}
	wantIn(t, "step 6", out, "ci-bot", "openai")
	// "next get_credential fails with REVOKED": so does the socket's read.
	out = agent.run("curl -s --unix-socket "+sock+" http://agentkeys/credentials/openai", nil)
	if !regexp.MustCompile(`"code":\s*"REVOKED"`).MatchString(out) {
		t.Errorf("a read after revoke: %s, want REVOKED", out)
	}

	// 7. Single-user: the sandbox is a directory of one user's; pairing again
	// makes a new generation.
	single := h.newTerminal("single user", t.TempDir(), nil, "HOME="+t.TempDir(), path)
	out = pair(single, s7[0]).wait(nil)
	cfg = out[strings.Index(out, "Paired: agent ci-bot"):]
	cfg = cfg[strings.Index(cfg, "\n{")+1:]
	var one struct {
		MCPServers map[string]struct {
			Command string
			Args    []string
			Env     map[string]string
		}
	}
	if err := json.Unmarshal([]byte(cfg), &one); err != nil {
		t.Fatalf("single-user mcp-config: %v\n%s", err, out)
	}
	if s := one.MCPServers["agentkeys"]; s.Command != akBin || strings.Join(s.Args, " ") != "daemon mcp" || s.Env["AGENTKEYS_HOME"] != sandboxHome {
		t.Errorf("single-user mcp-config: %+v, want %s daemon mcp with AGENTKEYS_HOME=%s", s, akBin, sandboxHome)
	}
	wantIn(t, "single-user run", single.run(s7[1], nil), "the child has the key")

	// The values went to the agent only: not into the broker's log (the owner's
	// terminal), nor the daemons' logs.
	for _, tm := range []*terminal{owner, sandbox, single} {
		for _, v := range []string{"sk-your-openai-key", "ghp-your-github-token"} {
			if strings.Contains(tm.out.String(), v) {
				t.Errorf("the %s terminal shows the value of a credential (%q)", tm.name, v)
			}
		}
	}
}
