package e2e

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
)

// convCLI runs the binary at path with AGENTKEYS_HOME=home and the extra environment kv.
func (h *harness) convCLI(path, home string, kv []string, args ...string) cliResult {
	h.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), cliTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, path, args...)
	cmd.Env = childEnv(append([]string{"AGENTKEYS_HOME=" + home}, kv...)...)
	stdout, stderr := h.newOutput(), h.newOutput()
	cmd.Stdout, cmd.Stderr = stdout, stderr
	err := cmd.Run()
	var ee *exec.ExitError
	if err != nil && !errors.As(err, &ee) {
		h.t.Fatalf("running %s %s: %v", path, strings.Join(args, " "), err)
	}
	if ctx.Err() != nil {
		h.t.Fatalf("%s %s did not finish within %s", path, strings.Join(args, " "), cliTimeout)
	}
	return cliResult{stdout: stdout.String(), stderr: stderr.String(), code: cmd.ProcessState.ExitCode()}
}

// wantProblem checks a refusal: the exit code and §11's Error/message/Fix lines.
func wantProblem(t *testing.T, r cliResult, code int, errCode, msg string) {
	t.Helper()
	if r.code != code || !strings.HasPrefix(r.stderr, "Error: "+errCode+"\n") || !strings.Contains(r.stderr, msg) || !strings.Contains(r.stderr, "\n  Fix: ") {
		t.Errorf("want exit %d with Error: %s … %q … Fix:, got exit %d\nstdout: %s\nstderr: %s", code, errCode, msg, r.code, r.stdout, r.stderr)
	}
}

// copyBin copies the agentkeys binary to dir and returns the copy's path.
func copyBin(t *testing.T, dir string) string {
	t.Helper()
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	dst := filepath.Join(dir, "agentkeys")
	copyExecutable(t, bin, dst)
	return dst
}

// mcpCommand runs daemon mcp-config with the binary at path and returns the command it names.
func (h *harness) mcpCommand(path, home string, kv ...string) string {
	h.t.Helper()
	r := h.convCLI(path, home, kv, "daemon", "mcp-config")
	if r.code != 0 {
		h.t.Fatalf("%s daemon mcp-config: exit %d\n%s", path, r.code, r.stderr)
	}
	var cfg struct {
		MCPServers map[string]struct{ Command string } `json:"mcpServers"`
	}
	if err := json.Unmarshal([]byte(r.stdout), &cfg); err != nil {
		h.t.Fatalf("mcp-config output is not JSON: %v\n%s", err, r.stdout)
	}
	return cfg.MCPServers["agentkeys"].Command
}

// Problem 1: an MCP client's configuration must not name a binary that goes away
// with the Go build cache or the temp dir (what go run prints).
func TestMCPConfigRefusesBuildCacheAndTemp(t *testing.T) {
	h := newHarness(t)
	home := t.TempDir()

	// An installed binary (bin is outside the temp dir, as an installed one is).
	want, err := filepath.EvalSymlinks(bin)
	if err != nil {
		t.Fatal(err)
	}
	if got := h.mcpCommand(bin, home); got != want {
		t.Errorf("mcp-config from an installed binary names command %q, want %q", got, want)
	}

	for _, c := range []struct {
		name, dir string
		kv        []string
	}{
		{"a temp dir (go run before Go 1.24, a download to /tmp)", filepath.Join(t.TempDir(), "b001", "exe"), nil},
		{"a go-build directory", filepath.Join(binDir, "go-build", "3f", "3fa4-d"), nil},
		{"the Go build cache ($GOCACHE)", filepath.Join(binDir, "gocache", "a1", "a1b2-d"), []string{"GOCACHE=" + filepath.Join(binDir, "gocache")}},
	} {
		t.Run(c.name, func(t *testing.T) {
			p := copyBin(t, c.dir)
			for _, args := range [][]string{{"daemon", "mcp-config"}, {"daemon", "mcp-config", "--client", "vscode"},
				{"daemon", "mcp-config", "--socket", filepath.Join(home, "a.sock")}} {
				r := h.convCLI(p, home, c.kv, args...)
				wantProblem(t, r, 2, "BAD_REQUEST", p)
				if !strings.Contains(r.stderr, "go install") || r.stdout != "" {
					t.Errorf("%v from %s: want the fix to name go install and nothing on stdout; stdout %q stderr %q", args, p, r.stdout, r.stderr)
				}
			}
		})
	}
}

// Problem 1: the README builds the binary once and uses it; its set-up block runs
// as written and gives a binary whose mcp-config works.
func TestReadmeInstallsOnce(t *testing.T) {
	h := newHarness(t)
	b, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	readme := string(b)
	if strings.Contains(readme, "go run ./cmd/agentkeys") {
		t.Error("the README still runs go run ./cmd/agentkeys: it builds in silence each time and names a build-cache path")
	}
	i := strings.Index(readme, "## Set up on a fresh machine")
	if i < 0 {
		t.Fatal("README has no \"## Set up on a fresh machine\" section")
	}
	section := readme[i:]
	section = section[:strings.Index(section[3:], "\n## ")+3]
	if !strings.Contains(section, "minutes") {
		t.Error("the set-up section does not say the first build takes minutes")
	}
	start := strings.Index(section, "```sh\n")
	if start < 0 {
		t.Fatal("the set-up section has no sh block")
	}
	block := section[start+len("```sh\n"):]
	block = block[:strings.Index(block, "```")]
	// Run the block up to `agentkeys version` (the commands after it are long-running).
	var script []string
	for _, line := range strings.Split(block, "\n") {
		line = strings.TrimSpace(strings.SplitN(line, " #", 2)[0])
		if line == "" {
			continue
		}
		script = append(script, line)
		if line == "agentkeys version" {
			break
		}
	}
	if len(script) == 0 || script[len(script)-1] != "agentkeys version" {
		t.Fatalf("the set-up block does not install the binary and run agentkeys version:\n%s", block)
	}
	if !regexp.MustCompile(`(?m)^(go install \./cmd/agentkeys|go build -o \S+ \./cmd/agentkeys)$`).MatchString(strings.Join(script, "\n")) ||
		!strings.Contains(strings.Join(script, "\n"), "PATH=") {
		t.Fatalf("the set-up block does not build the binary once and put it on PATH:\n%s", block)
	}
	goenv := func(k string) string {
		out, err := exec.Command("go", "env", k).Output()
		if err != nil {
			t.Fatalf("go env %s: %v", k, err)
		}
		return strings.TrimSpace(string(out))
	}
	gopath := filepath.Join(binDir, "readme-gopath")
	root, _ := filepath.Abs("..")
	cmd := exec.Command("sh", "-ec", strings.Join(script, "\n"))
	cmd.Dir = root
	cmd.Env = childEnv("GOPATH="+gopath, "GOMODCACHE="+goenv("GOMODCACHE"), "GOCACHE="+goenv("GOCACHE"), "GOBIN=")
	out := h.newOutput()
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Run(); err != nil {
		t.Fatalf("the README's set-up block failed: %v\n%s", err, out.String())
	}
	if !strings.HasPrefix(out.String(), "agentkeys ") {
		t.Errorf("agentkeys version printed %q", out.String())
	}
	installed := filepath.Join(gopath, "bin", "agentkeys")
	if got := h.mcpCommand(installed, t.TempDir()); got != installed {
		t.Errorf("mcp-config from the installed binary names %q, want %q", got, installed)
	}
}

// Problem 6: version and --version, from the binary's build info: the same module
// version and VCS settings that go version -m reads from the binary.
func TestVersion(t *testing.T) {
	h := newHarness(t)
	home := t.TempDir()
	meta, err := exec.Command("go", "version", "-m", bin).Output()
	if err != nil {
		t.Fatalf("go version -m: %v", err)
	}
	want := map[string]string{}
	for _, line := range strings.Split(string(meta), "\n") {
		f := strings.Split(strings.TrimSpace(line), "\t")
		switch {
		case len(f) >= 3 && f[0] == "mod" && f[1] == "github.com/agentkeys/agentkeys":
			want["version"] = f[2]
		case len(f) == 2 && f[0] == "build" && strings.HasPrefix(f[1], "vcs."):
			k, v, _ := strings.Cut(f[1], "=")
			want[k] = v
		}
	}
	gover, err := exec.Command("go", "env", "GOVERSION").Output()
	if err != nil || want["version"] == "" {
		t.Fatalf("go env GOVERSION: %v; go version -m gave no module version:\n%s", err, meta)
	}

	r := h.cli(home, "version", "--json")
	if r.code != 0 {
		t.Fatalf("version --json: exit %d: %s", r.code, r.stderr)
	}
	var v struct {
		Version, Revision, RevisionTime, Go string
		Modified                            *bool
	}
	if err := json.Unmarshal([]byte(r.stdout), &v); err != nil {
		t.Fatalf("version --json is not JSON: %v\n%s", err, r.stdout)
	}
	var modified string
	if v.Modified != nil {
		modified = strconv.FormatBool(*v.Modified)
	}
	if v.Version != want["version"] || v.Revision != want["vcs.revision"] || modified != want["vcs.modified"] ||
		v.Go != strings.TrimSpace(string(gover)) {
		t.Errorf("version --json = %s, want the build info go version -m reads: %v, %s", r.stdout, want, gover)
	}
	rev := "revision unknown"
	if v.Revision != "" {
		rev = "revision " + v.Revision
	}
	text := h.cli(home, "version")
	long := h.cli(home, "--version")
	for _, x := range []cliResult{text, long} {
		if x.code != 0 || !strings.HasPrefix(x.stdout, "agentkeys "+v.Version+" ("+rev) || !strings.Contains(x.stdout, v.Go) || strings.Count(x.stdout, "\n") != 1 {
			t.Errorf("want one line \"agentkeys %s (%s…) %s …\", got exit %d %q %q", v.Version, rev, v.Go, x.code, x.stdout, x.stderr)
		}
	}
	if text.stdout != long.stdout {
		t.Errorf("version %q and --version %q differ", text.stdout, long.stdout)
	}
}

// Problem 6: shell completion from cobra's generator.
func TestCompletion(t *testing.T) {
	h := newHarness(t)
	home := t.TempDir()
	for shell, marker := range map[string]string{"bash": "__start_agentkeys", "zsh": "#compdef agentkeys", "fish": "complete -c agentkeys", "powershell": "Register-ArgumentCompleter"} {
		r := h.cli(home, "completion", shell)
		if r.code != 0 || !strings.Contains(r.stdout, marker) {
			t.Errorf("completion %s: exit %d, want a script with %q; stderr %q", shell, r.code, marker, r.stderr)
		}
	}
	// the generated script asks the binary itself, which completes commands
	r := h.cli(home, "__complete", "dae")
	if r.code != 0 || !strings.Contains(r.stdout, "daemon") {
		t.Errorf("__complete dae: exit %d %q %q", r.code, r.stdout, r.stderr)
	}
	wantProblem(t, h.cli(home, "completion", "tcsh"), 2, "BAD_REQUEST", "tcsh")
}

// exitCodes is the table both `help exit-codes` and docs/cli.md must give.
var exitCodes = map[string]string{
	"0": "success", "1": "error", "2": "usage", "3": "denied", "4": "not found", "5": "unreachable",
	"126": "cannot be executed", "127": "not found",
}

// Problem 6: the exit codes are documented, in the binary and in docs/cli.md.
func TestHelpExitCodes(t *testing.T) {
	h := newHarness(t)
	r := h.cli(t.TempDir(), "help", "exit-codes")
	if r.code != 0 {
		t.Fatalf("help exit-codes: exit %d: %s", r.code, r.stderr)
	}
	doc, err := os.ReadFile("../docs/cli.md")
	if err != nil {
		t.Fatalf("docs/cli.md: %v", err)
	}
	i := strings.Index(string(doc), "## Exit codes")
	if i < 0 {
		t.Fatal("docs/cli.md has no \"## Exit codes\" section")
	}
	for code, meaning := range exitCodes {
		if !regexp.MustCompile(`(?m)^  ` + code + ` +.*` + meaning).MatchString(r.stdout) {
			t.Errorf("help exit-codes has no line for %s (%s):\n%s", code, meaning, r.stdout)
		}
		if !regexp.MustCompile(`(?m)^\| ` + "`" + code + "`" + ` \|.*` + meaning).MatchString(string(doc[i:])) {
			t.Errorf("docs/cli.md's exit codes have no row for %s (%s)", code, meaning)
		}
	}
	if h := h.cli(t.TempDir(), "--help"); !strings.Contains(h.stdout, "exit-codes") {
		t.Errorf("agentkeys --help does not list the exit-codes topic:\n%s", h.stdout)
	}
}

// Problem 6: run exits as shells and op run do when the command cannot run,
// and fetches no credential for it.
func TestRunExitCodes(t *testing.T) {
	h := newHarness(t)
	s := h.start(serverOpts{home: t.TempDir()})
	o := h.akNewOwner(s)
	h.akStore(o, "openai", "sk-conventions-"+randomHex(16))
	usage := func() int {
		var u struct{ Usage []json.RawMessage }
		if err := json.Unmarshal([]byte(h.akOK(o.home, "usage", "--json")), &u); err != nil || len(u.Usage) == 0 {
			t.Fatalf("usage --json: %v (%d rows)", err, len(u.Usage))
		}
		return len(u.Usage)
	}
	before := usage()

	dir := t.TempDir()
	plain := filepath.Join(dir, "script.sh")
	if err := os.WriteFile(plain, []byte("#!/bin/sh\necho ran\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	wantProblem(t, h.cli(o.home, "run", "--", "agentkeys-no-such-command-13"), 127, "NOT_FOUND", "agentkeys-no-such-command-13")
	wantProblem(t, h.cli(o.home, "run", "--", filepath.Join(dir, "missing")), 127, "NOT_FOUND", "missing")
	wantProblem(t, h.cli(o.home, "run", "--", plain), 126, "DENIED", plain)
	wantProblem(t, h.cli(o.home, "run", "--", dir), 126, "DENIED", dir)
	if n := usage(); n != before {
		t.Errorf("a command that could not run still fetched credentials: usage went from %d to %d entries", before, n)
	}

	// the command's own code passes through; a signal is 128+N, as in a shell
	if r := h.cli(o.home, "run", "--", "sh", "-c", "exit 7"); r.code != 7 || r.stderr != "" {
		t.Errorf("run -- sh -c 'exit 7': exit %d, stderr %q", r.code, r.stderr)
	}
	if r := h.cli(o.home, "run", "--", "sh", "-c", "kill -TERM $$"); r.code != 128+15 {
		t.Errorf("run -- a command killed by SIGTERM: exit %d, want 143", r.code)
	}
}

// Problem 6: AGENTKEYS_SERVER is the default of every --server flag; the flag wins.
func TestServerFromEnvironment(t *testing.T) {
	h := newHarness(t)
	s := h.start(serverOpts{home: t.TempDir()})
	env := []string{"AGENTKEYS_SERVER=" + s.url}
	nowhere := []string{"AGENTKEYS_SERVER=http://127.0.0.1:9"} // the discard port: nothing listens

	home := t.TempDir()
	if r := h.convCLI(bin, home, env, "init"); r.code != 0 {
		t.Fatalf("init with AGENTKEYS_SERVER: exit %d: %s", r.code, r.stderr)
	}
	var w struct{ Server string }
	if err := json.Unmarshal([]byte(h.akOK(home, "whoami", "--json")), &w); err != nil || w.Server != s.url {
		t.Errorf("init with AGENTKEYS_SERVER logged in to %q, want %s", w.Server, s.url)
	}
	for _, args := range [][]string{{"audit", "verify"}, {"oidc", "keys"}} {
		if r := h.convCLI(bin, t.TempDir(), env, args...); r.code != 0 {
			t.Errorf("%v with AGENTKEYS_SERVER: exit %d: %s", args, r.code, r.stderr)
		}
		if r := h.convCLI(bin, t.TempDir(), nowhere, append(args, "--server", s.url)...); r.code != 0 {
			t.Errorf("%v --server URL with another AGENTKEYS_SERVER: the flag must win; exit %d: %s", args, r.code, r.stderr)
		}
		wantProblem(t, h.convCLI(bin, t.TempDir(), nowhere, args...), 5, "UNREACHABLE", "127.0.0.1:9")
	}
	// a bad value is refused, naming where to fix it
	r := h.convCLI(bin, t.TempDir(), []string{"AGENTKEYS_SERVER=127.0.0.1:8090"}, "oidc", "keys")
	wantProblem(t, r, 2, "BAD_REQUEST", "127.0.0.1:8090")
	if !strings.Contains(r.stderr, "AGENTKEYS_SERVER") {
		t.Errorf("a bad AGENTKEYS_SERVER: the fix does not name the variable: %s", r.stderr)
	}
	// --mine and --data-dir are other sources: the environment default does not clash with them
	if r := h.convCLI(bin, home, nowhere, "audit", "verify", "--mine"); r.code != 0 {
		t.Errorf("audit verify --mine with AGENTKEYS_SERVER set: exit %d: %s", r.code, r.stderr)
	}
	// daemon pair takes the broker from the environment too
	dh := t.TempDir()
	r = h.convCLI(bin, dh, env, "daemon", "pair", "--owner", w2omni(t, h, home), "--alias", "env-bot", "--scope", "openai", "--no-wait")
	if r.code != 0 || !strings.Contains(r.stdout, "VVC: ") {
		t.Errorf("daemon pair with AGENTKEYS_SERVER: exit %d\n%s\n%s", r.code, r.stdout, r.stderr)
	}
	for _, args := range [][]string{{"init"}, {"audit", "verify"}, {"oidc", "keys"}, {"oidc", "rotate"}, {"daemon", "pair"}} {
		if r := h.cli(home, append(args, "--help")...); !strings.Contains(r.stdout, "AGENTKEYS_SERVER") {
			t.Errorf("%v --help does not say --server defaults to AGENTKEYS_SERVER", args)
		}
	}
}

func w2omni(t *testing.T, h *harness, home string) string {
	t.Helper()
	var w struct{ Omni string }
	if err := json.Unmarshal([]byte(h.akOK(home, "whoami", "--json")), &w); err != nil {
		t.Fatal(err)
	}
	return w.Omni
}
