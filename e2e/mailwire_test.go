package e2e

import (
	"bytes"
	"encoding/json"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/agentkeys/agentkeys/internal/daemon"
	"github.com/agentkeys/agentkeys/internal/mailread"
)

// imapAddr is the IMAP address in a server's or edge's "mail edge listening" line.
func (s *server) imapAddr() string {
	s.h.t.Helper()
	l, err := s.waitLog(`"mail edge listening"`, startTimeout, msgIs("mail edge listening"))
	if err != nil || l.str("imap_addr") == "" {
		s.h.t.Fatalf("no imap_addr in the edge's log: %v %v", l, err)
	}
	return l.str("imap_addr")
}

// imaplibScript signs in to the edge's IMAP with Python's imaplib (not the
// project's client) and a token from the environment (never argv), prints the
// mailboxes LIST shows, one a line, then "--", then the raw bytes of MINE's
// messages; selecting OTHER must be refused.
const imaplibScript = `
import imaplib, os, sys
m = imaplib.IMAP4(os.environ["HOST"], int(os.environ["PORT"]))
tok = os.environ["TOKEN"]
m.authenticate("OAUTHBEARER", lambda _: ("n,,\x01auth=Bearer " + tok + "\x01\x01").encode())
typ, data = m.list()
assert typ == "OK", typ
for d in data:
    sys.stdout.write(d.decode().rsplit(" ", 1)[1].strip('"') + "\n")
sys.stdout.write("--\n")
typ, _ = m.select('"' + os.environ["OTHER"] + '"', readonly=True)
assert typ == "NO", ("another inbox", typ)
typ, _ = m.select('"' + os.environ["MINE"] + '"', readonly=True)
assert typ == "OK", typ
typ, data = m.uid("SEARCH", None, "ALL")
for uid in data[0].split():
    typ, d = m.uid("FETCH", uid, "(BODY.PEEK[])")
    assert typ == "OK", typ
    sys.stdout.buffer.write(d[0][1])
m.logout()
`

// imaplib runs imaplibScript against addr and returns the mailboxes listed
// and the messages' bytes.
func imaplib(t *testing.T, addr, token, mine, other string) ([]string, []byte) {
	t.Helper()
	py, err := exec.LookPath("python3")
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("python3 is not installed: the IMAP test needs it (scripts/test installs it: apt-get install python3)")
		}
		t.Skip("python3 is not installed")
	}
	host, port, _ := net.SplitHostPort(addr)
	cmd := exec.Command(py, "-c", imaplibScript)
	cmd.Env = append(os.Environ(), "HOST="+host, "PORT="+port, "TOKEN="+token, "MINE="+mine, "OTHER="+other)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("imaplib: %v\n%s", err, stderr.String())
	}
	list, msgs, _ := bytes.Cut(out, []byte("--\n"))
	return strings.Fields(string(list)), msgs
}

// TestMailAgentToAgent is issue 11's end to end, through the binary with the
// edge in the broker's process and nothing set up beyond domain add and inbox
// create (no scope entry, no --oidc-audience, no --mail-audience): agent A
// sends to agent B with email_send through the edge's submission port; B
// reads it through the edge's IMAP with its own token (mail.json names the
// inbox and the edge only), and so does Python's imaplib, which sees only B's
// inbox; both DKIM signatures verify with go-msgauth against the zone `mail
// dns` printed, and fail on a tampered body; a From without send is refused
// at dkim-sign and at submission.
func TestMailAgentToAgent(t *testing.T) {
	h := newHarness(t)
	const domain = edgeDomain
	s := h.start(serverOpts{home: t.TempDir(), args: []string{"--mail-domain", domain,
		"--smtp-listen", "127.0.0.1:0", "--submission-listen", "127.0.0.1:0", "--imap-listen", "127.0.0.1:0"}})
	_, subAddr := s.edgeAddrs()
	imapAt := s.imapAddr()
	store := filepath.Join(s.opts.effectiveDataDir(), "mail")
	o := h.akNewOwner(s)
	dhA := h.pairAgent(s, o, "alice", "openai")
	dhB := h.pairAgent(s, o, "bob", "openai")
	h.akOK(o.home, "domain", "add", domain)
	A, B := h.inboxOf(o, "alice"), h.inboxOf(o, "bob")
	txt := zoneTXT(t, h.akOK(o.home, "mail", "dns", "--domain", domain), domain)

	// A sends to B through its daemon's email_send (MCP): the token's
	// audience defaults to the From domain, which the edge accepts.
	csA, logA := h.mcpSession(dhA, "--mail-submission", subAddr, "--mail-domain", domain)
	const secretBody = "Your code is 493817. It expires in ten minutes."
	var sent daemon.SendResult
	text, isErr := mcpCall(t, csA, "email_send", map[string]any{"to": []string{B.Address}, "subject": "Hello Bob", "text": secretBody})
	if isErr {
		t.Fatalf("email_send: %s\n%s", text, logA.String())
	}
	mcpJSON(t, text, isErr, &sent)
	if sent.From != A.Address {
		t.Fatalf("sent from %q, want %q", sent.From, A.Address)
	}
	prefixB := strings.ToLower(B.Wallet) + "/" + B.Address + "/"
	stored := storedMail(t, store, prefixB)
	if len(stored) != 1 {
		t.Fatalf("B's inbox holds %d messages, want 1", len(stored))
	}
	var raw []byte
	for _, v := range stored {
		raw = v
	}

	// Both signatures pass against the zone; a tampered body fails both.
	vs := dkimResults(t, raw, txt)
	if len(vs) != 2 {
		t.Fatalf("%d DKIM signatures, want 2", len(vs))
	}
	for _, v := range vs {
		if v.Err != nil || v.Domain != domain {
			t.Fatalf("dkim=%v for %s (selector of %s)", v.Err, v.Domain, v.Identifier)
		}
	}
	tampered := bytes.Replace(raw, []byte("493817"), []byte("000000"), 1)
	for _, v := range dkimResults(t, tampered, txt) {
		if v.Err == nil {
			t.Fatal("a tampered body still verifies")
		}
	}

	// B reads it through the edge's IMAP with its own token: mail.json names
	// the inbox and the edge, nothing else.
	cfgB := daemon.MailConfig{Inbox: B.Address, IMAP: &daemon.MailIMAP{Addr: imapAt, TLS: mailread.TLSNone}}
	writeMailConfig(t, dhB, cfgB)
	csB, _ := h.mcpSession(dhB)
	var list daemon.EmailList
	text, isErr = mcpCall(t, csB, "email_list", map[string]any{})
	mcpJSON(t, text, isErr, &list)
	if len(list.Messages) != 1 || list.Messages[0].Subject != "Hello Bob" || !strings.Contains(list.Messages[0].From, A.Address) {
		t.Fatalf("B's email_list: %+v", list)
	}
	var msg mailread.Message
	text, isErr = mcpCall(t, csB, "email_get", map[string]any{"id": list.Messages[0].ID})
	mcpJSON(t, text, isErr, &msg)
	if !strings.Contains(msg.Text, secretBody) {
		t.Fatalf("B's email_get text: %q", msg.Text)
	}
	var code mailread.CodeResult
	text, isErr = mcpCall(t, csB, "email_wait_for_code", map[string]any{"timeout_seconds": 10})
	mcpJSON(t, text, isErr, &code)
	if code.Code != "493817" {
		t.Fatalf("B's email_wait_for_code: %+v", code)
	}
	// A, pointed at B's inbox, reads nothing of it.
	writeMailConfig(t, dhA, daemon.MailConfig{Inbox: B.Address, IMAP: &daemon.MailIMAP{Addr: imapAt, TLS: mailread.TLSNone, Mailbox: B.Address}})
	if text, isErr := mcpCall(t, csA, "email_list", map[string]any{}); !isErr || strings.Contains(text, "Hello Bob") {
		t.Fatalf("A listed B's inbox: %q", text)
	}

	// Python's imaplib with B's token: LIST shows B's inbox only, A's is
	// refused, and the message is the stored bytes.
	tokB := strings.TrimSpace(h.akOK(dhB, "daemon", "oidc-token", "--audience", domain))
	boxes, got := imaplib(t, imapAt, tokB, B.Address, A.Address)
	if len(boxes) != 1 || boxes[0] != B.Address {
		t.Fatalf("imaplib LIST: %q, want only %s", boxes, B.Address)
	}
	if !bytes.Equal(got, raw) {
		t.Fatalf("imaplib fetched %d bytes, not the stored message (%d bytes)", len(got), len(raw))
	}

	// A From without send: refused at dkim-sign (email_send as B) and at
	// submission (A's token, B's address as the envelope sender).
	text, isErr = mcpCall(t, csA, "email_send", map[string]any{"from": B.Address, "to": []string{A.Address}, "subject": "spoof", "text": "x"})
	if !isErr || !strings.HasPrefix(text, "DENIED:") {
		t.Fatalf("email_send from B's inbox: %q", text)
	}
	tokA := strings.TrimSpace(h.akOK(dhA, "daemon", "oidc-token", "--audience", domain))
	if n, m := smtpSend(t, subAddr, tokA, B.Address, []string{A.Address}, edgeMessage(B.Address, A.Address, "spoof", "x")); n != 550 {
		t.Fatalf("submission from B's inbox with A's token: %d %s", n, m)
	}
	if len(storedMail(t, store, strings.ToLower(A.Wallet)+"/")) != 0 {
		t.Fatal("a refused message reached A's inbox")
	}
	// An agent without an inbox on the domain mints no token for it.
	dhC := h.pairAgent(s, o, "carol", "openai")
	if r := h.cli(dhC, "daemon", "oidc-token", "--audience", domain); r.code == 0 || !strings.Contains(r.stderr, "DENIED") {
		t.Fatalf("an agent without an inbox minted a token for %s: %d %s", domain, r.code, r.stderr)
	}
	// Nothing logged the body or a token.
	if l := logA.String(); strings.Contains(l, "493817") || strings.Contains(l, tokA) {
		t.Fatal("A's daemon logged the body or its token")
	}
	b, _ := json.Marshal(list)
	if strings.Contains(s.stderr.String(), "493817") || strings.Contains(s.stderr.String(), tokB) {
		t.Fatalf("the server logged the body or a token (list %s)", b)
	}
}
