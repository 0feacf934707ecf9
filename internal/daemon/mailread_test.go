package daemon

import (
	"os"
	"strings"
	"testing"

	"github.com/agentkeys/agentkeys/internal/problem"
)

// TestMailConfig: a missing mail.json says how to write one; a bad one says
// what is wrong; neither is a secret's place (a password is named, not held).
func TestMailConfig(t *testing.T) {
	d := Dir(t.TempDir())
	if _, err := d.LoadMailConfig(); problem.As(err).Code != CodeNotFound || !strings.Contains(problem.As(err).Fix, "mail.json") {
		t.Fatalf("no config: %v", err)
	}
	const arn = "arn:aws:iam::123456789012:role/agents"
	for cfg, want := range map[string]string{
		`not json`: "not valid JSON",
		`{}`:       `exactly one of "s3" and "imap"`,
		`{"inbox":"a@b.test","s3":{"bucket":"b","role_arn":"` + arn + `"},"imap":{"addr":"x:1","credential":"c"}}`: `exactly one of "s3" and "imap"`,
		`{"s3":{"bucket":"b","role_arn":"` + arn + `"}}`:                                                           `"inbox"`,
		`{"inbox":"a@b.test","s3":{"bucket":"b","role_arn":"not-an-arn"}}`:                                         `"role_arn"`,
		`{"imap":{"addr":"x:1","username":"u"}}`:                                                                   `exactly one of "credential"`,
		`{"imap":{"addr":"x:1","username":"u","credential":"c","audience":"a"}}`:                                   `exactly one of "credential"`,
		`{"imap":{"addr":"x:1","username":"u","credential":"imap:Gmail"}}`:                                         "not a service name",
		`{"imap":{"addr":"x:1","credential":"c"}}`:                                                                 `"username" or "inbox"`,
		`{"inbox":"not an address","imap":{"addr":"x:1","credential":"c"}}`:                                        "not an address",
		`{"inbox":"a@b.test/../c","s3":{"bucket":"b","role_arn":"` + arn + `"}}`:                                   "not an address",
		`{"inbox":"a@b.test","send":{}}`:                                                                           `"send" needs "ses"`,
		`{"inbox":"a@b.test","send":{"ses":{}}}`:                                                                   `"role_arn"`,
		`{"inbox":"a@b.test","send":{"ses":{"role_arn":"` + arn + `","region":"us east"}}}`:                        "not an AWS region",
		// the signed request carries the session token and the message: never over plain http off this machine
		`{"inbox":"a@b.test","send":{"ses":{"role_arn":"` + arn + `","endpoint":"http://email.example.com"}}}`: `"endpoint" must be an https URL`,
		`{"inbox":"a@b.test","send":{"ses":{"role_arn":"` + arn + `","endpoint":"https://u:p@x.test"}}}`:       `"endpoint" must be an https URL`,
	} {
		if err := os.WriteFile(d.MailConfigPath(), []byte(cfg), 0o600); err != nil {
			t.Fatal(err)
		}
		_, err := d.LoadMailConfig()
		if p := problem.As(err); p.Code != CodeBadRequest || !strings.Contains(p.Message, want) {
			t.Errorf("%s: %v, want BAD_REQUEST about %s", cfg, err, want)
		}
	}
	os.WriteFile(d.MailConfigPath(), []byte(`{"inbox":"a@b.test","s3":{"bucket":"b","role_arn":"`+arn+`","endpoint":"http://127.0.0.1:1","path_style":true}}`), 0o600)
	if c, err := d.LoadMailConfig(); err != nil || c.S3.Bucket != "b" {
		t.Fatalf("good config: %+v %v", c, err)
	}
	// SES sending takes the "s3" role and region unless it names its own.
	os.WriteFile(d.MailConfigPath(), []byte(`{"inbox":"a@b.test","s3":{"bucket":"b","region":"eu-west-1","role_arn":"`+arn+`"},"send":{"ses":{"endpoint":"http://127.0.0.1:9"}}}`), 0o600)
	if c, err := d.LoadMailConfig(); err != nil || c.Send.SES.RoleARN != arn || c.Send.SES.Region != "eu-west-1" {
		t.Fatalf("ses config with s3 defaults: %+v %v", c, err)
	}
	// A send-only config loads (reading says it names no mailbox: TestMailSendSES).
	os.WriteFile(d.MailConfigPath(), []byte(`{"inbox":"a@b.test","send":{"ses":{"role_arn":"`+arn+`"}}}`), 0o600)
	if c, err := d.LoadMailConfig(); err != nil || c.Send.SES.Endpoint != "" {
		t.Fatalf("send-only config: %+v %v", c, err)
	}
	// The edge's IMAP with the inbox alone: the token's audience is its domain.
	os.WriteFile(d.MailConfigPath(), []byte(`{"inbox":"a@b.test","imap":{"addr":"127.0.0.1:2143","tls":"none"}}`), 0o600)
	if c, err := d.LoadMailConfig(); err != nil || c.IMAP.Audience != "b.test" || c.IMAP.Credential != "" {
		t.Fatalf("edge IMAP config without an audience: %+v %v", c, err)
	}
	// a config others may change could send the vault's password anywhere
	os.Chmod(d.MailConfigPath(), 0o666)
	if _, err := d.LoadMailConfig(); problem.As(err).Code != CodeDenied || !strings.Contains(problem.As(err).Fix, "chmod go-w") {
		t.Fatalf("world-writable config: %v", err)
	}
}

// TestEmailToolInputs: the email tools refuse bad input with BAD_REQUEST
// before touching the mailbox; good input reaches it (an unpaired daemon:
// DENIED).
func TestEmailToolInputs(t *testing.T) {
	cs := mcpClient(t, Source{Dir: Dir(t.TempDir())})
	for _, c := range []struct {
		tool string
		args map[string]any
		code string
	}{
		{"email_list", map[string]any{}, "DENIED"},
		{"email_list", map[string]any{"since": "2026-12-05T06:00:00Z", "limit": 5}, "DENIED"},
		{"email_list", map[string]any{"since": "yesterday"}, "BAD_REQUEST"},
		{"email_list", map[string]any{"limit": 101}, "BAD_REQUEST"},
		{"email_get", map[string]any{"id": "1764914400000000000-0a1b2c3d"}, "DENIED"},
		{"email_get", map[string]any{"id": "12.34"}, "DENIED"},
		{"email_get", map[string]any{"id": "../x"}, "BAD_REQUEST"},
		{"email_get", map[string]any{}, "BAD_REQUEST"},
		{"email_wait_for_code", map[string]any{"from": "github.com", "timeout_seconds": 5}, "DENIED"},
		{"email_wait_for_code", map[string]any{"timeout_seconds": 0}, "DENIED"}, // 0 = the default
		{"email_wait_for_code", map[string]any{"timeout_seconds": 601}, "BAD_REQUEST"},
		{"email_wait_for_code", map[string]any{"from": strings.Repeat("a", 300)}, "BAD_REQUEST"},
		{"email_mark", map[string]any{"id": "12.34", "seen": true}, "DENIED"},
		{"email_mark", map[string]any{"id": "12.34", "labels": []string{"a", "b"}}, "DENIED"},
		{"email_mark", map[string]any{"id": "12.34"}, "BAD_REQUEST"},
		{"email_mark", map[string]any{"id": "12.34", "labels": []string{"UPPER"}}, "BAD_REQUEST"},
		{"email_mark", map[string]any{"id": "12.34", "labels": []string{"x", "x"}}, "BAD_REQUEST"},
		{"email_mark", map[string]any{"id": "12.34", "seen": "yes"}, "BAD_REQUEST"},
	} {
		text, isErr := callText(t, cs, c.tool, c.args)
		if !isErr || !strings.HasPrefix(text, c.code+":") {
			t.Errorf("%s %v: %q, want %s", c.tool, c.args, text, c.code)
		}
	}
}
