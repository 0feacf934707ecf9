package e2e

import (
	"context"
	"crypto/ed25519"
	"encoding/hex"
	"encoding/json"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/agentkeys/agentkeys/internal/apiv1"
	"github.com/agentkeys/agentkeys/internal/broker"
	"github.com/agentkeys/agentkeys/internal/cli"
	"github.com/agentkeys/agentkeys/internal/client"
	"github.com/agentkeys/agentkeys/internal/home"
)

// This file runs docs/incident-response.md's sh blocks as written, changed only
// by substitution tables (the example URL, paths, kids and member keys), with
// bash, the binary first on PATH and AGENTKEYS_HOME set, the way an operator
// pastes them.

const incidentDoc = "../docs/incident-response.md"

// runbook runs the preamble (export AGENTKEYS_SERVER) and then block, after table,
// in home; it must succeed. It returns the output.
func runbook(t *testing.T, h *harness, home, block string, table [][2]string) string {
	t.Helper()
	pre := docBlocks(t, incidentDoc, "# Incident response", "sh")[0]
	script := substitute(t, "the runbook's preamble", pre, table[:1]) + substitute(t, "runbook block", block, table[1:])
	out := h.newOutput()
	cmd := exec.Command("bash", "-eo", "pipefail", "-c", script)
	cmd.Env = childEnv("AGENTKEYS_HOME="+home, "PATH="+filepath.Dir(bin)+":"+os.Getenv("PATH"))
	cmd.Stdout, cmd.Stderr = out, out
	cmd.Dir = home
	if err := cmd.Run(); err != nil {
		t.Fatalf("runbook block failed (%v):\n%s\noutput:\n%s", err, script, out.String())
	}
	return out.String()
}

// currentKid is the kid of the current OIDC key.
func currentKid(t *testing.T, s *server) string {
	t.Helper()
	keys, err := s.client.OIDCKeys(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range keys {
		if k.State == "current" {
			return k.Kid
		}
	}
	t.Fatalf("no current OIDC key: %+v", keys)
	return ""
}

func jwksKids(t *testing.T, s *server) []string {
	t.Helper()
	j, err := s.client.JWKS(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	var kids []string
	for _, k := range j.Keys {
		kids = append(kids, k.Kid)
	}
	return kids
}

const exampleKid = "Fz-3o4WcV0ad9e5d"

func TestIncidentLeakedAgent(t *testing.T) {
	h := newHarness(t)
	s := h.start(serverOpts{home: t.TempDir(), args: []string{"--oidc-audience", "sts.amazonaws.com"}})
	o := h.akNewOwner(s)
	a := h.oidcAgent(s, o, "ci-bot", "oidc:sts.amazonaws.com")
	h.akOK(a.home, "daemon", "oidc-token", "--audience", "sts.amazonaws.com")
	table := [][2]string{{"https://keys.example.com", s.url}}
	blocks := docBlocks(t, incidentDoc, "## A leaked agent", "sh")
	if len(blocks) != 2 {
		t.Fatalf("want the revoke and teardown blocks, got %d", len(blocks))
	}
	runbook(t, h, o.home, blocks[0], table)
	if r := h.cli(a.home, "daemon", "oidc-token", "--audience", "sts.amazonaws.com"); r.code == 0 || !strings.Contains(r.stderr, "REVOKED") {
		t.Fatalf("the revoked agent still mints: exit %d %s", r.code, r.stderr)
	}
	runbook(t, h, o.home, blocks[1], table)
}

func TestIncidentLeakedOperatorKey(t *testing.T) {
	h := newHarness(t)
	home := t.TempDir()
	pubs := map[string]string{}
	for _, m := range []string{"alice", "bob", "carol"} {
		var info cli.GovernanceKeyInfo
		if err := json.Unmarshal([]byte(h.akOK(home, "governance", "keygen", "--out", filepath.Join(home, m+".key"), "--json")), &info); err != nil {
			t.Fatal(err)
		}
		pubs[m] = info.PublicKey
	}
	h.akOK(home, "governance", "init", "--member", pubs["alice"], "--member", pubs["bob"], "--member", pubs["carol"], "--threshold", "2")
	s := h.start(serverOpts{home: home})
	secure := t.TempDir()
	blocks := docBlocks(t, incidentDoc, "## A leaked operator (governance) key", "sh")
	if len(blocks) != 2 {
		t.Fatalf("want the keygen and set-change blocks, got %d", len(blocks))
	}
	runbook(t, h, home, blocks[0], [][2]string{{"https://keys.example.com", s.url}, {"/secure/", secure + "/"}})
	dave, err := broker.LoadOperatorKey(filepath.Join(secure, "dave.key"))
	if err != nil {
		t.Fatal(err)
	}
	davePub := hex.EncodeToString(dave.Public().(ed25519.PublicKey))
	out := runbook(t, h, home, blocks[1], [][2]string{{"https://keys.example.com", s.url},
		{"6c1f0a3e5b7d9c2e4f6a8b0c1d3e5f7a9b2c4d6e8f0a1b3c5d7e9f1a2b4c6d8e", pubs["bob"]},
		{"2a4c6e8f0b1d3f5a7c9e1b3d5f7a9c2e4b6d8f0a1c3e5a7b9d1f3a5c7e9b2d4f", pubs["carol"]},
		{"9e7c5a3f1d9b7e5c3a1f9d7b5e3c1a9f7d5b3e1c9a7f5d3b1e9c7a5f3d1b9e7c", davePub},
		{"/secure/bob.key", filepath.Join(home, "bob.key")}, {"/secure/carol.key", filepath.Join(home, "carol.key")}})
	g, err := s.client.Governance(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if g.Threshold != 2 || len(g.Members) != 3 || slices.Contains(g.Members, pubs["alice"]) || !slices.Contains(g.Members, davePub) {
		t.Fatalf("governance after the change: %+v\n%s", g, out)
	}
}

func TestIncidentHijackedIssuer(t *testing.T) {
	h := newHarness(t)
	o := serverOpts{home: t.TempDir()}
	s := h.start(o)
	h.plantServer(o)
	kid := currentKid(t, s)
	table := [][2]string{{"https://keys.example.com", s.url}, {exampleKid, kid}, {"/secure/operator.key", broker.OperatorKeyPath(o.effectiveDataDir())}}
	blocks := docBlocks(t, incidentDoc, "## A hijacked issuer URL", "sh")
	if len(blocks) != 2 {
		t.Fatalf("want the revoke and rotate blocks, got %d", len(blocks))
	}
	runbook(t, h, o.home, blocks[0], table)
	if slices.Contains(jwksKids(t, s), kid) {
		t.Fatal("the revoked kid is still in the JWKS")
	}
	runbook(t, h, o.home, blocks[1], [][2]string{table[0], table[2]})
	if next := currentKid(t, s); next == kid || !slices.Contains(jwksKids(t, s), next) || slices.Contains(jwksKids(t, s), kid) {
		t.Fatalf("after the rotation: current %s, JWKS %v (revoked %s)", next, jwksKids(t, s), kid)
	}
}

func TestIncidentEnclaveCompromise(t *testing.T) {
	h := newHarness(t)
	root := t.TempDir()
	dataDir, platform := filepath.Join(root, "lib", "server"), filepath.Join(root, "etc", "platform.key")
	o := serverOpts{home: t.TempDir(), args: []string{"--data-dir", dataDir, "--platform-key", platform}}
	s := h.start(o)
	owner := h.akNewOwner(s)
	kid := currentKid(t, s)
	paths := [][2]string{{"/var/lib/agentkeys/server", dataDir}, {"/etc/agentkeys/platform.key", platform}}
	blocks := docBlocks(t, incidentDoc, "## Suspected enclave compromise", "sh")
	if len(blocks) != 4 {
		t.Fatalf("want the revoke, move, start and init blocks, got %d", len(blocks))
	}
	runbook(t, h, o.home, blocks[0], [][2]string{{"https://keys.example.com", s.url}, {exampleKid, kid},
		{"/secure/operator.key", broker.OperatorKeyPath(dataDir)}})
	if len(jwksKids(t, s)) != 0 {
		t.Fatalf("keys left in the JWKS: %v", jwksKids(t, s))
	}
	s.stop(os.Interrupt)
	runbook(t, h, o.home, blocks[1], append([][2]string{{"https://keys.example.com", s.url}}, paths...))
	if _, err := os.Stat(filepath.Join(dataDir+".compromised", "seed.sealed")); err != nil {
		t.Fatalf("the old data dir was not kept: %v", err)
	}
	// The start block is the server's command line: run it as the harness runs
	// servers, on a port chosen here, which the issuer URL names.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := strconv.Itoa(ln.Addr().(*net.TCPAddr).Port)
	ln.Close()
	url := "http://127.0.0.1:" + port
	line := strings.TrimSpace(substitute(t, "the start block", blocks[2], append([][2]string{{"https://keys.example.com", url}}, paths...)))
	args, ok := strings.CutPrefix(line, "agentkeys server ")
	if !ok || strings.Contains(line, "\n") {
		t.Fatalf("the start block is not one agentkeys server command: %q", line)
	}
	no := serverOpts{home: o.home, args: append(strings.Fields(args), "--listen", "127.0.0.1:"+port)}
	ns := h.start(no)
	if kids := jwksKids(t, ns); len(kids) != 1 || kids[0] == kid {
		t.Fatalf("the new seed's JWKS %v (old kid %s)", kids, kid)
	}
	// The old session is refused: owners re-authenticate.
	sess, err := home.Dir(owner.home).Session()
	if err != nil {
		t.Fatal(err)
	}
	c, _ := client.New(ns.url)
	if _, err := c.WithToken(sess.Token).Whoami(context.Background()); err == nil || !strings.Contains(err.Error(), "UNAUTHENTICATED") {
		t.Fatalf("the old seed's session on the new broker: %v", err)
	}
	fresh := t.TempDir()
	runbook(t, h, fresh, blocks[3], [][2]string{{"https://keys.example.com", ns.url}, {"https://keys.example.com", ns.url}})
	var w apiv1.Whoami
	if err := json.Unmarshal([]byte(h.akOK(fresh, "whoami", "--json")), &w); err != nil || w.Wallet == "" || w.Wallet == owner.wallet {
		t.Fatalf("the re-authenticated owner: %+v (%v), old wallet %s", w, err, owner.wallet)
	}
}

func TestIncidentWatchdogKey(t *testing.T) {
	h := newHarness(t)
	o := serverOpts{home: t.TempDir()}
	s := h.start(o)
	h.plantServer(o)
	etc, secure := t.TempDir(), broker.OperatorKeyPath(o.effectiveDataDir())
	blocks := docBlocks(t, incidentDoc, "## Before an incident: the watchdog's incident key", "sh")
	if len(blocks) != 3 {
		t.Fatalf("want the keygen, add and drop blocks, got %d", len(blocks))
	}
	url := [2]string{"https://keys.example.com", s.url}
	runbook(t, h, o.home, blocks[0], [][2]string{url, {"/etc/agentkeys/", etc + "/"}})
	inc, err := broker.LoadOperatorKey(filepath.Join(etc, "incident.key"))
	if err != nil {
		t.Fatal(err)
	}
	plantPEM(h, "incident key", filepath.Join(etc, "incident.key"))
	op, err := broker.LoadOperatorKey(secure)
	if err != nil {
		t.Fatal(err)
	}
	opPub, incPub := hex.EncodeToString(op.Public().(ed25519.PublicKey)), hex.EncodeToString(inc.Public().(ed25519.PublicKey))
	const docMember, docIncident = "e31ab643c44f7a0ec824b59d1194d60dac334200d845e61d2d289daa0f087ea4", "d4191834714542dcf3e5d8a6ab386c9b72259430730157b6e5c76469cbb6a622"
	out := runbook(t, h, o.home, blocks[1], [][2]string{url, {docMember, opPub}, {docIncident, incPub}, {"/secure/operator.key", secure}})
	g, err := s.client.Governance(context.Background())
	if err != nil || !slices.Equal(g.Members, []string{opPub}) || !slices.Equal(g.Incident, []string{incPub}) || !strings.Contains(out, incPub+"  incident") {
		t.Fatalf("governance after adding the incident key: %+v %v\n%s", g, err, out)
	}
	// It revokes alone, and nothing else.
	kid := currentKid(t, s)
	if _, err := s.client.SubmitGovernance(context.Background(), "oidc.key.revoke", map[string]string{"kid": kid, "reason": "runbook test"}, inc); err != nil {
		t.Fatalf("the incident key's revoke: %v", err)
	}
	if _, err := s.client.SubmitGovernance(context.Background(), "successor.deauthorize", map[string]string{"mrsigner": strings.Repeat("ab", 32)}, inc); err == nil ||
		!strings.Contains(err.Error(), "incident key") {
		t.Fatalf("the incident key signed another kind: %v", err)
	}
	runbook(t, h, o.home, blocks[2], [][2]string{url, {docMember, opPub}, {"/secure/operator.key", secure}})
	if g, err := s.client.Governance(context.Background()); err != nil || len(g.Incident) != 0 || !slices.Equal(g.Members, []string{opPub}) {
		t.Fatalf("governance after dropping the incident key: %+v %v", g, err)
	}
	if _, err := s.client.SubmitGovernance(context.Background(), "oidc.key.revoke", map[string]string{"kid": "another-kid", "reason": "runbook test"}, inc); err == nil {
		t.Fatal("the dropped incident key still revokes")
	}
	// the chain, with the incident key's revoke signed under the set of its time, verifies
	h.auditOK(o.home, "--server", s.url)
	h.auditOK(o.home, "--data-dir", o.effectiveDataDir())
}
