package e2e

import (
	"context"
	"encoding/json"
	"os"
	"strings"
	"testing"

	"github.com/agentkeys/agentkeys/internal/home"
)

// initJSON runs `init --json` with args and returns its object.
func (h *harness) initJSON(home string, args ...string) map[string]any {
	h.t.Helper()
	return h.jsonOf(home, append([]string{"init", "--json"}, args...)...)
}

// sessionWorks checks that the owner's stored session is accepted by the broker:
// list succeeds and whoami shows omni.
func (h *harness) sessionWorks(o akOwner) {
	h.t.Helper()
	h.akOK(o.home, "list")
	if w := h.akOK(o.home, "whoami"); !strings.Contains(w, o.omni) {
		h.t.Fatalf("whoami after logging in again does not show omni %s:\n%s", o.omni, w)
	}
}

// TestInitLogsInAgain: `init` on a machine whose identity exists but whose
// session is gone (logout), revoked or expired logs in again with the same
// identity — a new session on the same account — and always prints the omni;
// with a valid session it changes nothing; --force opens a new session anyway.
func TestInitLogsInAgain(t *testing.T) {
	h := newHarness(t)
	s := h.start(serverOpts{home: t.TempDir()})
	o := h.akNewOwner(s)
	if o.omni == "" || o.wallet == "" {
		t.Fatalf("whoami after init: omni %q wallet %q", o.omni, o.wallet)
	}
	h.akStore(o, "openai", "sk-relogin-secret-0123456789abcdef")
	d := home.Dir(o.home)
	sid := func() string {
		t.Helper()
		sess, err := d.Session()
		if err != nil {
			t.Fatal(err)
		}
		return sess.SID
	}

	// A valid session: nothing changes, the omni is printed.
	before := sid()
	out := h.akOK(o.home, "init")
	if !strings.Contains(out, o.omni) || !strings.Contains(out, o.wallet) || sid() != before {
		t.Fatalf("init with a valid session: sid %s -> %s:\n%s", before, sid(), out)
	}
	if m := h.initJSON(o.home); m["omni"] != o.omni || m["wallet"] != o.wallet || m["action"] != "none" || m["created"] != false {
		t.Fatalf("init --json with a valid session: %v", m)
	}

	// logout, then init (as logout's fix says): a new session on the same account.
	revokedFile := t.TempDir() + "/session.json"
	b, err := os.ReadFile(d.SessionPath())
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(revokedFile, b, 0o600); err != nil {
		t.Fatal(err)
	}
	h.akOK(o.home, "logout")
	if r := h.cli(o.home, "list"); r.code != 3 || !strings.Contains(r.stderr, "agentkeys init") {
		t.Fatalf("list after logout: exit %d: %s", r.code, r.stderr)
	}
	out = h.akOK(o.home, "init", "--server", s.url)
	if !strings.Contains(out, "Logged in") || !strings.Contains(out, o.omni) || !strings.Contains(out, o.wallet) {
		t.Fatalf("init after logout:\n%s", out)
	}
	h.sessionWorks(o)
	if got := h.services(o); len(got) != 1 || !strings.HasPrefix(got[0], "openai") {
		t.Fatalf("the account's credentials after logging in again: %v", got)
	}
	// logout remembers the broker: a plain `init` logs back in to it.
	h.akOK(o.home, "logout")
	if m := h.initJSON(o.home); m["omni"] != o.omni || m["action"] != "logged_in" || m["created"] != false || m["server"] != s.url {
		t.Fatalf("init --json after logout: %v", m)
	}
	h.sessionWorks(o)

	// A revoked session (the file of a session since logged out): init logs in again.
	if err := os.WriteFile(d.SessionPath(), b, 0o600); err != nil {
		t.Fatal(err)
	}
	if r := h.cli(o.home, "list"); r.code != 3 || !strings.Contains(r.stderr, "REVOKED") {
		t.Fatalf("list with a revoked session: exit %d: %s", r.code, r.stderr)
	}
	revokedSID := sid()
	out = h.akOK(o.home, "init")
	if !strings.Contains(out, "Logged in") || !strings.Contains(out, o.omni) || sid() == revokedSID {
		t.Fatalf("init with a revoked session:\n%s", out)
	}
	h.sessionWorks(o)

	// --force keeps its meaning: a new session although the current one is valid.
	before = sid()
	if m := h.initJSON(o.home, "--force"); m["omni"] != o.omni || m["action"] != "logged_in" || sid() == before {
		t.Fatalf("init --force --json: %v (sid %s -> %s)", m, before, sid())
	}
	h.sessionWorks(o)
	// The account was never created twice: one account.created on the ledger.
	n := 0
	for _, e := range s.allEntries() {
		if e.Kind == "account.created" {
			n++
		}
	}
	if n != 1 {
		t.Fatalf("%d account.created entries, want 1", n)
	}
}

// TestInitAfterExpiry: an owner session that has expired is replaced by `init`,
// which logs in again with the same identity.
func TestInitAfterExpiry(t *testing.T) {
	h := newHarness(t)
	s := h.start(serverOpts{home: t.TempDir(), args: []string{"--session-ttl", "2s"}})
	o := h.akNewOwner(s)
	// Wait (bounded) until the broker itself refuses the session as expired.
	var r cliResult
	if !waitFor(agentTimeout, func() bool { r = h.cli(o.home, "whoami"); return r.code != 0 }) {
		t.Fatal("the 2s session did not expire")
	}
	if r.code != 3 || !strings.Contains(r.stderr, "expired") {
		t.Fatalf("whoami with an expired session: exit %d: %s", r.code, r.stderr)
	}
	var m map[string]any
	if err := json.Unmarshal([]byte(h.akOK(o.home, "init", "--json")), &m); err != nil {
		t.Fatal(err)
	}
	if m["omni"] != o.omni || m["action"] != "logged_in" {
		t.Fatalf("init --json with an expired session: %v", m)
	}
	// The new session works (within its 2s lifetime, checked straight away).
	sess, err := home.Dir(o.home).Session()
	if err != nil {
		t.Fatal(err)
	}
	w, err := s.client.WithToken(sess.Token).Whoami(context.Background())
	if err != nil || w.Omni != o.omni {
		t.Fatalf("the new session: %v %v", w, err)
	}
}

// TestInitSignsUpAfterRefusal: an identity whose sign-up was refused (no invite)
// has no account: the next init signs up (it does not try to log in).
func TestInitSignsUpAfterRefusal(t *testing.T) {
	h := newHarness(t)
	srvHome := t.TempDir()
	s := h.start(serverOpts{home: srvHome, args: []string{"--signup", "invite"}})
	alice := t.TempDir()
	if r := h.cli(alice, "init", "--server", s.url); r.code == 0 || !strings.Contains(r.stderr, "by invite only") {
		t.Fatalf("init without an invite: exit %d: %s", r.code, r.stderr)
	}
	inv := h.akOK(srvHome, "server", "invite", "--server", s.url, "--ttl", "1h")
	file := t.TempDir() + "/invite.txt"
	if err := os.WriteFile(file, []byte(inv), 0o600); err != nil {
		t.Fatal(err)
	}
	m := h.initJSON(alice, "--server", s.url, "--invite-file", file)
	if m["action"] != "created" || m["created"] != true || m["omni"] == "" || m["wallet"] == "" {
		t.Fatalf("init --json after a refused sign-up: %v", m)
	}
	o := akOwner{home: alice, omni: m["omni"].(string)}
	h.sessionWorks(o)
	// Logged out, it logs in again without an invite.
	h.akOK(alice, "logout")
	if m := h.initJSON(alice); m["action"] != "logged_in" || m["omni"] != o.omni {
		t.Fatalf("init --json after logout on an invite-only broker: %v", m)
	}
	h.sessionWorks(o)
}

// TestInitReloginRefusals: init never drops a session it could not check, and
// logging in again after logout keeps the broker's pinned platform key: a
// different broker at the same address is refused, not pinned anew.
func TestInitReloginRefusals(t *testing.T) {
	h := newHarness(t)
	s := h.start(serverOpts{home: t.TempDir()})
	o := h.akNewOwner(s)
	d := home.Dir(o.home)
	stored, err := os.ReadFile(d.SessionPath())
	if err != nil {
		t.Fatal(err)
	}
	if code := s.stop(os.Interrupt); code != 0 {
		t.Fatalf("server exit %d", code)
	}
	// The broker is unreachable: init cannot tell whether the session is valid,
	// so it fails and keeps it.
	if r := h.cli(o.home, "init"); r.code == 0 || !strings.Contains(r.stderr, "Error: ") {
		t.Fatalf("init with the broker down: exit %d: %s %s", r.code, r.stdout, r.stderr)
	}
	if b, _ := os.ReadFile(d.SessionPath()); string(b) != string(stored) {
		t.Fatal("init with the broker down changed the stored session")
	}
	// Back up at the same address, then logout: the token goes, the pin stays.
	s = h.start(serverOpts{home: s.opts.home, args: []string{"--listen", s.addr}})
	h.akOK(o.home, "logout")
	if sess, err := d.Session(); err != nil || sess.Token != "" || sess.SID != "" || sess.PlatformKey == "" || sess.Server != s.url {
		t.Fatalf("the session record after logout: %+v %v", sess, err)
	}
	if r := h.cli(o.home, "whoami"); r.code != 3 || !strings.Contains(r.stderr, "logged out") || !strings.Contains(r.stderr, "agentkeys init") {
		t.Fatalf("whoami after logout: exit %d: %s", r.code, r.stderr)
	}
	// Another broker (another platform key) at the same address after logout.
	if code := s.stop(os.Interrupt); code != 0 {
		t.Fatalf("server exit %d", code)
	}
	other := h.start(serverOpts{home: t.TempDir(), args: []string{"--listen", s.addr}})
	loggedOut, _ := os.ReadFile(d.SessionPath())
	r := h.cli(o.home, "init")
	if r.code == 0 || !strings.Contains(r.stderr, "attestation key changed") || !strings.Contains(r.stderr, "init --force") {
		t.Fatalf("init after logout against another platform: exit %d: %s %s", r.code, r.stdout, r.stderr)
	}
	if b, _ := os.ReadFile(d.SessionPath()); string(b) != string(loggedOut) {
		t.Fatal("the refused init changed the stored session")
	}
	for _, e := range other.allEntries() {
		if e.Kind == "account.created" || e.Kind == "session.issued" {
			t.Fatalf("the refused init wrote %s to the other broker's ledger", e.Kind)
		}
	}
	// --force re-pins on purpose; this broker has no account for the identity: sign-up.
	if m := h.initJSON(o.home, "--force"); m["action"] != "created" || m["omni"] != o.omni {
		t.Fatalf("init --force --json against the new platform: %v", m)
	}
}
