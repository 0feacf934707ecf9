package api_test

import (
	"bytes"
	"context"
	"crypto/hpke"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/agentkeys/agentkeys/internal/apiv1"
	"github.com/agentkeys/agentkeys/internal/broker"
	"github.com/agentkeys/agentkeys/internal/client"
	"github.com/agentkeys/agentkeys/internal/daemon"
	"github.com/agentkeys/agentkeys/internal/ledger"
	"github.com/agentkeys/agentkeys/internal/problem"
	"github.com/agentkeys/agentkeys/internal/seal"
)

// head is the seq of the newest durable entry.
func (e *env) head(t testing.TB) uint64 {
	t.Helper()
	h, _, err := e.b.Storage().Head(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return h.Seq
}

// sealFor encrypts secret for the owner-wide credential service of omni, as the CLI does.
func (e *env) sealFor(t testing.TB, omni, service string, secret []byte) []byte {
	t.Helper()
	pub, err := e.enclave(t).PublicKey(seal.ShieldingPath)
	if err != nil {
		t.Fatal(err)
	}
	raw, _ := hex.DecodeString(pub.Public)
	ct, err := seal.To(raw, seal.CredentialInfo(omni, "*", service), secret)
	if err != nil {
		t.Fatal(err)
	}
	return ct
}

// slogTo is a debug-level JSON logger writing to w.
func slogTo(w io.Writer) *slog.Logger {
	return slog.New(slog.NewJSONHandler(w, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// TestReadsRacingAStore: while the owner re-stores a credential back to back,
// concurrent readers (the owner's own session and a paired agent's) get the old
// or the new value, never an error.
func TestReadsRacingAStore(t *testing.T) {
	// No timed checkpoint: the chain is verified below while the broker runs.
	e := newEnv(t, broker.Config{ReadLimit: 1 << 20, Ledger: ledger.Options{CheckpointInterval: time.Hour}})
	ctx := context.Background()
	owner, g, idKey := e.ownerKey(t)
	const stores = 40
	values := map[string]bool{}
	cts := make([][]byte, stores+1)
	for i := range cts {
		v := fmt.Sprintf("sk-race-%03d", i)
		values[v] = true
		cts[i] = e.sealFor(t, g.Omni, "svc", []byte(v))
	}
	if _, err := owner.Store(ctx, apiv1.StoreBody{Service: "svc", Ciphertext: cts[0]}); err != nil {
		t.Fatal(err)
	}
	agentSrc := e.source(e.pairAgent(t, owner, idKey, g.Wallet, "bot", "svc"))
	k := hpkeKey(t)

	done := make(chan struct{})
	var wg sync.WaitGroup
	var reads, fails atomic.Int64
	var mu sync.Mutex
	var problems []string
	fail := func(s string) {
		fails.Add(1)
		mu.Lock()
		if len(problems) < 5 {
			problems = append(problems, s)
		}
		mu.Unlock()
	}
	readers := []func() (string, error){
		func() (string, error) {
			res, err := owner.Read(ctx, "svc", apiv1.ReadBody{Recipient: k.PublicKey().Bytes()})
			if err != nil {
				return "", err
			}
			pt, err := hpke.Open(k, hpke.HKDFSHA256(), hpke.AES256GCM(), []byte(res.Info), res.Sealed)
			return string(pt), err
		},
		func() (string, error) {
			v, err := agentSrc.Get(ctx, "svc", daemon.Wait{})
			return string(v), err
		},
	}
	for i := range 4 {
		read := readers[i%2]
		wg.Go(func() {
			for {
				select {
				case <-done:
					return
				default:
				}
				v, err := read()
				reads.Add(1)
				if err != nil {
					fail(err.Error())
				} else if !values[v] {
					fail(fmt.Sprintf("a value that was never stored: %q", v))
				}
			}
		})
	}
	for i := 1; i <= stores; i++ {
		if _, err := owner.Store(ctx, apiv1.StoreBody{Service: "svc", Ciphertext: cts[i]}); err != nil {
			t.Errorf("store %d: %v", i, err)
		}
	}
	close(done)
	wg.Wait()
	if fails.Load() > 0 {
		t.Fatalf("%d of %d reads racing %d stores failed, e.g. %q", fails.Load(), reads.Load(), stores, problems)
	}
	if _, err := ledger.VerifyDriver(ctx, broker.Schema(), e.b.Storage(), true); err != nil {
		t.Fatal(err)
	}
	t.Logf("%d reads racing %d stores, none failed", reads.Load(), stores)
}

// TestApprovalRaceLosers: concurrent reads holding the same one-read grant: one
// gets the credential, every other one APPROVAL_REQUIRED (a new request).
func TestApprovalRaceLosers(t *testing.T) {
	e := newEnv(t, broker.Config{ReadLimit: 1 << 20, Ledger: ledger.Options{CheckpointInterval: time.Hour}})
	ctx := context.Background()
	s, g := e.owner(t)
	e.store(t, s, g.Omni, "bank", []byte("high-value"), "required")
	k := hpkeKey(t)
	body := apiv1.ReadBody{Recipient: k.PublicKey().Bytes()}
	for round := range 5 {
		_, err := s.Read(ctx, "bank", body)
		if code(err) != problem.ApprovalNeeded {
			t.Fatalf("round %d, first read: %v", round, err)
		}
		list, _ := s.Approvals(ctx)
		id := ""
		for _, a := range list {
			if a.Status == "pending" {
				id = a.ID
			}
		}
		if _, err := s.Approve(ctx, id); err != nil {
			t.Fatal(err)
		}
		const n = 8
		errs := make([]error, n)
		var wg sync.WaitGroup
		start := make(chan struct{})
		for i := range n {
			wg.Go(func() {
				<-start
				_, errs[i] = s.Read(ctx, "bank", body)
			})
		}
		close(start)
		wg.Wait()
		won := 0
		for _, err := range errs {
			switch {
			case err == nil:
				won++
			case code(err) != problem.ApprovalNeeded:
				t.Fatalf("round %d: a loser of the race for one grant got %v, want %s", round, err, problem.ApprovalNeeded)
			}
		}
		if won != 1 {
			t.Fatalf("round %d: %d reads used one grant", round, won)
		}
	}
	if _, err := ledger.VerifyDriver(ctx, broker.Schema(), e.b.Storage(), true); err != nil {
		t.Fatal(err)
	}
}

// TestMintRateLimit: identity-token mints, refused ones included, are limited
// per agent like reads; the first refusal for the rate in each window is
// audited, the rest write nothing.
func TestMintRateLimit(t *testing.T) {
	e := newEnv(t, broker.Config{OIDCAudiences: []string{"sts.amazonaws.com"}, MintLimit: 5, MintWindow: time.Minute})
	ctx := context.Background()
	owner, g, idKey := e.ownerKey(t)
	minter := e.source(e.pairAgent(t, owner, idKey, g.Wallet, "minter", "oidc:sts.amazonaws.com"))
	refused := e.source(e.pairAgent(t, owner, idKey, g.Wallet, "refused", "openai"))
	for i := range 5 {
		if _, err := minter.OIDCToken(ctx, "sts.amazonaws.com", 0); err != nil {
			t.Fatalf("mint %d: %v", i+1, err)
		}
		if _, err := refused.OIDCToken(ctx, "sts.amazonaws.com", 0); code(err) != problem.Denied {
			t.Fatalf("refused mint %d: %v", i+1, err)
		}
	}
	before := e.head(t)
	for _, src := range []daemon.Source{minter, refused} {
		for i := range 50 {
			_, err := src.OIDCToken(ctx, "sts.amazonaws.com", 0)
			if p := problem.As(err); p.Code != problem.RateLimited || p.RetryAfter < 1 {
				t.Fatalf("mint %d over the limit: %v", 6+i, err)
			}
		}
	}
	if grown := e.head(t) - before; grown != 2 {
		t.Fatalf("100 rate-limited mints by 2 agents wrote %d ledger entries, want 2 (the first refusal of each)", grown)
	}
	// Over HTTP: 429 with Retry-After.
	sess, _ := minter.Dir.LoadSession()
	key, _ := daemon.DecodeKey(sess.ProofKey)
	c, _ := client.New(e.srv.URL)
	c = c.WithClock(e.clock.Now)
	if _, err := c.WithAgent(sess.Token, key).OIDCToken(ctx, "sts.amazonaws.com", 0); code(err) != problem.RateLimited {
		t.Fatalf("mint over HTTP: %v", err)
	}
	var rec *httptest.ResponseRecorder
	for range 6 {
		rec = e.post("/v1/oidc/token", g.Token, []byte(`{"audience":"sts.amazonaws.com","owner_self":true}`))
	}
	if rec.Code != http.StatusTooManyRequests || rec.Header().Get("Retry-After") == "" {
		t.Fatalf("the owner's 6th self mint: %d Retry-After=%q %s", rec.Code, rec.Header().Get("Retry-After"), rec.Body)
	}
	rows, err := owner.Usage(ctx, url.Values{})
	if err != nil {
		t.Fatal(err)
	}
	limited := map[string]int{}
	for _, r := range rows {
		if r.Action == "oidc.mint" && r.Result == "denied" && r.Detail == "rate_limited" {
			limited[r.Alias]++
		}
	}
	if limited["minter"] != 1 || limited["refused"] != 1 || limited[""] != 1 {
		t.Fatalf("audited rate-limited mints: %v, want one per caller", limited)
	}
	e.clock.Advance(time.Minute)
	if _, err := minter.OIDCToken(ctx, "sts.amazonaws.com", 0); err != nil {
		t.Fatalf("mints did not resume after the window: %v", err)
	}
}

// TestRateLimitedReadIsAudited: a read refused for the rate is a denied read in
// the owner's trail, once per window; later refusals in the window write nothing.
func TestRateLimitedReadIsAudited(t *testing.T) {
	e := newEnv(t, broker.Config{ReadLimit: 3})
	ctx := context.Background()
	owner, g, idKey := e.ownerKey(t)
	e.store(t, owner, g.Omni, "svc", []byte("limited-secret"), "")
	src := e.source(e.pairAgent(t, owner, idKey, g.Wallet, "bot", "svc"))
	for i := range 3 {
		if _, err := src.Get(ctx, "svc", daemon.Wait{}); err != nil {
			t.Fatalf("read %d: %v", i+1, err)
		}
	}
	before := e.head(t)
	for i := range 20 {
		if _, err := src.Get(ctx, "svc", daemon.Wait{}); code(err) != problem.RateLimited {
			t.Fatalf("read %d: %v", 4+i, err)
		}
	}
	if grown := e.head(t) - before; grown != 1 {
		t.Fatalf("20 rate-limited reads wrote %d entries, want 1", grown)
	}
	e.clock.Advance(time.Minute)
	for range 3 {
		if _, err := src.Get(ctx, "svc", daemon.Wait{}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := src.Get(ctx, "svc", daemon.Wait{}); code(err) != problem.RateLimited {
		t.Fatalf("read over the limit in the next window: %v", err)
	}
	rows, err := owner.Usage(ctx, url.Values{"agent": {"bot"}})
	if err != nil {
		t.Fatal(err)
	}
	var denied []string
	for _, r := range rows {
		if r.Result == "denied" {
			denied = append(denied, r.Alias+"/"+r.Service+"/"+r.Detail)
		}
	}
	if strings.Join(denied, ",") != "bot/svc/rate_limited,bot/svc/rate_limited" {
		t.Fatalf("denied rows %q, want one rate_limited row per window", denied)
	}
}

// TestLedgerEntriesFrom: from must be a seq (0..2^63-1); anything else is a 400,
// never a wrap to the start of the ledger.
func TestLedgerEntriesFrom(t *testing.T) {
	e := newEnv(t, broker.Config{})
	for _, from := range []string{"9223372036854775808", "18446744073709551615", "18446744073709551616", "-1", "abc", "1e3", " 1"} {
		rec := httptest.NewRecorder()
		e.handler.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/v1/ledger/entries?from="+url.QueryEscape(from), nil))
		if rec.Code != http.StatusBadRequest || !strings.Contains(rec.Body.String(), string(problem.BadRequest)) {
			t.Errorf("from=%s: %d %.200s", from, rec.Code, rec.Body)
		}
	}
	rec := httptest.NewRecorder()
	e.handler.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/v1/ledger/entries?from=9223372036854775807", nil))
	if rec.Code != http.StatusOK || !strings.Contains(rec.Body.String(), `"entries":[]`) {
		t.Errorf("from=2^63-1: %d %.200s", rec.Code, rec.Body)
	}
}

// TestSignupBadChannelKeyCreatesNothing: a sign-up refused for its channel key
// appends nothing; the corrected retry creates the account.
func TestSignupBadChannelKeyCreatesNothing(t *testing.T) {
	e := newEnv(t, broker.Config{})
	ctx := context.Background()
	_, key := newIdentity()
	for _, ck := range []string{base64.StdEncoding.EncodeToString([]byte("not an HPKE public key")), "%%% not base64"} {
		before := e.head(t)
		l := loginFor(e, key)
		l.ChannelKey = ck
		apiv1.SignLogin(&l, key)
		if _, err := e.c.CreateAccount(ctx, l); code(err) != problem.BadRequest {
			t.Fatalf("sign-up with channel key %q: %v", ck, err)
		}
		if after := e.head(t); after != before {
			t.Fatalf("a refused sign-up appended %d entries", after-before)
		}
	}
	l := loginFor(e, key)
	l.ChannelKey = base64.StdEncoding.EncodeToString(hpkeKey(t).PublicKey().Bytes())
	apiv1.SignLogin(&l, key)
	if _, err := e.c.CreateAccount(ctx, l); err != nil {
		t.Fatalf("the corrected sign-up: %v", err)
	}
	// Logging in with a bad channel key opens no session either.
	l = loginFor(e, key)
	l.ChannelKey = base64.StdEncoding.EncodeToString([]byte("not an HPKE public key"))
	apiv1.SignLogin(&l, key)
	before := e.head(t)
	if _, err := e.c.OpenSession(ctx, l); code(err) != problem.BadRequest {
		t.Fatalf("login with a bad channel key: %v", err)
	}
	if after := e.head(t); after != before {
		t.Fatalf("a refused login appended %d entries", after-before)
	}
}

// TestMCPRejectsBadNamesLocally: a tool call with a 1 MB service name is refused
// by the daemon itself with BAD_REQUEST, without a broker round trip and without
// echoing the input.
func TestMCPRejectsBadNamesLocally(t *testing.T) {
	e := newEnv(t, broker.Config{})
	ctx := context.Background()
	owner, g, idKey := e.ownerKey(t)
	src := e.source(e.pairAgent(t, owner, idKey, g.Wallet, "bot", "svc"))
	requests := &e.requests
	requests.Store(0)

	var logs bytes.Buffer
	ct, st := mcp.NewInMemoryTransports()
	srv := daemon.NewMCPServer(src, slogTo(&logs))
	ss, err := srv.Connect(ctx, st, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer ss.Close()
	cs, err := mcp.NewClient(&mcp.Implementation{Name: "test", Version: "1"}, nil).Connect(ctx, ct, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer cs.Close()
	huge := strings.Repeat("a", 1<<20)
	calls := []struct {
		tool string
		args map[string]any
	}{
		{"get_credential", map[string]any{"service": huge}},
		{"get_credential", map[string]any{"service": "../../v1/oidc/token"}},
		{"get_credential", map[string]any{"service": ""}},
		{"cloud_credentials", map[string]any{"provider": "aws", "role_arn": "arn:aws:iam::123456789012:role/" + huge}},
		{"cloud_credentials", map[string]any{"provider": "aws", "role_arn": "not-an-arn"}},
		{"cloud_credentials", map[string]any{"provider": "aws", "role_arn": "arn:aws:iam::123456789012:role/r", "duration": 5}},
		{"cloud_credentials", map[string]any{"provider": huge, "role_arn": "arn:aws:iam::123456789012:role/r"}},
	}
	for _, c := range calls {
		res, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: c.tool, Arguments: c.args})
		if err != nil {
			t.Fatalf("%s: %v", c.tool, err)
		}
		text := res.Content[0].(*mcp.TextContent).Text
		if !res.IsError || !strings.HasPrefix(text, string(problem.BadRequest)+": ") || len(text) > 512 {
			t.Errorf("%s %.80v: IsError=%v %.300s (%d bytes)", c.tool, c.args, res.IsError, text, len(text))
		}
	}
	if n := requests.Load(); n != 0 {
		t.Fatalf("invalid tool inputs made %d broker requests", n)
	}
	if logs.Len() > 64<<10 || strings.Contains(logs.String(), huge[:1024]) {
		t.Fatalf("the daemon logged the huge input (%d bytes of log)", logs.Len())
	}
	// The socket's handler applies the same rule.
	rec := httptest.NewRecorder()
	daemon.Handler(src, slogTo(&logs)).ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/credentials/"+strings.Repeat("A", 4096), nil))
	if rec.Code != http.StatusBadRequest || len(rec.Body.String()) > 512 || requests.Load() != 0 {
		t.Fatalf("socket with a bad name: %d %.300s", rec.Code, rec.Body)
	}
	// A valid name still reaches the broker.
	if _, err := src.Get(ctx, "svc", daemon.Wait{}); code(err) != problem.NotFound || requests.Load() == 0 {
		t.Fatalf("a valid name: %v after %d requests", err, requests.Load())
	}
}
