package mailedge

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"io"
	"log/slog"
	"math/big"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"

	"github.com/agentkeys/agentkeys/internal/broker"
)

const (
	relayUser = "edge@agents.example.com"
	relayPass = "s3cret-relay-password-9f8e7d"
)

// authHost is a smarthost (go-smtp's server) that takes mail only from a
// client signed in with relayUser and relayPass over SASL PLAIN.
type authHost struct {
	mu      sync.Mutex
	got     [][]byte
	users   []string // who sent each message
	auths   int      // AUTH exchanges it saw
	addr    string
	offered bool // offers AUTH PLAIN
}

type authHostSession struct {
	h    *authHost
	user string
}

func (s *authHostSession) Reset()        {}
func (s *authHostSession) Logout() error { return nil }
func (s *authHostSession) AuthMechanisms() []string {
	if !s.h.offered {
		return nil
	}
	return []string{sasl.Plain}
}
func (s *authHostSession) Auth(mech string) (sasl.Server, error) {
	if !s.h.offered {
		return nil, smtp.ErrAuthUnknownMechanism
	}
	s.h.mu.Lock()
	s.h.auths++
	s.h.mu.Unlock()
	return sasl.NewPlainServer(func(_, user, pass string) error {
		if user != relayUser || pass != relayPass {
			return errors.New("bad credentials")
		}
		s.user = user
		return nil
	}), nil
}
func (s *authHostSession) Mail(string, *smtp.MailOptions) error {
	if s.user == "" {
		return smtp.ErrAuthRequired
	}
	return nil
}
func (s *authHostSession) Rcpt(string, *smtp.RcptOptions) error { return nil }
func (s *authHostSession) Data(r io.Reader) error {
	b, err := io.ReadAll(r)
	s.h.mu.Lock()
	s.h.got = append(s.h.got, b)
	s.h.users = append(s.h.users, s.user)
	s.h.mu.Unlock()
	return err
}

// hostTLS is how an authHost speaks TLS.
type hostTLS int

const (
	hostPlain    hostTLS = iota // no TLS at all
	hostStartTLS                // offers STARTTLS
	hostImplicit                // TLS from the first byte (port 465 style)
)

// newAuthHost starts an authHost on 127.0.0.1; its certificate names
// localhost, and roots verify it.
func newAuthHost(t testing.TB, mode hostTLS, offerAuth bool) (*authHost, *x509.CertPool) {
	h := &authHost{offered: offerAuth}
	srv := smtp.NewServer(smtp.BackendFunc(func(*smtp.Conn) (smtp.Session, error) { return &authHostSession{h: h}, nil }))
	srv.Domain = "smarthost.example.net"
	cert, roots := certFor(t, "localhost")
	var ln net.Listener
	var err error
	switch mode {
	case hostImplicit:
		ln, err = tls.Listen("tcp", "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{cert}})
	default:
		ln, err = net.Listen("tcp", "127.0.0.1:0")
	}
	if err != nil {
		t.Fatal(err)
	}
	if mode == hostStartTLS {
		srv.TLSConfig = &tls.Config{Certificates: []tls.Certificate{cert}}
	}
	srv.AllowInsecureAuth = mode == hostPlain
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	h.addr = ln.Addr().String()
	return h, roots
}

func certFor(t testing.TB, name string) (tls.Certificate, *x509.CertPool) {
	k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: name}, DNSNames: []string{name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &k.PublicKey, k)
	if err != nil {
		t.Fatal(err)
	}
	leaf, _ := x509.ParseCertificate(der)
	pool := x509.NewCertPool()
	pool.AddCert(leaf)
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: k, Leaf: leaf}, pool
}

// relayEnv is an edge relaying to relay with the given credentials, logging
// everything at debug level into logs.
func relayEnv(t *testing.T, relay string, roots *x509.CertPool, implicit bool, pass string) (*env, *bytes.Buffer) {
	logs := &syncBuffer{}
	v := newEnv(t, func(c *Config) {
		c.Relay = relay
		c.RelayTLS = &tls.Config{RootCAs: roots}
		c.RelayImplicitTLS = implicit
		c.RelayAuth = &RelayAuth{User: relayUser, Password: pass}
		c.Logger = slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	})
	return v, &logs.b
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

// submit has agent A send one message to an outside address through v.
func submit(t *testing.T, v *env, subject string) (int, error) {
	c := dial(t, v.sub)
	if err := auth(c, v.key.token(t, issuer, audience, omniA, walletA, t0, 300)); err != nil {
		t.Fatal(err)
	}
	return send(c, addrA, []string{"friend@outside.example"}, message(addrA, "friend@outside.example", subject, "hi\r\n"))
}

// TestRelayAuth: the edge signs in to its smarthost (SASL PLAIN) over
// STARTTLS, over implicit TLS, and in the clear only to a loopback address;
// the smarthost takes the message as the relay user.
func TestRelayAuth(t *testing.T) {
	for name, tc := range map[string]struct {
		mode     hostTLS
		host     string // how the edge names the smarthost
		implicit bool
	}{
		"starttls":        {hostStartTLS, "localhost", false},
		"implicit tls":    {hostImplicit, "localhost", true},
		"loopback, plain": {hostPlain, "127.0.0.1", false},
	} {
		t.Run(name, func(t *testing.T) {
			h, roots := newAuthHost(t, tc.mode, true)
			_, port, _ := net.SplitHostPort(h.addr)
			v, logs := relayEnv(t, net.JoinHostPort(tc.host, port), roots, tc.implicit, relayPass)
			if n, err := submit(t, v, "relayed"); n != 250 {
				t.Fatalf("relay with credentials: %d %v", n, err)
			}
			h.mu.Lock()
			defer h.mu.Unlock()
			if len(h.got) != 1 || h.users[0] != relayUser {
				t.Fatalf("the smarthost got %d messages as %v", len(h.got), h.users)
			}
			if strings.Contains(logs.String(), relayPass) {
				t.Fatalf("the password is in the logs:\n%s", logs)
			}
		})
	}
}

// TestRelayAuthRefused: a wrong password, a smarthost without STARTTLS on a
// name that is not loopback, and one without AUTH each answer the agent a
// clear 451, send nothing, and never put the password in a reply or a log.
func TestRelayAuthRefused(t *testing.T) {
	for name, tc := range map[string]struct {
		mode      hostTLS
		host      string
		offerAuth bool
		pass      string
		want      string // in the reply
		auths     int    // AUTH exchanges the smarthost should see
	}{
		"wrong password":            {hostStartTLS, "localhost", true, "wrong-" + relayPass, "refused this edge's credentials", 1},
		"no starttls, not loopback": {hostPlain, "localhost", true, relayPass, "STARTTLS", 0},
		"no auth offered":           {hostStartTLS, "localhost", false, relayPass, "AUTH PLAIN", 0},
	} {
		t.Run(name, func(t *testing.T) {
			h, roots := newAuthHost(t, tc.mode, tc.offerAuth)
			_, port, _ := net.SplitHostPort(h.addr)
			v, logs := relayEnv(t, net.JoinHostPort(tc.host, port), roots, false, tc.pass)
			n, err := submit(t, v, "refused")
			if n != 451 || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("reply %d %v, want 451 naming %q", n, err, tc.want)
			}
			if strings.Contains(err.Error(), relayPass) || strings.Contains(logs.String(), relayPass) {
				t.Fatalf("the password leaked: reply %v; logs:\n%s", err, logs)
			}
			h.mu.Lock()
			defer h.mu.Unlock()
			if len(h.got) != 0 || h.auths != tc.auths {
				t.Fatalf("the smarthost got %d messages and %d AUTHs, want 0 and %d", len(h.got), h.auths, tc.auths)
			}
		})
	}
}

// TestRelayAuthConfig: credentials without a relay, or with an empty user
// or password, are refused at New.
func TestRelayAuthConfig(t *testing.T) {
	for name, mod := range map[string]func(*Config){
		"no relay":       func(c *Config) { c.RelayAuth = &RelayAuth{User: "u", Password: "p"} },
		"empty password": func(c *Config) { c.Relay, c.RelayAuth = "127.0.0.1:25", &RelayAuth{User: "u"} },
		"empty user":     func(c *Config) { c.Relay, c.RelayAuth = "127.0.0.1:25", &RelayAuth{Password: "p"} },
	} {
		cfg := Config{Domains: []string{domain}, Store: failing{}, Directory: &directory{}, Limiters: broker.NewMemoryLimiter}
		mod(&cfg)
		if _, err := New(cfg); err == nil || !strings.Contains(err.Error(), "relay") {
			t.Errorf("%s: New: %v, want a refusal", name, err)
		}
	}
}
