package imapedge_test

import (
	"bufio"
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/big"
	"net"
	"os"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/agentkeys/agentkeys/internal/blobstore/localstore"
	"github.com/agentkeys/agentkeys/internal/clock"
	"github.com/agentkeys/agentkeys/internal/imapedge"
	"github.com/agentkeys/agentkeys/internal/oidc"
	"github.com/agentkeys/agentkeys/internal/oidc/oidctest"
	gooidc "github.com/coreos/go-oidc/v3/oidc"
	"github.com/emersion/go-imap"
	"github.com/emersion/go-imap/client"
	"github.com/emersion/go-sasl"
)

const (
	issuer   = "https://keys.example.test"
	edgeAud  = "mail-edge.example.test"
	walletA  = "0xaaaaaaaaaaaa000000000000000000000000000a"
	walletB  = "0xbbbbbbbbbbbb000000000000000000000000000b"
	addrA    = "aaaaaaaaaaaaa@agents.example.test"
	addrB    = "abbbbbbbbbbbb@agents.example.test"
	prefixA  = walletA + "/" + addrA + "/"
	prefixB  = walletB + "/" + addrB + "/"
	msgNameA = "1780000000000000001-0a1b2c3d.eml"
)

var rawA = []byte("Authentication-Results: edge; spf=pass\r\nFrom: Shop <no-reply@shop.example>\r\nTo: " + addrA +
	"\r\nSubject: Your code\r\nDate: Sat, 05 Dec 2026 06:00:00 +0000\r\nMessage-ID: <1@shop.example>\r\n\r\nYour code is 493817.\r\n")

// issuerKey signs real identity tokens, as the broker's OIDC issuer does.
type issuerKey struct{ *oidctest.Issuer }

func newIssuer(t *testing.T) *issuerKey { return &issuerKey{oidctest.New(t, "k1")} }

func (k *issuerKey) token(t *testing.T, aud, wallet string, now time.Time, ttl int64) string {
	tok, err := k.Signer.Sign(oidc.NewClaims(issuer, aud, oidc.Identity{Role: "agent", Wallet: wallet, OwnerWallet: "0x01"},
		oidc.Enclave{MrEnclave: "e", MrSigner: "s", Tier: "dev"}, now.Unix(), ttl))
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// verifier is the test's Authenticator: the token checked as a relying party
// (go-oidc: signature, issuer, audience = the edge, expiry on the test clock),
// then the agent against a revocation list.
type verifier struct {
	v       *gooidc.IDTokenVerifier
	mu      sync.Mutex
	revoked map[string]bool
	calls   atomic.Int64
}

func newVerifier(k *issuerKey, clk *clock.Fake) *verifier {
	ks := &gooidc.StaticKeySet{PublicKeys: []crypto.PublicKey{&k.Key.PublicKey}}
	return &verifier{v: gooidc.NewVerifier(issuer, ks, &gooidc.Config{ClientID: edgeAud, Now: clk.Now, SupportedSigningAlgs: []string{"ES256"}}),
		revoked: map[string]bool{}}
}

func (v *verifier) Authenticate(ctx context.Context, token string) (imapedge.Agent, error) {
	v.calls.Add(1)
	idt, err := v.v.Verify(ctx, token)
	if err != nil {
		return imapedge.Agent{}, err
	}
	var c oidc.Claims
	if err := idt.Claims(&c); err != nil {
		return imapedge.Agent{}, err
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.revoked[c.UserWallet] {
		return imapedge.Agent{}, errors.New("agent revoked")
	}
	return imapedge.Agent{Wallet: c.UserWallet, Expires: idt.Expiry}, nil
}

// directory is the test's Directory: the inboxes each wallet may read.
type directory struct {
	mu   sync.Mutex
	read map[string][]imapedge.Mailbox
}

func (d *directory) Mailboxes(_ context.Context, a imapedge.Agent) ([]imapedge.Mailbox, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	return slices.Clone(d.read[a.Wallet]), nil
}

func (d *directory) set(wallet string, mbs ...imapedge.Mailbox) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.read[wallet] = mbs
}

type env struct {
	log   *syncBuffer // the server's log, at debug level
	addr  string
	clk   *clock.Fake
	key   *issuerKey
	auth  *verifier
	dir   *directory
	store *localstore.Store
}

func start(t *testing.T, tune func(*imapedge.Config)) *env {
	t.Helper()
	store, err := localstore.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	for key, data := range map[string][]byte{
		prefixA + msgNameA:                           rawA,
		prefixA + "manifest.json":                    []byte("{}"), // not a message: never shown
		prefixB + "1780000000000000002-00000000.eml": []byte("Subject: for B only\r\n\r\nsecret of B\r\n"),
	} {
		if err := store.PutIfAbsent(ctx, key, data); err != nil {
			t.Fatal(err)
		}
	}
	e := &env{clk: clock.NewFake(time.Unix(1780000000, 0)), key: newIssuer(t), store: store,
		dir: &directory{read: map[string][]imapedge.Mailbox{
			walletA: {{Address: addrA, Prefix: prefixA}},
			walletB: {{Address: addrB, Prefix: prefixB}},
		}}}
	e.auth = newVerifier(e.key, e.clk)
	e.log = &syncBuffer{}
	cfg := imapedge.Config{Store: store, Auth: e.auth, Directory: e.dir, Now: e.clk.Now,
		Log: slog.New(slog.NewTextHandler(e.log, &slog.HandlerOptions{Level: slog.LevelDebug}))}
	if tune != nil {
		tune(&cfg)
	}
	srv, err := imapedge.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	sctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(sctx, ln) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	e.addr = ln.Addr().String()
	return e
}

// syncBuffer is a log sink safe for concurrent writes.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}
func (s *syncBuffer) String() string { s.mu.Lock(); defer s.mu.Unlock(); return s.b.String() }

func (e *env) tokenA(t *testing.T) string { return e.key.token(t, edgeAud, walletA, e.clk.Now(), 300) }

func dial(t *testing.T, addr string) *client.Client {
	t.Helper()
	c, err := client.Dial(addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func (e *env) signIn(t *testing.T, token string) (*client.Client, error) {
	c := dial(t, e.addr)
	return c, c.Authenticate(sasl.NewOAuthBearerClient(&sasl.OAuthBearerOptions{Username: walletA, Token: token}))
}

func fetchAll(t *testing.T, c *client.Client, items ...imap.FetchItem) []*imap.Message {
	t.Helper()
	set := new(imap.SeqSet)
	set.AddRange(1, 0)
	ch := make(chan *imap.Message, 16)
	done := make(chan error, 1)
	go func() { done <- c.Fetch(set, items, ch) }()
	var out []*imap.Message
	for m := range ch {
		out = append(out, m)
	}
	if err := <-done; err != nil {
		t.Fatalf("FETCH: %v", err)
	}
	return out
}

// TestAgentReadsOnlyItsInbox: a token signs in, LIST shows only the agent's
// inbox, the message comes back byte for byte, and another inbox is refused.
func TestAgentReadsOnlyItsInbox(t *testing.T) {
	e := start(t, nil)
	c, err := e.signIn(t, e.tokenA(t))
	if err != nil {
		t.Fatalf("sign in: %v", err)
	}
	ch := make(chan *imap.MailboxInfo, 10)
	if err := c.List("", "*", ch); err != nil {
		t.Fatal(err)
	}
	var names []string
	for mi := range ch {
		names = append(names, mi.Name)
	}
	if !slices.Equal(names, []string{addrA}) {
		t.Fatalf("LIST = %v, want only %s", names, addrA)
	}
	if _, err := c.Select(addrB, true); err == nil {
		t.Fatal("SELECT of another agent's inbox succeeded")
	}
	if _, err := c.Status(addrB, []imap.StatusItem{imap.StatusMessages}); err == nil {
		t.Fatal("STATUS of another agent's inbox succeeded")
	}
	st, err := c.Select(addrA, false)
	if err != nil {
		t.Fatal(err)
	}
	if st.Messages != 1 || st.UidValidity == 0 || st.UidNext != 2 {
		t.Fatalf("SELECT: %d messages, uidvalidity %d, uidnext %d", st.Messages, st.UidValidity, st.UidNext)
	}
	sec := &imap.BodySectionName{Peek: true}
	msgs := fetchAll(t, c, imap.FetchUid, imap.FetchRFC822Size, imap.FetchInternalDate, imap.FetchEnvelope, sec.FetchItem())
	if len(msgs) != 1 {
		t.Fatalf("FETCH returned %d messages", len(msgs))
	}
	m := msgs[0]
	body, _ := io.ReadAll(m.GetBody(&imap.BodySectionName{}))
	if !bytes.Equal(body, rawA) {
		t.Fatalf("BODY[] differs from the stored object:\n%q\n%q", body, rawA)
	}
	if m.Uid != 1 || m.Size != uint32(len(rawA)) || m.Envelope.Subject != "Your code" || !m.InternalDate.Equal(time.Unix(1780000000, 0)) {
		t.Fatalf("uid %d size %d subject %q date %v", m.Uid, m.Size, m.Envelope.Subject, m.InternalDate)
	}
	// INBOX is the agent's own inbox.
	if st, err := c.Select("INBOX", true); err != nil || st.Messages != 1 {
		t.Fatalf("SELECT INBOX: %v", err)
	}
}

// TestRefusedSignIns: a token for another audience, an expired token, a
// revoked agent's token, a forged token, LOGIN and PLAIN are all refused, and
// before signing in nothing is visible.
func TestRefusedSignIns(t *testing.T) {
	e := start(t, nil)
	other := newIssuer(t)
	cases := map[string]string{
		"another audience": e.key.token(t, "sts.amazonaws.com", walletA, e.clk.Now(), 300),
		"expired":          e.key.token(t, edgeAud, walletA, e.clk.Now().Add(-10*time.Minute), 300),
		"another issuer":   other.token(t, edgeAud, walletA, e.clk.Now(), 300),
		"not a token":      "x.y.z",
	}
	for name, tok := range cases {
		if _, err := e.signIn(t, tok); err == nil {
			t.Errorf("%s: sign-in succeeded", name)
		}
		// The answer says what to do, never why the verifier refused.
		if got := rawSignIn(t, e.addr, tok); !strings.HasPrefix(got, "a1 NO sign-in refused: present a valid") || strings.Contains(got, "oidc:") {
			t.Errorf("%s: answer %q", name, got)
		}
	}
	e.auth.mu.Lock()
	e.auth.revoked[walletA] = true
	e.auth.mu.Unlock()
	if _, err := e.signIn(t, e.tokenA(t)); err == nil {
		t.Error("a revoked agent signed in")
	}

	c := dial(t, e.addr)
	plain, _ := c.SupportAuth(sasl.Plain)
	bearer, _ := c.SupportAuth(sasl.OAuthBearer)
	if plain || !bearer {
		t.Error("capabilities must offer AUTH=OAUTHBEARER and no PLAIN")
	}
	if err := c.Login(walletA, "password"); err == nil {
		t.Error("LOGIN succeeded")
	}
	if err := c.Authenticate(sasl.NewPlainClient("", walletA, e.tokenA(t))); err == nil {
		t.Error("AUTHENTICATE PLAIN succeeded")
	}
	if _, err := c.Select(addrA, true); err == nil {
		t.Error("SELECT without signing in succeeded")
	}
	ch := make(chan *imap.MailboxInfo, 10)
	if err := c.List("", "*", ch); err == nil {
		t.Error("LIST without signing in succeeded")
	}
	// No token, whole or in part, reaches the log.
	for name, tok := range cases {
		sig := tok[strings.LastIndexByte(tok, '.')+1:]
		if strings.Contains(e.log.String(), sig) {
			t.Errorf("the %s token is in the server's log", name)
		}
	}
	if strings.Contains(e.log.String(), e.tokenA(t)[:40]) {
		t.Error("a token is in the server's log")
	}
}

// TestRevokedGrantActsOnNextCommand: taking the read right away mid-session
// refuses the next FETCH.
func TestRevokedGrantActsOnNextCommand(t *testing.T) {
	e := start(t, nil)
	c, err := e.signIn(t, e.tokenA(t))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Select(addrA, true); err != nil {
		t.Fatal(err)
	}
	e.dir.set(walletA)
	set := new(imap.SeqSet)
	set.AddNum(1)
	ch := make(chan *imap.Message, 1)
	if err := c.Fetch(set, []imap.FetchItem{imap.FetchUid}, ch); err == nil {
		t.Fatal("FETCH after the grant was revoked succeeded")
	}
}

// TestNewMailAndStableUIDs: NOOP announces new mail; a write that finished
// late (its name sorts first) gets the next UID, and no UID changes.
func TestNewMailAndStableUIDs(t *testing.T) {
	e := start(t, nil)
	c, err := e.signIn(t, e.tokenA(t))
	if err != nil {
		t.Fatal(err)
	}
	st, err := c.Select(addrA, false)
	if err != nil {
		t.Fatal(err)
	}
	validity := st.UidValidity
	put := func(name, subject string) {
		if err := e.store.PutIfAbsent(context.Background(), prefixA+name, []byte("Subject: "+subject+"\r\n\r\nx\r\n")); err != nil {
			t.Fatal(err)
		}
	}
	put("1780000000000000009-000000aa.eml", "second")
	e.clk.Advance(2 * time.Second)
	if err := c.Noop(); err != nil {
		t.Fatal(err)
	}
	if n := c.Mailbox().Messages; n != 2 {
		t.Fatalf("after NOOP the client knows %d messages, want 2", n)
	}
	// UID SEARCH alone (a client polling for new mail) sees the next one.
	put("1780000000000000010-000000cc.eml", "third")
	e.clk.Advance(2 * time.Second)
	if ids, err := c.UidSearch(&imap.SearchCriteria{Uid: uidFrom(3)}); err != nil || !slices.Equal(ids, []uint32{3}) {
		t.Fatalf("UID SEARCH UID 3:* = %v, %v", ids, err)
	}
	put("1770000000000000000-000000bb.eml", "late")
	e.clk.Advance(31 * time.Second)
	if err := c.Noop(); err != nil {
		t.Fatal(err)
	}
	msgs := fetchAll(t, c, imap.FetchUid, imap.FetchEnvelope)
	var got []string
	for _, m := range msgs {
		got = append(got, fmt.Sprintf("%d:%s", m.Uid, m.Envelope.Subject))
	}
	if want := []string{"1:Your code", "2:second", "3:third", "4:late"}; !slices.Equal(got, want) {
		t.Fatalf("UIDs %v, want %v", got, want)
	}
	if st, err := c.Select(addrA, true); err != nil || st.UidValidity != validity {
		t.Fatalf("UIDVALIDITY changed: %v", err)
	}
}

func uidFrom(n uint32) *imap.SeqSet {
	set := new(imap.SeqSet)
	set.AddRange(n, 0)
	return set
}

// TestFlagsAreKeptAndDeleteRefused: \Seen sticks across sessions of the same
// server; \Deleted is refused; the mailbox cannot be appended to.
func TestFlagsAreKeptAndDeleteRefused(t *testing.T) {
	e := start(t, nil)
	c, err := e.signIn(t, e.tokenA(t))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Select(addrA, false); err != nil {
		t.Fatal(err)
	}
	set := new(imap.SeqSet)
	set.AddNum(1)
	if err := c.Store(set, imap.FormatFlagsOp(imap.AddFlags, true), []any{imap.SeenFlag, "otp"}, nil); err != nil {
		t.Fatal(err)
	}
	if err := c.Store(set, imap.FormatFlagsOp(imap.AddFlags, true), []any{imap.DeletedFlag}, nil); err == nil {
		t.Fatal("\\Deleted was accepted")
	}
	if err := c.Append(addrA, nil, time.Time{}, bytes.NewBufferString("Subject: x\r\n\r\nx\r\n")); err == nil {
		t.Fatal("APPEND was accepted")
	}
	c2, err := e.signIn(t, e.tokenA(t))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c2.Select(addrA, true); err != nil {
		t.Fatal(err)
	}
	m := fetchAll(t, c2, imap.FetchFlags)
	if len(m) != 1 || !slices.Contains(m[0].Flags, imap.SeenFlag) || !slices.Contains(m[0].Flags, "otp") {
		t.Fatalf("flags in a second session: %v", m)
	}
	ids, err := c2.Search(&imap.SearchCriteria{WithoutFlags: []string{imap.SeenFlag}})
	if err != nil || len(ids) != 0 {
		t.Fatalf("SEARCH UNSEEN = %v, %v", ids, err)
	}
	ids, err = c2.Search(&imap.SearchCriteria{Header: map[string][]string{"Subject": {"code"}}})
	if err != nil || !slices.Equal(ids, []uint32{1}) {
		t.Fatalf("SEARCH SUBJECT code = %v, %v", ids, err)
	}
}

// TestFailedSignInFloodIsBounded: after FailedAuths failures an address is
// turned away at connect, without the authenticator being asked again.
func TestFailedSignInFloodIsBounded(t *testing.T) {
	e := start(t, func(c *imapedge.Config) { c.FailedAuths = 3 })
	bad := e.key.token(t, "another-audience", walletA, e.clk.Now(), 300)
	for i := 0; i < 3; i++ {
		if got := rawSignIn(t, e.addr, bad); !strings.HasPrefix(got, "a1 NO") {
			t.Fatalf("a bad token: %q", got)
		}
	}
	calls := e.auth.calls.Load()
	for i := 0; i < 20; i++ {
		conn, err := net.Dial("tcp", e.addr)
		if err != nil {
			t.Fatal(err)
		}
		line, _ := bufio.NewReader(conn).ReadString('\n')
		conn.Close()
		if !strings.HasPrefix(line, "* BYE") {
			t.Fatalf("connection %d after the limit was greeted with %q", i, line)
		}
	}
	// Even the right token is refused until the window passes.
	if _, err := e.signIn(t, e.tokenA(t)); err == nil {
		t.Fatal("signed in while the address was blocked")
	}
	if got := e.auth.calls.Load(); got != calls {
		t.Fatalf("the authenticator was asked %d more times after the limit", got-calls)
	}
	e.clk.Advance(11 * time.Minute)
	if _, err := e.signIn(t, e.key.token(t, edgeAud, walletA, e.clk.Now(), 300)); err != nil {
		t.Fatalf("after the window: %v", err)
	}
}

// rawSignIn speaks AUTHENTICATE OAUTHBEARER as an attacker's script would and
// returns the tagged answer, once the server has given it.
func rawSignIn(t *testing.T, addr, token string) string {
	t.Helper()
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(20 * time.Second))
	r := bufio.NewReader(conn)
	if line, _ := r.ReadString('\n'); !strings.HasPrefix(line, "* OK") {
		return line
	}
	ir := base64.StdEncoding.EncodeToString([]byte("n,,\x01auth=Bearer " + token + "\x01\x01"))
	fmt.Fprintf(conn, "a1 AUTHENTICATE OAUTHBEARER %s\r\n", ir)
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			return "closed: " + err.Error()
		}
		if strings.HasPrefix(line, "+") {
			fmt.Fprintf(conn, "AQ==\r\n") // the \x01 that ends a failed exchange
			continue
		}
		if strings.HasPrefix(line, "a1 ") {
			return line
		}
	}
}

// TestAnonymousCostIsBounded: a connection that does not sign in is closed
// after AuthTimeout; one that sends too much before signing in is closed; the
// connection limit turns the next caller away.
func TestAnonymousCostIsBounded(t *testing.T) {
	e := start(t, func(c *imapedge.Config) {
		c.AuthTimeout = 200 * time.Millisecond
		c.PreAuthBytes = 4096
		c.MaxInput = 64 << 10
		c.MaxConnsPerIP = 2
	})
	closed := func(conn net.Conn) bool {
		conn.SetReadDeadline(time.Now().Add(10 * time.Second))
		_, err := io.Copy(io.Discard, conn)
		var ne net.Error
		return !errors.As(err, &ne) || !ne.Timeout() // EOF or reset: the server closed it
	}
	idle, err := net.Dial("tcp", e.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer idle.Close()
	if !closed(idle) {
		t.Fatal("an idle anonymous connection was not closed")
	}
	chatty, err := net.Dial("tcp", e.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer chatty.Close()
	go chatty.Write([]byte("a1 NOOP " + strings.Repeat("x", 1<<20) + "\r\n"))
	if !closed(chatty) {
		t.Fatal("a connection sending 1 MiB before signing in was not closed")
	}
	// Signed in, a client cannot send without bound either.
	tok := e.tokenA(t)
	signed, err := net.Dial("tcp", e.addr)
	if err != nil {
		t.Fatal(err)
	}
	r := bufio.NewReader(signed)
	r.ReadString('\n')
	fmt.Fprintf(signed, "a1 AUTHENTICATE OAUTHBEARER %s\r\n", base64.StdEncoding.EncodeToString([]byte("n,,\x01auth=Bearer "+tok+"\x01\x01")))
	if line, _ := r.ReadString('\n'); !strings.HasPrefix(line, "a1 OK") {
		t.Fatalf("sign in: %q", line)
	}
	go signed.Write([]byte("a2 NOOP " + strings.Repeat("x", 8<<20) + "\r\n"))
	if !closed(signed) {
		t.Fatal("a signed-in connection sending an 8 MiB command was not closed")
	}
	signed.Close()
	c1, c2 := dial(t, e.addr), dial(t, e.addr)
	_, _ = c1, c2
	third, err := net.Dial("tcp", e.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer third.Close()
	line, _ := bufio.NewReader(third).ReadString('\n')
	if !strings.HasPrefix(line, "* BYE") {
		t.Fatalf("a third connection from one address was greeted with %q", line)
	}
}

// TestSessionEndsWhenTokenExpires: the connection closes at the token's expiry.
func TestSessionEndsWhenTokenExpires(t *testing.T) {
	e := start(t, nil)
	// A token that expires 1 s after the test clock's now.
	tok := e.key.token(t, edgeAud, walletA, e.clk.Now().Add(-299*time.Second), 300)
	c, err := e.signIn(t, tok)
	if err != nil {
		t.Fatal(err)
	}
	select {
	case <-c.LoggedOut():
	case <-time.After(20 * time.Second):
		t.Fatal("the session outlived its token")
	}
}

// TestPlainListenerOnlyOnLoopback: without TLS, Serve refuses a listener that
// is not on loopback; with TLS a client signs in over IMAPS.
func TestPlainListenerOnlyOnLoopback(t *testing.T) {
	e := start(t, nil)
	srv, err := imapedge.New(imapedge.Config{Store: e.store, Auth: e.auth, Directory: e.dir})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	res := make(chan error, 1)
	go func() { res <- srv.Serve(ctx, publicAddr{ln}) }()
	select {
	case err := <-res:
		if err == nil || !strings.Contains(err.Error(), "TLS") {
			t.Fatalf("Serve on a public address without TLS: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Serve went on serving a public address without TLS")
	}

	cert := selfSigned(t)
	te := start(t, func(c *imapedge.Config) { c.TLS = &tls.Config{Certificates: []tls.Certificate{cert}} })
	pool := x509.NewCertPool()
	pool.AddCert(cert.Leaf)
	c, err := client.DialTLS(te.addr, &tls.Config{RootCAs: pool, ServerName: "127.0.0.1"})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if plain, _ := c.SupportAuth(sasl.Plain); plain {
		t.Error("PLAIN is offered over TLS")
	}
	if err := c.Authenticate(sasl.NewOAuthBearerClient(&sasl.OAuthBearerOptions{Token: te.tokenA(t)})); err != nil {
		t.Fatalf("sign in over TLS: %v", err)
	}
	if st, err := c.Select(addrA, true); err != nil || st.Messages != 1 {
		t.Fatalf("SELECT over TLS: %v", err)
	}
}

type publicAddr struct{ net.Listener }

func (publicAddr) Addr() net.Addr { return &net.TCPAddr{IP: net.IPv4(192, 0, 2, 1), Port: 143} }

func selfSigned(t *testing.T) tls.Certificate {
	t.Helper()
	priv, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "edge"},
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &priv.PublicKey, priv)
	if err != nil {
		t.Fatal(err)
	}
	leaf, _ := x509.ParseCertificate(der)
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: priv, Leaf: leaf}
}

// TestPythonImaplib: Python's imaplib (a client that is not Go's) signs in with
// OAUTHBEARER and fetches the message byte for byte; another inbox is NO.
func TestPythonImaplib(t *testing.T) {
	py, err := exec.LookPath("python3")
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("python3 is not installed")
		}
		t.Skip("python3 is not installed")
	}
	e := start(t, nil)
	host, port, _ := net.SplitHostPort(e.addr)
	script := `
import imaplib, os, sys
m = imaplib.IMAP4(os.environ["HOST"], int(os.environ["PORT"]))
tok = os.environ["TOKEN"]
m.authenticate("OAUTHBEARER", lambda _: ("n,,\x01auth=Bearer " + tok + "\x01\x01").encode())
typ, _ = m.select(os.environ["OTHER"], readonly=True)
assert typ == "NO", typ
typ, _ = m.select(os.environ["MINE"], readonly=True)
assert typ == "OK", typ
typ, data = m.uid("FETCH", "1", "(BODY.PEEK[])")
assert typ == "OK", typ
sys.stdout.buffer.write(data[0][1])
m.logout()
`
	cmd := exec.Command(py, "-c", script)
	// The token goes in the environment, never in argv.
	cmd.Env = append(os.Environ(), "HOST="+host, "PORT="+port, "TOKEN="+e.tokenA(t), "MINE="+addrA, "OTHER="+addrB)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("imaplib: %v\n%s", err, stderr.String())
	}
	if !bytes.Equal(out, rawA) {
		t.Fatalf("imaplib fetched %q, want %q", out, rawA)
	}
}

// TestDroppedTableGetsNewUIDValidity: with room for one mailbox table, another
// agent's mailbox replaces an idle one, which comes back with a greater
// UIDVALIDITY (its UIDs may differ), and a table in use is never dropped.
func TestDroppedTableGetsNewUIDValidity(t *testing.T) {
	e := start(t, func(c *imapedge.Config) { c.MaxBoxes = 1 })
	signIn := func(wallet string) *client.Client {
		c := dial(t, e.addr)
		if err := c.Authenticate(sasl.NewOAuthBearerClient(&sasl.OAuthBearerOptions{Token: e.key.token(t, edgeAud, wallet, e.clk.Now(), 300)})); err != nil {
			t.Fatal(err)
		}
		return c
	}
	a := signIn(walletA)
	st, err := a.Select(addrA, true)
	if err != nil {
		t.Fatal(err)
	}
	first := st.UidValidity
	b := signIn(walletB)
	if _, err := b.Select(addrB, true); err == nil {
		t.Fatal("a table in use was dropped for another")
	}
	a.Logout()
	var berr error
	for range 100 { // the server releases A's table once it has closed A's connection
		if _, berr = b.Select(addrB, true); berr == nil {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if berr != nil {
		t.Fatalf("B's SELECT after A left: %v", berr)
	}
	b.Logout()
	a2 := signIn(walletA)
	for range 100 {
		if st, err = a2.Select(addrA, true); err == nil {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if err != nil || st.UidValidity <= first {
		t.Fatalf("UIDVALIDITY %d after the table was dropped (was %d): %v", st.UidValidity, first, err)
	}
}

// TestFailedSignInsInAllAreBounded: failures from every address together are
// bounded too (many addresses cannot make the server verify without end).
func TestFailedSignInsInAllAreBounded(t *testing.T) {
	e := start(t, func(c *imapedge.Config) { c.FailedAuths = 100; c.FailedInAll = 2 })
	bad := e.key.token(t, "another-audience", walletA, e.clk.Now(), 300)
	for i := 0; i < 2; i++ {
		if got := rawSignIn(t, e.addr, bad); !strings.HasPrefix(got, "a1 NO") {
			t.Fatalf("a bad token: %q", got)
		}
	}
	calls := e.auth.calls.Load()
	if got := rawSignIn(t, e.addr, e.tokenA(t)); !strings.Contains(got, "too many failed sign-ins at this server") {
		t.Fatalf("after the limit in all: %q", got)
	}
	if e.auth.calls.Load() != calls {
		t.Fatal("the authenticator was asked after the limit in all")
	}
	e.clk.Advance(11 * time.Minute)
	if got := rawSignIn(t, e.addr, e.key.token(t, edgeAud, walletA, e.clk.Now(), 300)); !strings.HasPrefix(got, "a1 OK") {
		t.Fatalf("after the window: %q", got)
	}
}

// TestEmptySASLAnswerIsARefusal: AUTHENTICATE OAUTHBEARER with an empty
// initial response ("="), then an empty line after the error challenge, is a
// failed sign-in like any other (a tagged NO, counted against the address),
// not a panic in go-sasl's server that drops the connection uncounted.
func TestEmptySASLAnswerIsARefusal(t *testing.T) {
	e := start(t, func(c *imapedge.Config) { c.FailedAuths = 2 })
	for i := range 2 {
		conn, err := net.Dial("tcp", e.addr)
		if err != nil {
			t.Fatal(err)
		}
		conn.SetDeadline(time.Now().Add(20 * time.Second))
		r := bufio.NewReader(conn)
		r.ReadString('\n')
		fmt.Fprintf(conn, "a1 AUTHENTICATE OAUTHBEARER =\r\n")
		var got string
		for {
			line, err := r.ReadString('\n')
			if err != nil {
				got = "closed: " + err.Error()
				break
			}
			if strings.HasPrefix(line, "+") {
				fmt.Fprintf(conn, "\r\n")
				continue
			}
			if strings.HasPrefix(line, "a1 ") || strings.HasPrefix(line, "* BYE") {
				got = line
				break
			}
		}
		conn.Close()
		if !strings.HasPrefix(got, "a1 NO") {
			t.Fatalf("attempt %d: an empty answer got %q, want a tagged NO", i, got)
		}
	}
	if strings.Contains(e.log.String(), "panic") {
		t.Fatalf("the server panicked:\n%s", e.log.String())
	}
	// Both failures counted: the address is now blocked.
	conn, err := net.Dial("tcp", e.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if line, _ := bufio.NewReader(conn).ReadString('\n'); !strings.HasPrefix(line, "* BYE") {
		t.Fatalf("after two failed sign-ins the address is greeted with %q", line)
	}
}
