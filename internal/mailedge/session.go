package mailedge

import (
	"context"
	"io"
	"net"
	"strings"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"

	"github.com/agentkeys/agentkeys/internal/apiv1"
	mailkinds "github.com/agentkeys/agentkeys/internal/mail"
)

// session is one SMTP connection, inbound or submission.
type session struct {
	e          *Edge
	submission bool
	ctx        context.Context
	cancel     context.CancelFunc
	ip         net.IP
	conn       *conn // the connection's limits and counters (nil only in tests)
	helo       func() string

	agent  *Agent // submission, once authenticated
	from   string
	local  []apiv1.MailLookup // our inboxes among the recipients
	remote []string           // submission: recipients to relay
}

func (e *Edge) newSession(c *smtp.Conn, submission bool) smtp.Session {
	ctx, cancel := context.WithCancel(context.Background())
	return &session{e: e, submission: submission, ctx: ctx, cancel: cancel, helo: c.Hostname, ip: remoteIP(c.Conn()), conn: edgeConn(c.Conn())}
}

// ipKey is the rate key of the client's address.
func (s *session) ipKey() string { return ipKey(s.ip) }

// ended is the 421 to answer a command read after a deadline passed (a
// partial line, see conn.Read), or nil.
func (s *session) ended() error {
	if s.conn != nil && s.conn.ending {
		return smtpErr(421, smtp.EnhancedCode{4, 4, 2}, "Timeout: a command or message took too long; closing")
	}
	return nil
}

// end answers err (a 421) and ends the connection at the next command.
func (s *session) end(err error) error {
	if s.conn != nil {
		s.conn.ending = true
	}
	return err
}

func (s *session) Reset() { s.from, s.local, s.remote = "", nil, nil }

func (s *session) Logout() error {
	s.cancel()
	return nil
}

// Mail starts a message: inbound, within the sender address's rate;
// submission, by an authenticated agent within its rate, as an inbox it may
// send as.
func (s *session) Mail(from string, _ *smtp.MailOptions) error {
	s.Reset()
	if err := s.ended(); err != nil {
		return err
	}
	if !s.submission {
		if err := s.e.allow(s.ctx, s.e.ipLim, s.ipKey(), "from your address"); err != nil {
			return err
		}
		s.from = from
		return nil
	}
	if s.agent == nil {
		return smtpErr(530, smtp.EnhancedCode{5, 7, 0}, "Authenticate first: AUTH OAUTHBEARER with an identity token for this edge (agentkeys daemon oidc-token --audience AUDIENCE)")
	}
	if !s.e.cfg.Now().Before(s.agent.Expiry) {
		return smtpErr(530, smtp.EnhancedCode{5, 7, 0}, "Your identity token expired; connect again with a fresh one")
	}
	if err := s.e.allow(s.ctx, s.e.senderLim, "agent:"+s.agent.Omni, "from this agent"); err != nil {
		return err
	}
	addr, _, ok := splitAddress(from)
	if !ok {
		return smtpErr(553, smtp.EnhancedCode{5, 1, 7}, "MAIL FROM must be one of your inboxes, e.g. MAIL FROM:<a0123456789ab@agents.example.com>")
	}
	if err := s.maySend(addr); err != nil {
		return err
	}
	s.from = addr
	return nil
}

// maySend checks that the session's agent holds send on addr.
func (s *session) maySend(addr string) error {
	ok, err := Holds(s.ctx, s.e.cfg.Directory, s.agent.Omni, addr, mailkinds.Send)
	if err != nil {
		s.e.cfg.Logger.Warn("mail edge: the directory did not answer", "err", err.Error())
		return errTempFail
	}
	if !ok {
		return smtpErr(550, smtp.EnhancedCode{5, 7, 1}, "This agent may not send as %s: the owner grants it with agentkeys inbox grant %s --agent ALIAS send", clean(addr), clean(addr))
	}
	return nil
}

// Rcpt adds a recipient: a live inbox of ours within its rate, or
// (submission only) another domain's address when a relay is configured.
func (s *session) Rcpt(to string, _ *smtp.RcptOptions) error {
	if s.from == "" && s.submission {
		return smtpErr(503, smtp.EnhancedCode{5, 5, 1}, "MAIL FROM first")
	}
	if err := s.ended(); err != nil {
		return err
	}
	if s.conn != nil && s.conn.bad >= s.e.cfg.Limits.MaxBadRcpts {
		return s.end(smtpErr(421, smtp.EnhancedCode{4, 7, 0}, "Too many unknown recipients on one connection (%d); closing it", s.conn.bad))
	}
	addr, domain, ok := splitAddress(to)
	if !ok {
		return smtpErr(553, smtp.EnhancedCode{5, 1, 3}, "Not a mailbox address; write RCPT TO:<local@domain>")
	}
	if !s.e.domains[domain] {
		if !s.submission {
			s.spendRefusal()
			return smtpErr(550, smtp.EnhancedCode{5, 7, 1}, "Relaying denied: this server takes mail for %s only", strings.Join(s.e.cfg.Domains, ", "))
		}
		if s.e.cfg.Relay == "" {
			return smtpErr(550, smtp.EnhancedCode{5, 7, 1}, "This edge relays to no other domain (it delivers to %s only); the operator sets a smarthost with --relay host:port", strings.Join(s.e.cfg.Domains, ", "))
		}
		s.remote = append(s.remote, addr)
		return nil
	}
	for _, l := range s.local {
		if l.Address == addr {
			return nil // named twice: stored once
		}
	}
	l, err := s.e.cfg.Directory.Lookup(s.ctx, addr, "")
	if err != nil {
		s.e.cfg.Logger.Warn("mail edge: the directory did not answer", "err", err.Error())
		return errTempFail
	}
	if !l.Live || l.Prefix == "" {
		s.spendRefusal()
		return smtpErr(550, smtp.EnhancedCode{5, 1, 1}, "No such mailbox here: %s", clean(addr))
	}
	if err := s.e.allow(s.ctx, s.e.rcptLim, "rcpt:"+addr, "to this recipient"); err != nil {
		return err
	}
	s.local = append(s.local, l)
	return nil
}

// spendRefusal counts a refused recipient against the connection (MaxBadRcpts)
// and, inbound, the source address, so guessing addresses costs the same rate
// as sending.
func (s *session) spendRefusal() {
	if s.conn != nil {
		s.conn.bad++
	}
	if !s.submission {
		s.e.ipLim.Allow(s.ctx, s.ipKey(), s.e.cfg.Now())
	}
}

// Data reads the message and answers 250 only once it is stored (and, on
// submission, relayed).
func (s *session) Data(r io.Reader) error {
	raw, release, err := s.e.read(r)
	if err != nil {
		return err
	}
	defer release()
	if !s.submission {
		ar := s.e.authResults(s.ctx, s.ip, s.helo(), s.from, raw)
		return s.accepted(s.e.deliver(s.ctx, s.prefixes(), prepend(ar, raw)))
	}
	from := headerFrom(raw)
	if len(from) == 0 {
		return smtpErr(550, smtp.EnhancedCode{5, 6, 0}, "The message needs one From header field naming your inbox")
	}
	for _, f := range from {
		if addr, _, ok := splitAddress(f); !ok || (addr != s.from && s.maySend(addr) != nil) {
			return smtpErr(550, smtp.EnhancedCode{5, 7, 1}, "This agent may not send as %s (the From header): the owner grants it with agentkeys inbox grant ADDRESS --agent ALIAS send", clean(f))
		}
	}
	if len(s.remote) > 0 {
		if err := s.e.relay(s.ctx, s.from, s.remote, raw); err != nil {
			return err
		}
	}
	if len(s.local) > 0 {
		ar := "Authentication-Results: " + s.e.cfg.Hostname + "; auth=pass smtp.auth=" + clean(s.from) + "\r\n"
		return s.accepted(s.e.deliver(s.ctx, s.prefixes(), prepend(ar, raw)))
	}
	return s.accepted(nil)
}

// accepted passes on err; nil, a message was accepted, and the connection's
// command count starts again (MaxCommands bounds the commands between two
// messages, so a busy sender may keep its connection).
func (s *session) accepted(err error) error {
	if err == nil && s.conn != nil {
		s.conn.commands.Store(0)
	}
	return err
}

func (s *session) prefixes() []string {
	out := make([]string, len(s.local))
	for i, l := range s.local {
		out[i] = l.Prefix
	}
	return out
}

func prepend(header string, raw []byte) []byte {
	out := make([]byte, 0, len(header)+len(raw))
	return append(append(out, header...), raw...)
}

// AuthMechanisms implements smtp.AuthSession: OAUTHBEARER on submission.
func (s *session) AuthMechanisms() []string {
	if !s.submission {
		return nil
	}
	return []string{sasl.OAuthBearer}
}

// Auth implements smtp.AuthSession.
func (s *session) Auth(mech string) (sasl.Server, error) {
	if !s.submission || mech != sasl.OAuthBearer {
		return nil, smtp.ErrAuthUnknownMechanism
	}
	if err := s.ended(); err != nil {
		return nil, err
	}
	if s.conn != nil && s.conn.fails >= s.e.cfg.Limits.MaxAuthFails {
		return nil, s.end(smtpErr(421, smtp.EnhancedCode{4, 7, 0}, "Too many failed logins on one connection (%d); closing it", s.conn.fails))
	}
	if wait, blocked := s.e.authBlocked(s.ipKey()); blocked {
		return nil, s.end(smtpErr(421, smtp.EnhancedCode{4, 7, 0}, "Too many failed logins from your address; try again in %d s", int(wait.Seconds())+1))
	}
	return NewOAuthBearerServer(s.ctx, s.e.cfg.Verifier, func(a *Agent, err error) {
		if err != nil {
			s.e.cfg.Logger.Debug("mail edge: submission token refused", "why", err.Error())
			if s.conn != nil {
				s.conn.fails++
			}
			// Failed logins spend the address's rate; over it, AUTH is
			// refused before any token is checked until the rate allows.
			if ok, wait, _ := s.e.ipLim.Allow(s.ctx, s.ipKey(), s.e.cfg.Now()); !ok {
				s.e.blockAuth(s.ipKey(), s.e.cfg.Now().Add(wait))
			}
			return
		}
		s.agent = a
	}), nil
}

// NewOAuthBearerServer is the server side of SASL OAUTHBEARER (RFC 7628) for
// the edge's listeners (submission here, IMAP too): it checks the bearer token
// with v (nil refuses every token) and calls done once with the agent, or
// with the refusal.
func NewOAuthBearerServer(ctx context.Context, v *Verifier, done func(*Agent, error)) sasl.Server {
	return OAuthBearerServer(func(token string) bool {
		a, err := (*Agent)(nil), error(ErrToken)
		if v != nil {
			a, err = v.Verify(ctx, token)
		}
		done(a, err)
		return err == nil
	})
}

// OAuthBearerServer is the server side of SASL OAUTHBEARER with check
// deciding whether a bearer token signs in. It guards go-sasl's server, which
// panics on an empty answer to its error challenge: after a refusal, any
// answer ends the exchange with ErrAuth.
func OAuthBearerServer(check func(token string) bool) sasl.Server {
	return &oneShot{next: sasl.NewOAuthBearerServer(func(o sasl.OAuthBearerOptions) *sasl.OAuthBearerError {
		if !check(o.Token) {
			return &sasl.OAuthBearerError{Status: "invalid_token", Schemes: "bearer"}
		}
		return nil
	})}
}

// oneShot: see NewOAuthBearerServer.
type oneShot struct {
	next    sasl.Server
	failing bool
}

// ErrAuth is the refusal NewOAuthBearerServer ends a failed exchange with: an
// SMTP 535 reply (other protocols take its message).
var ErrAuth = smtpErr(535, smtp.EnhancedCode{5, 7, 8}, "Authentication failed: the identity token was refused (expired, for another audience, or not this broker's); mint a fresh one for this edge's audience")

func (o *oneShot) Next(response []byte) ([]byte, bool, error) {
	if o.failing {
		return nil, true, ErrAuth
	}
	challenge, done, err := o.next.Next(response)
	if err != nil {
		return nil, true, ErrAuth
	}
	if !done && response != nil {
		o.failing = true // the error challenge: the next answer only ends it
	}
	return challenge, done, nil
}

// printable is s with every byte outside printable ASCII replaced, at most
// 200 of them.
func printable(s string) string {
	b := []byte(s[:min(len(s), 200)])
	for i, c := range b {
		if c < ' ' || c >= 0x7f {
			b[i] = '?'
		}
	}
	return string(b)
}
