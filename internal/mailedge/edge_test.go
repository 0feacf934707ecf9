package mailedge

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-msgauth/dkim"
	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"

	"github.com/agentkeys/agentkeys/internal/apiv1"
	"github.com/agentkeys/agentkeys/internal/blobstore"
	"github.com/agentkeys/agentkeys/internal/blobstore/localstore"
	"github.com/agentkeys/agentkeys/internal/broker"
	"github.com/agentkeys/agentkeys/internal/clock"
	"github.com/agentkeys/agentkeys/internal/mail"
	"github.com/agentkeys/agentkeys/internal/oidc"
	"github.com/agentkeys/agentkeys/internal/oidc/oidctest"
)

const (
	domain   = "agents.example.com"
	issuer   = "http://127.0.0.1:8090"
	audience = domain
)

// inbox is one inbox the test directory knows, with the rights of agents.
type inbox struct {
	live   bool
	wallet string
	rights map[string][]string // agent omni → rights
}

// directory is a Directory over a table, the shape of broker.MailLookup's
// answers (the broker's own is tested end to end in package e2e).
type directory struct {
	mu      sync.Mutex
	inboxes map[string]*inbox
	calls   int
}

func (d *directory) Lookup(_ context.Context, address, agent string) (apiv1.MailLookup, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.calls++
	out := apiv1.MailLookup{Address: address, Rights: []string{}}
	in := d.inboxes[address]
	if in == nil || !in.live {
		return out, nil
	}
	out.Live, out.Prefix = true, (&mail.Inbox{Address: address, Wallet: in.wallet}).Prefix()
	if agent != "" {
		out.Rights = append(out.Rights, in.rights[agent]...)
	}
	return out, nil
}

// resolver answers TXT, A and MX queries from tables; nothing else exists.
type resolver struct{ txt map[string][]string }

func (r *resolver) LookupTXT(_ context.Context, name string) ([]string, error) {
	if v, ok := r.txt[strings.TrimSuffix(name, ".")]; ok {
		return v, nil
	}
	return nil, &net.DNSError{Err: "no such host", Name: name, IsNotFound: true}
}
func (r *resolver) LookupMX(_ context.Context, name string) ([]*net.MX, error) {
	return nil, &net.DNSError{Err: "no such host", Name: name, IsNotFound: true}
}
func (r *resolver) LookupIPAddr(_ context.Context, host string) ([]net.IPAddr, error) {
	return nil, &net.DNSError{Err: "no such host", Name: host, IsNotFound: true}
}
func (r *resolver) LookupAddr(_ context.Context, addr string) ([]string, error) {
	return nil, &net.DNSError{Err: "no such host", Name: addr, IsNotFound: true}
}

// issuerKey signs identity tokens as the broker does (package oidc's Signer).
type issuerKey struct{ *oidctest.Issuer }

func newIssuerKey(t testing.TB, kid string) *issuerKey { return &issuerKey{oidctest.New(t, kid)} }

// token mints an identity token for the agent with omni and wallet.
func (k *issuerKey) token(t testing.TB, iss, aud, omni, wallet string, now time.Time, ttl int64) string {
	c := oidc.NewClaims(iss, aud, oidc.Identity{Role: "agent", Wallet: wallet, OwnerWallet: "0x00000000000000000000000000000000000000ff", Omni: omni},
		oidc.Enclave{MrEnclave: "aa", MrSigner: "bb", Tier: "dev"}, now.Unix(), ttl)
	tok, err := k.Signer.Sign(c)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

var (
	t0      = time.Date(2026, 12, 5, 6, 0, 0, 0, time.UTC)
	omniA   = strings.Repeat("a", 64)
	omniB   = strings.Repeat("b", 64)
	walletA = "0xAAAA0123456789abcdef0123456789abcdef0123"
	walletB = "0xbbbb0123456789abcdef0123456789abcdef0123"
	addrA   = mail.Address(walletA, domain)
	addrB   = mail.Address(walletB, domain)
)

// env is one edge on loopback with a local store.
type env struct {
	t       testing.TB
	e       *Edge
	store   blobstore.Store
	dir     *directory
	clk     *clock.Fake
	key     *issuerKey
	res     *resolver
	mx, sub string // listener addresses
}

func newEnv(t testing.TB, mod func(*Config)) *env {
	t.Helper()
	st, err := localstore.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	v := &env{t: t, store: st, clk: clock.NewFake(t0), key: newIssuerKey(t, "k1"), res: &resolver{txt: map[string][]string{}}}
	v.dir = &directory{inboxes: map[string]*inbox{
		addrA:                     {live: true, wallet: walletA, rights: map[string][]string{omniA: {mail.Read, mail.Send, mail.Admin}, omniB: {mail.Read}}},
		addrB:                     {live: true, wallet: walletB, rights: map[string][]string{omniB: {mail.Read, mail.Send, mail.Admin}}},
		"a000000000000@" + domain: {live: false, wallet: "0x0000000000000000000000000000000000000000"},
	}}
	cfg := Config{Domains: []string{domain}, Hostname: "mx." + domain, Store: st, Directory: v.dir, Resolver: v.res,
		Limiters: broker.NewMemoryLimiter, Now: v.clk.Now,
		Verifier: NewVerifier(issuer, []string{audience}, func(context.Context) (apiv1.JWKS, error) { return apiv1.JWKS{Keys: []apiv1.JWK{v.key.JWK}}, nil }, v.clk.Now)}
	if mod != nil {
		mod(&cfg)
	}
	if v.e, err = New(cfg); err != nil {
		t.Fatal(err)
	}
	v.mx, v.sub = v.listen(v.e.ServeInbound), v.listen(v.e.ServeSubmission)
	t.Cleanup(func() { v.e.Close() })
	return v
}

func (v *env) listen(serve func(net.Listener) error) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		v.t.Fatal(err)
	}
	go serve(ln)
	return ln.Addr().String()
}

// stored lists every object in the store.
func (v *env) stored() []blobstore.Object {
	objs, _, err := v.store.List(context.Background(), "", "", 0)
	if err != nil {
		v.t.Fatal(err)
	}
	return objs
}

// dial opens an SMTP client (go-smtp's) to addr and says EHLO.
func dial(t testing.TB, addr string) *smtp.Client {
	t.Helper()
	c, err := smtp.Dial(addr)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Hello("client.example.net"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// code is the SMTP reply code of err (0 for nil, -1 for a non-SMTP error).
func code(err error) int {
	var se *smtp.SMTPError
	if err == nil {
		return 0
	}
	if errors.As(err, &se) {
		return se.Code
	}
	return -1
}

func message(from, to, subject, body string) []byte {
	return []byte("From: <" + from + ">\r\nTo: <" + to + ">\r\nSubject: " + subject + "\r\nMessage-ID: <" + subject + "@example.net>\r\n\r\n" + body)
}

// send sends one message on c and returns the first refusal's code.
func send(c *smtp.Client, from string, to []string, msg []byte) (int, error) {
	if err := c.Mail(from, nil); err != nil {
		return code(err), err
	}
	for _, r := range to {
		if err := c.Rcpt(r, nil); err != nil {
			return code(err), err
		}
	}
	w, err := c.Data()
	if err != nil {
		return code(err), err
	}
	w.Write(msg)
	if err := w.Close(); err != nil {
		return code(err), err
	}
	return 250, nil
}

// TestInboundRefusals: an unknown, deleted or other-domain recipient gets 550
// at RCPT, an oversize message 552, a sender address or recipient over its
// rate 451; none of them is stored, and every refusal says why.
func TestInboundRefusals(t *testing.T) {
	v := newEnv(t, func(c *Config) {
		c.MaxSize = 4096
		c.IPRate = Rate{8, time.Minute}
		c.RecipientRate = Rate{2, time.Minute}
	})
	c := dial(t, v.mx)
	for _, rc := range []struct {
		to, want string
	}{
		{"anybody@" + domain, "No such mailbox"},
		{"a000000000000@" + domain, "No such mailbox"}, // deleted
		{"someone@elsewhere.example", "Relaying denied"},
		{"not an address", ""}, // go-smtp's own 501
	} {
		if err := c.Mail("sender@example.net", nil); err != nil {
			t.Fatal(err)
		}
		err := c.Rcpt(rc.to, nil)
		if code(err)/100 != 5 || !strings.Contains(err.Error(), rc.want) {
			t.Errorf("RCPT TO:<%s>: %v, want 5xx %q", rc.to, err, rc.want)
		}
		c.Reset()
	}
	// Four MAILs and three refused mailboxes spent seven of the address's eight.
	big := message("sender@example.net", addrA, "big", strings.Repeat("xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx\r\n", 60))
	if n, err := send(c, "sender@example.net", []string{addrA}, big); n != 552 {
		t.Fatalf("oversize message: %d %v, want 552", n, err)
	}
	c.Reset()
	if n, err := send(c, "sender@example.net", []string{addrB}, message("sender@example.net", addrB, "over", "x")); n != 451 || !strings.Contains(err.Error(), "from your address") {
		t.Fatalf("over the address's rate: %d %v, want 451", n, err)
	}
	if objs := v.stored(); len(objs) != 0 {
		t.Fatalf("refused mail was stored: %v", objs)
	}

	// Per recipient: two to A in a window, the third 451, from any address.
	v.clk.Advance(time.Minute)
	for i := range 3 {
		c := dial(t, v.mx)
		n, err := send(c, "s@example.net", []string{addrA}, message("s@example.net", addrA, fmt.Sprint("r", i), "hello"))
		if want := map[bool]int{true: 250, false: 451}[i < 2]; n != want {
			t.Fatalf("message %d to A: %d %v, want %d", i, n, err, want)
		}
	}
	if objs := v.stored(); len(objs) != 2 {
		t.Fatalf("stored %d messages, want the 2 accepted", len(objs))
	}
}

// TestInboundStored: an accepted message is in the store byte for byte, after
// the edge's Authentication-Results (SPF, DKIM and DMARC evaluated against the
// injected DNS), under <wallet>/<address>/<nanos>-<hash8>.eml; a tampered
// body fails DKIM and DMARC.
func TestInboundStored(t *testing.T) {
	v := newEnv(t, nil)
	pub, priv, _ := ed25519.GenerateKey(rand.Reader)
	v.res.txt["example.net"] = []string{"v=spf1 ip4:127.0.0.1 -all"}
	v.res.txt["s1._domainkey.example.net"] = []string{"v=DKIM1; k=ed25519; p=" + base64.StdEncoding.EncodeToString(pub)}
	v.res.txt["_dmarc.example.net"] = []string{"v=DMARC1; p=reject"}

	raw := message("alice@example.net", addrA, "signed", "Your code is 123456.\r\n..leading dot\r\n")
	var signed bytes.Buffer
	if err := dkim.Sign(&signed, bytes.NewReader(raw), &dkim.SignOptions{Domain: "example.net", Selector: "s1", Signer: priv}); err != nil {
		t.Fatal(err)
	}
	c := dial(t, v.mx)
	if n, err := send(c, "alice@example.net", []string{addrA, strings.ToUpper(addrA)}, signed.Bytes()); n != 250 {
		t.Fatalf("send: %d %v", n, err)
	}
	objs := v.stored()
	if len(objs) != 1 {
		t.Fatalf("stored %v, want one object (one recipient named twice)", objs)
	}
	got, err := v.store.Get(context.Background(), objs[0].Key)
	if err != nil {
		t.Fatal(err)
	}
	ar, rest, _ := bytes.Cut(got, []byte("\r\n"))
	if !bytes.Equal(rest, signed.Bytes()) {
		t.Fatalf("the stored message is not the sent one byte for byte:\n%q\nwant\n%q", rest, signed.Bytes())
	}
	want := "Authentication-Results: mx." + domain + "; spf=pass smtp.helo=client.example.net smtp.mailfrom=alice@example.net; dkim=pass header.d=example.net header.i=@example.net; dmarc=pass header.from=example.net"
	if string(ar) != want {
		t.Fatalf("stored header:\n%s\nwant\n%s", ar, want)
	}
	prefix, nanos, hash8, ok := mail.ParseMessageKey(objs[0].Key)
	sum := sha256.Sum256(got)
	if !ok || prefix != strings.ToLower(walletA)+"/"+addrA+"/" || nanos != t0.UnixNano() || hash8 != hex.EncodeToString(sum[:4]) {
		t.Fatalf("key %s: %s %d %s %v", objs[0].Key, prefix, nanos, hash8, ok)
	}

	// A tampered body: DKIM fails, and with it DMARC; SPF from another address
	// fails too (once the cached SPF record has expired).
	v.clk.Advance(dnsCacheTTL + time.Second)
	tampered := bytes.Replace(signed.Bytes(), []byte("123456"), []byte("654321"), 1)
	v.res.txt["example.net"] = []string{"v=spf1 ip4:192.0.2.1 -all"}
	if n, err := send(c, "alice@example.net", []string{addrA}, tampered); n != 250 {
		t.Fatalf("send: %d %v", n, err)
	}
	objs = v.stored()
	if len(objs) != 2 {
		t.Fatalf("stored %d objects, want 2", len(objs))
	}
	got, _ = v.store.Get(context.Background(), objs[1].Key)
	ar, _, _ = bytes.Cut(got, []byte("\r\n"))
	for _, w := range []string{"spf=fail", "dkim=fail", "dmarc=fail"} {
		if !strings.Contains(string(ar), w) {
			t.Errorf("tampered message: %s lacks %s", ar, w)
		}
	}
}

// TestStartTLS: with a certificate the edge offers STARTTLS and takes mail
// over it; without one it refuses to listen off loopback.
func TestStartTLS(t *testing.T) {
	cert, pool := certFor(t, "mx."+domain)
	v := newEnv(t, func(c *Config) { c.TLS = &tls.Config{Certificates: []tls.Certificate{cert}} })
	c, err := smtp.DialStartTLS(v.mx, &tls.Config{RootCAs: pool, ServerName: "mx." + domain})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, ok := c.TLSConnectionState(); !ok {
		t.Fatal("no TLS after STARTTLS")
	}
	if n, err := send(c, "s@example.net", []string{addrA}, message("s@example.net", addrA, "tls", "hi")); n != 250 {
		t.Fatalf("over STARTTLS: %d %v", n, err)
	}

	e, err := New(Config{Domains: []string{domain}, Store: v.store, Directory: v.dir, Limiters: broker.NewMemoryLimiter})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	// The edge decides by the listener's address; this one says it is public
	// (192.0.2.1, TEST-NET-1), so no machine needs a non-loopback interface.
	public := addrListener{ln, &net.TCPAddr{IP: net.IPv4(192, 0, 2, 1), Port: 25}}
	if err := e.ServeInbound(public); err == nil || !strings.Contains(err.Error(), "needs a certificate") {
		t.Fatalf("plain SMTP off loopback: %v", err)
	}
}

// addrListener is a listener that reports addr as its address.
type addrListener struct {
	net.Listener
	addr net.Addr
}

func (l addrListener) Addr() net.Addr { return l.addr }

// auth authenticates c with token over OAUTHBEARER.
func auth(c *smtp.Client, token string) error {
	return c.Auth(sasl.NewOAuthBearerClient(&sasl.OAuthBearerOptions{Token: token}))
}

// smarthost is a second go-smtp server standing in for the relay.
type smarthost struct {
	mu   sync.Mutex
	got  [][]byte
	rcpt []string
	addr string
}

type hostSession struct {
	h    *smarthost
	rcpt *[]string
}

func (s hostSession) Reset()                               {}
func (s hostSession) Logout() error                        { return nil }
func (s hostSession) Mail(string, *smtp.MailOptions) error { return nil }
func (s hostSession) Rcpt(to string, _ *smtp.RcptOptions) error {
	if strings.HasPrefix(to, "reject") {
		return &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 1, 1}, Message: "no such user"}
	}
	*s.rcpt = append(*s.rcpt, to)
	return nil
}
func (s hostSession) Data(r io.Reader) error {
	b, err := io.ReadAll(r)
	s.h.mu.Lock()
	s.h.got = append(s.h.got, b)
	s.h.rcpt = append(s.h.rcpt, *s.rcpt...)
	s.h.mu.Unlock()
	return err
}

func newSmarthost(t testing.TB) *smarthost {
	h := &smarthost{}
	srv := smtp.NewServer(smtp.BackendFunc(func(*smtp.Conn) (smtp.Session, error) { return hostSession{h, new([]string)}, nil }))
	srv.Domain = "smarthost.example.net"
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	h.addr = ln.Addr().String()
	return h
}

// TestSubmission: an agent's token with send on From delivers to our inboxes
// and relays the rest; a token without send, for another audience or issuer,
// expired, or signed by another key is refused, and so is a header From the
// agent may not send as.
func TestSubmission(t *testing.T) {
	host := newSmarthost(t)
	v := newEnv(t, func(c *Config) { c.Relay = host.addr })
	tokA := v.key.token(t, issuer, audience, omniA, walletA, t0, 300)

	// Without AUTH nothing is sent.
	c := dial(t, v.sub)
	if n, err := send(c, addrA, []string{addrB}, message(addrA, addrB, "noauth", "x")); n != 530 {
		t.Fatalf("MAIL without AUTH: %d %v, want 530", n, err)
	}

	c = dial(t, v.sub)
	if err := auth(c, tokA); err != nil {
		t.Fatalf("AUTH with A's token: %v", err)
	}
	msg := message(addrA, addrB, "hello-b", "Hi B, from A.\r\n")
	// The smarthost refuses a recipient: its refusal comes back at DATA, and
	// nothing is delivered, here or there.
	if n, err := send(c, addrA, []string{addrB, "friend@outside.example", "reject@outside.example"}, msg); n != 550 || !strings.Contains(err.Error(), "smarthost refused the message: no such user") {
		t.Fatalf("send with a recipient the smarthost refuses: %d %v, want 550", n, err)
	}
	c.Reset()
	if n, err := send(c, addrA, []string{addrB, "friend@outside.example"}, msg); n != 250 {
		t.Fatalf("A sends to B and outside: %d %v", n, err)
	}
	objs := v.stored()
	if len(objs) != 1 || !strings.HasPrefix(objs[0].Key, strings.ToLower(walletB)+"/"+addrB+"/") {
		t.Fatalf("stored %v, want one message in B's inbox", objs)
	}
	got, _ := v.store.Get(context.Background(), objs[0].Key)
	if want := "Authentication-Results: mx." + domain + "; auth=pass smtp.auth=" + addrA + "\r\n" + string(msg); string(got) != want {
		t.Fatalf("B's message:\n%q\nwant\n%q", got, want)
	}
	host.mu.Lock()
	if len(host.got) != 1 || !bytes.Equal(host.got[0], msg) || strings.Join(host.rcpt, ",") != "friend@outside.example" {
		t.Fatalf("the smarthost got %d messages for %v", len(host.got), host.rcpt)
	}
	host.mu.Unlock()

	// A may not send as B: refused at MAIL FROM, and in the header From.
	c.Reset()
	if n, err := send(c, addrB, []string{addrA}, message(addrB, addrA, "as-b", "x")); n != 550 || !strings.Contains(err.Error(), "may not send as") {
		t.Fatalf("MAIL FROM B by A: %d %v", n, err)
	}
	c.Reset()
	if n, err := send(c, addrA, []string{addrA}, message(addrB, addrA, "hdr-b", "x")); n != 550 || !strings.Contains(err.Error(), "From header") {
		t.Fatalf("header From B by A: %d %v", n, err)
	}
	c.Reset()
	if n, err := send(c, addrA, []string{addrA}, []byte("Subject: no from\r\n\r\nx")); n != 550 {
		t.Fatalf("no header From: %d %v", n, err)
	}
	// B holds read, not send, on A's inbox.
	cb := dial(t, v.sub)
	if err := auth(cb, v.key.token(t, issuer, audience, omniB, walletB, t0, 300)); err != nil {
		t.Fatal(err)
	}
	if n, err := send(cb, addrA, []string{addrB}, message(addrA, addrB, "b-as-a", "x")); n != 550 {
		t.Fatalf("B (read only) sends as A: %d %v", n, err)
	}

	// Tokens refused at AUTH.
	other := newIssuerKey(t, "k1") // same kid, another key
	for name, tok := range map[string]string{
		"another audience": v.key.token(t, issuer, "sts.amazonaws.com", omniA, walletA, t0, 300),
		"another issuer":   v.key.token(t, "http://evil.example", audience, omniA, walletA, t0, 300),
		"expired":          v.key.token(t, issuer, audience, omniA, walletA, t0.Add(-10*time.Minute), 300),
		"not valid yet":    v.key.token(t, issuer, audience, omniA, walletA, t0.Add(10*time.Minute), 300),
		"another key":      other.token(t, issuer, audience, omniA, walletA, t0, 300),
		"garbage":          "not.a.token",
		"none alg":         base64.RawURLEncoding.EncodeToString([]byte(`{"alg":"none"}`)) + "." + strings.Split(tokA, ".")[1] + ".",
	} {
		c := dial(t, v.sub)
		err := auth(c, tok)
		if err == nil {
			t.Errorf("%s: AUTH accepted", name)
			continue
		}
		if n, _ := send(c, addrA, []string{addrB}, message(addrA, addrB, "x", "x")); n != 530 {
			t.Errorf("%s: MAIL after a refused AUTH: %d, want 530", name, n)
		}
	}
	// A token that expires during the session stops sending.
	v.clk.Advance(301 * time.Second)
	c.Reset()
	if n, err := send(c, addrA, []string{addrB}, msg); n != 530 || !strings.Contains(err.Error(), "expired") {
		t.Fatalf("after the token expired: %d %v", n, err)
	}
	if n := len(v.stored()); n != 1 {
		t.Fatalf("refused submissions stored mail: %d objects", n)
	}
}

// TestNoRelay: without --relay, another domain's recipient is refused with
// the fix.
func TestNoRelay(t *testing.T) {
	v := newEnv(t, nil)
	c := dial(t, v.sub)
	if err := auth(c, v.key.token(t, issuer, audience, omniA, walletA, t0, 300)); err != nil {
		t.Fatal(err)
	}
	if n, err := send(c, addrA, []string{"x@outside.example"}, message(addrA, "x@outside.example", "r", "x")); n != 550 || !strings.Contains(err.Error(), "--relay") {
		t.Fatalf("no relay: %d %v", n, err)
	}
}

// TestAuthDummyAnswer: after a refused token the client's empty answer to
// the error challenge ends the exchange with 535. (go-sasl's OAUTHBEARER
// server indexes into the empty answer and panics; go-smtp then answers 421
// and drops the connection.)
func TestAuthDummyAnswer(t *testing.T) {
	v := newEnv(t, nil)
	conn, err := net.Dial("tcp", v.sub)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	buf := make([]byte, 4096)
	read := func() string {
		var sb strings.Builder
		for {
			n, err := conn.Read(buf)
			sb.Write(buf[:n])
			lines := strings.Split(strings.TrimSuffix(sb.String(), "\r\n"), "\r\n")
			if err != nil || (strings.HasSuffix(sb.String(), "\r\n") && len(lines[len(lines)-1]) > 3 && lines[len(lines)-1][3] == ' ') {
				return sb.String()
			}
		}
	}
	read()
	fmt.Fprintf(conn, "EHLO client\r\n")
	read()
	ir := base64.StdEncoding.EncodeToString([]byte("n,,\x01auth=Bearer bogus\x01\x01"))
	fmt.Fprintf(conn, "AUTH OAUTHBEARER %s\r\n", ir)
	if r := read(); !strings.HasPrefix(r, "334 ") {
		t.Fatalf("refused token: %q, want the 334 error challenge", r)
	}
	fmt.Fprintf(conn, "=\r\n")
	if r := read(); !strings.HasPrefix(r, "535 ") {
		t.Fatalf("empty answer to the error challenge: %q, want 535", r)
	}
	fmt.Fprintf(conn, "NOOP\r\n")
	if r := read(); !strings.HasPrefix(r, "250 ") {
		t.Fatalf("the connection did not survive: %q", r)
	}
}

// TestConnectionLimit: one connection over MaxConns is told 421 and closed.
func TestConnectionLimit(t *testing.T) {
	v := newEnv(t, func(c *Config) { c.MaxConns = 2 })
	dial(t, v.mx)
	dial(t, v.mx)
	conn, err := net.Dial("tcp", v.mx)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	b, _ := io.ReadAll(conn)
	if !strings.HasPrefix(string(b), "421 ") {
		t.Fatalf("third connection: %q, want 421", b)
	}
}

// TestStoreFailure: when the store fails the client gets 451, not 250.
func TestStoreFailure(t *testing.T) {
	v := newEnv(t, func(c *Config) { c.Store = failing{} })
	c := dial(t, v.mx)
	if n, err := send(c, "s@example.net", []string{addrA}, message("s@example.net", addrA, "f", "x")); n != 451 {
		t.Fatalf("store down: %d %v, want 451", n, err)
	}
}

type failing struct{ blobstore.Store }

func (failing) PutIfAbsent(context.Context, string, []byte) error { return errors.New("disk full") }

// TestOAuthBearerServer: the exported SASL server (for IMAP too) accepts a
// valid token once, and ends a refused exchange with ErrAuth whatever the
// client answers to the error challenge.
func TestOAuthBearerServer(t *testing.T) {
	v := newEnv(t, nil)
	ver := v.e.cfg.Verifier
	resp := func(tok string) []byte { return []byte("n,,\x01auth=Bearer " + tok + "\x01\x01") }
	var got *Agent
	srv := NewOAuthBearerServer(context.Background(), ver, func(a *Agent, err error) { got = a })
	if ch, done, err := srv.Next(resp(v.key.token(t, issuer, audience, omniA, walletA, t0, 300))); err != nil || !done || ch != nil || got == nil || got.Omni != omniA {
		t.Fatalf("valid token: %q %v %v, agent %+v", ch, done, err, got)
	}
	for _, answer := range [][]byte{{}, {1}, []byte("x"), nil} {
		var refusal error
		srv := NewOAuthBearerServer(context.Background(), ver, func(a *Agent, err error) { refusal = err })
		ch, done, err := srv.Next(resp("bogus"))
		if err != nil || done || !bytes.Contains(ch, []byte("invalid_token")) || !errors.Is(refusal, ErrToken) {
			t.Fatalf("bogus token: %q %v %v (%v)", ch, done, err, refusal)
		}
		if _, done, err := srv.Next(answer); !done || err != ErrAuth {
			t.Fatalf("answer %q to the error challenge: %v %v, want ErrAuth", answer, done, err)
		}
	}
	if ch, done, err := NewOAuthBearerServer(context.Background(), nil, func(*Agent, error) {}).Next(resp(v.key.token(t, issuer, audience, omniA, walletA, t0, 300))); err != nil || done || !bytes.Contains(ch, []byte("invalid_token")) {
		t.Fatalf("no verifier accepted a token: %q %v %v", ch, done, err)
	}
}

func TestIPKey(t *testing.T) {
	for ip, want := range map[string]string{
		"192.0.2.7":            "ip:192.0.2.7",
		"2001:db8:1:2:3:4:5:6": "ip:2001:db8:1:2::/64",
		"2001:db8:1:2:ff::1":   "ip:2001:db8:1:2::/64",
		"::ffff:192.0.2.7":     "ip:192.0.2.7",
	} {
		if got := (&session{ip: net.ParseIP(ip)}).ipKey(); got != want {
			t.Errorf("ipKey(%s) = %s, want %s", ip, got, want)
		}
	}
}

// TestVerifier is the JWT attack suite on the edge's verifier: only an ES256
// token of the issuer's keys, for one of the edge's audiences, in its
// lifetime, for an agent, passes; a made-up kid refetches the JWKS at most
// once per refreshEvery.
func TestVerifier(t *testing.T) {
	clk := clock.NewFake(t0)
	key, other := newIssuerKey(t, "k1"), newIssuerKey(t, "k2")
	fetches := 0
	v := NewVerifier(issuer, []string{domain, "other.example"}, func(context.Context) (apiv1.JWKS, error) {
		fetches++
		return apiv1.JWKS{Keys: []apiv1.JWK{key.JWK}}, nil
	}, clk.Now)
	ctx := context.Background()
	good := key.token(t, issuer, domain, omniA, walletA, t0, 300)
	if a, err := v.Verify(ctx, good); err != nil || a.Omni != omniA || a.Wallet != strings.ToLower(walletA) || !a.Expiry.Equal(t0.Add(300*time.Second)) {
		t.Fatalf("good token: %+v %v", a, err)
	}
	if _, err := v.Verify(ctx, key.token(t, issuer, "other.example", omniA, walletA, t0, 300)); err != nil {
		t.Fatalf("the edge's second audience: %v", err)
	}
	parts := strings.Split(good, ".")
	hs := base64.RawURLEncoding.EncodeToString([]byte(`{"alg":"HS256","kid":"k1","typ":"JWT"}`))
	ownerClaims := oidc.NewClaims(issuer, domain, oidc.Identity{Role: "owner", Wallet: walletA, Omni: omniA}, oidc.Enclave{}, t0.Unix(), 300)
	ownerTok, _ := key.Signer.Sign(ownerClaims)
	for name, tok := range map[string]string{
		"alg none":       base64.RawURLEncoding.EncodeToString([]byte(`{"alg":"none","kid":"k1"}`)) + "." + parts[1] + ".",
		"HS256":          hs + "." + parts[1] + "." + parts[2],
		"unknown kid":    other.token(t, issuer, domain, omniA, walletA, t0, 300),
		"tampered":       parts[0] + "." + base64.RawURLEncoding.EncodeToString([]byte(`{"iss":"`+issuer+`","aud":"`+domain+`","agentkeys_omni":"`+omniB+`"}`)) + "." + parts[2],
		"wrong audience": key.token(t, issuer, "sts.amazonaws.com", omniA, walletA, t0, 300),
		"wrong issuer":   key.token(t, "http://other", domain, omniA, walletA, t0, 300),
		"expired":        key.token(t, issuer, domain, omniA, walletA, t0.Add(-301*time.Second), 300),
		"not yet valid":  key.token(t, issuer, domain, omniA, walletA, t0.Add(time.Hour), 300),
		"owner's token":  ownerTok,
		"too long":       strings.Repeat("a", oidc.MaxToken+1),
	} {
		if _, err := v.Verify(ctx, tok); !errors.Is(err, ErrToken) {
			t.Errorf("%s: %v, want ErrToken", name, err)
		} else if strings.Contains(err.Error(), tok) {
			t.Errorf("%s: the error holds the token", name)
		}
	}
	before := fetches
	for range 50 {
		v.Verify(ctx, other.token(t, issuer, domain, omniA, walletA, t0, 300))
	}
	if fetches-before > 1 {
		t.Fatalf("50 tokens with an unknown kid fetched the JWKS %d times, want at most 1", fetches-before)
	}
	clk.Advance(refreshEvery)
	v.Verify(ctx, other.token(t, issuer, domain, omniA, walletA, t0, 300))
	if fetches-before != 1 && fetches-before != 2 {
		t.Fatalf("fetches %d", fetches-before)
	}
}
