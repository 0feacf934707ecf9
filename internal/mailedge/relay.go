package mailedge

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"net"
	"strings"
	"time"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"
)

// RelayAuth is the account the edge signs in to its smarthost with (SASL
// PLAIN). The password is never logged nor put in a reply.
type RelayAuth struct {
	User     string
	Password string
}

// relayTimeout bounds one relay: connecting, signing in and handing over
// the message.
const relayTimeout = 2 * time.Minute

// relayLoopback reports whether the smarthost is a loopback IP address, the
// only place mail and credentials go in the clear.
func relayLoopback(relay string) bool {
	host, _, _ := net.SplitHostPort(relay)
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// relay hands a submitted message to the smarthost for the recipients of
// other domains: over implicit TLS (RelayImplicitTLS), in the clear to a
// loopback address, otherwise over STARTTLS with its certificate verified;
// signed in with RelayAuth when set.
func (e *Edge) relay(ctx context.Context, from string, to []string, raw []byte) error {
	ctx, cancel := context.WithTimeout(ctx, relayTimeout)
	defer cancel()
	c, err := e.dialRelay(ctx)
	if err != nil {
		return err
	}
	defer c.Close()
	stop := context.AfterFunc(ctx, func() { c.Close() }) // the deadline ends a stalled smarthost
	defer stop()
	if a := e.cfg.RelayAuth; a != nil {
		if err := e.relayAuth(c, a); err != nil {
			return err
		}
	}
	if err := c.SendMail(from, to, bytes.NewReader(raw)); err != nil {
		return relayErr(e, err)
	}
	c.Quit()
	return nil
}

var errRelayUnreachable = smtpErr(451, smtp.EnhancedCode{4, 4, 1}, "The smarthost cannot be reached; nothing was sent, try again later")

// dialRelay connects to the smarthost and says EHLO, over TLS unless it is
// on loopback.
func (e *Edge) dialRelay(ctx context.Context) (*smtp.Client, error) {
	host, _, _ := net.SplitHostPort(e.cfg.Relay)
	tc := &tls.Config{MinVersion: tls.VersionTLS12}
	if e.cfg.RelayTLS != nil {
		tc = e.cfg.RelayTLS.Clone()
	}
	if tc.ServerName == "" {
		tc.ServerName = host
	}
	d := net.Dialer{Timeout: 30 * time.Second}
	nc, err := d.DialContext(ctx, "tcp", e.cfg.Relay)
	if err != nil {
		e.cfg.Logger.Warn("mail edge: the smarthost cannot be reached", "relay", e.cfg.Relay, "err", err.Error())
		return nil, errRelayUnreachable
	}
	if dl, ok := ctx.Deadline(); ok {
		nc.SetDeadline(dl)
	}
	var c *smtp.Client
	switch {
	case e.cfg.RelayImplicitTLS:
		c = smtp.NewClient(tls.Client(nc, tc))
	case relayLoopback(e.cfg.Relay):
		c = smtp.NewClient(nc)
	default:
		// go-smtp's client says EHLO (as "localhost") to learn of STARTTLS,
		// then EHLO again, with our name, inside TLS.
		if c, err = smtp.NewClientStartTLS(nc, tc); err != nil {
			nc.Close()
			var se *smtp.SMTPError
			if !errors.As(err, &se) && strings.Contains(err.Error(), "STARTTLS") {
				e.cfg.Logger.Warn("mail edge: the smarthost offers no STARTTLS, and nothing goes to it in the clear (only to a loopback address); point --relay at its port 587 (STARTTLS) or 465 (implicit TLS)", "relay", e.cfg.Relay)
				return nil, smtpErr(451, smtp.EnhancedCode{4, 7, 10}, "The smarthost offers no STARTTLS, and this edge sends nothing to it in the clear; nothing was sent. The operator points --relay at the smarthost's port 587 (STARTTLS) or 465 (implicit TLS)")
			}
			return nil, relayErr(e, err)
		}
	}
	if err := c.Hello(e.cfg.Hostname); err != nil {
		c.Close()
		return nil, relayErr(e, err)
	}
	return c, nil
}

// relayAuth signs in to the smarthost with SASL PLAIN: only over TLS, or to
// a loopback address.
func (e *Edge) relayAuth(c *smtp.Client, a *RelayAuth) error {
	if _, isTLS := c.TLSConnectionState(); !isTLS && !relayLoopback(e.cfg.Relay) {
		return smtpErr(451, smtp.EnhancedCode{4, 7, 10}, "This edge sends its smarthost credentials only over TLS; nothing was sent")
	}
	if !c.SupportsAuth(sasl.Plain) {
		e.cfg.Logger.Warn("mail edge: the smarthost offers no AUTH PLAIN; check --relay names its submission port", "relay", e.cfg.Relay)
		return smtpErr(451, smtp.EnhancedCode{4, 7, 0}, "The smarthost offers no AUTH PLAIN to sign in with; nothing was sent. The operator points --relay at the smarthost's submission port")
	}
	if err := c.Auth(sasl.NewPlainClient("", a.User, a.Password)); err != nil {
		var se *smtp.SMTPError
		if errors.As(err, &se) {
			e.cfg.Logger.Warn("mail edge: the smarthost refused the relay credentials", "relay", e.cfg.Relay, "user", a.User, "code", se.Code, "reply", printable(se.Message))
			return smtpErr(451, smtp.EnhancedCode{4, 7, 8}, "The smarthost refused this edge's credentials (%d); nothing was sent. The operator checks --relay-user and the relay password", se.Code)
		}
		return relayErr(e, err)
	}
	return nil
}

// relayErr passes on the smarthost's refusal (its code and message), or
// answers 451 when it could not be asked.
func relayErr(e *Edge, err error) error {
	var se *smtp.SMTPError
	if errors.As(err, &se) {
		return smtpErr(se.Code, se.EnhancedCode, "The smarthost refused the message: %s", printable(se.Message))
	}
	e.cfg.Logger.Warn("mail edge: relaying failed", "relay", e.cfg.Relay, "err", err.Error())
	return smtpErr(451, smtp.EnhancedCode{4, 4, 2}, "Relaying to the smarthost failed; nothing was sent, try again later")
}
