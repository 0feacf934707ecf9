package api_test

import (
	"bytes"
	"context"
	"crypto/ecdh"
	"crypto/ed25519"
	"crypto/hpke"
	"crypto/mlkem"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/agentkeys/agentkeys/internal/apiv1"
	"github.com/agentkeys/agentkeys/internal/broker"
	"github.com/agentkeys/agentkeys/internal/ledger"
	"github.com/agentkeys/agentkeys/internal/problem"
	"github.com/agentkeys/agentkeys/internal/seal"
	"github.com/agentkeys/agentkeys/internal/vault"
)

func hpkeKey(t testing.TB) hpke.PrivateKey {
	dk, _ := mlkem.GenerateKey768()
	x, _ := ecdh.X25519().GenerateKey(rand.Reader)
	k, err := hpke.NewHybridPrivateKey(dk, x)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func code(err error) problem.Code {
	var p *problem.Error
	if errors.As(err, &p) {
		return p.Code
	}
	return problem.Code("no problem: " + errString(err))
}

func errString(err error) string {
	if err == nil {
		return "<nil>"
	}
	return err.Error()
}

// TestReadFailsClosed: when the audit entry cannot be made durable, the read
// returns an error and no ciphertext or plaintext of the credential.
func TestReadFailsClosed(t *testing.T) {
	e := newEnv(t, broker.Config{})
	s, g := e.owner(t)
	secret := []byte("sk-fail-closed-0001")
	e.store(t, s, g.Omni, "svc", secret, "")
	k := hpkeKey(t)
	e.failing.Store(true)
	body, _ := json.Marshal(apiv1.ReadBody{Recipient: k.PublicKey().Bytes()})
	rec := e.post("/v1/credentials/svc/read", g.Token, body)
	if rec.Code != http.StatusInternalServerError || strings.Contains(rec.Body.String(), "sealed") {
		t.Fatalf("read with a failing ledger: %d %s", rec.Code, rec.Body)
	}
	if bytes.Contains(rec.Body.Bytes(), secret) {
		t.Fatal("plaintext in the answer")
	}
	e.failing.Store(false)
	res, err := s.Read(context.Background(), "svc", apiv1.ReadBody{Recipient: k.PublicKey().Bytes()})
	if err != nil {
		t.Fatal(err)
	}
	pt, err := hpke.Open(k, hpke.HKDFSHA256(), hpke.AES256GCM(), []byte(res.Info), res.Sealed)
	if err != nil || !bytes.Equal(pt, secret) {
		t.Fatalf("read after recovery: %q %v", pt, err)
	}
}

// TestBadRecipientWritesNothing: a read whose recipient key the enclave cannot
// encrypt to is refused (400) and leaves no entry — not a read, not a denial, not
// an approval request (found by FuzzStoreAndReadBodies: the read was audited
// before the re-encryption failed).
func TestBadRecipientWritesNothing(t *testing.T) {
	e := newEnv(t, broker.Config{})
	s, g := e.owner(t)
	e.store(t, s, g.Omni, "svc", []byte("sk-bad-recipient-01"), "")
	e.store(t, s, g.Omni, "svc-approved", []byte("sk-bad-recipient-02"), apiv1.ApprovalRequired)
	for _, svc := range []string{"svc", "svc-approved"} {
		for _, key := range [][]byte{[]byte("short"), make([]byte, len(hpkeKey(t).PublicKey().Bytes()))} {
			h1, _, _ := e.b.Storage().Head(context.Background())
			body, _ := json.Marshal(apiv1.ReadBody{Recipient: key})
			rec := e.post("/v1/credentials/"+svc+"/read", g.Token, body)
			h2, _, _ := e.b.Storage().Head(context.Background())
			if rec.Code != http.StatusBadRequest || h2.Seq != h1.Seq {
				t.Errorf("%s, recipient of %d bytes: %d %s, %d entries appended; want 400 and none", svc, len(key), rec.Code, rec.Body, h2.Seq-h1.Seq)
			}
		}
	}
}

func TestSessionChannelRead(t *testing.T) {
	e := newEnv(t, broker.Config{})
	k := hpkeKey(t)
	_, key := newIdentity()
	l := loginFor(e, key)
	l.ChannelKey = base64.StdEncoding.EncodeToString(k.PublicKey().Bytes())
	apiv1.SignLogin(&l, key)
	g, err := e.c.CreateAccount(context.Background(), l)
	if err != nil {
		t.Fatal(err)
	}
	ck, err := hpke.Open(k, hpke.HKDFSHA256(), hpke.AES256GCM(), []byte(g.ChannelInfo), mustB64(t, g.ChannelKey))
	if err != nil {
		t.Fatal(err)
	}
	s := e.c.WithToken(g.Token)
	e.store(t, s, g.Omni, "svc", []byte("channel-secret"), "")
	res, err := s.Read(context.Background(), "svc", apiv1.ReadBody{})
	if err != nil || res.Mode != "session" {
		t.Fatalf("%+v %v", res, err)
	}
	pt, err := seal.OpenBox(ck, []byte(res.Info), res.Sealed)
	if err != nil || string(pt) != "channel-secret" {
		t.Fatalf("%q %v", pt, err)
	}
}

func mustB64(t testing.TB, s string) []byte {
	b, err := base64.StdEncoding.DecodeString(s)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestOwnersAreIsolated: one owner cannot read, list or delete another's
// credentials, even knowing the service name; a ciphertext made for one owner
// cannot be stored by another.
func TestOwnersAreIsolated(t *testing.T) {
	e := newEnv(t, broker.Config{})
	ctx := context.Background()
	a, ga := e.owner(t)
	b, _ := e.owner(t)
	e.store(t, a, ga.Omni, "shared-name", []byte("a-secret"), "")
	k := hpkeKey(t)
	if _, err := b.Read(ctx, "shared-name", apiv1.ReadBody{Recipient: k.PublicKey().Bytes()}); code(err) != problem.NotFound {
		t.Fatalf("B read A's credential: %v", err)
	}
	if list, err := b.List(ctx); err != nil || len(list) != 0 {
		t.Fatalf("B lists %v %v", list, err)
	}
	if err := b.Delete(ctx, "shared-name", ""); code(err) != problem.NotFound {
		t.Fatalf("B deleted A's credential: %v", err)
	}
	if _, err := a.Read(ctx, "shared-name", apiv1.ReadBody{Recipient: k.PublicKey().Bytes()}); err != nil {
		t.Fatalf("A lost its credential: %v", err)
	}
	// A's ciphertext replayed by B is refused: it is bound to A's omni.
	pub, _ := e.enclave(t).PublicKey(seal.ShieldingPath)
	raw, _ := hex.DecodeString(pub.Public)
	ct, _ := seal.To(raw, seal.CredentialInfo(ga.Omni, "*", "stolen"), []byte("x"))
	if _, err := b.Store(ctx, apiv1.StoreBody{Service: "stolen", Ciphertext: ct}); code(err) != problem.BadRequest {
		t.Fatalf("B stored a ciphertext bound to A: %v", err)
	}
}

func TestRateLimit(t *testing.T) {
	e := newEnv(t, broker.Config{}) // default: 100 reads per minute; the limiter's clock is e.clock, moved by the test
	s, g := e.owner(t)
	e.store(t, s, g.Omni, "svc", []byte("v"), "")
	k := hpkeKey(t)
	body := apiv1.ReadBody{Recipient: k.PublicKey().Bytes()}
	for i := range 100 {
		if _, err := s.Read(context.Background(), "svc", body); err != nil {
			t.Fatalf("read %d: %v", i+1, err)
		}
	}
	raw, _ := json.Marshal(body)
	req, _ := http.NewRequest(http.MethodPost, e.srv.URL+"/v1/credentials/svc/read", bytes.NewReader(raw))
	req.Header.Set("Authorization", "Bearer "+g.Token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusTooManyRequests || resp.Header.Get("Retry-After") == "" {
		t.Fatalf("101st read: %d Retry-After=%q", resp.StatusCode, resp.Header.Get("Retry-After"))
	}
	e.clock.Advance(59 * time.Second)
	if _, err := s.Read(context.Background(), "svc", body); code(err) != problem.RateLimited {
		t.Fatalf("a read 59 s after the burst: %v", err)
	}
	e.clock.Advance(time.Second)
	if _, err := s.Read(context.Background(), "svc", body); err != nil {
		t.Fatalf("reads did not resume after the window: %v", err)
	}
}

func TestApprovalFlow(t *testing.T) {
	e := newEnv(t, broker.Config{})
	ctx := context.Background()
	s, g := e.owner(t)
	e.store(t, s, g.Omni, "bank", []byte("hv"), "required")
	k := hpkeKey(t)
	body := apiv1.ReadBody{Recipient: k.PublicKey().Bytes()}
	_, err := s.Read(ctx, "bank", body)
	if code(err) != problem.ApprovalNeeded {
		t.Fatalf("first read: %v", err)
	}
	list, _ := s.Approvals(ctx)
	if len(list) != 1 || list[0].Status != "pending" {
		t.Fatalf("approvals: %+v", list)
	}
	other, _ := e.owner(t)
	if _, err := other.Approve(ctx, list[0].ID); code(err) != problem.NotFound {
		t.Fatalf("another owner approved: %v", err)
	}
	if _, err := s.Approve(ctx, list[0].ID); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Read(ctx, "bank", body); err != nil {
		t.Fatalf("approved read: %v", err)
	}
	if _, err := s.Read(ctx, "bank", body); code(err) != problem.ApprovalNeeded {
		t.Fatalf("a grant allowed a second read: %v", err)
	}
	if _, err := s.Approve(ctx, list[0].ID); code(err) != problem.NotFound {
		t.Fatalf("a used grant was approved again: %v", err)
	}
	if _, err := ledger.VerifyDriver(ctx, broker.Schema(), e.b.Storage(), true); err != nil {
		t.Fatal(err)
	}
}

// FuzzStoreAndReadBodies sends arbitrary bodies to store and read: never a 500,
// never a panic, never a state change from a refused request.
func FuzzStoreAndReadBodies(f *testing.F) {
	e := newEnv(f, broker.Config{ReadLimit: 1 << 20})
	_, g := e.owner(f)
	f.Add([]byte(`{"service":"svc","ciphertext":"AAAA"}`), true)
	f.Add([]byte(`{"recipient":"AAAA"}`), false)
	f.Add([]byte(`{"service":"../x","ciphertext":""}`), true)
	f.Add([]byte(`{"agent":"*"}`), false)
	f.Add([]byte(`[]`), true)
	f.Fuzz(func(t *testing.T, body []byte, store bool) {
		path := "/v1/credentials/svc/read"
		if store {
			path = "/v1/credentials"
		}
		h := e.headSeq(t)
		rec := e.post(path, g.Token, body)
		if rec.Code >= 500 {
			t.Fatalf("%s %q: %d %s", path, body, rec.Code, rec.Body)
		}
		if rec.Code >= 300 && !store {
			// a refused read writes at most its own denial entry (the
			// enclave's checkpoint, due every 1,000 entries, may follow it)
			if got := e.appended(t, h); len(got) > 1 {
				t.Fatalf("refused read appended %d entries", len(got))
			}
		}
		io.Copy(io.Discard, rec.Body)
	})
}

func newIdentity() (ed25519.PublicKey, ed25519.PrivateKey) {
	pub, priv, _ := ed25519GenerateKey()
	return pub, priv
}

// TestUsageSurvivesRestart: the usage index is memory only; a restarted broker
// rebuilds it from the ledger during its start-up walk.
func TestUsageSurvivesRestart(t *testing.T) {
	e := newEnv(t, broker.Config{})
	ctx := context.Background()
	s, g := e.owner(t)
	e.store(t, s, g.Omni, "svc", []byte("restart-secret"), "")
	if _, err := s.Read(ctx, "svc", apiv1.ReadBody{}); err != nil {
		t.Fatal(err)
	}
	before, err := s.Usage(ctx, nil)
	if err != nil || len(before) != 2 {
		t.Fatalf("usage before restart: %v %v", before, err)
	}
	e.b.Close()
	b2, err := broker.Open(broker.Config{DataDir: e.dataDir, PlatformKeyFile: e.platformKey, Issuer: e.srv.URL, Now: e.clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	defer b2.Close()
	if err := b2.Start(ctx); err != nil {
		t.Fatal(err)
	}
	c, err := b2.Authenticate(ctx, g.Token)
	if err != nil {
		t.Fatal(err)
	}
	after, err := b2.Usage(ctx, c, vault.UsageFilter{})
	if err != nil || len(after) != len(before) || after[0].Seq != before[0].Seq || after[1].Action != "read" {
		t.Fatalf("usage after restart: %+v %v, want %+v", after, err, before)
	}
}

// TestApprovalRequestReused: reads that retry while the owner has not yet
// approved reuse the caller's one open request instead of filing a new one each
// time (concurrent ones too); a lapsed or used request is not reused.
func TestApprovalRequestReused(t *testing.T) {
	e := newEnv(t, broker.Config{})
	ctx := context.Background()
	s, g := e.owner(t)
	e.store(t, s, g.Omni, "bank", []byte("hv"), "required")
	body := apiv1.ReadBody{Recipient: hpkeKey(t).PublicKey().Bytes()}
	idIn := regexp.MustCompile(`agentkeys approve ([0-9a-f]+)`)
	pending := func() []apiv1.Approval {
		t.Helper()
		all, err := s.Approvals(ctx)
		if err != nil {
			t.Fatal(err)
		}
		var out []apiv1.Approval
		for _, a := range all {
			if a.Status == "pending" {
				out = append(out, a)
			}
		}
		return out
	}
	readID := func() string {
		t.Helper()
		_, err := s.Read(ctx, "bank", body)
		p := problem.As(err)
		m := idIn.FindStringSubmatch(p.Fix)
		if p.Code != problem.ApprovalNeeded || m == nil || p.Approval == nil || p.Approval.ID != m[1] {
			t.Fatalf("read of a high-value credential: %v (approval %+v)", err, p.Approval)
		}
		return m[1]
	}
	first := readID()
	for i := range 4 {
		if id := readID(); id != first {
			t.Fatalf("retry %d filed request %s, want the open one %s", i+1, id, first)
		}
	}
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() { s.Read(ctx, "bank", body) })
	}
	wg.Wait()
	if p := pending(); len(p) != 1 || p[0].ID != first {
		t.Fatalf("13 reads left %d pending requests, want 1 (%s): %+v", len(p), first, p)
	}
	// Used: approved and read, the next read needs a new request.
	if _, err := s.Approve(ctx, first); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Read(ctx, "bank", body); err != nil {
		t.Fatalf("approved read: %v", err)
	}
	second := readID()
	if second == first {
		t.Fatal("a used request was reused")
	}
	// Lapsed: past its TTL (default 10 min) it is not reused.
	e.clock.Advance(11 * time.Minute)
	if third := readID(); third == second {
		t.Fatal("a lapsed request was reused")
	}
	if _, err := ledger.VerifyDriver(ctx, broker.Schema(), e.b.Storage(), true); err != nil {
		t.Fatal(err)
	}
}

// TestUsagePaging: GET /v1/usage pages with from and limit (1..1000), names
// the next page when a page is full, and refuses other limits.
func TestUsagePaging(t *testing.T) {
	e := newEnv(t, broker.Config{})
	ctx := context.Background()
	s, g := e.owner(t)
	for _, svc := range []string{"a", "b", "c"} {
		e.store(t, s, g.Omni, svc, []byte("paging-secret-"+svc), "")
	}
	p, err := s.UsagePage(ctx, url.Values{"limit": {"2"}})
	if err != nil || len(p.Usage) != 2 || p.Next == nil || *p.Next != p.Usage[1].Seq+1 {
		t.Fatalf("first page: %+v %v", p, err)
	}
	p2, err := s.UsagePage(ctx, url.Values{"limit": {"2"}, "from": {fmt.Sprint(*p.Next)}})
	if err != nil || len(p2.Usage) != 1 || p2.Next != nil || p2.Usage[0].Service != "c" {
		t.Fatalf("second page: %+v %v", p2, err)
	}
	for _, q := range []url.Values{
		{"limit": {"0"}}, {"limit": {"1001"}}, {"limit": {"-1"}}, {"from": {"x"}}, {"from": {"18446744073709551615"}}} {
		if _, err := s.UsagePage(ctx, q); problem.As(err).Code != problem.BadRequest {
			t.Errorf("usage %v: %v, want BAD_REQUEST", q, err)
		}
	}
}
