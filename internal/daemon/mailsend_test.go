package daemon

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-message/mail"
	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"

	"github.com/agentkeys/agentkeys/internal/dkimsig"
	"github.com/agentkeys/agentkeys/internal/problem"
)

// TestBuildMessage: the message parses back (go-message), carries what was
// asked, keeps lines short (quoted-printable), and the block and body hash
// handed to dkim-sign are those of the message itself.
func TestBuildMessage(t *testing.T) {
	long := strings.Repeat("word ", 400) // one 2000-byte line
	for _, html := range []string{"", "<p>Hi <b>there</b></p>"} {
		m, err := BuildMessage(time.Unix(1700000000, 0), "abot@agents.example.com", []string{"b@example.net", "c@example.org"}, "Grüße, a test", long+"\nsecond line", html, "agents.example.com")
		if err != nil {
			t.Fatal(err)
		}
		for l := range strings.SplitSeq(string(m.Raw), "\r\n") {
			if len(l) > 998 {
				t.Fatalf("a %d-byte line", len(l))
			}
		}
		if bytes.Contains(bytes.ReplaceAll(m.Raw, []byte("\r\n"), nil), []byte("\n")) {
			t.Fatal("a bare LF")
		}
		r, err := mail.CreateReader(bytes.NewReader(m.Raw))
		if err != nil {
			t.Fatal(err)
		}
		from, _ := r.Header.AddressList("From")
		to, _ := r.Header.AddressList("To")
		subj, _ := r.Header.Subject()
		id, _ := r.Header.MessageID()
		if len(from) != 1 || from[0].Address != "abot@agents.example.com" || len(to) != 2 || subj != "Grüße, a test" || "<"+id+">" != m.MessageID {
			t.Fatalf("header: from %v to %v subject %q id %q", from, to, subj, id)
		}
		var texts []string
		for {
			p, err := r.NextPart()
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				t.Fatal(err)
			}
			b, _ := io.ReadAll(p.Body)
			texts = append(texts, string(b))
		}
		want := []string{long + "\r\nsecond line"}
		if html != "" {
			want = append(want, html)
		}
		if len(texts) != len(want) || strings.ReplaceAll(texts[0], "\r\n", "\n") != strings.ReplaceAll(want[0], "\r\n", "\n") || html != "" && texts[1] != html {
			t.Fatalf("parts %q", texts)
		}
		_, body, _ := bytes.Cut(m.Raw, []byte("\r\n\r\n"))
		if m.BodyHash != dkimsig.BodyHash(body) {
			t.Fatal("the body hash is not the message body's")
		}
		b, err := dkimsig.ParseBlock(m.Block)
		if err != nil {
			t.Fatal(err)
		}
		if f, err := b.From(); err != nil || f != "abot@agents.example.com" {
			t.Fatalf("block From: %q %v", f, err)
		}
		for _, name := range []string{"from", "to", "subject", "date", "message-id", "mime-version", "content-type"} {
			if !strings.Contains(":"+b.Names()+":", ":"+name+":") {
				t.Errorf("h= %q does not sign %s", b.Names(), name)
			}
		}
	}
}

// TestEmailSendSchema: email_send's schema and the daemon agree, call for
// call: what the schema refuses is BAD_REQUEST, what it accepts reaches the
// (unpaired) source: DENIED. Nothing is sent for a refused input.
func TestEmailSendSchema(t *testing.T) {
	cs := mcpClient(t, Source{Dir: Dir(t.TempDir())})
	res, err := cs.ListTools(context.Background(), nil)
	if err != nil {
		t.Fatal(err)
	}
	var found bool
	for _, tl := range res.Tools {
		if tl.Name != "email_send" {
			continue
		}
		found = true
		b, _ := json.Marshal(tl.InputSchema)
		var s struct {
			Required []string
		}
		json.Unmarshal(b, &s)
		if strings.Join(s.Required, ",") != "to,subject,text" {
			t.Errorf("email_send requires %v", s.Required)
		}
	}
	if !found {
		t.Fatal("no email_send tool")
	}
	for args, want := range map[string]problem.Code{
		`{"to":["b@example.net"],"subject":"hi","text":"t"}`:                                                CodeDenied,
		`{"from":"abot@agents.example.com","to":["b@example.net"],"subject":"s","text":"t"}`:                CodeDenied,
		`{"to":["b@example.net"],"subject":"","text":"t"}`:                                                  CodeBadRequest,
		`{"to":["b@example.net"],"subject":"s","text":""}`:                                                  CodeBadRequest,
		`{"to":["b@example.net"],"subject":"hi","text":"t","html":"<p>t</p>"}`:                              CodeDenied,
		`{"to":[],"subject":"hi","text":"t"}`:                                                               CodeBadRequest,
		`{"to":"b@example.net","subject":"hi","text":"t"}`:                                                  CodeBadRequest,
		`{"to":["not an address"],"subject":"hi","text":"t"}`:                                               CodeBadRequest,
		`{"to":["Bob <b@example.net>"],"subject":"hi","text":"t"}`:                                          CodeBadRequest,
		`{"to":["b@example.net"],"subject":"a\r\nBcc: x@example.com","text":"t"}`:                           CodeBadRequest,
		`{"from":"Boss <boss@example.com>","to":["b@example.net"],"subject":"s","text":"t"}`:                CodeBadRequest,
		`{"to":["b@example.net"],"subject":"s"}`:                                                            CodeBadRequest,
		`{"to":["b@example.net"],"subject":"s","text":"t","bcc":["x@example.com"]}`:                         CodeBadRequest,
		`{"to":["` + strings.Repeat("b@example.net\",\"", 50) + `b@example.net"],"subject":"s","text":"t"}`: CodeBadRequest,
	} {
		var a map[string]any
		if err := json.Unmarshal([]byte(args), &a); err != nil {
			t.Fatal(err)
		}
		text, isErr := callText(t, cs, "email_send", a)
		if !isErr || !strings.HasPrefix(text, string(want)+": ") {
			t.Errorf("email_send %s: error=%v %q, want %s", args, isErr, text, want)
		}
	}
}

// smtpServer is a go-smtp server on loopback offering mechs, answering AUTH
// with authErr (nil: accepted); it counts the messages it took.
func smtpServer(t *testing.T, mechs []string, authErr *sasl.OAuthBearerError) (addr string, got func() int) {
	var n int
	srv := smtp.NewServer(smtp.BackendFunc(func(*smtp.Conn) (smtp.Session, error) {
		return &testSession{mechs: mechs, authErr: authErr, n: &n}, nil
	}))
	srv.Domain, srv.AllowInsecureAuth = "localhost", true
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return ln.Addr().String(), func() int { return n }
}

type testSession struct {
	mechs   []string
	authErr *sasl.OAuthBearerError
	token   string
	n       *int
}

func (s *testSession) AuthMechanisms() []string { return s.mechs }
func (s *testSession) Auth(string) (sasl.Server, error) {
	return sasl.NewOAuthBearerServer(func(o sasl.OAuthBearerOptions) *sasl.OAuthBearerError {
		if s.authErr != nil {
			return s.authErr
		}
		s.token = o.Token
		return nil
	}), nil
}
func (s *testSession) Mail(string, *smtp.MailOptions) error {
	if s.token == "" {
		return &smtp.SMTPError{Code: 530, Message: "authentication required"}
	}
	return nil
}
func (s *testSession) Rcpt(to string, _ *smtp.RcptOptions) error {
	if strings.HasPrefix(to, "unknown") {
		return &smtp.SMTPError{Code: 550, Message: "no such user"}
	}
	return nil
}
func (s *testSession) Data(r io.Reader) error { io.Copy(io.Discard, r); *s.n++; return nil }
func (s *testSession) Reset()                 {}
func (s *testSession) Logout() error          { return nil }

// TestSubmit: the submission client authenticates with OAUTHBEARER only, and
// every refusal is a clear, stable error: no OAUTHBEARER offered, the token
// refused, a recipient refused, nobody listening.
func TestSubmit(t *testing.T) {
	ctx := context.Background()
	msg := []byte("From: a@example.com\r\n\r\nhi\r\n")
	addr, got := smtpServer(t, []string{sasl.OAuthBearer}, nil)
	if err := submit(ctx, MailSend{Submission: addr}, "a@example.com", []string{"b@example.net"}, msg, "tok"); err != nil || got() != 1 {
		t.Fatalf("submit: %v (%d messages)", err, got())
	}
	for name, c := range map[string]struct {
		addr string
		to   string
		want problem.Code
		msg  string
	}{
		"no OAUTHBEARER": {addr: must(smtpServer(t, []string{sasl.Plain}, nil)), to: "b@example.net", want: CodeUnreachable, msg: "does not offer AUTH OAUTHBEARER"},
		"token refused":  {addr: must(smtpServer(t, []string{sasl.OAuthBearer}, &sasl.OAuthBearerError{Status: "invalid_token"})), to: "b@example.net", want: CodeDenied, msg: "refused this agent's identity token"},
		"recipient":      {addr: addr, to: "unknown@example.net", want: CodeDenied, msg: "550 no such user"},
		"nobody there":   {addr: closedPort(t), to: "b@example.net", want: CodeUnreachable, msg: "cannot submit"},
		"not host:port":  {addr: "nowhere", to: "b@example.net", want: CodeBadRequest, msg: "not host:port"},
	} {
		err := submit(ctx, MailSend{Submission: c.addr}, "a@example.com", []string{c.to}, msg, "tok")
		p := problem.As(err)
		if err == nil || p.Code != c.want || !strings.Contains(p.Message, c.msg) || p.Fix == "" || strings.Contains(p.Error(), "tok") && !strings.Contains(c.msg, "tok") {
			t.Errorf("%s: %v, want %s %q", name, err, c.want, c.msg)
		}
	}
	if got() != 1 {
		t.Fatalf("%d messages taken, want 1", got())
	}
}

func must(addr string, _ func() int) string { return addr }

func closedPort(t *testing.T) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

// TestEmailSendThroughSocket: the thin front's email_send answers as the
// daemon's own, through POST /mail/send; a body that is not a message is
// BAD_REQUEST there.
func TestEmailSendThroughSocket(t *testing.T) {
	src := Source{Dir: Dir(t.TempDir())} // not paired: a valid message is DENIED
	sock := filepath.Join(t.TempDir(), "d.sock")
	serve(t, sock, "", src)
	direct, front := mcpClient(t, src), mcpClient(t, NewSocketClient(sock))
	for _, c := range []struct {
		args map[string]any
		code problem.Code
	}{
		{map[string]any{"to": []any{"b@example.net"}, "subject": "s", "text": "t"}, CodeDenied},
		{map[string]any{"to": []any{"b@example.net"}, "subject": "s", "text": "t", "html": "<p>t</p>", "from": "a@example.com"}, CodeDenied},
		{map[string]any{"to": []any{}, "subject": "s", "text": "t"}, CodeBadRequest},
		{map[string]any{"to": []any{"b@example.net"}, "subject": "a\nb", "text": "t"}, CodeBadRequest},
	} {
		dt, dErr := callText(t, direct, "email_send", c.args)
		ft, fErr := callText(t, front, "email_send", c.args)
		if !dErr || !fErr || dt != ft || !strings.HasPrefix(ft, string(c.code)+": ") {
			t.Errorf("email_send %v:\ndirect (error=%v): %q\n front (error=%v): %q\nwant both %s", c.args, dErr, dt, fErr, ft, c.code)
		}
	}
	hc := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, "unix", sock)
	}}}
	for _, body := range []string{`not json`, `{"to":["b@example.net"],"subject":"s","text":"t","bcc":["x@example.com"]}`} {
		resp, err := hc.Post("http://agentkeys/mail/send", "application/json", strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		var e struct{ Error *problem.Error }
		json.NewDecoder(resp.Body).Decode(&e)
		resp.Body.Close()
		if resp.StatusCode != http.StatusBadRequest || e.Error == nil || e.Error.Code != CodeBadRequest {
			t.Errorf("POST /mail/send %s: %d %+v", body, resp.StatusCode, e.Error)
		}
	}
}
