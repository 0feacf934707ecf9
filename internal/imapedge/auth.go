package imapedge

import (
	"context"
	"errors"
	"time"

	"github.com/agentkeys/agentkeys/internal/mailedge"
	"github.com/emersion/go-imap"
	"github.com/emersion/go-imap/commands"
	imapserver "github.com/emersion/go-imap/server"
	"github.com/emersion/go-sasl"
)

// authExtension replaces the library's sign-in: LOGIN is refused (no
// passwords) and AUTHENTICATE knows only OAUTHBEARER.
type authExtension struct{ s *Server }

func (e *authExtension) Capabilities(c imapserver.Conn) []string {
	if c.Context().State == imap.NotAuthenticatedState {
		return []string{"AUTH=" + sasl.OAuthBearer}
	}
	return nil
}

func (e *authExtension) Command(name string) imapserver.HandlerFactory {
	switch name {
	case "LOGIN":
		return func() imapserver.Handler { return &login{} }
	case "AUTHENTICATE":
		return func() imapserver.Handler { return &authenticate{s: e.s} }
	}
	return nil
}

type login struct{ commands.Login }

func (*login) Handle(imapserver.Conn) error {
	return errors.New("LOGIN is disabled: sign in with AUTHENTICATE OAUTHBEARER and an identity token for this edge (agentkeys daemon oidc-token)")
}

type authenticate struct {
	commands.Authenticate
	s *Server
}

// errSignIn is all a refused caller learns.
var errSignIn = errors.New("sign-in refused: present a valid, unexpired identity token whose audience is this mail edge (agentkeys daemon oidc-token)")

func (cmd *authenticate) Handle(c imapserver.Conn) error {
	ctx := c.Context()
	if ctx.State != imap.NotAuthenticatedState {
		return imapserver.ErrAlreadyAuthenticated
	}
	s := cmd.s
	info := c.Info()
	w := s.connOf(info.LocalAddr, info.RemoteAddr)
	if w == nil {
		return errSignIn
	}
	now := s.cfg.Now()
	s.mu.Lock()
	blocked := s.fails.blocked(w.ip, now, s.cfg.FailedAuths, s.cfg.FailWindow)
	busy := s.fails.blocked(allKey, now, s.cfg.FailedInAll, s.cfg.FailWindow)
	s.mu.Unlock()
	if blocked || busy { // answered without asking the authenticator
		if busy {
			return errors.New("too many failed sign-ins at this server; try again in a few minutes")
		}
		return errors.New("too many failed sign-ins from your address; wait and sign in with a fresh token")
	}
	if cmd.Mechanism != sasl.OAuthBearer {
		s.mu.Lock()
		s.fails.add(w.ip, now, s.cfg.FailWindow)
		s.fails.add(allKey, now, s.cfg.FailWindow)
		s.mu.Unlock()
		return errors.New("only AUTHENTICATE OAUTHBEARER is offered: sign in with an identity token for this edge (agentkeys daemon oidc-token)")
	}
	var agent Agent
	ok := false
	mech := mailedge.OAuthBearerServer(func(token string) bool {
		actx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		a, err := s.cfg.Auth.Authenticate(actx, token)
		if err != nil || a.Wallet == "" || !a.Expires.After(s.cfg.Now()) {
			return false
		}
		agent, ok = a, true
		return true
	})
	err := cmd.Authenticate.Handle(map[string]sasl.Server{sasl.OAuthBearer: mech}, c)
	if err != nil || !ok {
		s.mu.Lock()
		kept := s.fails.add(w.ip, s.cfg.Now(), s.cfg.FailWindow)
		s.fails.add(allKey, s.cfg.Now(), s.cfg.FailWindow)
		s.mu.Unlock()
		if !kept {
			w.Close()
		}
		if errors.As(err, new(*imap.ErrStatusResp)) {
			return err // the client cancelled
		}
		return errSignIn
	}
	ctx.State = imap.AuthenticatedState
	ctx.User = &user{s: s, agent: agent, conn: c}
	w.signedIn(agent.Expires)
	s.cfg.Log.Debug("imap: signed in", "agent", agent.Wallet)
	caps := c.Capabilities()
	args := make([]any, len(caps))
	for i, v := range caps {
		args[i] = imap.RawString(v)
	}
	return &imap.ErrStatusResp{Resp: &imap.StatusResp{Type: imap.StatusRespOk, Code: imap.CodeCapability, Arguments: args, Info: "signed in"}}
}
