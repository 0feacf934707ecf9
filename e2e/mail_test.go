package e2e

import (
	"crypto/ed25519"
	"encoding/base64"
	"encoding/json"
	"strings"
	"testing"

	"github.com/agentkeys/agentkeys/internal/daemon"
	"github.com/agentkeys/agentkeys/internal/enclave"
)

type mailInbox struct {
	Address, Agent, Domain, Wallet string
	Live                           bool
	Grants                         []struct {
		Agent  string
		Rights []string
	}
}

func (h *harness) inboxes(o akOwner, args ...string) []mailInbox {
	h.t.Helper()
	var out struct{ Inboxes []mailInbox }
	if err := json.Unmarshal([]byte(h.akOK(o.home, append([]string{"inbox", "list", "--json"}, args...)...)), &out); err != nil {
		h.t.Fatal(err)
	}
	return out.Inboxes
}

// TestMailInboxes drives domains, inboxes and grants through the binary: the
// address comes from the agent's wallet, every change is on the owner's trail,
// and every refusal (another owner, an unknown or torn-down agent, an unknown
// or removed domain, a duplicate, an agent session) changes nothing.
func TestMailInboxes(t *testing.T) {
	h := newHarness(t)
	s := h.start(serverOpts{home: t.TempDir()})
	a, b := h.akNewOwner(s), h.akNewOwner(s)
	dhBot := h.pairAgent(s, a, "bot", "openai")
	h.pairAgent(s, a, "helper", "openai")
	h.pairAgent(s, b, "other", "openai")

	// Domains: one owner's while active.
	wantProblem(t, h.cli(a.home, "inbox", "create", "--agent", "bot"), 4, "NOT_FOUND", "no mail domain")
	wantProblem(t, h.cli(a.home, "domain", "add", "not a domain"), 2, "BAD_REQUEST", "not a domain name")
	var d struct{ Name, DKIMSelector, Status string }
	if err := json.Unmarshal([]byte(h.akOK(a.home, "domain", "add", "Agents.Example.com", "--json")), &d); err != nil || d.Name != "agents.example.com" || d.Status != "active" {
		t.Fatalf("domain add --json: %+v %v", d, err)
	}
	wantProblem(t, h.cli(a.home, "domain", "add", "agents.example.com"), 1, "CONFLICT", "already yours")
	wantProblem(t, h.cli(b.home, "domain", "add", "agents.example.com"), 1, "CONFLICT", "belongs to another account")
	wantProblem(t, h.cli(b.home, "domain", "remove", "agents.example.com"), 4, "NOT_FOUND", "no active mail domain")
	if out := h.akOK(b.home, "domain", "list"); !strings.Contains(out, "No mail domains") {
		t.Fatalf("B lists: %s", out)
	}
	h.akOK(b.home, "domain", "add", "b.example.com")

	// Inboxes: derived from the wallet, instant; refusals change nothing.
	wantProblem(t, h.cli(a.home, "inbox", "create", "--agent", "nobody"), 4, "NOT_FOUND", `no agent "nobody"`)
	wantProblem(t, h.cli(a.home, "inbox", "create", "--agent", "other"), 4, "NOT_FOUND", `no agent "other"`) // B's agent
	wantProblem(t, h.cli(a.home, "inbox", "create", "--agent", "bot", "--domain", "b.example.com"), 4, "NOT_FOUND", "no active mail domain")
	wantProblem(t, h.cli(a.home, "inbox", "create", "--agent", "bot", "--domain", "unknown.example.com"), 4, "NOT_FOUND", "no active mail domain")
	wantProblem(t, h.cli(a.home, "inbox", "create"), 2, "BAD_REQUEST", "agent")
	var in mailInbox
	if err := json.Unmarshal([]byte(h.akOK(a.home, "inbox", "create", "--agent", "bot", "--json")), &in); err != nil {
		t.Fatal(err)
	}
	sess, err := daemon.DirOf(dhBot).LoadSession()
	if err != nil {
		t.Fatal(err)
	}
	if want := "a" + strings.ToLower(sess.Wallet[2:14]) + "@agents.example.com"; in.Address != want || in.Agent != "bot" || !in.Live {
		t.Fatalf("inbox create: %+v, want address %s", in, want)
	}
	wantProblem(t, h.cli(a.home, "inbox", "create", "--agent", "bot"), 1, "CONFLICT", "already has inbox")
	wantProblem(t, h.cli(a.home, "domain", "remove", "agents.example.com"), 1, "CONFLICT", "still has inbox")

	// DNS: the first DKIM record is the enclave's key dkim/<domain>/v1 (the
	// second, k=rsa, TestMailSend checks); only the domain's owner gets them.
	var z struct {
		Domain, Zone string
		DKIM         []struct{ Selector, Alg, Public string }
	}
	if err := json.Unmarshal([]byte(h.akOK(a.home, "mail", "dns", "--domain", "agents.example.com", "--json")), &z); err != nil || len(z.DKIM) != 2 {
		t.Fatalf("mail dns --json: %+v %v", z, err)
	}
	pub, err := base64.StdEncoding.DecodeString(z.DKIM[0].Public)
	if err != nil || len(pub) != ed25519.PublicKeySize || z.DKIM[0].Selector != "ak1" || z.DKIM[0].Alg != "ed25519" {
		t.Fatalf("DKIM key %+v: %v", z.DKIM[0], err)
	}
	enc, err := enclave.Open(enclave.Config{Dir: s.opts.effectiveDataDir(), PlatformKeyFile: s.opts.platformKeyFile()})
	if err != nil {
		t.Fatal(err)
	}
	sig, err := enc.SignEd25519("dkim/agents.example.com/v1", []byte("header block"))
	enc.Close()
	if err != nil || !ed25519.Verify(pub, []byte("header block"), sig) {
		t.Fatalf("the published DKIM key is not the enclave's dkim/agents.example.com/v1: %v", err)
	}
	zone := h.akOK(a.home, "mail", "dns", "--domain", "agents.example.com", "--mx", "mx.example.net")
	for _, want := range []string{"@\tIN\tMX\t10 mx.example.net.\n", "ak1._domainkey\tIN\tTXT\t\"v=DKIM1; k=ed25519; p=" + z.DKIM[0].Public + "\"\n", "_dmarc\tIN\tTXT\t\"v=DMARC1; p=quarantine"} {
		if !strings.Contains(zone, want) {
			t.Errorf("mail dns lacks %q:\n%s", want, zone)
		}
	}
	wantProblem(t, h.cli(b.home, "mail", "dns", "--domain", "agents.example.com"), 4, "NOT_FOUND", "no active mail domain")
	wantProblem(t, h.cli(a.home, "mail", "dns", "--domain", "unknown.example.com"), 4, "NOT_FOUND", "no active mail domain")
	wantProblem(t, h.cli(a.home, "mail", "dns", "--domain", "agents.example.com", "--dmarc", "maybe"), 2, "BAD_REQUEST", "not a DMARC policy")

	// Grants: to the owner's own agents only.
	wantProblem(t, h.cli(a.home, "inbox", "grant", in.Address, "--agent", "other", "read"), 4, "NOT_FOUND", `no agent "other"`)
	wantProblem(t, h.cli(b.home, "inbox", "grant", in.Address, "--agent", "other", "read"), 4, "NOT_FOUND", "no inbox")
	wantProblem(t, h.cli(a.home, "inbox", "grant", in.Address, "--agent", "helper", "admin"), 2, "BAD_REQUEST", "not a right you can grant")
	wantProblem(t, h.cli(a.home, "inbox", "grant", in.Address, "--agent", "helper"), 2, "BAD_REQUEST", "one or two rights")
	h.akOK(a.home, "inbox", "grant", in.Address, "--agent", "helper", "read", "send")
	wantProblem(t, h.cli(a.home, "inbox", "grant", in.Address, "--agent", "helper", "read"), 1, "CONFLICT", "already holds read")
	out := h.akOK(a.home, "inbox", "revoke", in.Address, "--agent", "helper", "send", "--json")
	if !strings.Contains(out, `"rights":["read"]`) {
		t.Fatalf("revoke send --json: %s", out)
	}
	wantProblem(t, h.cli(a.home, "inbox", "revoke", in.Address, "--agent", "helper", "send"), 4, "NOT_FOUND", "holds no send")
	list := h.inboxes(a)
	if len(list) != 1 || len(list[0].Grants) != 2 || list[0].Grants[0].Agent != "bot" || strings.Join(list[0].Grants[0].Rights, ",") != "read,send,admin" ||
		list[0].Grants[1].Agent != "helper" || strings.Join(list[0].Grants[1].Rights, ",") != "read" {
		t.Fatalf("inbox list: %+v", list)
	}
	if l := h.inboxes(b); len(l) != 0 {
		t.Fatalf("B lists A's inbox: %+v", l)
	}

	// Nobody without a session lists anything.
	for _, path := range []string{"/v1/mail/domains", "/v1/mail/inboxes", "/v1/mail/domains/agents.example.com/dkim"} {
		if code, body := s.get(path); code != 401 {
			t.Errorf("anonymous GET %s: %d %s", path, code, body)
		}
	}

	// An agent session manages nothing.
	key, err := daemon.DecodeKey(sess.ProofKey)
	if err != nil {
		t.Fatal(err)
	}
	for _, path := range []string{"/v1/mail/domains", "/v1/mail/inboxes"} {
		if code, c := agentRequest(t, s, "POST", path, sess.Token, proofFor(t, key, "POST", s.url+path, sess.Token)); code != 403 || c != "DENIED" {
			t.Errorf("agent session POST %s: %d %s", path, code, c)
		}
	}

	// Delete: refused to another owner; then the domain can go.
	wantProblem(t, h.cli(b.home, "inbox", "delete", in.Address, "--yes"), 4, "NOT_FOUND", "no inbox")
	wantProblem(t, h.cli(a.home, "inbox", "delete", in.Address), 2, "BAD_REQUEST", "--yes")
	h.akOK(a.home, "inbox", "delete", in.Address, "--yes")
	if l := h.inboxes(a); len(l) != 0 {
		t.Fatalf("a deleted inbox is listed: %+v", l)
	}
	if l := h.inboxes(a, "--all"); len(l) != 1 || l[0].Live || len(l[0].Grants) != 0 {
		t.Fatalf("inbox list --all: %+v", l)
	}
	h.akOK(a.home, "domain", "remove", "agents.example.com")
	wantProblem(t, h.cli(a.home, "inbox", "create", "--agent", "bot", "--domain", "agents.example.com"), 4, "NOT_FOUND", "no active mail domain")
	wantProblem(t, h.cli(a.home, "mail", "dns", "--domain", "agents.example.com"), 4, "NOT_FOUND", "no active mail domain")
	h.akOK(b.home, "domain", "add", "agents.example.com") // given up: another owner may take it

	// Every change is on the owner's trail, and the chain verifies.
	var usage struct {
		Usage []struct{ Action, Service, Detail string }
	}
	if err := json.Unmarshal([]byte(h.akOK(a.home, "usage", "--service", "mail", "--json")), &usage); err != nil {
		t.Fatal(err)
	}
	var actions []string
	for _, r := range usage.Usage {
		actions = append(actions, r.Action)
	}
	if got, want := strings.Join(actions, " "), "domain.add inbox.create inbox.grant inbox.revoke inbox.delete domain.remove"; got != want {
		t.Fatalf("usage --service mail: %q, want %q", got, want)
	}
	h.auditOK(a.home, "--server", s.url)
}
