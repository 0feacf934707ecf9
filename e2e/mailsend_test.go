package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"

	gooidc "github.com/coreos/go-oidc/v3/oidc"
	"github.com/emersion/go-msgauth/dkim"
	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"

	"github.com/agentkeys/agentkeys/internal/apiv1"
	"github.com/agentkeys/agentkeys/internal/client"
	"github.com/agentkeys/agentkeys/internal/dkimsig"
	"github.com/agentkeys/agentkeys/internal/problem"
)

const mailAudience = "agentkeys-mail"

// submission is a go-smtp submission server standing in for the mail edge's:
// it takes AUTH OAUTHBEARER only, verifies the identity token as a relying
// party does (signature against the broker's JWKS, issuer, audience, expiry)
// and keeps each message with the token's subject.
type submission struct {
	addr     string
	verifier *gooidc.IDTokenVerifier
	mu       sync.Mutex
	got      []submitted
}

type submitted struct {
	subject, user, from string
	to                  []string
	raw                 []byte
}

func newSubmission(t *testing.T, issuer string) *submission {
	prov, err := gooidc.NewProvider(context.Background(), issuer)
	if err != nil {
		t.Fatalf("go-oidc discovery: %v", err)
	}
	sub := &submission{verifier: prov.Verifier(&gooidc.Config{ClientID: mailAudience})}
	srv := smtp.NewServer(smtp.BackendFunc(func(*smtp.Conn) (smtp.Session, error) { return &subSession{s: sub}, nil }))
	srv.Domain, srv.AllowInsecureAuth = "localhost", true
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	sub.addr = ln.Addr().String()
	return sub
}

func (s *submission) messages() []submitted {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]submitted(nil), s.got...)
}

type subSession struct {
	s       *submission
	subject string
	user    string
	m       submitted
}

func (x *subSession) AuthMechanisms() []string { return []string{sasl.OAuthBearer} }
func (x *subSession) Auth(string) (sasl.Server, error) {
	return sasl.NewOAuthBearerServer(func(o sasl.OAuthBearerOptions) *sasl.OAuthBearerError {
		tok, err := x.s.verifier.Verify(context.Background(), o.Token)
		if err != nil {
			return &sasl.OAuthBearerError{Status: "invalid_token"}
		}
		x.subject, x.user = tok.Subject, o.Username
		return nil
	}), nil
}
func (x *subSession) Mail(from string, _ *smtp.MailOptions) error {
	if x.subject == "" {
		return &smtp.SMTPError{Code: 530, EnhancedCode: smtp.EnhancedCode{5, 7, 0}, Message: "authentication required"}
	}
	x.m = submitted{subject: x.subject, user: x.user, from: from}
	return nil
}
func (x *subSession) Rcpt(to string, _ *smtp.RcptOptions) error {
	x.m.to = append(x.m.to, to)
	return nil
}
func (x *subSession) Data(r io.Reader) error {
	b, err := io.ReadAll(r)
	if err != nil {
		return err
	}
	x.m.raw = b
	x.s.mu.Lock()
	x.s.got = append(x.s.got, x.m)
	x.s.mu.Unlock()
	return nil
}
func (x *subSession) Reset()        {}
func (x *subSession) Logout() error { return nil }

// zoneTXT reads the TXT records of a BIND zone as `mail dns` prints it, keyed
// by full name, the character-strings of each joined (as a resolver does).
func zoneTXT(t *testing.T, zone, domain string) map[string]string {
	t.Helper()
	out := map[string]string{}
	re := regexp.MustCompile(`"([^"]*)"`)
	for l := range strings.SplitSeq(zone, "\n") {
		f := strings.SplitN(l, "\t", 4)
		if len(f) != 4 || f[2] != "TXT" {
			continue
		}
		var s strings.Builder
		for _, m := range re.FindAllStringSubmatch(f[3], -1) {
			s.WriteString(m[1])
		}
		name := domain
		if f[0] != "@" {
			name = f[0] + "." + domain
		}
		out[name] = s.String()
	}
	return out
}

func dkimResults(t *testing.T, msg []byte, txt map[string]string) []*dkim.Verification {
	t.Helper()
	vs, err := dkim.VerifyWithOptions(bytes.NewReader(msg), &dkim.VerifyOptions{LookupTXT: func(name string) ([]string, error) {
		if v, ok := txt[name]; ok {
			return []string{v}, nil
		}
		return nil, errors.New("no such record")
	}})
	if err != nil {
		t.Fatal(err)
	}
	return vs
}

// sendViaSocket posts one message to a daemon socket's POST /mail/send.
func sendViaSocket(t *testing.T, hc *http.Client, body any) (int, map[string]any) {
	t.Helper()
	b, _ := json.Marshal(body)
	resp, err := hc.Post("http://agentkeys/mail/send", "application/json", bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var m map[string]any
	json.NewDecoder(resp.Body).Decode(&m)
	return resp.StatusCode, m
}

// dkimSignAs calls POST /v1/mail/dkim-sign with the paired daemon dh's
// session and returns the problem code ("" on success).
func dkimSignAs(t *testing.T, s *server, dh string, r apiv1.DKIMSignRequest) (*apiv1.DKIMSignResult, string) {
	t.Helper()
	sess, key := agentSession(t, dh)
	c, err := client.New(s.url)
	if err != nil {
		t.Fatal(err)
	}
	res, err := c.WithAgent(sess.Token, key).DKIMSign(context.Background(), r)
	if err != nil {
		return nil, string(problem.As(err).Code)
	}
	return res, ""
}

// TestMailSend: agent A sends through its daemon (socket), the message
// reaches the submission server authenticated by an identity token for the
// edge, and both DKIM signatures (Ed25519 and RSA) verify with go-msgauth
// against the zone `mail dns` printed; a tampered body fails. dkim-sign
// refuses a From without send: another agent's inbox, another owner's agent,
// a revoked grant, a deleted inbox; and bad or oversize input.
func TestMailSend(t *testing.T) {
	h := newHarness(t)
	s := h.start(serverOpts{home: t.TempDir(), args: []string{"--oidc-audience", mailAudience}})
	a, b := h.akNewOwner(s), h.akNewOwner(s)
	dhBot := h.pairAgent(s, a, "bot", "oidc:"+mailAudience)
	dhHelper := h.pairAgent(s, a, "helper", "oidc:"+mailAudience)
	dhOther := h.pairAgent(s, b, "other", "oidc:"+mailAudience)
	const domain = "agents.example.com"
	h.akOK(a.home, "domain", "add", domain)
	var bot, helper struct{ Address string }
	json.Unmarshal([]byte(h.akOK(a.home, "inbox", "create", "--agent", "bot", "--json")), &bot)
	json.Unmarshal([]byte(h.akOK(a.home, "inbox", "create", "--agent", "helper", "--json")), &helper)

	// The zone carries both keys, under distinct selectors.
	var z struct {
		Zone string
		DKIM []struct{ Selector, Alg, Public string }
	}
	if err := json.Unmarshal([]byte(h.akOK(a.home, "mail", "dns", "--domain", domain, "--json")), &z); err != nil || len(z.DKIM) != 2 ||
		z.DKIM[0].Alg != "ed25519" || z.DKIM[1].Alg != "rsa" || z.DKIM[0].Selector == z.DKIM[1].Selector {
		t.Fatalf("mail dns --json: %+v %v", z.DKIM, err)
	}
	txt := zoneTXT(t, h.akOK(a.home, "mail", "dns", "--domain", domain), domain)
	for _, k := range z.DKIM {
		if want := "v=DKIM1; k=" + k.Alg + "; p=" + k.Public; txt[k.Selector+"._domainkey."+domain] != want {
			t.Fatalf("zone record of %s: %q, want %q", k.Selector, txt[k.Selector+"._domainkey."+domain], want)
		}
	}

	// A sends through its daemon's socket.
	sub := newSubmission(t, s.url)
	sock := filepath.Join(t.TempDir(), "ak.sock")
	srv := exec.Command(bin, "daemon", "serve", "--socket", sock, "--mail-submission", sub.addr, "--mail-domain", domain, "--mail-audience", mailAudience)
	srv.Env = childEnv("AGENTKEYS_HOME=" + dhBot)
	srvLog := h.newOutput()
	srv.Stdout, srv.Stderr = srvLog, srvLog
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Process.Kill(); srv.Wait() })
	if !waitFor(agentTimeout, func() bool { fi, err := os.Stat(sock); return err == nil && fi.Mode()&os.ModeSocket != 0 }) {
		t.Fatalf("daemon serve made no socket: %s", srvLog.String())
	}
	hc := unixClient(sock)
	const secretBody = "Your code is 493817.  Keep it  to yourself."
	code, res := sendViaSocket(t, hc, map[string]any{"to": []string{helper.Address, "someone@example.net"}, "subject": "Hello from bot",
		"text": secretBody, "html": "<p>Your code is <b>493817</b>.</p>"})
	if code != 200 || res["from"] != bot.Address {
		t.Fatalf("POST /mail/send: %d %v\n%s", code, res, srvLog.String())
	}
	got := sub.messages()
	if len(got) != 1 {
		t.Fatalf("the submission server got %d messages", len(got))
	}
	m := got[0]
	sess, _ := agentSession(t, dhBot)
	if !strings.HasSuffix(m.subject, ":agent:"+strings.ToLower(sess.Wallet)) || m.user != bot.Address || m.from != bot.Address || strings.Join(m.to, ",") != helper.Address+",someone@example.net" {
		t.Fatalf("submission: token subject %q (want bot's wallet %s), user %q, from %q, to %v", m.subject, sess.Wallet, m.user, m.from, m.to)
	}
	// dkim=pass for both: each signature verifies on its own record alone.
	for _, k := range z.DKIM {
		name := k.Selector + "._domainkey." + domain
		var pass int
		for _, v := range dkimResults(t, m.raw, map[string]string{name: txt[name]}) {
			if v.Err == nil && v.Domain == domain {
				pass++
			}
		}
		if pass != 1 {
			t.Fatalf("k=%s: %d signatures pass, want 1\n%s", k.Alg, pass, m.raw)
		}
	}
	if vs := dkimResults(t, m.raw, txt); len(vs) != 2 || vs[0].Err != nil || vs[1].Err != nil {
		t.Fatalf("dkim: %+v", vs)
	}
	tampered := bytes.Replace(m.raw, []byte("Hello from bot"), []byte("Hello from bob"), 1)
	tampered = bytes.Replace(tampered, []byte("493817"), []byte("000000"), 1)
	for _, v := range dkimResults(t, tampered, txt) {
		if v.Err == nil {
			t.Fatalf("a tampered message still verifies: %+v", v)
		}
	}
	// The same through the MCP tool of `daemon mcp`.
	cs, mcpLog := h.mcpSession(dhBot, "--mail-submission", sub.addr, "--mail-domain", domain, "--mail-audience", mailAudience)
	text, isErr := mcpCall(t, cs, "email_send", map[string]any{"to": []any{"someone@example.net"}, "subject": "via MCP", "text": "hello"})
	if isErr || !strings.Contains(text, `"from":"`+bot.Address+`"`) {
		t.Fatalf("email_send: error=%v %s\n%s", isErr, text, mcpLog.String())
	}
	if got = sub.messages(); len(got) != 2 {
		t.Fatalf("the submission server got %d messages", len(got))
	}
	if vs := dkimResults(t, got[1].raw, txt); len(vs) != 2 || vs[0].Err != nil || vs[1].Err != nil {
		t.Fatalf("email_send's message: %+v", vs)
	}
	text, isErr = mcpCall(t, cs, "email_send", map[string]any{"from": helper.Address, "to": []any{"someone@example.net"}, "subject": "s", "text": "t"})
	if !isErr || !strings.HasPrefix(text, "DENIED:") {
		t.Fatalf("email_send from helper's inbox: error=%v %s", isErr, text)
	}

	// The signing is on the owner's trail; the body is nowhere in the ledger.
	usage := h.akOK(a.home, "usage", "--service", "mail", "--json")
	if !strings.Contains(usage, `"action":"mail.dkim.sign"`) || !strings.Contains(usage, bot.Address) {
		t.Fatalf("usage lacks the signing: %s", usage)
	}
	filepath.WalkDir(s.opts.effectiveDataDir(), func(p string, d os.DirEntry, err error) error {
		if b, _ := os.ReadFile(p); err == nil && !d.IsDir() && bytes.Contains(b, []byte("493817")) {
			t.Errorf("the message body reached the server: %s", p)
		}
		return nil
	})

	// From without send, refused at dkim-sign.
	block := func(from string) apiv1.DKIMSignRequest {
		return apiv1.DKIMSignRequest{Headers: "from:" + from + "\r\nsubject:hi\r\n", BodyHash: dkimsig.BodyHash([]byte("hi\r\n"))}
	}
	if _, c := dkimSignAs(t, s, dhHelper, block(bot.Address)); c != "DENIED" {
		t.Errorf("helper signs as bot's inbox: %q", c)
	}
	if _, c := dkimSignAs(t, s, dhOther, block(bot.Address)); c != "DENIED" {
		t.Errorf("another owner's agent signs as bot's inbox: %q", c)
	}
	h.akOK(a.home, "inbox", "grant", bot.Address, "--agent", "helper", "send")
	if r, c := dkimSignAs(t, s, dhHelper, block(bot.Address)); c != "" || r.From != bot.Address || len(r.Signatures) != 2 {
		t.Errorf("helper granted send: %q %+v", c, r)
	}
	h.akOK(a.home, "inbox", "revoke", bot.Address, "--agent", "helper", "send")
	if _, c := dkimSignAs(t, s, dhHelper, block(bot.Address)); c != "DENIED" {
		t.Errorf("helper after the revoke: %q", c)
	}
	if _, c := dkimSignAs(t, s, dhHelper, block(helper.Address)); c != "" {
		t.Errorf("helper signs as its own inbox: %q", c)
	}
	h.akOK(a.home, "inbox", "delete", helper.Address, "--yes")
	if _, c := dkimSignAs(t, s, dhHelper, block(helper.Address)); c != "DENIED" {
		t.Errorf("helper signs as its deleted inbox: %q", c)
	}
	for name, r := range map[string]apiv1.DKIMSignRequest{
		"oversize block": {Headers: "from:" + bot.Address + "\r\nsubject:" + strings.Repeat("x", dkimsig.MaxBlock) + "\r\n", BodyHash: block("").BodyHash},
		"bad body hash":  {Headers: block(bot.Address).Headers, BodyHash: "not-a-hash"},
		"not canonical":  {Headers: "From: " + bot.Address + "\r\n", BodyHash: block("").BodyHash},
		"two From":       {Headers: "from:" + bot.Address + "\r\nfrom:x@example.com\r\n", BodyHash: block("").BodyHash},
	} {
		if _, c := dkimSignAs(t, s, dhBot, r); c != "BAD_REQUEST" {
			t.Errorf("%s: %q", name, c)
		}
	}
	// The daemon passes the refusal on; nothing reaches the submission server.
	code, res = sendViaSocket(t, hc, map[string]any{"from": helper.Address, "to": []string{"x@example.net"}, "subject": "s", "text": "t"})
	if e, _ := res["error"].(map[string]any); code != http.StatusForbidden || e["code"] != "DENIED" {
		t.Errorf("send from another agent's inbox: %d %v", code, res)
	}
	code, res = sendViaSocket(t, hc, map[string]any{"to": []string{}, "subject": "s", "text": "t"})
	if e, _ := res["error"].(map[string]any); code != http.StatusBadRequest || e["code"] != "BAD_REQUEST" {
		t.Errorf("send to nobody: %d %v", code, res)
	}
	if n := len(sub.messages()); n != 2 {
		t.Errorf("the submission server got %d messages, want the two sent", n)
	}
	// Refusals are on the trail too, and the chain verifies.
	if usage := h.akOK(a.home, "usage", "--service", "mail", "--json"); !strings.Contains(usage, `"result":"denied"`) {
		t.Errorf("usage lacks the refusals: %s", usage)
	}
	h.auditOK(a.home, "--server", s.url)
}

// TestMailSignRateAndRestart: each signing is a ledger entry, so an agent
// signs at most --mint-rate messages per window; the next is RATE_LIMITED and
// writes nothing. The RSA key lives on the ledger only: after a restart the
// same key is published and signs (seed + ledger recover it).
func TestMailSignRateAndRestart(t *testing.T) {
	h := newHarness(t)
	s := h.start(serverOpts{home: t.TempDir(), args: []string{"--mint-rate", "3/1h"}})
	a := h.akNewOwner(s)
	dh := h.pairAgent(s, a, "bot", "openai")
	const domain = "agents.example.com"
	h.akOK(a.home, "domain", "add", domain)
	var in struct{ Address string }
	json.Unmarshal([]byte(h.akOK(a.home, "inbox", "create", "--agent", "bot", "--json")), &in)
	r := apiv1.DKIMSignRequest{Headers: "from:" + in.Address + "\r\n", BodyHash: dkimsig.BodyHash(nil)}
	for i := range 3 {
		if _, c := dkimSignAs(t, s, dh, r); c != "" {
			t.Fatalf("signing %d: %s", i+1, c)
		}
	}
	for range 2 {
		if _, c := dkimSignAs(t, s, dh, r); c != "RATE_LIMITED" {
			t.Fatalf("a signing past the limit: %q", c)
		}
	}
	var usage struct {
		Usage []struct{ Action, Result, Detail string }
	}
	json.Unmarshal([]byte(h.akOK(a.home, "usage", "--service", "mail", "--json")), &usage)
	var signs, limited int
	for _, u := range usage.Usage {
		switch {
		case u.Action == "mail.dkim.sign" && u.Result == "ok":
			signs++
		case u.Action == "mail.dkim.sign" && u.Result == "denied" && strings.HasSuffix(u.Detail, "rate_limited"):
			limited++
		}
	}
	if signs != 3 || limited != 1 {
		t.Fatalf("%d signings and %d rate refusals on the trail, want 3 and 1 (the first in the window)", signs, limited)
	}

	zone := h.akOK(a.home, "mail", "dns", "--domain", domain)
	if code := s.stop(syscall.SIGTERM); code != 0 {
		t.Fatalf("server exit %d", code)
	}
	s = h.start(serverOpts{home: s.opts.home, args: []string{"--listen", s.addr}})
	if again := h.akOK(a.home, "mail", "dns", "--domain", domain); again != zone {
		t.Fatalf("the zone changed across a restart:\n%s\n%s", zone, again)
	}
	res, c := dkimSignAs(t, s, dh, r)
	if c != "" {
		t.Fatalf("signing after the restart: %s", c)
	}
	var msg bytes.Buffer
	for _, sig := range res.Signatures {
		msg.WriteString("DKIM-Signature: " + sig.Header + "\r\n")
	}
	msg.WriteString("From: " + in.Address + "\r\n\r\n")
	vs := dkimResults(t, msg.Bytes(), zoneTXT(t, zone, domain))
	if len(vs) != 2 || vs[0].Err != nil || vs[1].Err != nil {
		t.Fatalf("signatures after the restart against the zone printed before: %+v", vs)
	}
}
