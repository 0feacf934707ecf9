package daemon

// Sending mail as the agent (§9): the daemon builds the message, has the
// broker DKIM-sign it from the header block and body hash alone (the body
// never leaves the daemon), and submits it itself to the mail edge's
// submission port, authenticated by SASL OAUTHBEARER with an identity token
// whose audience is the edge; or, in AWS mode (mail.json "send": {"ses"}),
// hands it to SES SendRawEmail with its own STS credentials (mailses.go).

import (
	"bytes"
	"cmp"
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	netmail "net/mail"
	"regexp"
	"strings"
	"time"

	"github.com/emersion/go-message"
	"github.com/emersion/go-message/mail"
	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"

	"github.com/agentkeys/agentkeys/internal/apiv1"
	"github.com/agentkeys/agentkeys/internal/dkimsig"
	"github.com/agentkeys/agentkeys/internal/maildns"
	"github.com/agentkeys/agentkeys/internal/problem"
)

// DefaultSubmission is MailSend's default submission port. Its default token
// audience is the From address's domain: the audience the edge accepts by
// default, and one the agent may mint for by holding send on that inbox.
const DefaultSubmission = "127.0.0.1:2587"

// Limits of one message email_send builds.
const (
	MaxRecipients = 50
	MaxSubject    = 998
	MaxMailText   = 1 << 20 // bytes of text, and of html
	mailTokenTTL  = 300     // seconds: the identity token only opens one SMTP session
	smtpTimeout   = 2 * time.Minute
)

// MailSend says where email_send submits (flags of daemon mcp/serve).
type MailSend struct {
	Submission string      // the edge's submission port, host:port ("" = DefaultSubmission)
	Audience   string      // the edge's identity-token audience ("" = the From address's domain)
	Domain     string      // From domain when a message names none: the agent's own inbox there
	TLS        *tls.Config // STARTTLS settings off loopback (nil: system roots, ServerName = the host)
}

// SendRequest is one message to send: email_send's input, POST /mail/send's body.
type SendRequest struct {
	From    string   `json:"from,omitempty" jsonschema:"the sending inbox (default: this agent's inbox on the daemon's --mail-domain, else mail.json's inbox)"`
	To      []string `json:"to" jsonschema:"recipient addresses, 1 to 50"`
	Subject string   `json:"subject" jsonschema:"the subject line"`
	Text    string   `json:"text" jsonschema:"the plain-text body"`
	HTML    string   `json:"html,omitempty" jsonschema:"an HTML body sent beside the text (optional)"`
}

// SendResult is what was sent.
type SendResult struct {
	MessageID string   `json:"message_id"`
	From      string   `json:"from"`
	To        []string `json:"to"`
	Bytes     int      `json:"bytes"`
	// SESMessageID is SES's id of the message (AWS mode), which its bounce
	// and complaint notifications name.
	SESMessageID string `json:"ses_message_id,omitempty"`
}

// MailSender sends mail as the agent; Source and SocketClient are both one.
type MailSender interface {
	SendMail(ctx context.Context, r SendRequest) (*SendResult, error)
}

func badSend(format string, args ...any) error {
	return problem.Newf(CodeBadRequest, "see email_send's input schema: from?, to (1-50 addresses), subject, text, html?", format, args...)
}

// checkSend checks r as far as the daemon can alone, and returns the
// recipients.
func checkSend(r *SendRequest) ([]string, error) {
	if len(r.To) == 0 || len(r.To) > MaxRecipients {
		return nil, badSend("to names %d recipients, it must name 1 to %d", len(r.To), MaxRecipients)
	}
	for i, s := range r.To {
		if !bareAddress(s) {
			return nil, badSend("recipient %d is not a bare email address such as someone@example.com", i+1)
		}
	}
	if r.From != "" && !bareAddress(r.From) {
		return nil, badSend("from must be a bare address, e.g. a1b2c3d4e5f6@agents.example.com")
	}
	if r.Subject == "" || len(r.Subject) > MaxSubject || strings.ContainsAny(r.Subject, "\r\n") {
		return nil, badSend("the subject must be one line of 1 to %d bytes", MaxSubject)
	}
	if r.Text == "" || len(r.Text) > MaxMailText || len(r.HTML) > MaxMailText {
		return nil, badSend("text is required, and text and html are at most %d bytes each", MaxMailText)
	}
	return r.To, nil
}

// addressPattern is what email_send takes as an address (the schema says it;
// bareAddress checks it and that it parses as one mailbox).
const addressPattern = `^[^@\s<>,;:"()\[\]\\]+@[^@\s<>,;:"()\[\]\\]+$`

var addressRE = regexp.MustCompile(addressPattern)

func bareAddress(s string) bool {
	if len(s) < 3 || len(s) > 254 || !addressRE.MatchString(s) {
		return false
	}
	a, err := netmail.ParseAddress(s)
	return err == nil && a.Name == "" && a.Address == s
}

// SendMail builds, signs and submits one message from one of the agent's
// inboxes. The caller may log the result, not the request.
func (s Source) SendMail(ctx context.Context, r SendRequest) (*SendResult, error) {
	to, err := checkSend(&r)
	if err != nil {
		return nil, err
	}
	sess, c, err := s.agent()
	if err != nil {
		return nil, Stable(err)
	}
	// mail.json's "send" picks SES; without the file, the edge's submission port.
	cfg, err := s.Dir.LoadMailConfig()
	if problem.As(err).Code == CodeNotFound {
		cfg, err = &MailConfig{}, nil
	}
	if err != nil {
		return nil, err
	}
	from := strings.ToLower(r.From)
	switch {
	case from != "":
	case s.Mail.Domain != "":
		from = maildns.InboxAddress(sess.Wallet, s.Mail.Domain)
	case cfg.Inbox != "":
		from = strings.ToLower(cfg.Inbox)
	default:
		return nil, problem.New(CodeBadRequest, "email_send names no from, and the daemon has no --mail-domain",
			"pass from (the agent's inbox address, agentkeys inbox list shows it), or start the daemon with --mail-domain DOMAIN")
	}
	_, domain, _ := strings.Cut(from, "@")
	m, err := BuildMessage(s.now(), from, r.To, r.Subject, r.Text, r.HTML, domain)
	if err != nil {
		return nil, err
	}
	signed, err := c.DKIMSign(ctx, apiv1.DKIMSignRequest{Headers: m.Block, BodyHash: m.BodyHash})
	if err != nil {
		return nil, Stable(err)
	}
	var raw bytes.Buffer
	for _, sig := range signed.Signatures {
		raw.WriteString("DKIM-Signature: " + sig.Header + "\r\n")
	}
	raw.Write(m.Raw)
	if cfg.Send != nil {
		id, err := s.sendSES(ctx, cfg.Send.SES, from, to, raw.Bytes())
		if err != nil {
			return nil, err
		}
		return &SendResult{MessageID: m.MessageID, From: from, To: to, Bytes: raw.Len(), SESMessageID: id}, nil
	}
	tok, err := s.mint(ctx, sess, c, cmp.Or(s.Mail.Audience, domain), mailTokenTTL)
	if err != nil {
		return nil, err
	}
	if err := submit(ctx, s.Mail, from, to, raw.Bytes(), tok.Token); err != nil {
		return nil, err
	}
	return &SendResult{MessageID: m.MessageID, From: from, To: to, Bytes: raw.Len()}, nil
}

// Message is a message built for signing.
type Message struct {
	Raw       []byte // header and body, CRLF line ends
	Block     string // the canonical block of every header field, for dkim-sign
	BodyHash  string // bh=
	MessageID string
}

// BuildMessage builds a MIME message (text/plain, or multipart/alternative
// with html) and what dkim-sign needs of it: every header field, canonical,
// and the body hash.
func BuildMessage(now time.Time, from string, to []string, subject, text, html, domain string) (*Message, error) {
	var h mail.Header
	h.SetDate(now)
	h.SetAddressList("From", []*mail.Address{{Address: from}})
	var rcpts []*mail.Address
	for _, t := range to {
		rcpts = append(rcpts, &mail.Address{Address: t})
	}
	h.SetAddressList("To", rcpts)
	h.SetSubject(subject)
	id := make([]byte, 16)
	rand.Read(id)
	msgID := hex.EncodeToString(id) + "@" + domain
	h.SetMessageID(msgID)
	h.Set("MIME-Version", "1.0")
	var buf bytes.Buffer
	part := func(w io.Writer, s string) error {
		_, err := io.WriteString(w, s)
		return err
	}
	textHeader := func() message.Header {
		var ph message.Header
		ph.SetContentType("text/plain", map[string]string{"charset": "utf-8"})
		ph.Set("Content-Transfer-Encoding", "quoted-printable")
		return ph
	}
	if html == "" {
		h.SetContentType("text/plain", map[string]string{"charset": "utf-8"})
		h.Set("Content-Transfer-Encoding", "quoted-printable")
		w, err := message.CreateWriter(&buf, h.Header)
		if err != nil {
			return nil, err
		}
		if err := part(w, text); err != nil {
			return nil, err
		}
		if err := w.Close(); err != nil {
			return nil, err
		}
	} else {
		h.SetContentType("multipart/alternative", nil)
		w, err := message.CreateWriter(&buf, h.Header)
		if err != nil {
			return nil, err
		}
		var hh message.Header
		hh.SetContentType("text/html", map[string]string{"charset": "utf-8"})
		hh.Set("Content-Transfer-Encoding", "quoted-printable")
		for _, p := range []struct {
			h message.Header
			s string
		}{{textHeader(), text}, {hh, html}} {
			pw, err := w.CreatePart(p.h)
			if err != nil {
				return nil, err
			}
			if err := part(pw, p.s); err != nil {
				return nil, err
			}
			if err := pw.Close(); err != nil {
				return nil, err
			}
		}
		if err := w.Close(); err != nil {
			return nil, err
		}
	}
	raw := crlf(buf.Bytes())
	head, body, ok := bytes.Cut(raw, []byte("\r\n\r\n"))
	if !ok {
		return nil, errors.New("daemon: the built message has no header/body separator")
	}
	block, err := canonicalBlock(string(head))
	if err != nil {
		return nil, err
	}
	return &Message{Raw: raw, Block: block, BodyHash: dkimsig.BodyHash(body), MessageID: "<" + msgID + ">"}, nil
}

// crlf makes every line end CRLF.
func crlf(b []byte) []byte {
	return bytes.ReplaceAll(bytes.ReplaceAll(b, []byte("\r\n"), []byte("\n")), []byte("\n"), []byte("\r\n"))
}

// canonicalBlock is the relaxed canonical form of every field of head, each
// name once (a name twice would need the bottom-up order of RFC 6376 §5.4.2).
func canonicalBlock(head string) (string, error) {
	var fields []string
	for l := range strings.SplitSeq(head, "\r\n") {
		if (strings.HasPrefix(l, " ") || strings.HasPrefix(l, "\t")) && len(fields) > 0 {
			fields[len(fields)-1] += "\r\n" + l
			continue
		}
		fields = append(fields, l)
	}
	var b strings.Builder
	seen := map[string]bool{}
	for _, f := range fields {
		c := dkimsig.RelaxedHeader(f)
		name, _, _ := strings.Cut(c, ":")
		if seen[name] {
			return "", fmt.Errorf("daemon: the built message has two %s fields", name)
		}
		seen[name] = true
		b.WriteString(c + "\r\n")
	}
	return b.String(), nil
}

// submit hands msg to the submission server: STARTTLS (required off
// loopback: the token must not cross a network in the clear), AUTH
// OAUTHBEARER with token, then one transaction.
func submit(ctx context.Context, cfg MailSend, from string, to []string, msg []byte, token string) error {
	addr := cmp.Or(cfg.Submission, DefaultSubmission)
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return problem.Newf(CodeBadRequest, "pass --mail-submission HOST:PORT", "the submission address %q is not host:port", addr)
	}
	unreachable := func(err error) error {
		return problem.Newf(CodeUnreachable, "check that the mail edge runs and --mail-submission names its submission port",
			"cannot submit to %s: %v", addr, err)
	}
	ctx, cancel := context.WithTimeout(ctx, smtpTimeout)
	defer cancel()
	conn, err := (&net.Dialer{}).DialContext(ctx, "tcp", addr)
	if err != nil {
		return unreachable(err)
	}
	defer conn.Close()
	if dl, ok := ctx.Deadline(); ok {
		conn.SetDeadline(dl)
	}
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer stop()
	var c *smtp.Client
	if loopback(host) {
		c = smtp.NewClient(conn)
	} else {
		tc := cfg.TLS
		if tc == nil {
			tc = &tls.Config{ServerName: host}
		}
		if c, err = smtp.NewClientStartTLS(conn, tc); err != nil {
			return problem.Newf(CodeUnreachable, "the edge's submission port must offer STARTTLS with a valid certificate",
				"STARTTLS with %s failed (the identity token is never sent in the clear off this machine): %v", addr, err)
		}
	}
	defer c.Close()
	if err := c.Hello("localhost"); err != nil {
		return smtpProblem(addr, err)
	}
	if !c.SupportsAuth(sasl.OAuthBearer) {
		return problem.Newf(CodeUnreachable, "point --mail-submission at the agentkeys mail edge's submission port",
			"the SMTP server at %s does not offer AUTH OAUTHBEARER", addr)
	}
	if err := c.Auth(sasl.NewOAuthBearerClient(&sasl.OAuthBearerOptions{Username: from, Token: token})); err != nil {
		return smtpProblem(addr, err)
	}
	if err := c.Mail(from, nil); err != nil {
		return smtpProblem(addr, err)
	}
	for _, t := range to {
		if err := c.Rcpt(t, nil); err != nil {
			return smtpProblem(addr, err)
		}
	}
	w, err := c.Data()
	if err != nil {
		return smtpProblem(addr, err)
	}
	if _, err := w.Write(msg); err != nil {
		return smtpProblem(addr, err)
	}
	if err := w.Close(); err != nil {
		return smtpProblem(addr, err)
	}
	c.Quit()
	return nil
}

func loopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// smtpProblem is a refusal of the submission server as a stable problem: 5xx
// is DENIED, anything else UNREACHABLE, with the server's reply (bounded).
func smtpProblem(addr string, err error) error {
	var se *smtp.SMTPError
	var oe *sasl.OAuthBearerError
	if errors.As(err, &oe) {
		return problem.Newf(CodeDenied, "the edge's audience must match --mail-audience, and the agent must hold send on the From inbox (agentkeys inbox list)",
			"the mail edge refused this agent's identity token (%s)", oe.Status)
	}
	if !errors.As(err, &se) {
		return problem.Newf(CodeUnreachable, "retry; check that the mail edge runs", "the submission to %s failed: %v", addr, err)
	}
	msg := se.Message
	if len(msg) > 200 {
		msg = msg[:200] + "…"
	}
	if se.Code >= 500 {
		return problem.Newf(CodeDenied, "send from an inbox this agent holds send on, to valid recipients (agentkeys inbox list)",
			"the mail edge refused the message: %d %s", se.Code, msg)
	}
	return problem.Newf(CodeUnreachable, "retry later", "the mail edge deferred the message: %d %s", se.Code, msg)
}
