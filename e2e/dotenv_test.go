package e2e

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestImportDotEnv: `agentkeys import FILE` stores each NAME=VALUE as a
// credential (service: NAME lower-cased, a trailing _API_KEY dropped, '_' → '-'),
// never echoes a value, refuses a malformed file by line number storing nothing,
// and does not replace a stored credential without --replace.
func TestImportDotEnv(t *testing.T) {
	h := newHarness(t)
	s := h.start(serverOpts{home: t.TempDir()})
	o := h.akNewOwner(s)
	dir := t.TempDir()
	openai, github, quoted := "sk-dotenv-openai-"+randomHex(12), "ghp-dotenv-github-"+randomHex(12), "pw with 'quotes' "+randomHex(12)
	for what, v := range map[string]string{"openai": openai, "github": github, "quoted": quoted} {
		h.plant("imported "+what, v)
	}

	// a malformed line: refused with its line number, the file's values never shown, nothing stored
	bad := filepath.Join(dir, "bad.env")
	os.WriteFile(bad, []byte("# keys\nOPENAI_API_KEY="+openai+"\n"+github+"\n"), 0o600)
	r := h.cli(o.home, "import", bad)
	if r.code != 2 || !strings.Contains(r.stderr, "Error: BAD_REQUEST") || !strings.Contains(r.stderr, "line 3") || !strings.Contains(r.stderr, "Fix:") {
		t.Fatalf("malformed line: exit %d\n%s", r.code, r.stderr)
	}
	for _, c := range []string{"BAD NAME=x", "1X=y", "Q=\"unclosed", "OPENAI_API_KEY=a\nOPENAI_API_KEY=b", "EMPTY="} {
		os.WriteFile(bad, []byte(c+"\n"), 0o600)
		if r := h.cli(o.home, "import", bad); r.code != 2 || !strings.Contains(r.stderr, "line ") {
			t.Errorf("%q: exit %d %s", c, r.code, r.stderr)
		}
	}
	if r := h.cli(o.home, "import", filepath.Join(dir, "missing.env")); r.code == 0 || !strings.Contains(r.stderr, "Fix:") {
		t.Errorf("missing file: exit %d %s", r.code, r.stderr)
	}
	var list struct{ Credentials []struct{ Service string } }
	json.Unmarshal([]byte(h.akOK(o.home, "list", "--json")), &list)
	if len(list.Credentials) != 0 {
		t.Fatalf("a refused import stored %v", list.Credentials)
	}

	env := filepath.Join(dir, ".env")
	os.WriteFile(env, []byte("# my keys\n\nexport OPENAI_API_KEY="+openai+"\r\nGITHUB_TOKEN = '"+github+"'\nDB_PASSWORD=\""+quoted+"\"\n"), 0o600)
	// --map renames one; the summary names each NAME and service, never a value
	out := h.akOK(o.home, "import", env, "--map", "DB_PASSWORD=db")
	for _, want := range []string{"OPENAI_API_KEY", "openai", "GITHUB_TOKEN", "github-token", "DB_PASSWORD", "db", "3 credentials"} {
		if !strings.Contains(out, want) {
			t.Errorf("summary lacks %q:\n%s", want, out)
		}
	}
	for svc, want := range map[string]string{"openai": openai, "github-token": github, "db": quoted} {
		if got := strings.TrimSuffix(h.mustOK(h.cliIn(o.home, "", true, "read", svc), "read").stdout, "\n"); got != want {
			t.Errorf("read %s: got %d bytes, not the imported value", svc, len(got))
		}
	}

	// again: refused (the credentials exist), nothing replaced; --replace stores new versions
	r = h.cli(o.home, "import", env, "--map", "DB_PASSWORD=db")
	if r.code != 1 || !strings.Contains(r.stderr, "Error: CONFLICT") || !strings.Contains(r.stderr, "--replace") {
		t.Fatalf("re-import: exit %d %s", r.code, r.stderr)
	}
	var res struct {
		Stored []struct {
			Name, Service, Agent string
			Version              int
		}
	}
	if err := json.Unmarshal([]byte(h.akOK(o.home, "import", env, "--map", "DB_PASSWORD=db", "--replace", "--json")), &res); err != nil || len(res.Stored) != 3 {
		t.Fatalf("import --json: %v %+v", err, res)
	}
	for _, c := range res.Stored {
		if c.Version != 2 {
			t.Errorf("--replace: %+v", c)
		}
	}
	// for one agent
	os.WriteFile(env, []byte("SLACK_TOKEN="+github+"\n"), 0o600)
	if err := json.Unmarshal([]byte(h.akOK(o.home, "import", env, "--agent", "ci-bot", "--json")), &res); err != nil ||
		len(res.Stored) != 1 || res.Stored[0].Agent != "ci-bot" || res.Stored[0].Service != "slack-token" {
		t.Fatalf("import --agent: %v %+v", err, res)
	}
	if r := h.cli(o.home, "import", env, "--map", "NOPE=x"); r.code != 2 || !strings.Contains(r.stderr, "NOPE") {
		t.Fatalf("--map of a name not in the file: exit %d %s", r.code, r.stderr)
	}
}

// TestRunEnvFile: `agentkeys run --env-file FILE` resolves NAME=agentkeys://SERVICE
// through the same path as --env, passes plain NAME=value lines through, and
// fails before the child starts when a reference cannot be resolved.
func TestRunEnvFile(t *testing.T) {
	h := newHarness(t)
	s := h.start(serverOpts{home: t.TempDir()})
	o := h.akNewOwner(s)
	secret := "sk-envfile-" + randomHex(16)
	h.akStore(o, "openai", secret)
	dir := t.TempDir()
	envFile := filepath.Join(dir, "app.env")
	os.WriteFile(envFile, []byte("# references\nOPENAI_KEY=agentkeys://openai\nexport MODE=production\nGREETING=\"hello world\"\n"), 0o644)
	child := "printf %s \"$OPENAI_KEY\" > " + filepath.Join(dir, "key") + "; printf %s \"$MODE|$GREETING|${OPENAI_API_KEY:-unset}\" > " + filepath.Join(dir, "plain")
	h.akOK(o.home, "run", "--env-file", envFile, "--", "sh", "-c", child)
	if string(fileBytes(t, filepath.Join(dir, "key"))) != secret {
		t.Fatal("the child did not get the referenced credential")
	}
	if got := string(fileBytes(t, filepath.Join(dir, "plain"))); got != "production|hello world|unset" {
		t.Fatalf("plain values / only the file's names: %q", got)
	}
	// --env next to --env-file: both apply
	h.akOK(o.home, "run", "--env-file", envFile, "--env", "OTHER=openai", "--", "sh", "-c", "test \"$OTHER\" = \"$OPENAI_KEY\" && touch "+filepath.Join(dir, "both"))
	fileBytes(t, filepath.Join(dir, "both"))

	marker := filepath.Join(dir, "started")
	for name, c := range map[string]struct {
		content, code, text string
	}{
		"unresolvable": {"OPENAI_KEY=agentkeys://openai\nMISSING=agentkeys://nosuch\n", "NOT_FOUND", "MISSING"},
		"bad service":  {"X=1\nBAD=agentkeys://Not A Name\n", "BAD_REQUEST", "line 2"},
		"malformed":    {"X=1\n" + secret + "\n", "BAD_REQUEST", "line 2"},
	} {
		os.WriteFile(envFile, []byte(c.content), 0o644)
		r := h.cli(o.home, "run", "--env-file", envFile, "--", "touch", marker)
		if r.code == 0 || !strings.Contains(r.stderr, "Error: "+c.code) || !strings.Contains(r.stderr, c.text) {
			t.Errorf("%s: exit %d %s", name, r.code, r.stderr)
		}
		if _, err := os.Stat(marker); err == nil {
			t.Fatalf("%s: the child started", name)
		}
	}
	if r := h.cli(o.home, "run", "--env-file", filepath.Join(dir, "none.env"), "--", "true"); r.code == 0 || !strings.Contains(r.stderr, "Fix:") {
		t.Errorf("missing env file: exit %d %s", r.code, r.stderr)
	}
}
