package mailread

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/emersion/go-imap"
	"github.com/emersion/go-imap/client"
	"github.com/emersion/go-sasl"

	"github.com/agentkeys/agentkeys/internal/problem"
)

// TLS modes of an IMAPConfig.
const (
	TLSImplicit = ""         // TLS from the first byte (port 993)
	TLSStart    = "starttls" // STARTTLS before authenticating
	TLSNone     = "none"     // plain: only to a loopback address
)

// IMAPConfig says how to reach and log in to a mailbox. Exactly one of
// Password and Token is set; neither value is ever logged or put in an error.
type IMAPConfig struct {
	Addr     string // host:port
	TLS      string // TLSImplicit, TLSStart or TLSNone
	Mailbox  string // "" = INBOX
	Username string
	// Password returns the app password (LOGIN), e.g. from the vault.
	Password func(ctx context.Context) (string, error)
	// Token returns an identity token for SASL OAUTHBEARER (RFC 7628): the
	// mail edge's IMAP server.
	Token     func(ctx context.Context) (string, error)
	TLSConfig *tls.Config // nil = the system roots, ServerName from Addr
}

// IMAPSource reads one mailbox over IMAP (go-imap's client). It connects on
// first use and keeps the connection until Close. Message ids are
// <uidvalidity>.<uid>; marks are IMAP flags (\Seen, and a keyword per label),
// so any IMAP client sees them too.
type IMAPSource struct {
	cfg      IMAPConfig
	c        *client.Client
	validity uint32
}

var _ Source = (*IMAPSource)(nil)

// imapTimeout bounds one IMAP command and the connection's set-up.
const imapTimeout = 30 * time.Second

// NewIMAPSource checks cfg and returns its source; it does not connect.
func NewIMAPSource(cfg IMAPConfig) (*IMAPSource, error) {
	host, _, err := net.SplitHostPort(cfg.Addr)
	if err != nil || host == "" {
		return nil, problem.New(problem.BadRequest, "the IMAP address is not host:port", "set it to e.g. imap.gmail.com:993 in the daemon's mail config")
	}
	switch cfg.TLS {
	case TLSImplicit, TLSStart:
	case TLSNone:
		if ip := net.ParseIP(host); host != "localhost" && (ip == nil || !ip.IsLoopback()) {
			return nil, problem.New(problem.BadRequest, "plain IMAP is allowed to a loopback address only",
				"use tls \"\" (port 993) or \"starttls\": a password or token must not cross the network in the clear")
		}
	default:
		return nil, problem.New(problem.BadRequest, `tls must be "" (implicit), "starttls" or "none"`, "fix the daemon's mail config")
	}
	if (cfg.Password == nil) == (cfg.Token == nil) {
		return nil, problem.New(problem.BadRequest, "an IMAP mailbox needs exactly one of a password credential or an identity token", "fix the daemon's mail config")
	}
	if cfg.Mailbox == "" {
		cfg.Mailbox = "INBOX"
	}
	return &IMAPSource{cfg: cfg}, nil
}

func (s *IMAPSource) unreachable(err error) error {
	return problem.Wrap(err, problem.Unreachable, "check the IMAP address and the network", "cannot reach the IMAP server %s", s.cfg.Addr)
}

// conn returns the logged-in connection with the mailbox selected.
func (s *IMAPSource) conn(ctx context.Context) (*client.Client, error) {
	if s.c != nil {
		select {
		case <-s.c.LoggedOut():
			s.c = nil
		default:
			return s.c, nil
		}
	}
	d := net.Dialer{Timeout: imapTimeout}
	raw, err := d.DialContext(ctx, "tcp", s.cfg.Addr)
	if err != nil {
		return nil, s.unreachable(err)
	}
	tc := s.cfg.TLSConfig
	if tc == nil {
		host, _, _ := net.SplitHostPort(s.cfg.Addr)
		tc = &tls.Config{ServerName: host, MinVersion: tls.VersionTLS12}
	}
	if s.cfg.TLS == TLSImplicit {
		raw = tls.Client(raw, tc)
	}
	raw.SetDeadline(time.Now().Add(imapTimeout))
	c, err := client.New(raw)
	if err != nil {
		raw.Close()
		return nil, s.unreachable(err)
	}
	c.Timeout = imapTimeout
	fail := func(e error) (*client.Client, error) {
		c.Logout()
		c.Terminate()
		return nil, e
	}
	if s.cfg.TLS == TLSStart {
		if err := c.StartTLS(tc); err != nil {
			return fail(problem.Wrap(err, problem.Unreachable, "check the IMAP address, or use tls \"\" for port 993", "STARTTLS with %s failed", s.cfg.Addr))
		}
	}
	denied := func() error {
		return problem.Newf(problem.Denied, "check the username and the stored credential (an app password for Gmail/Outlook), or the inbox's Read grant",
			"the IMAP server %s refused the login", s.cfg.Addr)
	}
	if s.cfg.Password != nil {
		pw, err := s.cfg.Password(ctx)
		if err != nil {
			return fail(err)
		}
		if err := c.Login(s.cfg.Username, pw); err != nil {
			return fail(denied())
		}
	} else {
		tok, err := s.cfg.Token(ctx)
		if err != nil {
			return fail(err)
		}
		host, port, _ := net.SplitHostPort(s.cfg.Addr)
		p, _ := strconv.Atoi(port)
		if err := c.Authenticate(sasl.NewOAuthBearerClient(&sasl.OAuthBearerOptions{Username: s.cfg.Username, Token: tok, Host: host, Port: p})); err != nil {
			return fail(denied())
		}
	}
	mb, err := c.Select(s.cfg.Mailbox, false)
	if err != nil {
		return fail(problem.Newf(problem.NotFound, "check the mailbox name in the daemon's mail config", "the IMAP server has no mailbox %q for this login", s.cfg.Mailbox))
	}
	raw.SetDeadline(time.Time{})
	s.c, s.validity = c, mb.UidValidity
	return c, nil
}

// cmdError maps a failed command: a dropped connection is UNREACHABLE and
// forgotten, so the next call connects again.
func (s *IMAPSource) cmdError(err error, what string) error {
	if s.c != nil {
		s.c.Terminate()
		s.c = nil
	}
	return problem.Wrap(err, problem.Unreachable, "retry; if it persists, check the IMAP server", "IMAP %s failed on %s", what, s.cfg.Addr)
}

// fetch runs one UID FETCH and returns its messages.
func (s *IMAPSource) fetch(c *client.Client, uids []uint32, items []imap.FetchItem) ([]*imap.Message, error) {
	set := new(imap.SeqSet)
	set.AddNum(uids...)
	ch := make(chan *imap.Message, 16)
	done := make(chan error, 1)
	go func() { done <- c.UidFetch(set, items, ch) }()
	var out []*imap.Message
	for m := range ch {
		out = append(out, m)
	}
	if err := <-done; err != nil {
		return nil, s.cmdError(err, "FETCH")
	}
	return out, nil
}

// List implements Source.
func (s *IMAPSource) List(ctx context.Context, since time.Time, limit int) ([]Ref, bool, error) {
	limit, err := CheckLimit(limit)
	if err != nil {
		return nil, false, err
	}
	c, err := s.conn(ctx)
	if err != nil {
		return nil, false, err
	}
	crit := imap.NewSearchCriteria()
	if !since.IsZero() {
		crit.Since = since.Add(-48 * time.Hour) // SINCE is a date in the server's zone: a wide net, then exact below
	}
	uids, err := c.UidSearch(crit)
	if err != nil {
		return nil, false, s.cmdError(err, "SEARCH")
	}
	slices.Sort(uids)
	var refs []Ref
	for len(uids) > 0 {
		n := min(len(uids), 2*MaxList)
		msgs, err := s.fetch(c, uids[:n], []imap.FetchItem{imap.FetchUid, imap.FetchInternalDate, imap.FetchRFC822Size})
		if err != nil {
			return nil, false, err
		}
		uids = uids[n:]
		slices.SortFunc(msgs, func(a, b *imap.Message) int { return int(int64(a.Uid) - int64(b.Uid)) })
		for _, m := range msgs {
			if m.InternalDate.Before(since) {
				continue
			}
			if len(refs) == limit {
				return refs, true, nil
			}
			refs = append(refs, Ref{ID: s.id(m.Uid), Received: m.InternalDate.UTC(), Size: int64(m.Size)})
		}
	}
	return refs, false, nil
}

func (s *IMAPSource) id(uid uint32) string { return fmt.Sprintf("%d.%d", s.validity, uid) }

// uid is the UID an id names in the selected mailbox, or a NOT_FOUND.
func (s *IMAPSource) uid(id string) (uint32, error) {
	if err := CheckID(id); err != nil {
		return 0, err
	}
	v, u, ok := strings.Cut(id, ".")
	validity, err1 := strconv.ParseUint(v, 10, 32)
	uid, err2 := strconv.ParseUint(u, 10, 32)
	if !ok || err1 != nil || err2 != nil || uint32(validity) != s.validity || uid == 0 {
		return 0, problem.Newf(problem.NotFound, "pass an id that email_list returned", "no message %s in this mailbox", id)
	}
	return uint32(uid), nil
}

// Get implements Source.
func (s *IMAPSource) Get(ctx context.Context, id string) ([]byte, error) {
	if err := CheckID(id); err != nil {
		return nil, err
	}
	c, err := s.conn(ctx)
	if err != nil {
		return nil, err
	}
	uid, err := s.uid(id)
	if err != nil {
		return nil, err
	}
	msgs, err := s.fetch(c, []uint32{uid}, []imap.FetchItem{imap.FetchUid, imap.FetchRFC822Size})
	if err != nil {
		return nil, err
	}
	if len(msgs) != 1 || msgs[0].Uid != uid {
		return nil, problem.Newf(problem.NotFound, "pass an id that email_list returned", "no message %s in this mailbox", id)
	}
	if msgs[0].Size > MaxMessage {
		return nil, problem.Newf(problem.TooLarge, "read it with another mail client", "message %s is %d bytes, more than the daemon reads (%d)", id, msgs[0].Size, MaxMessage)
	}
	section := &imap.BodySectionName{Peek: true}
	msgs, err = s.fetch(c, []uint32{uid}, []imap.FetchItem{imap.FetchUid, section.FetchItem()})
	if err != nil {
		return nil, err
	}
	if len(msgs) != 1 {
		return nil, problem.Newf(problem.NotFound, "pass an id that email_list returned", "no message %s in this mailbox", id)
	}
	lit := msgs[0].GetBody(section)
	if lit == nil {
		return nil, s.cmdError(errors.New("no body in the answer"), "FETCH")
	}
	return io.ReadAll(io.LimitReader(lit, MaxMessage))
}

// Marks implements Source.
func (s *IMAPSource) Marks(ctx context.Context, ids []string) (map[string]Mark, error) {
	c, err := s.conn(ctx)
	if err != nil {
		return nil, err
	}
	var uids []uint32
	for _, id := range ids {
		if u, err := s.uid(id); err == nil {
			uids = append(uids, u)
		}
	}
	out := map[string]Mark{}
	if len(uids) == 0 {
		return out, nil
	}
	msgs, err := s.fetch(c, uids, []imap.FetchItem{imap.FetchUid, imap.FetchFlags})
	if err != nil {
		return nil, err
	}
	for _, m := range msgs {
		if mk := markOf(m.Flags); !mk.Zero() {
			out[s.id(m.Uid)] = mk
		}
	}
	return out, nil
}

// markOf reads a mark from IMAP flags: \Seen, and keywords that are labels.
func markOf(flags []string) Mark {
	var mk Mark
	for _, f := range flags {
		switch {
		case f == imap.SeenFlag:
			mk.Seen = true
		case labelRE.MatchString(f):
			mk.Labels = append(mk.Labels, f)
		}
	}
	slices.Sort(mk.Labels)
	return mk
}

// SetMark implements Source: \Seen and the label keywords become exactly mk;
// other flags (\Answered, $Junk…) stay.
func (s *IMAPSource) SetMark(ctx context.Context, id string, mk Mark) error {
	if err := CheckID(id); err != nil {
		return err
	}
	if err := CheckMark(mk); err != nil {
		return err
	}
	c, err := s.conn(ctx)
	if err != nil {
		return err
	}
	uid, err := s.uid(id)
	if err != nil {
		return err
	}
	msgs, err := s.fetch(c, []uint32{uid}, []imap.FetchItem{imap.FetchUid, imap.FetchFlags})
	if err != nil {
		return err
	}
	if len(msgs) != 1 {
		return problem.Newf(problem.NotFound, "pass an id that email_list returned", "no message %s in this mailbox", id)
	}
	cur := markOf(msgs[0].Flags)
	var add, remove []any
	if mk.Seen && !cur.Seen {
		add = append(add, imap.SeenFlag)
	}
	if !mk.Seen && cur.Seen {
		remove = append(remove, imap.SeenFlag)
	}
	for _, l := range mk.Labels {
		if !slices.Contains(cur.Labels, l) {
			add = append(add, l)
		}
	}
	for _, l := range cur.Labels {
		if !slices.Contains(mk.Labels, l) {
			remove = append(remove, l)
		}
	}
	set := new(imap.SeqSet)
	set.AddNum(uid)
	for op, flags := range map[imap.FlagsOp][]any{imap.AddFlags: add, imap.RemoveFlags: remove} {
		if len(flags) == 0 {
			continue
		}
		if err := c.UidStore(set, imap.FormatFlagsOp(op, true), flags, nil); err != nil {
			return s.cmdError(err, "STORE")
		}
	}
	return nil
}

// PollEvery implements Poller: a wait asks an IMAP server once a second.
func (s *IMAPSource) PollEvery() time.Duration { return time.Second }

// Close implements Source: it logs out.
func (s *IMAPSource) Close() error {
	if s.c == nil {
		return nil
	}
	c := s.c
	s.c = nil
	err := c.Logout()
	c.Terminate()
	return err
}
