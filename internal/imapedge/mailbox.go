package imapedge

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/agentkeys/agentkeys/internal/blobstore"
	"github.com/emersion/go-imap"
	"github.com/emersion/go-imap/backend"
	"github.com/emersion/go-imap/backend/backendutil"
	imapserver "github.com/emersion/go-imap/server"
	"github.com/emersion/go-message"
	"github.com/emersion/go-message/textproto"
)

// How often a mailbox's listing is refreshed: new objects are looked for after
// the last known name at most once per checkEvery, and the whole prefix is
// listed again (finding writes that finished late and sort earlier) at most
// once per fullEvery.
const (
	checkEvery = time.Second
	fullEvery  = 30 * time.Second
)

// Flag bounds, per message.
const (
	maxKeywords  = 16
	maxKeywordSz = 64
)

var (
	errReadOnlyBoxes = errors.New("mailboxes here are your inboxes (agentkeys inbox create); they cannot be created, renamed, deleted or appended to over IMAP")
	errReadOnlyMsgs  = errors.New("messages here are read-only: they cannot be copied, moved, appended or marked \\Deleted")
	errNoRead        = errors.New("you do not hold the read right on this inbox (any more): LIST shows the inboxes you may read")
	errBusy          = errors.New("the server holds too many open mailboxes; try again shortly")
)

var systemFlags = []string{imap.SeenFlag, imap.AnsweredFlag, imap.FlaggedFlag, imap.DraftFlag}

// imapBackend is the go-imap backend; sign-in goes through authExtension only.
type imapBackend struct{ s *Server }

func (*imapBackend) Login(*imap.ConnInfo, string, string) (backend.User, error) {
	return nil, errors.New("LOGIN is disabled: sign in with AUTHENTICATE OAUTHBEARER")
}

// user is one signed-in session.
type user struct {
	s     *Server
	agent Agent
	conn  imapserver.Conn

	mu    sync.Mutex
	boxes map[string]*box // held until Logout
}

func (u *user) Username() string { return u.agent.Wallet }

func (u *user) mailboxes() ([]Mailbox, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	mbs, err := u.s.cfg.Directory.Mailboxes(ctx, u.agent)
	if err != nil {
		u.s.cfg.Log.Warn("imap: inbox directory", "err", err)
		return nil, errors.New("the inbox directory is unavailable; try again shortly")
	}
	return mbs, nil
}

func (u *user) ListMailboxes(bool) ([]backend.Mailbox, error) {
	mbs, err := u.mailboxes()
	if err != nil {
		return nil, err
	}
	out := make([]backend.Mailbox, 0, len(mbs))
	for _, mb := range mbs {
		if checkPrefix(mb) == nil {
			out = append(out, &mailbox{u: u, mb: mb})
		}
	}
	return out, nil
}

// GetMailbox opens an inbox by address; INBOX names the agent's own inbox
// (under its wallet) when it has exactly one.
func (u *user) GetMailbox(name string) (backend.Mailbox, error) {
	mbs, err := u.mailboxes()
	if err != nil {
		return nil, err
	}
	var own []Mailbox
	for _, mb := range mbs {
		if checkPrefix(mb) != nil {
			continue
		}
		if strings.EqualFold(mb.Address, name) {
			return u.open(mb)
		}
		if strings.HasPrefix(mb.Prefix, strings.ToLower(u.agent.Wallet)+"/") {
			own = append(own, mb)
		}
	}
	if strings.EqualFold(name, "INBOX") && len(own) == 1 {
		return u.open(own[0])
	}
	return nil, fmt.Errorf("no inbox %q that you may read: LIST shows the inboxes you may read", name)
}

func (u *user) open(mb Mailbox) (backend.Mailbox, error) {
	u.mu.Lock()
	defer u.mu.Unlock()
	b := u.boxes[mb.Prefix]
	if b == nil {
		var err error
		if b, err = u.s.acquire(mb.Prefix); err != nil {
			return nil, err
		}
		if u.boxes == nil {
			u.boxes = map[string]*box{}
		}
		u.boxes[mb.Prefix] = b
	}
	return &mailbox{u: u, mb: mb, b: b}, nil
}

func (u *user) CreateMailbox(string) error         { return errReadOnlyBoxes }
func (u *user) DeleteMailbox(string) error         { return errReadOnlyBoxes }
func (u *user) RenameMailbox(string, string) error { return errReadOnlyBoxes }

func (u *user) Logout() error {
	u.mu.Lock()
	defer u.mu.Unlock()
	for p, b := range u.boxes {
		u.s.release(b)
		delete(u.boxes, p)
	}
	return nil
}

// checkPrefix refuses a directory answer that names no proper prefix.
func checkPrefix(mb Mailbox) error {
	if !strings.HasSuffix(mb.Prefix, "/") || blobstore.CheckPrefix(mb.Prefix) != nil || mb.Address == "" {
		return fmt.Errorf("imapedge: inbox %q has no valid prefix", mb.Address)
	}
	return nil
}

// box is the server's table of one mailbox: UID i is keys[i-1].
type box struct {
	prefix string

	mu        sync.Mutex
	validity  uint32
	names     []string // object names (after the prefix), in UID order
	sizes     []int64
	flags     [][]string
	known     map[string]bool
	last      string // the greatest name known
	checkedAt time.Time
	fullAt    time.Time

	users int       // sessions holding it (under Server.mu)
	used  time.Time // last acquired (under Server.mu)
}

func (s *Server) acquire(prefix string) (*box, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.cfg.Now()
	if b := s.boxes[prefix]; b != nil {
		b.users++
		b.used = now
		return b, nil
	}
	if len(s.boxes) >= s.cfg.MaxBoxes {
		var lru *box
		for _, b := range s.boxes {
			if b.users == 0 && (lru == nil || b.used.Before(lru.used)) {
				lru = b
			}
		}
		if lru == nil {
			return nil, errBusy
		}
		delete(s.boxes, lru.prefix)
	}
	v := uint32(now.Unix())
	if v <= s.validity {
		v = s.validity + 1
	}
	s.validity = v
	b := &box{prefix: prefix, validity: v, known: map[string]bool{}, users: 1, used: now}
	s.boxes[prefix] = b
	return b, nil
}

func (s *Server) release(b *box) {
	s.mu.Lock()
	b.users--
	s.mu.Unlock()
}

// validName reports whether name is a message the edge wrote:
// 19 digits, '-', 8 lowercase hex digits, ".eml".
func validName(name string) bool {
	if len(name) != 32 || name[19] != '-' || !strings.HasSuffix(name, ".eml") {
		return false
	}
	for i, c := range name[:28] {
		switch {
		case i < 19 && c >= '0' && c <= '9', i == 19:
		case i > 19 && (c >= '0' && c <= '9' || c >= 'a' && c <= 'f'):
		default:
			return false
		}
	}
	return true
}

// arrived is the time in a message's name.
func arrived(name string) time.Time {
	n, _ := strconv.ParseInt(name[:19], 10, 64)
	return time.Unix(0, n)
}

// refresh appends newly found messages to the table and returns its length.
func (s *Server) refresh(ctx context.Context, b *box) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	now := s.cfg.Now()
	if !b.checkedAt.IsZero() && now.Sub(b.checkedAt) < checkEvery {
		return len(b.names), nil
	}
	full := b.fullAt.IsZero() || now.Sub(b.fullAt) >= fullEvery
	after := ""
	if !full && b.last != "" {
		after = b.prefix + b.last
	}
	var found []blobstore.Object
	for {
		objs, more, err := s.cfg.Store.List(ctx, b.prefix, after, 0)
		if err != nil {
			s.cfg.Log.Warn("imap: listing an inbox", "prefix", b.prefix, "err", err)
			return 0, errors.New("the message store is unavailable; try again shortly")
		}
		for _, o := range objs {
			name := o.Key[len(b.prefix):]
			if validName(name) && !b.known[name] {
				found = append(found, blobstore.Object{Key: name, Size: o.Size})
			}
		}
		if !more || len(objs) == 0 {
			break
		}
		after = objs[len(objs)-1].Key
	}
	slices.SortFunc(found, func(x, y blobstore.Object) int { return strings.Compare(x.Key, y.Key) })
	for _, o := range found {
		if len(b.names) >= 1<<31 {
			break
		}
		b.names = append(b.names, o.Key)
		b.sizes = append(b.sizes, o.Size)
		b.flags = append(b.flags, nil)
		b.known[o.Key] = true
		if o.Key > b.last {
			b.last = o.Key
		}
	}
	b.checkedAt = now
	if full {
		b.fullAt = now
	}
	return len(b.names), nil
}

// read returns an object's bytes, at most Config.MaxReads at a time.
func (s *Server) read(ctx context.Context, key string) ([]byte, error) {
	select {
	case s.reads <- struct{}{}:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	defer func() { <-s.reads }()
	return s.cfg.Store.Get(ctx, key)
}

// mailbox is one session's view of a box: the first view messages.
type mailbox struct {
	u    *user
	mb   Mailbox
	b    *box // nil when only listed
	view int
}

func (m *mailbox) Name() string { return m.mb.Address }

func (m *mailbox) Info() (*imap.MailboxInfo, error) {
	return &imap.MailboxInfo{Attributes: []string{imap.NoInferiorsAttr}, Delimiter: "/", Name: m.mb.Address}, nil
}

// authorized asks the directory again: a revoked grant acts on the next command.
func (m *mailbox) authorized() error {
	if m.b == nil {
		return errors.New("select the mailbox first")
	}
	mbs, err := m.u.mailboxes()
	if err != nil {
		return err
	}
	for _, mb := range mbs {
		if mb == m.mb {
			return nil
		}
	}
	return errNoRead
}

func (m *mailbox) Status(items []imap.StatusItem) (*imap.MailboxStatus, error) {
	if err := m.authorized(); err != nil {
		return nil, err
	}
	n, err := m.u.s.refresh(context.Background(), m.b)
	if err != nil {
		return nil, err
	}
	m.view = n
	st := imap.NewMailboxStatus(m.mb.Address, items)
	st.Flags = systemFlags
	st.PermanentFlags = append(slices.Clone(systemFlags), `\*`)
	m.b.mu.Lock()
	defer m.b.mu.Unlock()
	unseen := uint32(0)
	for i := 0; i < n; i++ {
		if !slices.Contains(m.b.flags[i], imap.SeenFlag) {
			if st.UnseenSeqNum == 0 {
				st.UnseenSeqNum = uint32(i + 1)
			}
			unseen++
		}
	}
	for _, it := range items {
		switch it {
		case imap.StatusMessages:
			st.Messages = uint32(n)
		case imap.StatusUidNext:
			st.UidNext = uint32(n + 1)
		case imap.StatusUidValidity:
			st.UidValidity = m.b.validity
		case imap.StatusRecent:
			st.Recent = 0
		case imap.StatusUnseen:
			st.Unseen = unseen
		}
	}
	return st, nil
}

func (m *mailbox) SetSubscribed(bool) error { return nil }

// Check and Poll (CHECK, NOOP) look for new messages and announce them.
func (m *mailbox) Check() error { return m.Poll() }

func (m *mailbox) Poll() error {
	if err := m.authorized(); err != nil {
		return err
	}
	n, err := m.u.s.refresh(context.Background(), m.b)
	if err != nil {
		return err
	}
	if n > m.view {
		m.view = n
		return m.u.conn.WriteResp(imap.NewUntaggedResp([]any{uint32(n), imap.RawString("EXISTS")}))
	}
	return nil
}

// span resolves set against the view (UIDs equal sequence numbers here: UIDs
// are 1..n with no gaps, since nothing is expunged) and calls f for each
// message in ascending order until it returns false.
func (m *mailbox) span(set *imap.SeqSet, f func(i int) bool) {
	n := uint32(m.view)
	if n == 0 || set == nil {
		return
	}
	var in []bool
	for _, sq := range set.Set {
		lo, hi := sq.Start, sq.Stop
		if lo == 0 {
			lo = n
		}
		if hi == 0 {
			hi = n
		}
		if lo > hi {
			lo, hi = hi, lo
		}
		if lo > n {
			continue
		}
		hi = min(hi, n)
		if in == nil {
			in = make([]bool, n)
		}
		for i := lo; i <= hi; i++ {
			in[i-1] = true
		}
	}
	for i, ok := range in {
		if ok && !f(i) {
			return
		}
	}
}

func needsBody(items []imap.FetchItem) bool {
	for _, it := range items {
		switch it {
		case imap.FetchUid, imap.FetchFlags, imap.FetchInternalDate, imap.FetchRFC822Size:
		default:
			return true
		}
	}
	return false
}

func (m *mailbox) ListMessages(_ bool, set *imap.SeqSet, items []imap.FetchItem, ch chan<- *imap.Message) error {
	defer close(ch)
	if err := m.authorized(); err != nil {
		return err
	}
	readOnly := m.u.conn.Context().MailboxReadOnly
	ctx := context.Background()
	var ferr error
	m.span(set, func(i int) bool {
		m.b.mu.Lock()
		name, size := m.b.names[i], m.b.sizes[i]
		m.b.mu.Unlock()
		var data []byte
		if needsBody(items) {
			var err error
			data, err = m.u.s.read(ctx, m.b.prefix+name)
			if errors.Is(err, blobstore.ErrNotFound) {
				return true // removed from the store: nothing to show
			}
			if err != nil {
				m.u.s.cfg.Log.Warn("imap: reading a message", "prefix", m.b.prefix, "err", err)
				ferr = errors.New("the message store is unavailable; try again shortly")
				return false
			}
		}
		msg := imap.NewMessage(uint32(i+1), items)
		for _, it := range items {
			switch it {
			case imap.FetchUid:
				msg.Uid = uint32(i + 1)
			case imap.FetchInternalDate:
				msg.InternalDate = arrived(name)
			case imap.FetchRFC822Size:
				msg.Size = uint32(min(size, 1<<32-1))
			case imap.FetchFlags:
			case imap.FetchEnvelope:
				hdr, _ := readHeader(data)
				msg.Envelope, _ = backendutil.FetchEnvelope(hdr)
			case imap.FetchBody, imap.FetchBodyStructure:
				hdr, body := readHeader(data)
				msg.BodyStructure, _ = backendutil.FetchBodyStructure(hdr, body, it == imap.FetchBodyStructure)
			default:
				sec, err := imap.ParseBodySectionName(it)
				if err != nil {
					continue
				}
				hdr, body := readHeader(data)
				l, err := backendutil.FetchBodySection(hdr, body, sec)
				if err != nil {
					l = bytes.NewReader(nil)
				}
				msg.Body[sec] = l
				if !sec.Peek && !readOnly {
					m.b.mu.Lock()
					if !slices.Contains(m.b.flags[i], imap.SeenFlag) {
						m.b.flags[i] = append(m.b.flags[i], imap.SeenFlag)
					}
					m.b.mu.Unlock()
				}
			}
		}
		if _, ok := msg.Items[imap.FetchFlags]; ok {
			m.b.mu.Lock()
			msg.Flags = slices.Clone(m.b.flags[i])
			m.b.mu.Unlock()
		}
		ch <- msg
		return true
	})
	return ferr
}

func readHeader(data []byte) (textproto.Header, *bufio.Reader) {
	r := bufio.NewReader(bytes.NewReader(data))
	hdr, _ := textproto.ReadHeader(r)
	return hdr, r
}

// needsContent reports whether a search looks into messages, not only at
// their flags, numbers and dates.
func needsContent(c *imap.SearchCriteria) bool {
	if c == nil {
		return false
	}
	if !c.SentBefore.IsZero() || !c.SentSince.IsZero() || len(c.Header) > 0 || len(c.Body) > 0 || len(c.Text) > 0 || c.Larger > 0 || c.Smaller > 0 {
		return true
	}
	for _, n := range c.Not {
		if needsContent(n) {
			return true
		}
	}
	for _, o := range c.Or {
		if needsContent(o[0]) || needsContent(o[1]) {
			return true
		}
	}
	return false
}

// SearchMessages looks for new messages first (announcing them with EXISTS,
// which may precede a SEARCH answer), so a client polling with UID SEARCH sees
// new mail without a NOOP.
func (m *mailbox) SearchMessages(uid bool, c *imap.SearchCriteria) ([]uint32, error) {
	if err := m.Poll(); err != nil {
		return nil, err
	}
	content := needsContent(c)
	all := &imap.SeqSet{}
	all.AddRange(1, 0)
	var ids []uint32
	var ferr error
	m.span(all, func(i int) bool {
		m.b.mu.Lock()
		name := m.b.names[i]
		flags := slices.Clone(m.b.flags[i])
		m.b.mu.Unlock()
		e := &message.Entity{}
		if content {
			data, err := m.u.s.read(context.Background(), m.b.prefix+name)
			if errors.Is(err, blobstore.ErrNotFound) {
				return true
			}
			if err != nil {
				ferr = errors.New("the message store is unavailable; try again shortly")
				return false
			}
			if e, err = message.Read(bytes.NewReader(data)); e == nil || (err != nil && !message.IsUnknownCharset(err) && !message.IsUnknownEncoding(err)) {
				return true
			}
		}
		if ok, _ := backendutil.Match(e, uint32(i+1), uint32(i+1), arrived(name), flags, c); ok {
			ids = append(ids, uint32(i+1))
		}
		return true
	})
	return ids, ferr
}

func (m *mailbox) UpdateMessagesFlags(_ bool, set *imap.SeqSet, op imap.FlagsOp, flags []string) error {
	if err := m.authorized(); err != nil {
		return err
	}
	var kw []string
	for _, f := range flags {
		switch {
		case slices.Contains(systemFlags, f):
		case f == imap.DeletedFlag || f == imap.RecentFlag || strings.HasPrefix(f, `\`):
			return errReadOnlyMsgs
		case len(f) > maxKeywordSz:
			return fmt.Errorf("a keyword has at most %d characters", maxKeywordSz)
		default:
			kw = append(kw, f)
		}
	}
	if len(kw) > maxKeywords {
		return fmt.Errorf("a message has at most %d keywords", maxKeywords)
	}
	var ferr error
	m.b.mu.Lock()
	defer m.b.mu.Unlock()
	m.span(set, func(i int) bool {
		next := backendutil.UpdateFlags(slices.Clone(m.b.flags[i]), op, flags)
		k := 0
		for _, f := range next {
			if !slices.Contains(systemFlags, f) {
				k++
			}
		}
		if k > maxKeywords {
			ferr = fmt.Errorf("a message has at most %d keywords", maxKeywords)
			return false
		}
		m.b.flags[i] = next
		return true
	})
	return ferr
}

func (m *mailbox) CreateMessage([]string, time.Time, imap.Literal) error { return errReadOnlyMsgs }
func (m *mailbox) CopyMessages(bool, *imap.SeqSet, string) error         { return errReadOnlyMsgs }

// Expunge removes nothing: no message can be marked \Deleted.
func (m *mailbox) Expunge() error { return nil }
