package e2e

import (
	"errors"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"
)

// relayHost is a smarthost (go-smtp's server, on loopback) that takes mail
// only from a client signed in with SASL PLAIN as user/pass.
type relayHost struct {
	user, pass string
	mu         sync.Mutex
	got        []string // the user each message came from
}

type relayHostSession struct {
	h    *relayHost
	user string
}

func (s *relayHostSession) Reset()                   {}
func (s *relayHostSession) Logout() error            { return nil }
func (s *relayHostSession) AuthMechanisms() []string { return []string{sasl.Plain} }
func (s *relayHostSession) Auth(string) (sasl.Server, error) {
	return sasl.NewPlainServer(func(_, user, pass string) error {
		if user != s.h.user || pass != s.h.pass {
			return errors.New("bad credentials")
		}
		s.user = user
		return nil
	}), nil
}
func (s *relayHostSession) Mail(string, *smtp.MailOptions) error {
	if s.user == "" {
		return smtp.ErrAuthRequired
	}
	return nil
}
func (s *relayHostSession) Rcpt(string, *smtp.RcptOptions) error { return nil }
func (s *relayHostSession) Data(r io.Reader) error {
	_, err := io.Copy(io.Discard, r)
	s.h.mu.Lock()
	s.h.got = append(s.h.got, s.user)
	s.h.mu.Unlock()
	return err
}

// TestGuideRelayThroughSmarthost runs the guide's "Relay through a
// smarthost" block: the password written to a file by the block's own lines,
// the server started with the block's flags (the smarthost moved to a
// loopback one, where the edge may sign in without TLS); an agent's mail to
// another domain reaches the smarthost signed in as the relay user, and the
// password is in no log.
func TestGuideRelayThroughSmarthost(t *testing.T) {
	const pass = "guide-smarthost-password-7c1e"
	host := &relayHost{user: "agents@example.net", pass: pass}
	srv := smtp.NewServer(smtp.BackendFunc(func(*smtp.Conn) (smtp.Session, error) { return &relayHostSession{h: host}, nil }))
	srv.Domain, srv.AllowInsecureAuth = "smtp.example.net", true
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })

	blocks := docBlocks(t, inboxDoc, "### Relay through a smarthost", "sh")
	if len(blocks) != 1 {
		t.Fatalf("want one block, found %d", len(blocks))
	}
	etc := t.TempDir()
	block := strings.NewReplacer("/etc/agentkeys", etc, "smtp.example.net:587", ln.Addr().String(), "\\\n", " ").Replace(blocks[0])
	var shell []string
	var args []string
	for _, l := range strings.Split(strings.TrimSpace(block), "\n") {
		if f := strings.Fields(l); len(f) > 2 && f[0] == "agentkeys" && f[1] == "server" {
			args = f[2:]
			continue
		}
		shell = append(shell, l)
	}
	if args == nil {
		t.Fatalf("the block starts no server:\n%s", blocks[0])
	}
	sh := exec.Command("sh", "-ec", strings.Join(shell, "\n"))
	sh.Env = append(os.Environ(), "SMARTHOST_PASSWORD="+pass)
	if out, err := sh.CombinedOutput(); err != nil {
		t.Fatalf("the block's shell lines: %v\n%s", err, out)
	}
	if fi, err := os.Stat(filepath.Join(etc, "relay.pass")); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("the password file: %v %v", fi, err)
	}

	h := newHarness(t)
	s := h.start(serverOpts{home: t.TempDir(), args: append(args, "--log-level", "debug",
		"--smtp-listen", "127.0.0.1:0", "--submission-listen", "127.0.0.1:0", "--imap-listen", "127.0.0.1:0")})
	_, sub := s.edgeAddrs()
	o := h.akNewOwner(s)
	dh := h.pairAgent(s, o, "bot", "oidc:"+edgeDomain)
	h.akOK(o.home, "domain", "add", edgeDomain)
	bot := h.inboxOf(o, "bot")
	tok := strings.TrimSpace(h.akOK(dh, "daemon", "oidc-token", "--audience", edgeDomain))
	out := "friend@outside.example"
	if n, msg := smtpSend(t, sub, tok, bot.Address, []string{out}, edgeMessage(bot.Address, out, "relayed", "hello")); n != 250 {
		t.Fatalf("relay through the smarthost: %d %s", n, msg)
	}
	host.mu.Lock()
	got := append([]string(nil), host.got...)
	host.mu.Unlock()
	if len(got) != 1 || got[0] != host.user {
		t.Fatalf("the smarthost got messages from %q, want one from %s", got, host.user)
	}
	if strings.Contains(s.stderr.String()+s.stdout.String(), pass) {
		t.Fatal("the relay password is in the server's log")
	}
}
