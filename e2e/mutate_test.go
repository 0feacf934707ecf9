package e2e

import (
	"encoding/json"
	"regexp"
	"slices"
	"strings"
	"testing"
)

// jsonOf runs a command that must succeed and decodes its one JSON object.
func (h *harness) jsonOf(home string, args ...string) map[string]any {
	h.t.Helper()
	out := h.akOK(home, args...)
	var m map[string]any
	if err := json.Unmarshal([]byte(out), &m); err != nil {
		h.t.Fatalf("agentkeys %s: not one JSON object: %q", strings.Join(args, " "), out)
	}
	return m
}

func (h *harness) services(o akOwner) []string {
	h.t.Helper()
	var l struct {
		Credentials []struct{ Service, Agent string }
	}
	json.Unmarshal([]byte(h.akOK(o.home, "list", "--json")), &l)
	var out []string
	for _, c := range l.Credentials {
		out = append(out, c.Service+"@"+c.Agent)
	}
	return out
}

func (h *harness) agentStatus(o akOwner, alias string) string {
	h.t.Helper()
	var l struct {
		Agents []struct{ Alias, Status string }
	}
	json.Unmarshal([]byte(h.akOK(o.home, "agent", "list", "--json")), &l)
	st := ""
	for _, a := range l.Agents {
		if a.Alias == alias {
			st = a.Status
		}
	}
	return st
}

// wantRefusedOffTerminal: without --yes and without a terminal, a destructive
// command refuses at once with the fix, and changes nothing.
func (h *harness) wantRefusedOffTerminal(home string, args ...string) {
	h.t.Helper()
	r := h.cli(home, args...)
	if r.code != 2 || !strings.Contains(r.stderr, "BAD_REQUEST") || !strings.Contains(r.stderr, "--yes") {
		h.t.Errorf("agentkeys %s off a terminal without --yes: exit %d %q", strings.Join(args, " "), r.code, r.stderr)
	}
}

// TestMutatingCommandsJSONAndConfirm: every command that changes something
// has --json (ids, versions, generation); rm, agent revoke and agent teardown
// ask on a terminal, refuse off one without --yes, and change nothing when
// the answer is no.
func TestMutatingCommandsJSONAndConfirm(t *testing.T) {
	h := newHarness(t)
	s := h.start(serverOpts{home: t.TempDir()})
	o := h.akNewOwner(s)

	// store --json
	h.plant("credential openai", "sk-openai-"+strings.Repeat("a", 20))
	r := h.akCLIIn(o.home, "sk-openai-"+strings.Repeat("a", 20), "store", "openai", "--json")
	var st map[string]any
	if r.code != 0 || json.Unmarshal([]byte(r.stdout), &st) != nil || st["service"] != "openai" || st["version"] != 1.0 ||
		st["agent"] != "*" || st["approval"] != "none" || st["stored"] == "" {
		t.Fatalf("store --json: exit %d %q %q", r.code, r.stdout, r.stderr)
	}
	h.akStore(o, "openai", "sk-openai-"+strings.Repeat("b", 20))
	h.akStore(o, "github", "ghp-"+strings.Repeat("c", 20))
	h.akStore(o, "slack", "xoxb-"+strings.Repeat("d", 20), "--agent", "bot")

	// rm: refused off a terminal, "no" on a terminal, then --yes --json
	h.wantRefusedOffTerminal(o.home, "rm", "openai")
	p := h.cliTTY(o.home, "rm", "openai")
	p.waitTerm(t, "Delete openai")
	if code := p.answer(t, "n"); code != 0 {
		t.Errorf("rm answered no: exit %d", code)
	}
	if !slices.Contains(h.services(o), "openai@*") {
		t.Fatal("rm answered no deleted the credential")
	}
	p = h.cliTTY(o.home, "rm", "github")
	p.waitTerm(t, "Delete github")
	if code := p.answer(t, "y"); code != 0 || slices.Contains(h.services(o), "github@*") {
		t.Fatalf("rm answered yes: exit %d, still listed %v", code, h.services(o))
	}
	if m := h.jsonOf(o.home, "rm", "openai", "--yes", "--json"); m["service"] != "openai" || m["version"] != 2.0 || m["deleted"] != true {
		t.Errorf("rm --json: %v", m)
	}
	if r := h.cli(o.home, "rm", "nosuch", "--yes"); r.code != 4 {
		t.Errorf("rm of a missing credential: exit %d", r.code)
	}

	// daemon pair --json: a line when the request is sent, one when paired
	dh := t.TempDir()
	pr := h.startPair(dh, "--server", s.url, "--owner", o.wallet, "--alias", "bot", "--scope", "openai", "--json")
	m := h.jsonOf(o.home, "agent", "approve", pr.id, "--yes", "--json")
	if m["id"] != pr.id || m["alias"] != "bot" || m["generation"] != 1.0 || m["omni"] == "" || m["status"] != "active" {
		t.Errorf("agent approve --json: %v", m)
	}
	if code := pr.wait(t); code != 0 {
		t.Fatalf("daemon pair --json: exit %d", code)
	}
	lines := strings.Split(strings.TrimSpace(pr.stdout.String()), "\n")
	var sent, paired map[string]any
	if len(lines) != 2 || json.Unmarshal([]byte(lines[0]), &sent) != nil || json.Unmarshal([]byte(lines[1]), &paired) != nil {
		t.Fatalf("daemon pair --json: want two JSON lines, got %q", pr.stdout.String())
	}
	if sent["status"] != "pending" || sent["id"] != pr.id || sent["vvc"] != pr.vvc || sent["fingerprint"] != pr.key || sent["expires_at"] == "" ||
		paired["status"] != "paired" || paired["alias"] != "bot" || paired["generation"] != 1.0 || paired["agent"] != m["omni"] ||
		paired["s3_prefix"] != strings.ToLower(paired["wallet"].(string))+"/" {
		t.Errorf("daemon pair --json lines: %v / %v", sent, paired)
	}

	// deny --json
	pr2 := h.startPair(t.TempDir(), "--server", s.url, "--owner", o.wallet, "--alias", "other", "--scope", "openai")
	if m := h.jsonOf(o.home, "agent", "deny", pr2.id, "--json"); m["id"] != pr2.id || m["alias"] != "other" || m["denied"] != true {
		t.Errorf("agent deny --json: %v", m)
	}
	pr2.wait(t)

	// scope --json names the generation
	if m := h.jsonOf(o.home, "agent", "scope", "bot", "--add", "github", "--json"); m["alias"] != "bot" || m["generation"] != 1.0 ||
		!strings.Contains(strings.Join(toStrings(m["scope"]), ","), "github") {
		t.Errorf("agent scope --json: %v", m)
	}

	// revoke: refused off a terminal, "no" on a terminal, then --yes --json
	h.wantRefusedOffTerminal(o.home, "agent", "revoke", "bot")
	p = h.cliTTY(o.home, "agent", "revoke", "bot")
	p.waitTerm(t, "Revoke agent bot")
	if code := p.answer(t, "no"); code != 0 || h.agentStatus(o, "bot") != "active" {
		t.Fatalf("agent revoke answered no: exit %d, status %s", code, h.agentStatus(o, "bot"))
	}
	if m := h.jsonOf(o.home, "agent", "revoke", "bot", "--yes", "--json"); m["alias"] != "bot" || m["generation"] != 1.0 || m["status"] != "revoked" {
		t.Errorf("agent revoke --json: %v", m)
	}

	// teardown: refused off a terminal; on a terminal it says what it deletes
	h.wantRefusedOffTerminal(o.home, "agent", "teardown", "bot")
	if !slices.Contains(h.services(o), "slack@bot") {
		t.Fatal("a refused teardown deleted the agent's credential")
	}
	p = h.cliTTY(o.home, "agent", "teardown", "bot", "--json")
	p.waitTerm(t, "1 credential")
	if code := p.answer(t, "y"); code != 0 {
		t.Fatalf("agent teardown answered yes: exit %d %q", code, p.term.String())
	}
	var td map[string]any
	if json.Unmarshal([]byte(p.stdout.String()), &td) != nil || td["alias"] != "bot" || td["deleted"] != 1.0 || td["generation"] != 1.0 {
		t.Errorf("agent teardown --json: %q", p.stdout.String())
	}
	if slices.Contains(h.services(o), "slack@bot") {
		t.Error("teardown left the agent's credential")
	}

	// logout --json
	if m := h.jsonOf(o.home, "logout", "--json"); m["revoked"] != true || m["omni"] != o.omni || m["sid"] == "" {
		t.Errorf("logout --json: %v", m)
	}
}

func toStrings(v any) []string {
	l, _ := v.([]any)
	var out []string
	for _, x := range l {
		s, _ := x.(string)
		out = append(out, s)
	}
	return out
}

var timeLeft = regexp.MustCompile(`\d+m\d+s left`)

// TestDaemonPairTimeLeft: on a terminal `daemon pair` shows the time left while
// it waits; piped, it is quiet.
func TestDaemonPairTimeLeft(t *testing.T) {
	h := newHarness(t)
	s := h.start(serverOpts{home: t.TempDir()})
	o := h.akNewOwner(s)
	p := h.cliTTY(t.TempDir(), "daemon", "pair", "--server", s.url, "--owner", o.wallet, "--alias", "bot", "--scope", "openai")
	p.waitTerm(t, " left")
	if !timeLeft.MatchString(p.term.String()) {
		t.Errorf("daemon pair on a terminal shows no time left: %q", p.term.String())
	}
	piped := h.startPair(t.TempDir(), "--server", s.url, "--owner", o.wallet, "--alias", "bot2", "--scope", "openai")
	h.akOK(o.home, "agent", "deny", piped.id)
	piped.wait(t)
	if out := piped.stdout.String() + piped.stderr.String(); strings.Contains(out, " left") || strings.Contains(out, "Waiting") {
		t.Errorf("piped daemon pair printed a countdown: %q", out)
	}
}
