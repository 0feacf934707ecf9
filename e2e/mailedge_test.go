package e2e

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/textproto"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"

	"github.com/agentkeys/agentkeys/internal/blobstore/localstore"
	"github.com/agentkeys/agentkeys/internal/mailedge"
)

const edgeDomain = "agents.example.com"

// startEdge runs `agentkeys mail-edge ARGS…` and waits for its listeners.
func (h *harness) startEdge(home string, args ...string) (*server, string, string) {
	h.t.Helper()
	return h.startEdgeEnv(home, nil, args...)
}

// startEdgeEnv is startEdge with more environment variables.
func (h *harness) startEdgeEnv(home string, env []string, args ...string) (*server, string, string) {
	h.t.Helper()
	p := &server{h: h, stdout: h.newOutput(), stderr: h.newOutput(), done: make(chan struct{})}
	p.cmd = exec.Command(bin, append([]string{"mail-edge", "--log-format", "json", "--mail-domain", edgeDomain,
		"--smtp-listen", "127.0.0.1:0", "--submission-listen", "127.0.0.1:0", "--imap-listen", "127.0.0.1:0"}, args...)...)
	p.cmd.Env = childEnv(append([]string{"AGENTKEYS_HOME=" + home}, env...)...)
	p.cmd.Stdout, p.cmd.Stderr = p.stdout, p.stderr
	if err := p.cmd.Start(); err != nil {
		h.t.Fatal(err)
	}
	go func() {
		p.cmd.Wait()
		p.state = p.cmd.ProcessState
		close(p.done)
	}()
	h.t.Cleanup(func() {
		select {
		case <-p.done:
		default:
			p.cmd.Process.Kill()
			<-p.done
		}
	})
	mx, sub := p.edgeAddrs()
	return p, mx, sub
}

// edgeAddrs waits for the "mail edge listening" line of a server or an edge.
func (s *server) edgeAddrs() (string, string) {
	s.h.t.Helper()
	l, err := s.waitLog(`"mail edge listening"`, startTimeout, msgIs("mail edge listening"))
	if err != nil {
		s.h.t.Fatal(err)
	}
	return l.str("smtp_addr"), l.str("submission_addr")
}

// smtpSend sends one message with go-smtp's client (token: OAUTHBEARER
// first) and returns the reply code of the first refusal, or 250.
func smtpSend(t *testing.T, addr, token, from string, to []string, msg []byte) (int, string) {
	t.Helper()
	c, err := smtp.Dial(addr)
	if err != nil {
		return -1, err.Error()
	}
	defer c.Close()
	helo := "client.example.net"
	if from == "" {
		helo = "[127.0.0.1]" // with a null sender: no name to look up in DNS
	}
	if err := c.Hello(helo); err != nil {
		return -1, err.Error()
	}
	if token != "" {
		if err := c.Auth(sasl.NewOAuthBearerClient(&sasl.OAuthBearerOptions{Token: token})); err != nil {
			return 535, err.Error()
		}
	}
	if err := c.SendMail(from, to, bytes.NewReader(msg)); err != nil {
		var se *smtp.SMTPError
		var te *textproto.Error
		switch {
		case errors.As(err, &se):
			return se.Code, se.Message
		case errors.As(err, &te):
			return te.Code, te.Msg
		}
		return -1, err.Error()
	}
	c.Quit()
	return 250, ""
}

// edgeMessage is a message from from ("": none, and no From header, so that
// the edge's SPF and DMARC checks look nothing up in this machine's DNS).
func edgeMessage(from, to, id, body string) []byte {
	head := ""
	if from != "" {
		head = "From: <" + from + ">\r\n"
	}
	return []byte(head + "To: <" + to + ">\r\nSubject: " + id + "\r\nMessage-ID: <" + id + "@client.example.net>\r\n\r\n" + body + "\r\n")
}

// storedMail reads every message of prefix from the local store at dir, as a
// reader of the store sees them.
func storedMail(t *testing.T, dir, prefix string) map[string][]byte {
	t.Helper()
	st, err := localstore.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string][]byte{}
	after := ""
	for {
		objs, more, err := st.List(context.Background(), prefix, after, 0)
		if err != nil {
			t.Fatal(err)
		}
		for _, o := range objs {
			b, err := st.Get(context.Background(), o.Key)
			if err != nil {
				t.Fatal(err)
			}
			out[o.Key] = b
			after = o.Key
		}
		if !more {
			return out
		}
	}
}

// body is the stored message without the edge's Authentication-Results.
func body(t *testing.T, stored []byte) []byte {
	t.Helper()
	first, rest, ok := bytes.Cut(stored, []byte("\r\n"))
	if !ok || !bytes.HasPrefix(first, []byte("Authentication-Results: ")) {
		t.Fatalf("stored message does not start with the edge's Authentication-Results: %q", stored[:min(len(stored), 120)])
	}
	return rest
}

// TestMailEdge drives the edge through the binary: in the broker's process
// (server --mail-domain) and as its own (mail-edge --server), with a plain
// SMTP client from outside and agents submitting with their identity tokens.
func TestMailEdge(t *testing.T) {
	h := newHarness(t)
	home := t.TempDir()
	secret := filepath.Join(home, "edge.secret")
	s := h.start(serverOpts{home: home, args: []string{"--mail-domain", edgeDomain, "--smtp-listen", "127.0.0.1:0", "--submission-listen", "127.0.0.1:0", "--imap-listen", "127.0.0.1:0",
		"--mail-max-size", "4096", "--mail-rcpt-rate", "4/1m", "--mail-edge-secret", secret, "--oidc-audience", "sts.amazonaws.com"}})
	mx, sub := s.edgeAddrs()
	store := filepath.Join(s.opts.effectiveDataDir(), "mail")
	aud := edgeDomain
	o := h.akNewOwner(s)
	dhBot := h.pairAgent(s, o, "bot", "oidc:"+aud+",oidc:sts.amazonaws.com")
	dhHelper := h.pairAgent(s, o, "helper", "oidc:"+aud)
	h.akOK(o.home, "domain", "add", edgeDomain)
	bot, helper := h.inboxOf(o, "bot"), h.inboxOf(o, "helper")
	botPrefix := strings.ToLower(bot.Wallet) + "/" + bot.Address + "/"
	helperPrefix := strings.ToLower(helper.Wallet) + "/" + helper.Address + "/"

	// Inbound from outside: unknown recipient 550, oversize 552, none stored.
	if n, msg := smtpSend(t, mx, "", "", []string{"nobody@" + edgeDomain}, edgeMessage("", "nobody@"+edgeDomain, "unknown", "x")); n != 550 {
		t.Fatalf("unknown recipient: %d %s", n, msg)
	}
	if n, msg := smtpSend(t, mx, "", "", []string{bot.Address}, edgeMessage("", bot.Address, "big", strings.Repeat("0123456789abcdef\r\n", 300))); n != 552 {
		t.Fatalf("oversize: %d %s", n, msg)
	}
	if got := storedMail(t, store, ""); len(got) != 0 {
		t.Fatalf("refused mail was stored: %v", got)
	}
	// Accepted mail: byte for byte after the Authentication-Results; past four
	// to one inbox in a minute (the oversize one counted: its RCPT was
	// accepted) the next is 451 and not stored.
	var sent [][]byte
	for i := range 4 {
		m := edgeMessage("", bot.Address, fmt.Sprint("in", i), "Your code is 12345"+fmt.Sprint(i))
		n, msg := smtpSend(t, mx, "", "", []string{bot.Address}, m)
		if want := map[bool]int{true: 250, false: 451}[i < 3]; n != want {
			t.Fatalf("inbound %d: %d %s, want %d", i, n, msg, want)
		}
		if n == 250 {
			sent = append(sent, m)
		}
	}
	got := storedMail(t, store, botPrefix)
	if len(got) != 3 {
		t.Fatalf("bot's inbox holds %d messages, want 3", len(got))
	}
	for _, m := range sent {
		found := false
		for _, g := range got {
			found = found || bytes.Equal(body(t, g), m)
		}
		if !found {
			t.Fatalf("message %q is not stored byte for byte", m[:60])
		}
	}

	// Submission: bot's token, send on its own inbox, to helper's inbox.
	tokBot := strings.TrimSpace(h.akOK(dhBot, "daemon", "oidc-token", "--audience", aud))
	tokHelper := strings.TrimSpace(h.akOK(dhHelper, "daemon", "oidc-token", "--audience", aud))
	m := edgeMessage(bot.Address, helper.Address, "sub1", "hello helper")
	if n, msg := smtpSend(t, sub, tokBot, bot.Address, []string{helper.Address}, m); n != 250 {
		t.Fatalf("bot submits to helper: %d %s", n, msg)
	}
	if g := storedMail(t, store, helperPrefix); len(g) != 1 {
		t.Fatalf("helper's inbox: %d messages", len(g))
	}
	// helper holds no send on bot's inbox; granted, it may; revoked as an agent, not.
	asBot := edgeMessage(bot.Address, helper.Address, "as-bot", "x")
	if n, msg := smtpSend(t, sub, tokHelper, bot.Address, []string{helper.Address}, asBot); n != 550 || !strings.Contains(msg, "inbox grant") {
		t.Fatalf("helper sends as bot without send: %d %s", n, msg)
	}
	h.akOK(o.home, "inbox", "grant", bot.Address, "--agent", "helper", "send")
	if n, msg := smtpSend(t, sub, tokHelper, bot.Address, []string{helper.Address}, asBot); n != 250 {
		t.Fatalf("helper sends as bot with send: %d %s", n, msg)
	}
	// Other audiences, garbage and no token at all are refused.
	tokSTS := strings.TrimSpace(h.akOK(dhBot, "daemon", "oidc-token", "--audience", "sts.amazonaws.com"))
	for name, tok := range map[string]string{"sts audience": tokSTS, "garbage": "x.y.z"} {
		if n, msg := smtpSend(t, sub, tok, bot.Address, []string{helper.Address}, m); n != 535 {
			t.Fatalf("%s: %d %s, want 535", name, n, msg)
		}
	}
	if n, msg := smtpSend(t, sub, "", bot.Address, []string{helper.Address}, m); n != 530 {
		t.Fatalf("no token: %d %s, want 530", n, msg)
	}
	if n, msg := smtpSend(t, sub, tokBot, bot.Address, []string{"x@outside.example"}, edgeMessage(bot.Address, "x@outside.example", "out", "x")); n != 550 || !strings.Contains(msg, "--relay") {
		t.Fatalf("no relay configured: %d %s", n, msg)
	}
	h.akOK(o.home, "agent", "revoke", "helper", "--yes")
	if n, msg := smtpSend(t, sub, tokHelper, bot.Address, []string{helper.Address}, asBot); n != 550 {
		t.Fatalf("a revoked agent's still-valid token sends: %d %s", n, msg)
	}
	if g := storedMail(t, store, helperPrefix); len(g) != 2 {
		t.Fatalf("helper's inbox: %d messages, want 2", len(g))
	}

	// The edge as its own process asks the broker over HTTP with the secret.
	if code, _ := s.postJSON("/v1/mail/edge/lookup", map[string]string{"address": bot.Address}); code != 401 {
		t.Fatalf("anonymous edge lookup: %d, want 401", code)
	}
	wrong := filepath.Join(t.TempDir(), "wrong.secret")
	os.WriteFile(wrong, []byte(strings.Repeat("ab", 32)), 0o600)
	r := h.cli(t.TempDir(), "mail-edge", "--server", s.url, "--edge-secret", wrong, "--mail-domain", edgeDomain, "--smtp-listen", "127.0.0.1:0", "--imap-listen", "127.0.0.1:0")
	if r.code == 0 || !strings.Contains(r.stderr, "refused the edge") {
		t.Fatalf("mail-edge with a wrong secret: %d %s", r.code, r.stderr)
	}
	r = h.cli(t.TempDir(), "mail-edge", "--server", "http://192.0.2.1:8090", "--edge-secret", secret, "--mail-domain", edgeDomain)
	if r.code != 2 || !strings.Contains(r.stderr, "in the clear") {
		t.Fatalf("mail-edge over plain http off loopback: %d %s", r.code, r.stderr)
	}
	edgeStore := t.TempDir()
	edge2, mx2, sub2 := h.startEdge(t.TempDir(), "--server", s.url, "--edge-secret", secret, "--mail-store", edgeStore)
	m2 := edgeMessage("", helper.Address, "remote", "via the separate edge")
	if n, msg := smtpSend(t, mx2, "", "", []string{helper.Address}, m2); n != 250 {
		t.Fatalf("separate edge inbound: %d %s", n, msg)
	}
	if n, _ := smtpSend(t, mx2, "", "", []string{"nobody@" + edgeDomain}, m2); n != 550 {
		t.Fatalf("separate edge, unknown recipient: %d", n)
	}
	if n, msg := smtpSend(t, sub2, tokBot, bot.Address, []string{helper.Address}, m); n != 250 {
		t.Fatalf("separate edge submission: %d %s", n, msg)
	}
	if g := storedMail(t, edgeStore, helperPrefix); len(g) != 2 {
		t.Fatalf("the separate edge's store: %d messages for helper, want 2", len(g))
	}

	// Its IMAP server asks the broker which inboxes the token's agent may read
	// (POST /v1/mail/edge/inboxes): bot sees its own, and is refused helper's.
	if boxes, msgs := imaplib(t, edge2.imapAddr(), tokBot, bot.Address, helper.Address); len(boxes) != 1 || boxes[0] != bot.Address || len(msgs) != 0 {
		t.Fatalf("imaplib at the separate edge: %q, %d bytes", boxes, len(msgs))
	}

	// A deleted inbox takes no more mail, at either edge: 550 at RCPT, at
	// once in the broker's process, within mailedge.LookupTTL at the separate
	// edge (which keeps a live inbox's answer that long).
	h.akOK(o.home, "inbox", "delete", helper.Address, "--yes")
	deleted := time.Now()
	if n, msg := smtpSend(t, mx, "", "", []string{helper.Address}, m2); n != 550 {
		t.Fatalf("deleted inbox at the embedded edge: %d %s", n, msg)
	}
	var n int
	var msg string
	if !waitFor(mailedge.LookupTTL+5*time.Second, func() bool {
		n, msg = smtpSend(t, mx2, "", "", []string{helper.Address}, m2)
		return n == 550
	}) {
		t.Fatalf("deleted inbox at the separate edge, %s after: %d %s", time.Since(deleted).Round(time.Millisecond), n, msg)
	}
}

// inboxOf creates alias's inbox and returns it.
func (h *harness) inboxOf(o akOwner, alias string) mailInbox {
	h.t.Helper()
	h.akOK(o.home, "inbox", "create", "--agent", alias)
	for _, in := range h.inboxes(o) {
		if in.Agent == alias {
			return in
		}
	}
	h.t.Fatalf("no inbox of %s", alias)
	return mailInbox{}
}

// TestMailEdgeKill: the separate edge is killed (SIGKILL) while 200 messages
// arrive over 4 connections at a time, and started again; every message that
// got 250 is in the store whole, and no object is partial: each is the edge's
// Authentication-Results and one sent message, byte for byte.
func TestMailEdgeKill(t *testing.T) {
	h := newHarness(t)
	home := t.TempDir()
	secret := filepath.Join(home, "edge.secret")
	s := h.start(serverOpts{home: home, args: []string{"--mail-edge-secret", secret}})
	o := h.akNewOwner(s)
	h.pairAgent(s, o, "bot", "openai")
	h.akOK(o.home, "domain", "add", edgeDomain)
	bot := h.inboxOf(o, "bot")
	prefix := strings.ToLower(bot.Wallet) + "/" + bot.Address + "/"
	store := t.TempDir()
	edgeArgs := []string{"--server", s.url, "--edge-secret", secret, "--mail-store", store, "--mail-ip-rate", "100000/1m", "--mail-rcpt-rate", "100000/1m"}

	const total = 200
	msgs := make([][]byte, total)
	for i := range msgs {
		msgs[i] = edgeMessage("", bot.Address, fmt.Sprintf("kill-%03d", i), strings.Repeat(fmt.Sprintf("line %03d of a message\r\n", i), 200))
	}
	var acked [total]atomic.Bool
	var next, nacked atomic.Int64
	var addr atomic.Value
	edge, mx, _ := h.startEdge(t.TempDir(), edgeArgs...)
	addr.Store(mx)
	killed := make(chan struct{})
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			for {
				i := next.Add(1) - 1
				if i >= total {
					return
				}
				for try := 0; ; try++ {
					if n, _ := smtpSend(t, addr.Load().(string), "", "", []string{bot.Address}, msgs[i]); n == 250 {
						acked[i].Store(true)
						if nacked.Add(1) == 60 {
							close(killed)
						}
						break
					}
					if try > 2000 {
						t.Errorf("message %d never accepted", i)
						return
					}
					time.Sleep(5 * time.Millisecond)
				}
			}
		})
	}
	<-killed
	edge.cmd.Process.Kill()
	<-edge.done
	_, mx, _ = h.startEdge(t.TempDir(), edgeArgs...)
	addr.Store(mx)
	wg.Wait()

	got := storedMail(t, store, prefix)
	sentBy := map[string]int{}
	for i, m := range msgs {
		sentBy[string(m)] = i
	}
	seen := map[int]bool{}
	for k, g := range got {
		i, ok := sentBy[string(body(t, g))]
		if !ok {
			t.Fatalf("object %s is not a whole sent message", k)
		}
		seen[i] = true
	}
	for i := range msgs {
		if acked[i].Load() && !seen[i] {
			t.Errorf("message %d got 250 but is not in the store", i)
		}
	}
	if len(seen) != total {
		t.Fatalf("%d of %d messages stored", len(seen), total)
	}
}

// TestMailEdgeSeaweedFS: the separate edge writes to an S3 store (SeaweedFS)
// under <agent wallet>/<inbox address>/, and the agent reads its inbox there
// with STS credentials from its own identity token, while another agent is
// denied it. It also logs the inbound rate into SeaweedFS (inboundRate).
func TestMailEdgeSeaweedFS(t *testing.T) {
	h := newHarness(t)
	home := t.TempDir()
	secret := filepath.Join(home, "edge.secret")
	s := h.start(serverOpts{home: home, args: []string{"--mail-edge-secret", secret, "--oidc-audience", weedAudience}})
	o := h.akNewOwner(s)
	bot := h.oidcAgent(s, o, "bot", "oidc:"+weedAudience)
	other := h.oidcAgent(s, o, "other", "oidc:"+weedAudience)
	doc := h.registerAWS(o.home, s.url)
	w := h.startWeed(&doc, s.url)
	h.akOK(o.home, "domain", "add", edgeDomain)
	in := h.inboxOf(o, "bot")
	prefix := bot.wallet + "/" + in.Address + "/"
	store := "s3://" + weedBucket + "?endpoint=" + w.endpoint + "&path-style=true"
	edge, mx, _ := h.startEdgeEnv(t.TempDir(), []string{"AWS_ACCESS_KEY_ID=" + w.creds.AccessKeyID, "AWS_SECRET_ACCESS_KEY=" + w.creds.SecretAccessKey,
		"AWS_CONFIG_FILE=/dev/null", "AWS_SHARED_CREDENTIALS_FILE=/dev/null"},
		"--server", s.url, "--edge-secret", secret, "--mail-store", store, "--mail-ip-rate", "100000/1m", "--mail-rcpt-rate", "100000/1m")

	m := edgeMessage("", in.Address, "weed", "Your code is 424242")
	if n, msg := smtpSend(t, mx, "", "", []string{in.Address}, m); n != 250 {
		t.Fatalf("inbound to SeaweedFS: %d %s", n, msg)
	}
	mine := w.s3(h.awsCreds(bot, w))
	keys, err := w.list(t, mine, prefix)
	if err != nil || len(keys) != 1 {
		t.Fatalf("bot lists its inbox with its own credentials: %v %v", keys, err)
	}
	got, err := w.get(t, mine, keys[0])
	if err != nil || !bytes.Equal(body(t, []byte(got)), m) {
		t.Fatalf("bot reads its message: %v", err)
	}
	theirs := w.s3(h.awsCreds(other, w))
	if _, err := w.get(t, theirs, keys[0]); errCode(err) != "AccessDenied" {
		t.Fatalf("another agent reads bot's message: %v", err)
	}

	inboundRate(t, w, mx, in.Address, prefix, map[string]int{"edge": edge.cmd.Process.Pid, "broker": s.cmd.Process.Pid, "seaweedfs": w.pid})
}
