package e2e

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	gooidc "github.com/coreos/go-oidc/v3/oidc"

	"github.com/agentkeys/agentkeys/internal/apiv1"
	"github.com/agentkeys/agentkeys/internal/blobstore/s3store"
	"github.com/agentkeys/agentkeys/internal/daemon"
	"github.com/agentkeys/agentkeys/internal/enclave"
	"github.com/agentkeys/agentkeys/internal/mail"
	"github.com/agentkeys/agentkeys/internal/mailread"
	"github.com/agentkeys/agentkeys/internal/mailread/dovecottest"
	"github.com/agentkeys/agentkeys/internal/mailread/mailreadtest"
	"github.com/agentkeys/agentkeys/internal/problem"
)

// writeMailConfig writes a daemon's mail.json.
func writeMailConfig(t *testing.T, daemonHome string, cfg daemon.MailConfig) {
	t.Helper()
	b, _ := json.Marshal(cfg)
	if err := os.WriteFile(daemon.DirOf(daemonHome).MailConfigPath(), b, 0o600); err != nil {
		t.Fatal(err)
	}
}

// codeMail is a sign-up confirmation as services send it: HTML only, with CSS
// colours of six digits before the code.
func codeMail(to, code string) []byte {
	return []byte("From: Service <noreply@service.test>\r\nTo: " + to + "\r\nSubject: Confirm your account\r\n" +
		"Date: " + time.Now().UTC().Format(time.RFC1123Z) + "\r\nMIME-Version: 1.0\r\nContent-Type: text/html; charset=utf-8\r\n\r\n" +
		`<html><head><style>p{color:#123456}</style></head><body style="background:#654321">` +
		`<p>Welcome!</p><p>Your verification code is <b style="color:#111111">` + code + `</b></p></body></html>` + "\r\n")
}

func mcpJSON(t *testing.T, text string, isErr bool, v any) {
	t.Helper()
	if isErr {
		t.Fatalf("tool error: %s", text)
	}
	if err := json.Unmarshal([]byte(text), v); err != nil {
		t.Fatalf("tool result %q: %v", text, err)
	}
}

// TestMailReadIMAPAppPassword: the quick path for an existing mailbox. The
// owner stores the mailbox's app password in the vault; the agent's daemon
// config names it (never argv); the daemon reads the mailbox over IMAP on a
// real Dovecot and finds the code in an HTML mail, not the CSS colours. An
// agent whose scope lacks the credential reads nothing.
func TestMailReadIMAPAppPassword(t *testing.T) {
	h := newHarness(t)
	s := h.start(serverOpts{home: t.TempDir()})
	o := h.akNewOwner(s)
	dc := dovecottest.Start(t)
	user, pw := dc.AddUser(t)
	h.akStore(o, "imap-work", pw)
	dh := h.pairAgent(s, o, "mailer", "imap-work")
	cfg := daemon.MailConfig{IMAP: &daemon.MailIMAP{Addr: dc.Addr, TLS: mailread.TLSNone, Username: user, Credential: "imap-work"}}
	writeMailConfig(t, dh, cfg)
	cs, log := h.mcpSession(dh)

	dc.Deliver(t, user, []byte("From: news@other.test\r\nSubject: Weekly news\r\n\r\nNothing to see, call 555-123456.\r\n"), time.Now())
	go func() {
		time.Sleep(time.Second)
		dc.Deliver(t, user, codeMail(user+"@example.test", "736204"), time.Now())
	}()
	var found mailread.CodeResult
	text, isErr := mcpCall(t, cs, "email_wait_for_code", map[string]any{"from": "service.test", "timeout_seconds": 30})
	mcpJSON(t, text, isErr, &found)
	if found.Code != "736204" || found.From != "noreply@service.test" || found.Subject != "Confirm your account" {
		t.Fatalf("email_wait_for_code: %+v", found)
	}
	var list daemon.EmailList
	text, isErr = mcpCall(t, cs, "email_list", map[string]any{})
	mcpJSON(t, text, isErr, &list)
	if len(list.Messages) != 2 || list.Messages[1].ID != found.ID || !list.Messages[1].Seen || list.Messages[0].Seen || list.Messages[0].Subject != "Weekly news" {
		t.Fatalf("email_list: %+v", list)
	}
	var msg mailread.Message
	text, isErr = mcpCall(t, cs, "email_get", map[string]any{"id": found.ID})
	mcpJSON(t, text, isErr, &msg)
	if !strings.Contains(msg.HTMLText, "Your verification code is 736204") || strings.Contains(msg.HTMLText, "#") {
		t.Fatalf("email_get html_text: %q", msg.HTMLText)
	}
	var mk mailread.Mark
	text, isErr = mcpCall(t, cs, "email_mark", map[string]any{"id": found.ID, "seen": false, "labels": []string{"signup"}})
	mcpJSON(t, text, isErr, &mk)
	if mk.Seen || len(mk.Labels) != 1 {
		t.Fatalf("email_mark: %+v", mk)
	}
	// the daemon's log names ids and counts, never a code or the password
	if l := log.String(); strings.Contains(l, "736204") || strings.Contains(l, pw) {
		t.Fatalf("the daemon logged the code or the password:\n%s", l)
	}
	for _, c := range []struct {
		tool string
		args map[string]any
	}{
		{"email_get", map[string]any{"id": "../../etc/passwd"}},
		{"email_mark", map[string]any{"id": found.ID}},
		{"email_mark", map[string]any{"id": found.ID, "labels": []string{"Not A Label"}}},
		{"email_wait_for_code", map[string]any{"timeout_seconds": 601}},
		{"email_list", map[string]any{"since": "yesterday"}},
	} {
		if text, isErr := mcpCall(t, cs, c.tool, c.args); !isErr || !strings.HasPrefix(text, "BAD_REQUEST:") {
			t.Errorf("%s %v: %q, want BAD_REQUEST", c.tool, c.args, text)
		}
	}

	// the same through the socket, for non-MCP tools (daemon serve; SocketClient)
	sock := filepath.Join(t.TempDir(), "d.sock")
	srv := exec.Command(bin, "daemon", "serve", "--socket", sock)
	srv.Env = childEnv("AGENTKEYS_HOME=" + dh)
	srv.Stdout, srv.Stderr = h.newOutput(), h.newOutput()
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Process.Signal(os.Interrupt); srv.Wait() })
	if !waitFor(agentTimeout, func() bool { _, err := os.Stat(sock); return err == nil }) {
		t.Fatal("daemon serve made no socket")
	}
	sc := daemon.NewSocketClient(sock)
	ctx := context.Background()
	if l, err := sc.EmailList(ctx, found.Received, 0); err != nil || len(l.Messages) != 1 || l.Messages[0].ID != found.ID || len(l.Messages[0].Labels) != 1 {
		t.Fatalf("socket email list: %+v %v", l, err)
	}
	if m, err := sc.EmailGet(ctx, found.ID); err != nil || m.Subject != "Confirm your account" {
		t.Fatalf("socket email get: %+v %v", m, err)
	}
	seen := true
	if mk, err := sc.EmailMark(ctx, found.ID, daemon.MarkRequest{Seen: &seen}); err != nil || !mk.Seen || len(mk.Labels) != 1 {
		t.Fatalf("socket email mark: %+v %v", mk, err)
	}
	go func() {
		time.Sleep(time.Second)
		dc.Deliver(t, user, codeMail(user+"@example.test", "246810"), time.Now())
	}()
	if r, err := sc.EmailWaitForCode(ctx, mailread.Query{Subject: "confirm", Timeout: 30 * time.Second}); err != nil || r.Code != "246810" {
		t.Fatalf("socket email code: %+v %v", r, err)
	}
	if _, err := sc.EmailWaitForCode(ctx, mailread.Query{Subject: "confirm", Timeout: time.Second}); problem.As(err).Code != problem.NotFound || !strings.Contains(problem.As(err).Fix, "timeout") {
		t.Fatalf("socket email code, nothing new: %v", err)
	}
	if _, err := sc.EmailMark(ctx, found.ID, daemon.MarkRequest{}); problem.As(err).Code != problem.BadRequest {
		t.Fatalf("socket mark without a change: %v", err)
	}

	// another agent of the owner, its scope without the credential, pointed at
	// the same mailbox: the vault refuses it the password
	other := h.pairAgent(s, o, "nosy", "openai")
	writeMailConfig(t, other, cfg)
	cs2, _ := h.mcpSession(other)
	if text, isErr := mcpCall(t, cs2, "email_list", map[string]any{}); !isErr || !strings.HasPrefix(text, "DENIED:") && !strings.HasPrefix(text, "NOT_FOUND:") {
		t.Fatalf("an agent without the credential listed the mailbox: %q", text)
	}
	// and a daemon without a mail config says how to make one
	cs3, _ := h.mcpSession(h.pairAgent(s, o, "plain", "openai"))
	if text, isErr := mcpCall(t, cs3, "email_list", map[string]any{}); !isErr || !strings.HasPrefix(text, "NOT_FOUND:") || !strings.Contains(text, "mail.json") {
		t.Fatalf("no mail config: %q", text)
	}
}

// edgeKey is the key the mail edge writes a message under.
func edgeKey(prefix string, raw []byte, at time.Time) string {
	h := sha256.Sum256(raw)
	return fmt.Sprintf("%s%019d-%x.eml", prefix, at.UnixNano(), h[:4])
}

// TestMailReadSeaweedFS is the S3 read path on a real S3+STS server: each
// daemon reads its own inbox prefix directly with STS credentials from its
// own identity token (no broker, no edge on the path), with the policies
// `oidc register aws` prints; A is refused B's prefix, and a token without
// the tag claim reads nothing.
func TestMailReadSeaweedFS(t *testing.T) {
	h := newHarness(t)
	s := h.start(serverOpts{home: t.TempDir(), args: []string{"--oidc-audience", weedAudience}})
	o := h.akNewOwner(s)
	A := h.oidcAgent(s, o, "alice", "oidc:"+weedAudience)
	B := h.oidcAgent(s, o, "bob", "oidc:"+weedAudience)
	doc := h.registerAWS(o.home, s.url)
	w := h.startWeed(&doc, s.url)
	const domain = "mail.example.test"
	addrA, addrB := mail.Address(A.wallet, domain), mail.Address(B.wallet, domain)
	prefA, prefB := mailread.Prefix(A.wallet, addrA), mailread.Prefix(B.wallet, addrB)
	deliver := func(prefix string, raw []byte) string { // as the edge: raw, under the key format
		k := edgeKey(prefix, raw, time.Now())
		if err := w.put(t, w.admin, k, string(raw)); err != nil {
			t.Fatalf("admin put %s: %v", k, err)
		}
		return k
	}
	deliver(prefA, []byte("From: news@other.test\r\nSubject: Hello A\r\n\r\nplain text\r\n"))
	keyB := deliver(prefB, codeMail(addrB, "555111"))
	for _, a := range []struct {
		home, addr string
	}{{A.home, addrA}, {B.home, addrB}} {
		writeMailConfig(t, a.home, daemon.MailConfig{Inbox: a.addr, S3: &daemon.MailS3{Bucket: w.bucket, Endpoint: w.endpoint, PathStyle: true, RoleARN: w.roleARN}})
	}
	cs, _ := h.mcpSession(A.home, "--sts-endpoint", w.endpoint)
	var list daemon.EmailList
	text, isErr := mcpCall(t, cs, "email_list", map[string]any{})
	mcpJSON(t, text, isErr, &list)
	if len(list.Messages) != 1 || list.Messages[0].Subject != "Hello A" {
		t.Fatalf("A's email_list: %+v", list)
	}
	landed := make(chan time.Time, 1)
	go func() {
		time.Sleep(time.Second)
		deliver(prefA, codeMail(addrA, "908172"))
		landed <- time.Now()
	}()
	var found mailread.CodeResult
	text, isErr = mcpCall(t, cs, "email_wait_for_code", map[string]any{"subject": "confirm", "timeout_seconds": 30})
	mcpJSON(t, text, isErr, &found)
	if found.Code != "908172" {
		t.Fatalf("A's email_wait_for_code: %+v (B's code is 555111)", found)
	}
	t.Logf("email_wait_for_code on SeaweedFS: code returned %s after the message landed", time.Since(<-landed).Round(time.Millisecond))
	var msg mailread.Message
	text, isErr = mcpCall(t, cs, "email_get", map[string]any{"id": found.ID})
	mcpJSON(t, text, isErr, &msg)
	if !msg.Seen || msg.From != "noreply@service.test" {
		t.Fatalf("email_get after the wait: %+v", msg)
	}
	if keys, err := w.list(t, w.admin, prefA+"manifest/"); err != nil || len(keys) != 1 {
		t.Fatalf("the manifest under A's prefix: %v %v", keys, err)
	}
	// B's message id, asked of A's daemon, is not in A's inbox
	idB, _, _ := mailread.ParseMessageKey(prefB, keyB)
	if text, isErr := mcpCall(t, cs, "email_get", map[string]any{"id": idB}); !isErr || !strings.HasPrefix(text, "NOT_FOUND:") {
		t.Fatalf("A's daemon got B's message id: %q", text)
	}

	// the Source conformance suite on the same server (the edge's own
	// credentials deliver, as the edge does; a fresh inbox prefix each case)
	admin := w.admin.Options().Credentials
	mailreadtest.Run(t, func(t *testing.T) mailreadtest.Inbox {
		prefix := mailread.Prefix("0x"+randomHex(20), "a"+randomHex(6)+"@"+domain)
		src := storeSource(t, w, admin, prefix)
		return mailreadtest.Inbox{
			Open: func(testing.TB) mailread.Source { return src },
			Deliver: func(t testing.TB, raw []byte, at time.Time) {
				if err := w.put(t.(*testing.T), w.admin, edgeKey(prefix, raw, at), string(raw)); err != nil {
					t.Fatal(err)
				}
			},
		}
	})

	// A's own credentials on B's prefix: AccessDenied, whatever the config says
	ctx := context.Background()
	credsA := h.awsCreds(A, w)
	onB := storeSource(t, w, credentials.StaticCredentialsProvider{Value: credsA}, prefB)
	if _, _, err := onB.List(ctx, time.Time{}, 0); problem.As(err).Code != problem.Denied {
		t.Errorf("A listed B's prefix: %v", err)
	}
	if _, err := onB.Get(ctx, idB); problem.As(err).Code != problem.Denied {
		t.Errorf("A read B's message: %v", err)
	}
	if err := onB.SetMark(ctx, idB, mailread.Mark{Seen: true}); problem.As(err).Code != problem.Denied {
		t.Errorf("A marked B's message: %v", err)
	}

	// a token without the tag claims reads nothing, its own wallet's prefix included
	enc, err := enclave.Open(enclave.Config{Dir: s.opts.effectiveDataDir(), PlatformKeyFile: s.opts.platformKeyFile()})
	if err != nil {
		t.Fatal(err)
	}
	defer enc.Close()
	v1, _ := enc.PublicKey("oidc/issuer/v1")
	m := enc.Measurements()
	now := time.Now().Unix()
	claims := map[string]any{"iss": s.url, "sub": apiv1.Subject(enclaveHex(m.MrEnclave[:]), enclaveHex(m.MrSigner[:]), "agent", A.wallet),
		"aud": weedAudience, "iat": now, "nbf": now, "exp": now + 60, "jti": randomHex(8), "agentkeys_user_wallet": A.wallet}
	tok := jws(t, map[string]any{"alg": "ES256", "kid": v1.Kid, "typ": "JWT"}, claims, func(in []byte) []byte {
		sig, err := enc.SignES256("oidc/issuer/v1", in)
		if err != nil {
			t.Fatal(err)
		}
		return sig
	})
	c, err := daemon.AssumeRole(ctx, daemon.AWSRequest{RoleARN: w.roleARN, SessionName: "untagged", STSEndpoint: w.endpoint, Region: "us-east-1"}, tok)
	if err != nil {
		t.Logf("STS refused the token without tag claims outright: %v", err)
		return
	}
	untagged := storeSource(t, w, credentials.StaticCredentialsProvider{Value: aws.Credentials{AccessKeyID: c.AccessKeyID,
		SecretAccessKey: c.SecretAccessKey, SessionToken: c.SessionToken}}, prefA)
	if refs, _, err := untagged.List(ctx, time.Time{}, 0); problem.As(err).Code != problem.Denied {
		t.Errorf("untagged credentials listed A's inbox: %v %v", refs, err)
	}
	if _, err := untagged.Get(ctx, found.ID); problem.As(err).Code != problem.Denied {
		t.Errorf("untagged credentials read A's message: %v", err)
	}
}

func storeSource(t *testing.T, w *weed, creds aws.CredentialsProvider, prefix string) *mailread.StoreSource {
	t.Helper()
	st, err := s3store.New(s3store.Config{Bucket: w.bucket, Endpoint: w.endpoint, PathStyle: true, Credentials: creds})
	if err != nil {
		t.Fatal(err)
	}
	return &mailread.StoreSource{Store: st, Prefix: prefix}
}

// TestMailReadIMAPToken: the daemon logs in to an IMAP server with SASL
// OAUTHBEARER and an identity token it mints for the server's audience (as it
// does at the mail edge); the server (Dovecot, its token check a relying
// party's: go-oidc against our discovery document) maps the token's agent
// wallet to the mailbox. A token for another audience is refused.
func TestMailReadIMAPToken(t *testing.T) {
	const aud = "imap-test"
	h := newHarness(t)
	s := h.start(serverOpts{home: t.TempDir(), args: []string{"--oidc-audience", aud, "--oidc-audience", "other-aud"}})
	o := h.akNewOwner(s)
	A := h.oidcAgent(s, o, "reader", "oidc:*")
	dc := dovecottest.Start(t)
	user, _ := dc.AddUser(t)
	ctx := context.Background()
	prov, err := gooidc.NewProvider(ctx, s.url)
	if err != nil {
		t.Fatal(err)
	}
	verifier := prov.Verifier(&gooidc.Config{ClientID: aud})
	dc.SetVerifier(func(tok string) (string, bool) {
		idt, err := verifier.Verify(ctx, tok)
		if err != nil {
			return "", false
		}
		var cl struct {
			Wallet string `json:"agentkeys_user_wallet"`
		}
		if idt.Claims(&cl) != nil || !strings.EqualFold(cl.Wallet, A.wallet) {
			return "", false
		}
		return user, true
	})
	dc.Deliver(t, user, codeMail(user+"@example.test", "135792"), time.Now())
	writeMailConfig(t, A.home, daemon.MailConfig{Inbox: user + "@example.test", IMAP: &daemon.MailIMAP{Addr: dc.Addr, TLS: mailread.TLSNone, Username: user, Audience: aud}})
	cs, _ := h.mcpSession(A.home)
	var found mailread.CodeResult
	text, isErr := mcpCall(t, cs, "email_wait_for_code", map[string]any{"timeout_seconds": 20})
	mcpJSON(t, text, isErr, &found)
	if found.Code != "135792" {
		t.Fatalf("email_wait_for_code with a token: %+v", found)
	}
	writeMailConfig(t, A.home, daemon.MailConfig{Inbox: user + "@example.test", IMAP: &daemon.MailIMAP{Addr: dc.Addr, TLS: mailread.TLSNone, Username: user, Audience: "other-aud"}})
	if text, isErr := mcpCall(t, cs, "email_list", map[string]any{}); !isErr || !strings.HasPrefix(text, "DENIED:") {
		t.Fatalf("a token for another audience: %q", text)
	}
}
