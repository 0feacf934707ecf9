package daemon

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"io/fs"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/google/jsonschema-go/jsonschema"
	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/agentkeys/agentkeys/internal/apiv1"
	"github.com/agentkeys/agentkeys/internal/blobstore/s3store"
	"github.com/agentkeys/agentkeys/internal/mailread"
	"github.com/agentkeys/agentkeys/internal/problem"
)

// MailConfig is where the daemon reads its agent's mail from: the file
// mail.json in the daemon directory (written by the agent's operator; it
// holds no secret — a password is named, and lives in the vault). At most one
// of S3 and IMAP (reading); Send says how email_send sends when it is not
// the mail edge's submission port.
type MailConfig struct {
	// Inbox is the agent's address (agentkeys inbox list shows it): its S3
	// prefix is <agent wallet>/<inbox>/, and the edge's IMAP login name.
	Inbox string    `json:"inbox,omitempty"`
	S3    *MailS3   `json:"s3,omitempty"`
	IMAP  *MailIMAP `json:"imap,omitempty"`
	Send  *MailOut  `json:"send,omitempty"`
}

// MailOut is how email_send sends; today only through SES.
type MailOut struct {
	SES *MailSES `json:"ses,omitempty"`
}

// MailSES sends with SES SendRawEmail, signed with STS credentials minted from
// the daemon's own identity token for RoleARN (default: the "s3" role).
type MailSES struct {
	Region   string `json:"region,omitempty"`   // default: the "s3" region, else us-east-1
	RoleARN  string `json:"role_arn,omitempty"` // default: the "s3" role_arn
	Endpoint string `json:"endpoint,omitempty"` // "" = AWS's; https, or http on loopback only
}

// MailS3 reads the inbox prefix directly, with STS credentials minted from
// the daemon's own identity token for RoleARN (as cloud_credentials does).
type MailS3 struct {
	Bucket    string `json:"bucket"`
	Region    string `json:"region,omitempty"`
	Endpoint  string `json:"endpoint,omitempty"` // "" = AWS
	PathStyle bool   `json:"path_style,omitempty"`
	RoleARN   string `json:"role_arn"`
}

// MailIMAP reads a mailbox over IMAP: an external one with an app password
// stored in the vault (Credential names it: agentkeys store NAME, with NAME
// in the agent's scope), or the mail edge's with SASL OAUTHBEARER and an
// identity token for Audience (the edge's).
type MailIMAP struct {
	Addr       string `json:"addr"`
	TLS        string `json:"tls,omitempty"` // "" (993), "starttls", "none" (loopback only)
	Mailbox    string `json:"mailbox,omitempty"`
	Username   string `json:"username,omitempty"`   // default: the inbox
	Credential string `json:"credential,omitempty"` // the vault service holding the app password
	Audience   string `json:"audience,omitempty"`   // the edge's token audience (default with "inbox" and no "credential": its domain)
}

// MailConfigPath is where the mail config lives.
func (d Dir) MailConfigPath() string { return filepath.Join(string(d), "mail.json") }

func noMail(d Dir) error {
	return problem.Newf(CodeNotFound, "write "+d.MailConfigPath()+` with {"inbox": ADDRESS, "s3": {…}} or {"imap": {…}} (docs/connect-your-agent.md, "Reading the agent's mail")`,
		"this daemon has no mailbox configured")
}

func badMail(d Dir, why string) error {
	return problem.Newf(CodeBadRequest, "fix "+d.MailConfigPath()+` (docs/connect-your-agent.md, "Reading the agent's mail")`, "the daemon's mail config: %s", why)
}

// LoadMailConfig reads and checks the mail config. It refuses a file other
// users may change: the config decides where the vault's app password is
// sent.
func (d Dir) LoadMailConfig() (*MailConfig, error) {
	var c MailConfig
	if err := read(d.MailConfigPath(), &c); errors.Is(err, fs.ErrNotExist) {
		return nil, noMail(d)
	} else if err != nil {
		return nil, badMail(d, "it is not valid JSON")
	}
	if fi, err := os.Stat(d.MailConfigPath()); err != nil || fi.Mode().Perm()&0o022 != 0 {
		return nil, problem.Newf(CodeDenied, "chmod go-w "+d.MailConfigPath(),
			"other users may change %s, which decides where the mailbox password is sent", d.MailConfigPath())
	}
	if c.IMAP != nil && c.IMAP.Credential == "" && c.IMAP.Audience == "" && c.Inbox != "" {
		// The mail edge's IMAP: its default audience is the inbox's domain.
		_, c.IMAP.Audience, _ = strings.Cut(c.Inbox, "@")
	}
	if c.Send != nil && c.Send.SES != nil && c.S3 != nil {
		c.Send.SES.RoleARN = cmp.Or(c.Send.SES.RoleARN, c.S3.RoleARN)
		c.Send.SES.Region = cmp.Or(c.Send.SES.Region, c.S3.Region)
	}
	switch {
	case c.S3 != nil && c.IMAP != nil, c.S3 == nil && c.IMAP == nil && c.Send == nil:
		return nil, badMail(d, `set exactly one of "s3" and "imap" (or only "send")`)
	case c.Send != nil && c.Send.SES == nil:
		return nil, badMail(d, `"send" needs "ses"`)
	case c.Send != nil && !validARN(c.Send.SES.RoleARN):
		return nil, badMail(d, `"ses" needs "role_arn" (or "s3" with one)`)
	case c.Send != nil && c.Send.SES.Region != "" && strings.Trim(c.Send.SES.Region, "abcdefghijklmnopqrstuvwxyz0123456789-") != "":
		return nil, badMail(d, `"ses" "region" is not an AWS region, e.g. us-east-1`)
	case c.Send != nil && c.Send.SES.Endpoint != "" && !safeEndpoint(c.Send.SES.Endpoint):
		return nil, badMail(d, `"ses" "endpoint" must be an https URL (http only on loopback)`)
	case c.S3 != nil && (c.Inbox == "" || c.S3.Bucket == "" || !validARN(c.S3.RoleARN)):
		return nil, badMail(d, `"s3" needs "inbox", "bucket" and "role_arn"`)
	case c.IMAP != nil && (c.IMAP.Credential == "") == (c.IMAP.Audience == ""):
		return nil, badMail(d, `"imap" needs exactly one of "credential" (an app password in the vault) and "audience" (the mail edge's token audience)`)
	case c.IMAP != nil && c.IMAP.Credential != "" && !apiv1.ValidName(c.IMAP.Credential):
		return nil, badMail(d, `"credential" is not a service name`)
	case c.IMAP != nil && c.IMAP.Username == "" && c.Inbox == "":
		return nil, badMail(d, `"imap" needs "username" or "inbox"`)
	case c.Inbox != "" && (len(c.Inbox) > 254 || !strings.Contains(c.Inbox, "@") || strings.ContainsAny(c.Inbox, "/ \t\r\n")):
		return nil, badMail(d, `"inbox" is not an address`)
	}
	return &c, nil
}

// Mailbox opens the agent's mailbox as its config says. The caller closes it.
func (s Source) Mailbox(ctx context.Context) (mailread.Source, error) {
	sess, err := s.Dir.LoadSession()
	if err != nil {
		return nil, Stable(err)
	}
	cfg, err := s.Dir.LoadMailConfig()
	if err != nil {
		return nil, err
	}
	if cfg.S3 == nil && cfg.IMAP == nil {
		return nil, problem.Newf(CodeNotFound, "add \"s3\" or \"imap\" to "+s.Dir.MailConfigPath()+` (docs/connect-your-agent.md, "Reading the agent's mail")`,
			"this daemon's mail config only sends: it names no mailbox to read")
	}
	if cfg.S3 != nil {
		region := cfg.S3.Region
		creds := aws.NewCredentialsCache(aws.CredentialsProviderFunc(func(ctx context.Context) (aws.Credentials, error) {
			c, err := s.AWSCredentials(ctx, AWSRequest{RoleARN: cfg.S3.RoleARN, Region: region})
			if err != nil {
				return aws.Credentials{}, err
			}
			return aws.Credentials{AccessKeyID: c.AccessKeyID, SecretAccessKey: c.SecretAccessKey, SessionToken: c.SessionToken,
				CanExpire: true, Expires: c.Expiration, Source: "agentkeys"}, nil
		}))
		st, err := s3store.New(s3store.Config{Bucket: cfg.S3.Bucket, Region: region, Endpoint: cfg.S3.Endpoint, PathStyle: cfg.S3.PathStyle, Credentials: creds})
		if err != nil {
			return nil, badMail(s.Dir, err.Error())
		}
		return &mailread.StoreSource{Store: st, Prefix: mailread.Prefix(sess.Wallet, cfg.Inbox)}, nil
	}
	ic := mailread.IMAPConfig{Addr: cfg.IMAP.Addr, TLS: cfg.IMAP.TLS, Mailbox: cfg.IMAP.Mailbox, Username: cfg.IMAP.Username}
	if ic.Username == "" {
		ic.Username = cfg.Inbox
	}
	if svc := cfg.IMAP.Credential; svc != "" {
		ic.Password = func(ctx context.Context) (string, error) {
			v, err := s.Get(ctx, svc, Wait{})
			if err != nil {
				return "", err
			}
			defer clear(v)
			return string(v), nil
		}
	} else {
		aud := cfg.IMAP.Audience
		ic.Token = func(ctx context.Context) (string, error) {
			t, err := s.OIDCToken(ctx, aud, 0)
			if err != nil {
				return "", err
			}
			return t.Token, nil
		}
	}
	src, err := mailread.NewIMAPSource(ic)
	if err != nil {
		return nil, badMail(s.Dir, problem.As(err).Message)
	}
	return src, nil
}

// EmailSummary is one message of email_list.
type EmailSummary struct {
	mailread.Ref
	From    string   `json:"from"`
	Subject string   `json:"subject"`
	Seen    bool     `json:"seen,omitempty"`
	Labels  []string `json:"labels,omitempty"`
}

// EmailList is email_list's result and GET /email's body.
type EmailList struct {
	Messages []EmailSummary `json:"messages"`
	More     bool           `json:"more,omitempty"` // list again with since = the last one's received + 1ns
}

// MarkRequest is email_mark's change: either field may be left out (kept).
type MarkRequest struct {
	Seen   *bool     `json:"seen,omitempty"`
	Labels *[]string `json:"labels,omitempty"`
}

// MailReader reads the agent's own inbox: a Source, or a SocketClient in
// front of a daemon that does.
type MailReader interface {
	EmailList(ctx context.Context, since time.Time, limit int) (*EmailList, error)
	EmailGet(ctx context.Context, id string) (*mailread.Message, error)
	EmailWaitForCode(ctx context.Context, q mailread.Query) (*mailread.CodeResult, error)
	EmailMark(ctx context.Context, id string, r MarkRequest) (*mailread.Mark, error)
}

var (
	_ MailReader = Source{}
	_ MailReader = (*SocketClient)(nil)
)

// withMailbox runs f on the agent's mailbox and closes it.
func withMailbox[T any](ctx context.Context, s Source, f func(mailread.Source) (T, error)) (T, error) {
	var zero T
	mb, err := s.Mailbox(ctx)
	if err != nil {
		return zero, Stable(err)
	}
	defer mb.Close()
	v, err := f(mb)
	if err != nil {
		return zero, Stable(err)
	}
	return v, nil
}

// EmailList lists the inbox from since, oldest first, with each message's
// sender, subject and marks (each listed message is read: limit bounds it).
func (s Source) EmailList(ctx context.Context, since time.Time, limit int) (*EmailList, error) {
	if _, err := mailread.CheckLimit(limit); err != nil {
		return nil, err
	}
	return withMailbox(ctx, s, func(mb mailread.Source) (*EmailList, error) {
		refs, more, err := mb.List(ctx, since, limit)
		if err != nil {
			return nil, err
		}
		ids := make([]string, len(refs))
		for i, r := range refs {
			ids[i] = r.ID
		}
		marks, err := mb.Marks(ctx, ids)
		if err != nil {
			return nil, err
		}
		out := &EmailList{Messages: []EmailSummary{}, More: more}
		for _, r := range refs {
			e := EmailSummary{Ref: r, Seen: marks[r.ID].Seen, Labels: marks[r.ID].Labels}
			if raw, err := mb.Get(ctx, r.ID); err == nil {
				m := mailread.Parse(r.ID, raw)
				e.From, e.Subject = m.From, m.Subject
			} else if problem.As(err).Code != CodeNotFound {
				return nil, err
			}
			out.Messages = append(out.Messages, e)
		}
		return out, nil
	})
}

// EmailGet reads and parses one message.
func (s Source) EmailGet(ctx context.Context, id string) (*mailread.Message, error) {
	if err := mailread.CheckID(id); err != nil {
		return nil, err
	}
	return withMailbox(ctx, s, func(mb mailread.Source) (*mailread.Message, error) {
		raw, err := mb.Get(ctx, id)
		if err != nil {
			return nil, err
		}
		m := mailread.Parse(id, raw)
		marks, err := mb.Marks(ctx, []string{id})
		if err != nil {
			return nil, err
		}
		m.Seen, m.Labels = marks[id].Seen, marks[id].Labels
		return m, nil
	})
}

// EmailWaitForCode waits for a one-time code or magic link (WaitForCode).
func (s Source) EmailWaitForCode(ctx context.Context, q mailread.Query) (*mailread.CodeResult, error) {
	if err := mailread.CheckQuery(q); err != nil {
		return nil, err
	}
	return withMailbox(ctx, s, func(mb mailread.Source) (*mailread.CodeResult, error) {
		return mailread.WaitForCode(ctx, mb, s.now(), q)
	})
}

// EmailMark changes a message's mark: what r leaves out stays.
func (s Source) EmailMark(ctx context.Context, id string, r MarkRequest) (*mailread.Mark, error) {
	if err := checkMark(id, r); err != nil {
		return nil, err
	}
	return withMailbox(ctx, s, func(mb mailread.Source) (*mailread.Mark, error) {
		if _, err := mb.Get(ctx, id); err != nil {
			return nil, err
		}
		cur, err := mb.Marks(ctx, []string{id})
		if err != nil {
			return nil, err
		}
		mk := cur[id]
		if r.Seen != nil {
			mk.Seen = *r.Seen
		}
		if r.Labels != nil {
			mk.Labels = *r.Labels
		}
		if err := mb.SetMark(ctx, id, mk); err != nil {
			return nil, err
		}
		if mk.Labels == nil {
			mk.Labels = []string{}
		}
		return &mk, nil
	})
}

func checkMark(id string, r MarkRequest) error {
	if err := mailread.CheckID(id); err != nil {
		return err
	}
	if r.Seen == nil && r.Labels == nil {
		return problem.New(CodeBadRequest, "nothing to change", "pass seen (true or false), labels (the full new list), or both")
	}
	if r.Labels != nil {
		return mailread.CheckMark(mailread.Mark{Labels: *r.Labels})
	}
	return nil
}

// The inputs of the email tools.
type (
	EmailListInput struct {
		Since string `json:"since,omitempty" jsonschema:"only messages received at or after this time (RFC 3339, e.g. 2026-12-05T06:00:00Z); default: all"`
		Limit int    `json:"limit,omitempty" jsonschema:"at most this many messages, 1-100 (0 or omitted: 20)"`
	}
	EmailGetInput struct {
		ID string `json:"id" jsonschema:"the message id email_list returned"`
	}
	EmailWaitInput struct {
		From           string `json:"from,omitempty" jsonschema:"only messages whose sender address contains this, e.g. github.com"`
		Subject        string `json:"subject,omitempty" jsonschema:"only messages whose subject contains this (any case)"`
		TimeoutSeconds int    `json:"timeout_seconds,omitempty" jsonschema:"how long to wait, 1-600 seconds (0 or omitted: 60)"`
		Since          string `json:"since,omitempty" jsonschema:"only messages received at or after this time (RFC 3339, at most 24 hours back), e.g. when the form was submitted; default: 15 minutes before the call"`
	}
	EmailMarkInput struct {
		ID     string    `json:"id" jsonschema:"the message id email_list returned"`
		Seen   *bool     `json:"seen,omitempty" jsonschema:"mark the message read (true) or unread (false)"`
		Labels *[]string `json:"labels,omitempty" jsonschema:"the message's labels, replacing its old ones (each 1-32 of a-z 0-9 . _ -; at most 16)"`
	}
)

// defaultWait is email_wait_for_code's timeout when none is given.
const defaultWait = 60

func parseSince(s string) (time.Time, error) {
	if s == "" {
		return time.Time{}, nil
	}
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		return time.Time{}, problem.New(CodeBadRequest, "since is not an RFC 3339 time", "pass e.g. 2026-12-05T06:00:00Z, or omit it")
	}
	return t, nil
}

func (in *EmailWaitInput) query() (mailread.Query, error) {
	sec := in.TimeoutSeconds
	if sec == 0 {
		sec = defaultWait
	}
	since, err := parseSince(in.Since)
	if err != nil {
		return mailread.Query{}, err
	}
	q := mailread.Query{From: in.From, Subject: in.Subject, Timeout: time.Duration(sec) * time.Second, Since: since}
	return q, mailread.CheckQuery(q)
}

// addMailReadTools adds email_list, email_get, email_wait_for_code and
// email_mark: the agent reads its own inbox, nobody else's (the config names
// it; the credentials reach that inbox only).
func addMailReadTools(s *mcp.Server, src MailReader, log *slog.Logger) {
	result := func(tool string, v any, err error, attrs ...any) *mcp.CallToolResult {
		if err != nil {
			p := Stable(err)
			log.Info(tool+" refused", append(attrs, "code", p.Code)...)
			return toolError(p)
		}
		log.Info(tool, attrs...)
		b, _ := json.Marshal(v)
		res := toolText(string(b))
		res.StructuredContent = json.RawMessage(b)
		return res
	}
	maxLimit, maxWait := float64(mailread.MaxList), mailread.MaxWait.Seconds()
	addTool(s, &mcp.Tool{Name: "email_list",
		Description: "List the messages in this agent's inbox, oldest first, with sender, subject, and whether they are marked seen. " +
			"Page with since = the last message's received time plus a nanosecond."},
		schemaFor[EmailListInput](func(p map[string]*jsonschema.Schema) {
			integer(p["limit"], 0, maxLimit)
			str(p["since"], 1, 64, "")
		}),
		func(in *EmailListInput) error {
			_, err := parseSince(in.Since)
			if err == nil {
				_, err = mailread.CheckLimit(in.Limit)
			}
			return err
		},
		func(ctx context.Context, _ *mcp.CallToolRequest, in EmailListInput) *mcp.CallToolResult {
			since, _ := parseSince(in.Since)
			l, err := src.EmailList(ctx, since, in.Limit)
			n := 0
			if l != nil {
				n = len(l.Messages)
			}
			return result("email_list", l, err, "messages", n)
		})
	addTool(s, &mcp.Tool{Name: "email_get",
		Description: "Read one message of this agent's inbox: headers, the text body, the HTML body rendered to text, its links, " +
			"attachment names and sizes (not their bytes), and the receiving server's SPF/DKIM/DMARC verdict (authentication_results)."},
		schemaFor[EmailGetInput](func(p map[string]*jsonschema.Schema) { str(p["id"], 3, 30, mailread.IDPattern) }),
		func(in *EmailGetInput) error { return mailread.CheckID(in.ID) },
		func(ctx context.Context, _ *mcp.CallToolRequest, in EmailGetInput) *mcp.CallToolResult {
			m, err := src.EmailGet(ctx, in.ID)
			return result("email_get", m, err, "id", in.ID)
		})
	addTool(s, &mcp.Tool{Name: "email_wait_for_code",
		Description: "Wait for a one-time code (4-8 digits, or a letters-and-digits code next to the word code) or a magic sign-in link " +
			"in a new, unread message of this agent's inbox, e.g. after signing up somewhere. Messages up to 15 minutes old count (or from since on); " +
			"the message found is marked seen, so the same code is not returned twice. Errors NOT_FOUND when nothing came within timeout_seconds."},
		schemaFor[EmailWaitInput](func(p map[string]*jsonschema.Schema) {
			integer(p["timeout_seconds"], 0, maxWait)
			str(p["from"], 1, 254, "")
			str(p["subject"], 1, 998, "")
			str(p["since"], 1, 64, "")
		}),
		func(in *EmailWaitInput) error { _, err := in.query(); return err },
		func(ctx context.Context, _ *mcp.CallToolRequest, in EmailWaitInput) *mcp.CallToolResult {
			q, _ := in.query()
			r, err := src.EmailWaitForCode(ctx, q)
			id := ""
			if r != nil {
				id = r.ID
			}
			return result("email_wait_for_code", r, err, "id", id) // never the code
		})
	addTool(s, &mcp.Tool{Name: "email_mark",
		Description: "Mark a message of this agent's inbox read or unread (seen) and/or set its labels (replacing the old ones). Marks are the daemon's own, kept beside the inbox."},
		schemaFor[EmailMarkInput](func(p map[string]*jsonschema.Schema) {
			str(p["id"], 3, 30, mailread.IDPattern)
			p["seen"].Type, p["seen"].Types = "boolean", nil
			p["labels"].Type, p["labels"].Types = "array", nil
			maxLabels := mailread.MaxLabels
			p["labels"].MaxItems = &maxLabels
			p["labels"].Items = &jsonschema.Schema{Type: "string", Pattern: mailread.LabelPattern}
		}),
		func(in *EmailMarkInput) error { return checkMark(in.ID, MarkRequest{Seen: in.Seen, Labels: in.Labels}) },
		func(ctx context.Context, _ *mcp.CallToolRequest, in EmailMarkInput) *mcp.CallToolResult {
			mk, err := src.EmailMark(ctx, in.ID, MarkRequest{Seen: in.Seen, Labels: in.Labels})
			return result("email_mark", mk, err, "id", in.ID)
		})
}

// mailReadRoutes serves the email tools on the socket: GET /email?since=&limit=,
// GET /email/{id}, GET /email/code?from=&subject=&since=&timeout=SECONDS and
// POST /email/{id}/mark {"seen"?, "labels"?}.
func mailReadRoutes(mux *http.ServeMux, src Source, log *slog.Logger, fail func(http.ResponseWriter, *problem.Error)) {
	answer := func(w http.ResponseWriter, what string, v any, err error, attrs ...any) {
		if err != nil {
			p := Stable(err)
			log.Info(what+" refused", append(attrs, "code", p.Code)...)
			fail(w, p)
			return
		}
		log.Info(what, attrs...)
		writeJSON(w, http.StatusOK, v)
	}
	mux.HandleFunc("GET /email", func(w http.ResponseWriter, r *http.Request) {
		q := r.URL.Query()
		since, err := parseSince(q.Get("since"))
		limit := 0
		if err == nil && q.Get("limit") != "" {
			if limit, err = strconv.Atoi(q.Get("limit")); err != nil {
				err = problem.New(CodeBadRequest, "limit is not a number", "pass 1 to 100, or omit it")
			}
		}
		if err != nil {
			fail(w, Stable(err))
			return
		}
		l, err := src.EmailList(r.Context(), since, limit)
		answer(w, "email list", l, err)
	})
	mux.HandleFunc("GET /email/code", func(w http.ResponseWriter, r *http.Request) {
		q := r.URL.Query()
		in := EmailWaitInput{From: q.Get("from"), Subject: q.Get("subject"), Since: q.Get("since")}
		if t := q.Get("timeout"); t != "" {
			n, err := strconv.Atoi(t)
			if err != nil {
				fail(w, problem.New(CodeBadRequest, "timeout is not a number of seconds", "pass 1 to 600, or omit it for 60"))
				return
			}
			in.TimeoutSeconds = n
		}
		qq, err := in.query()
		if err != nil {
			fail(w, Stable(err))
			return
		}
		res, err := src.EmailWaitForCode(r.Context(), qq)
		id := ""
		if res != nil {
			id = res.ID
		}
		answer(w, "email code", res, err, "id", id)
	})
	mux.HandleFunc("GET /email/{id}", func(w http.ResponseWriter, r *http.Request) {
		m, err := src.EmailGet(r.Context(), r.PathValue("id"))
		answer(w, "email get", m, err)
	})
	mux.HandleFunc("POST /email/{id}/mark", func(w http.ResponseWriter, r *http.Request) {
		var in MarkRequest
		dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, 4096))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&in); err != nil {
			fail(w, problem.New(CodeBadRequest, "the body is not {\"seen\": BOOL, \"labels\": [LABEL…]}", "send seen, labels or both as JSON"))
			return
		}
		mk, err := src.EmailMark(r.Context(), r.PathValue("id"), in)
		answer(w, "email mark", mk, err)
	})
}

// EmailList lists the inbox through the daemon.
func (c *SocketClient) EmailList(ctx context.Context, since time.Time, limit int) (*EmailList, error) {
	q := url.Values{}
	if !since.IsZero() {
		q.Set("since", since.Format(time.RFC3339Nano))
	}
	if limit != 0 {
		q.Set("limit", strconv.Itoa(limit))
	}
	var out EmailList
	if err := c.get(ctx, "/email", q, &out, 0); err != nil {
		return nil, err
	}
	return &out, nil
}

// EmailGet reads a message through the daemon.
func (c *SocketClient) EmailGet(ctx context.Context, id string) (*mailread.Message, error) {
	if err := mailread.CheckID(id); err != nil {
		return nil, err
	}
	var out mailread.Message
	if err := c.get(ctx, "/email/"+id, nil, &out, 0); err != nil {
		return nil, err
	}
	return &out, nil
}

// EmailWaitForCode waits through the daemon.
func (c *SocketClient) EmailWaitForCode(ctx context.Context, q mailread.Query) (*mailread.CodeResult, error) {
	v := url.Values{"timeout": {strconv.Itoa(int(q.Timeout / time.Second))}}
	if q.From != "" {
		v.Set("from", q.From)
	}
	if q.Subject != "" {
		v.Set("subject", q.Subject)
	}
	if !q.Since.IsZero() {
		v.Set("since", q.Since.Format(time.RFC3339Nano))
	}
	var out mailread.CodeResult
	if err := c.get(ctx, "/email/code", v, &out, q.Timeout); err != nil {
		return nil, err
	}
	return &out, nil
}

// EmailMark marks a message through the daemon.
func (c *SocketClient) EmailMark(ctx context.Context, id string, r MarkRequest) (*mailread.Mark, error) {
	if err := mailread.CheckID(id); err != nil {
		return nil, err
	}
	var out mailread.Mark
	if err := c.call(ctx, http.MethodPost, "/email/"+id+"/mark", nil, r, &out, 0); err != nil {
		return nil, err
	}
	return &out, nil
}
