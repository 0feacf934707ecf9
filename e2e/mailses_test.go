package e2e

import (
	"encoding/base64"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"

	"github.com/agentkeys/agentkeys/internal/daemon"
	"github.com/agentkeys/agentkeys/internal/mailread"
)

// TestMailSendSES is sending in AWS mode: the agent's daemon, configured by
// mail.json "send": {"ses"}, builds and DKIM-signs the message as for the
// edge, then calls SES SendRawEmail itself. SES is a recording endpoint on
// loopback; the request must carry a SigV4 signature that verifies with the
// exact STS credentials SeaweedFS's STS issued to that agent for its own
// identity token (credentials that reach the agent's prefix and nothing
// else), Action=SendRawEmail, the From inbox as Source, the recipients, and a
// raw message whose two DKIM signatures pass against the zone `mail dns`
// printed. A From without send is refused at dkim-sign: SES sees nothing. An
// SES refusal reaches the agent as DENIED.
func TestMailSendSES(t *testing.T) {
	h := newHarness(t)
	v := h.awsMailAgents()
	s, o, A, addr := v.s, v.o, v.A, v.addr
	const domain = awsMailDomain
	txt := zoneTXT(t, h.akOK(o.home, "mail", "dns", "--domain", domain), domain)
	doc := h.registerAWS(o.home, s.url)
	w := h.startWeed(&doc, s.url)

	const sesID = "0100018c-agentkeys-test-000000"
	rec := newRequestLog(t, func(i int, rw http.ResponseWriter) {
		rw.Header().Set("Content-Type", "text/xml")
		if i == 0 {
			rw.Write([]byte(`<SendRawEmailResponse xmlns="http://ses.amazonaws.com/doc/2010-12-01/"><SendRawEmailResult><MessageId>` + sesID +
				`</MessageId></SendRawEmailResult><ResponseMetadata><RequestId>r-1</RequestId></ResponseMetadata></SendRawEmailResponse>`))
			return
		}
		rw.WriteHeader(http.StatusBadRequest)
		rw.Write([]byte(`<ErrorResponse xmlns="http://ses.amazonaws.com/doc/2010-12-01/"><Error><Type>Sender</Type><Code>MessageRejected</Code>` +
			`<Message>Email address is not verified.</Message></Error><RequestId>r-2</RequestId></ErrorResponse>`))
	})
	writeMailConfig(t, A.home, daemon.MailConfig{Inbox: addr["alice"],
		S3:   &daemon.MailS3{Bucket: w.bucket, Endpoint: w.endpoint, PathStyle: true, RoleARN: w.roleARN},
		Send: &daemon.MailOut{SES: &daemon.MailSES{Endpoint: rec.srv.URL}}})
	cs, mcpLog := h.mcpSession(A.home, "--sts-endpoint", w.endpoint)

	// No from: the config's inbox.
	var res daemon.SendResult
	text, isErr := mcpCall(t, cs, "email_send", map[string]any{"to": []any{addr["bob"], "someone@example.net"}, "subject": "Hello via SES", "text": "Your code is 493817."})
	if isErr {
		t.Fatalf("email_send: %s\n%s", text, mcpLog.String())
	}
	mcpJSON(t, text, isErr, &res)
	if res.From != addr["alice"] || res.SESMessageID != sesID {
		t.Fatalf("email_send: %+v", res)
	}
	calls := rec.all()
	if len(calls) != 1 {
		t.Fatalf("SES got %d requests", len(calls))
	}
	call := calls[0]
	// The credentials the daemon cached from SeaweedFS's STS (the same cache
	// `daemon aws-credentials` answers from): they are A's, tagged — A's prefix
	// lists, B's is AccessDenied.
	creds := h.awsCreds(A, w)
	c := w.s3(creds)
	if _, err := w.list(t, c, mailread.Prefix(A.wallet, addr["alice"])); err != nil {
		t.Fatalf("the STS credentials list A's inbox: %v", err)
	}
	if _, err := w.list(t, c, "0x"+strings.Repeat("0", 40)+"/"); errCode(err) != "AccessDenied" {
		t.Fatalf("the STS credentials list another wallet's prefix: %v", err)
	}
	if call.header.Get("X-Amz-Security-Token") != creds.SessionToken {
		t.Fatal("the SES request does not carry the STS session token SeaweedFS issued")
	}
	verifySigV4(t, call, creds.AccessKeyID, creds.SecretAccessKey, "us-east-1", "ses")
	if call.method != http.MethodPost {
		t.Fatalf("SES request method %s", call.method)
	}
	form, err := url.ParseQuery(string(call.body))
	if err != nil {
		t.Fatal(err)
	}
	if form.Get("Action") != "SendRawEmail" || form.Get("Source") != addr["alice"] ||
		!slices.Equal([]string{form.Get("Destinations.member.1"), form.Get("Destinations.member.2")}, []string{addr["bob"], "someone@example.net"}) {
		t.Fatalf("SES request: %v", form)
	}
	raw, err := base64.StdEncoding.DecodeString(form.Get("RawMessage.Data"))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(raw), "From: <"+addr["alice"]+">") && !strings.Contains(string(raw), "From: "+addr["alice"]) {
		t.Fatalf("the raw message's From:\n%s", raw)
	}
	if vs := dkimResults(t, raw, txt); len(vs) != 2 || vs[0].Err != nil || vs[1].Err != nil || vs[0].Domain != domain {
		t.Fatalf("dkim of the message SES got: %+v\n%s", vs, raw)
	}

	// From without send: refused at dkim-sign, SES is never called.
	text, isErr = mcpCall(t, cs, "email_send", map[string]any{"from": addr["bob"], "to": []any{"someone@example.net"}, "subject": "s", "text": "t"})
	if !isErr || !strings.HasPrefix(text, "DENIED:") {
		t.Fatalf("email_send from bob's inbox: error=%v %s", isErr, text)
	}
	if n := len(rec.all()); n != 1 {
		t.Fatalf("SES got %d requests after a refused From, want 1", n)
	}
	// SES's own refusal is DENIED, with its reason.
	text, isErr = mcpCall(t, cs, "email_send", map[string]any{"to": []any{"someone@example.net"}, "subject": "s", "text": "t"})
	if !isErr || !strings.HasPrefix(text, "DENIED:") || !strings.Contains(text, "MessageRejected") {
		t.Fatalf("email_send refused by SES: error=%v %s", isErr, text)
	}
	// A config that only sends reads nothing, and says so.
	writeMailConfig(t, A.home, daemon.MailConfig{Inbox: addr["alice"], Send: &daemon.MailOut{SES: &daemon.MailSES{RoleARN: w.roleARN, Endpoint: rec.srv.URL}}})
	if text, isErr := mcpCall(t, cs, "email_list", map[string]any{}); !isErr || !strings.HasPrefix(text, "NOT_FOUND:") || !strings.Contains(text, "names no mailbox to read") {
		t.Fatalf("email_list with a send-only config: error=%v %s", isErr, text)
	}
}
