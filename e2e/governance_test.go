package e2e

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"

	"github.com/agentkeys/agentkeys/internal/apiv1"
	"github.com/agentkeys/agentkeys/internal/broker"
	"github.com/agentkeys/agentkeys/internal/cli"
	"github.com/agentkeys/agentkeys/internal/ledger"
)

// TestGovernanceMofN drives M-of-N governance through the real binary: a 2-of-3
// set chosen before the first start; a proposal written, passed between members
// as a file, signed offline and submitted. One signature, one member twice, a
// non-member, a replay and another broker's proposal are refused, with nothing
// written; two distinct members carry it out. Changing the set needs the current
// threshold, and the chain (signed by two sets) verifies and restarts.
func TestGovernanceMofN(t *testing.T) {
	h := newHarness(t)
	home := t.TempDir()
	run := func(want int, args ...string) cliResult {
		t.Helper()
		r := h.cli(home, args...)
		if r.code != want {
			t.Fatalf("agentkeys %s: exit %d, want %d\nstdout: %s\nstderr: %s", strings.Join(args, " "), r.code, want, r.stdout, r.stderr)
		}
		return r
	}
	pubs := map[string]string{}
	for _, m := range []string{"alice", "bob", "carol", "mallory", "dave", "ivy"} {
		var info cli.GovernanceKeyInfo
		if err := json.Unmarshal([]byte(run(0, "governance", "keygen", "--out", filepath.Join(home, m+".key"), "--json").stdout), &info); err != nil {
			t.Fatal(err)
		}
		pubs[m] = info.PublicKey
	}
	key := func(m string) string { return filepath.Join(home, m+".key") }
	if r := run(2, "governance", "init", "--member", pubs["alice"], "--incident", pubs["alice"], "--threshold", "1"); !strings.Contains(r.stderr, "not both") {
		t.Fatalf("a member as an incident key too: %s", r.stderr)
	}
	var gi cli.GovernanceInit
	if err := json.Unmarshal([]byte(run(0, "governance", "init", "--member", pubs["alice"], "--member", pubs["bob"], "--member", pubs["carol"], "--threshold", "2",
		"--incident", pubs["ivy"], "--json").stdout), &gi); err != nil || !slices.Equal(gi.Incident, []string{pubs["ivy"]}) {
		t.Fatalf("genesis init with an incident key: %+v %v", gi, err)
	}
	if r := run(2, "governance", "init", "--member", pubs["alice"], "--threshold", "2"); !strings.Contains(r.stderr, "impossible") {
		t.Fatalf("1 member, threshold 2: %s", r.stderr)
	}

	o := serverOpts{home: home}
	s := h.start(o)
	if _, err := os.Stat(broker.OperatorKeyPath(o.effectiveDataDir())); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("a broker with a chosen governance set made an operator key too: %v", err)
	}
	if r := run(1, "governance", "init", "--member", pubs["alice"], "--threshold", "1"); !strings.Contains(r.stderr, "has started already") {
		t.Fatalf("genesis init on a started broker: %s", r.stderr)
	}
	members := func() apiv1.GovernanceInfo {
		var g apiv1.GovernanceInfo
		if err := json.Unmarshal([]byte(run(0, "governance", "members", "--server", s.url, "--json").stdout), &g); err != nil {
			t.Fatal(err)
		}
		return g
	}
	g := members()
	if g.Threshold != 2 || len(g.Members) != 3 || !slices.Contains(g.Members, pubs["bob"]) || g.Ledger != s.allEntries()[0].Hash() ||
		!slices.Equal(g.Incident, []string{pubs["ivy"]}) {
		t.Fatalf("members: %+v", g)
	}

	mrsigner := randomHex(32)
	payload := filepath.Join(home, "successor.json")
	os.WriteFile(payload, []byte(`{"mrsigner": "`+mrsigner+`", "effective_from": 1800000000}`), 0o644)
	prop := filepath.Join(home, "p.json")
	run(0, "governance", "propose", "successor.authorize", "--payload", payload, "--out", prop, "--server", s.url, "--ttl", "1h")
	run(0, "governance", "sign", prop, "--key", key("alice"))

	head := s.head().Seq
	refused := func(file, code, msg string) {
		t.Helper()
		want := 3
		if code == "CONFLICT" {
			want = 1
		}
		r := run(want, "governance", "submit", file)
		if !strings.Contains(r.stderr, "Error: "+code) || !strings.Contains(r.stderr, msg) {
			t.Fatalf("submit %s: want %s %q, got %s", filepath.Base(file), code, msg, r.stderr)
		}
		if s.head().Seq != head {
			t.Fatalf("a refused proposal (%s) moved the head", filepath.Base(file))
		}
	}
	refused(prop, "DENIED", "1 distinct member signature(s); the governance set needs 2 of its 3 members")

	variant := func(from, name string, edit func(*ledger.Proposal)) string {
		var p ledger.Proposal
		if err := json.Unmarshal(fileBytes(t, from), &p); err != nil {
			t.Fatal(err)
		}
		edit(&p)
		b, _ := json.Marshal(p)
		f := filepath.Join(home, name)
		os.WriteFile(f, b, 0o644)
		return f
	}
	refused(variant(prop, "twice.json", func(p *ledger.Proposal) { p.Signatures = append(p.Signatures, p.Signatures[0]) }),
		"DENIED", "needs 2 of its 3")
	stranger := variant(prop, "stranger.json", func(*ledger.Proposal) {})
	run(0, "governance", "sign", stranger, "--key", key("mallory"))
	refused(stranger, "DENIED", "not a member")

	run(0, "governance", "sign", prop, "--key", key("bob"))
	var res cli.SubmitResult
	if err := json.Unmarshal([]byte(run(0, "governance", "submit", prop, "--json").stdout), &res); err != nil {
		t.Fatal(err)
	}
	if res.Kind != "successor.authorize" || res.Seq <= head {
		t.Fatalf("submit: %+v", res)
	}
	if code, body := s.get("/mock/enclave-successors"); code != 200 || !strings.Contains(string(body), mrsigner) {
		t.Fatalf("successors after the proposal: %d %s", code, body)
	}
	head = s.head().Seq
	refused(prop, "CONFLICT", "carried out at seq")

	// Another broker (1-of-1, its operator key): the proposal is not for it,
	// even signed by its own governance; one of its own is carried out.
	o2 := serverOpts{home: t.TempDir()}
	s2 := h.start(o2)
	opKey := broker.OperatorKeyPath(o2.effectiveDataDir())
	run(0, "governance", "sign", prop, "--key", opKey)
	if r := run(3, "governance", "submit", prop, "--server", s2.url); !strings.Contains(r.stderr, "not this broker's ledger") {
		t.Fatalf("a proposal for another broker: %s", r.stderr)
	}
	own := filepath.Join(home, "own.json")
	run(0, "governance", "propose", "successor.authorize", "--payload", payload, "--out", own, "--server", s2.url)
	run(0, "governance", "sign", own, "--key", opKey)
	run(0, "governance", "submit", own)
	// oidc.rotate is carried out, not only recorded.
	rot := filepath.Join(home, "rotate.json")
	os.WriteFile(payload, []byte(`{"window_seconds":86400,"nonce":"`+randomHex(16)+`"}`), 0o644)
	run(0, "governance", "propose", "oidc.rotate", "--payload", payload, "--out", rot, "--server", s2.url)
	run(0, "governance", "sign", rot, "--key", opKey)
	var rr cli.SubmitResult
	if err := json.Unmarshal([]byte(run(0, "governance", "submit", rot, "--json").stdout), &rr); err != nil {
		t.Fatal(err)
	}
	if rr.Kind != "oidc.rotate" || rr.Rotate == nil || rr.Rotate.Key.Version != 2 || rr.Rotate.Previous.ActiveUntil == 0 {
		t.Fatalf("oidc.rotate by proposal: %+v", rr)
	}

	// Changing the set needs the current threshold: 2 of alice, bob, carol.
	change := filepath.Join(home, "change.json")
	run(0, "governance", "init", "--server", s.url, "--member", pubs["alice"], "--member", pubs["dave"], "--threshold", "1", "--out", change)
	run(0, "governance", "sign", change, "--key", key("dave"))
	refused(change, "DENIED", "not a member")
	ch := variant(change, "change1.json", func(p *ledger.Proposal) { p.Signatures = nil })
	run(0, "governance", "sign", ch, "--key", key("carol"))
	refused(ch, "DENIED", "needs 2 of its 3")
	run(0, "governance", "sign", ch, "--key", key("alice"))
	run(0, "governance", "submit", ch)
	if g := members(); g.Threshold != 1 || len(g.Members) != 2 || !slices.Contains(g.Members, pubs["dave"]) {
		t.Fatalf("members after the change: %+v", g)
	}
	// The new set alone decides now: dave, 1 of 1... of 2.
	deauth := filepath.Join(home, "deauth.json")
	os.WriteFile(payload, []byte(`{"mrsigner":"`+mrsigner+`"}`), 0o644)
	run(0, "governance", "propose", "successor.deauthorize", "--payload", payload, "--out", deauth, "--server", s.url)
	run(0, "governance", "sign", deauth, "--key", key("dave"))
	run(0, "governance", "submit", deauth)

	h.auditOK(home, "--server", s.url)
	if code := s.stop(syscall.SIGTERM); code != 0 {
		t.Fatalf("server exit %d", code)
	}
	h.auditOK(home, "--data-dir", o.effectiveDataDir())
	s = h.start(o) // the start verifies the chain: entries signed by the old set, then the new
	if _, err := s.waitLog("the governance.json warning", startTimeout, func(l logLine) bool {
		return strings.HasPrefix(l.str("msg"), "governance.json is not the ledger's governance set")
	}); err != nil {
		t.Fatal(err)
	}
	if g := members(); g.Threshold != 1 || len(g.Members) != 2 {
		t.Fatalf("members after a restart: %+v", g)
	}
}

// TestRotateSessionKey: governance rotate-session-key through the binary, as a
// 1-of-1 operator would run it and as a proposal; an owner logged in before is
// not logged out; a window shorter than the session lifetime is refused with
// the window to pass.
func TestRotateSessionKey(t *testing.T) {
	h := newHarness(t)
	o := serverOpts{home: t.TempDir(), args: []string{"--session-ttl", "2h"}}
	s := h.start(o)
	owner := t.TempDir()
	h.akOK(owner, "init", "--server", s.url)
	r := h.cli(o.home, "governance", "rotate-session-key", "--server", s.url, "--window", "1h")
	if r.code != 2 && r.code != 1 || !strings.Contains(r.stderr, "pass --window 2h1m0s or longer") {
		t.Fatalf("a window shorter than the session lifetime: exit %d %s", r.code, r.stderr)
	}
	var res cli.SubmitResult
	if err := json.Unmarshal([]byte(h.akOK(o.home, "governance", "rotate-session-key", "--server", s.url, "--window", "2h1m", "--json")), &res); err != nil {
		t.Fatal(err)
	}
	if res.Kind != "session.key.rotate" {
		t.Fatalf("rotate: %+v", res)
	}
	h.akOK(owner, "whoami") // logged in before the rotation: still in
	prop := filepath.Join(o.home, "rotate.json")
	h.akOK(o.home, "governance", "rotate-session-key", "--server", s.url, "--window", "3h", "--out", prop)
	h.akOK(o.home, "governance", "sign", prop, "--key", broker.OperatorKeyPath(o.effectiveDataDir()))
	h.akOK(o.home, "governance", "submit", prop)
	h.akOK(owner, "whoami")
	other := t.TempDir()
	h.akOK(other, "init", "--server", s.url) // a new session, signed by v3
	h.akOK(other, "whoami")
	// the operator sees the rotations: v1 and v2 retiring, v3 current
	var keys struct {
		SessionKeys []apiv1.SessionKeyInfo `json:"session_keys"`
	}
	if err := json.Unmarshal([]byte(h.akOK(o.home, "governance", "session-keys", "--server", s.url, "--json")), &keys); err != nil {
		t.Fatal(err)
	}
	var states []string
	for _, k := range keys.SessionKeys {
		states = append(states, fmt.Sprintf("v%d %s", k.Version, k.State))
	}
	if !slices.Equal(states, []string{"v1 retiring", "v2 retiring", "v3 current"}) {
		t.Fatalf("session-keys: %v", states)
	}
	if out := h.akOK(o.home, "governance", "session-keys", "--server", s.url); !strings.Contains(out, keys.SessionKeys[2].Kid) || !strings.Contains(out, "retiring") {
		t.Fatalf("session-keys: %s", out)
	}
	h.auditOK(o.home, "--data-dir", o.effectiveDataDir())
}
