package api_test

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/agentkeys/agentkeys/internal/api"
	"github.com/agentkeys/agentkeys/internal/apiv1"
	"github.com/agentkeys/agentkeys/internal/broker"
	"github.com/agentkeys/agentkeys/internal/problem"
)

// clientFrom is an HTTP client whose connections leave from the loopback address
// ip (Linux routes all of 127.0.0.0/8 to lo), so the broker sees ip as the peer.
func clientFrom(ip string) *http.Client {
	d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(ip)}}
	return &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{DialContext: d.DialContext}}
}

// answer is a finished HTTP exchange.
type answer struct {
	StatusCode int
	Header     http.Header
	Body       []byte
}

func doFrom(t testing.TB, c *http.Client, method, url string, body []byte) answer {
	t.Helper()
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequest(method, url, rd)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return answer{resp.StatusCode, resp.Header, b}
}

func postFrom(t testing.TB, c *http.Client, url string, body []byte) answer {
	t.Helper()
	return doFrom(t, c, http.MethodPost, url, body)
}

func jsonBytes(t testing.TB, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// wantLimited checks a 429 with Retry-After, RATE_LIMITED and a fix naming flag.
func wantLimited(t testing.TB, a answer, flag string) {
	t.Helper()
	var eb struct{ Error problem.Error }
	json.Unmarshal(a.Body, &eb)
	if a.StatusCode != http.StatusTooManyRequests || a.Header.Get("Retry-After") == "" ||
		eb.Error.Code != problem.RateLimited || !strings.Contains(eb.Error.Fix, flag) {
		t.Fatalf("want 429 RATE_LIMITED with Retry-After and a fix naming %s; got %d Retry-After %q %s",
			flag, a.StatusCode, a.Header.Get("Retry-After"), a.Body)
	}
}

func signup(e *env) []byte {
	_, k, _ := ed25519.GenerateKey(rand.Reader)
	l := loginFor(e, k)
	apiv1.SignLogin(&l, k)
	b, _ := json.Marshal(l)
	return b
}

// Every route an anonymous caller can write through is limited per source
// address (429, Retry-After, the flag to raise it) and in all; other addresses
// are not affected by one address's exhaustion. Kinds that write to the ledger
// spend the global share only when valid: invalid requests from many addresses
// leave it to real callers.
func TestAnonymousRoutesLimited(t *testing.T) {
	one := broker.Rate{Count: 3, Window: time.Hour}
	lim := broker.AnonLimits{}
	for _, k := range broker.AnonKinds {
		lim[k] = broker.AnonLimit{PerSource: one, Global: broker.Rate{Count: 5, Window: time.Hour}}
	}
	empty := func(*env) []byte { return []byte(`{}`) }
	for _, route := range []struct {
		kind         broker.AnonKind
		method, path string
		body         func(e *env) []byte // a request the broker accepts (writers) or refuses without writing
	}{
		{broker.AnonSignup, http.MethodPost, "/v1/accounts", signup},
		{broker.AnonLogin, http.MethodPost, "/v1/sessions", func(e *env) []byte {
			l := loginFor(e, e.attacker)
			apiv1.SignLogin(&l, e.attacker)
			return jsonBytes(t, l)
		}},
		{broker.AnonPair, http.MethodPost, "/v1/pair/requests", func(e *env) []byte {
			r, _ := e.pairRequest(t, e.victim, "bot"+strconv.Itoa(int(e.entries.Load())), "openai")
			return jsonBytes(t, r)
		}},
		{broker.AnonPoll, http.MethodGet, "/v1/pair/requests/0123456789abcdef", nil},
		{broker.AnonSubmit, http.MethodPost, "/v1/ledger/entries", empty},
		{broker.AnonSubmit, http.MethodPost, "/mock/enclave-successors/authorize", empty},
		{broker.AnonSubmit, http.MethodPost, "/mock/enclave-successors/deauthorize", empty},
		{broker.AnonSubmit, http.MethodPost, "/mock/oidc-pubkeys/register", empty},
		{broker.AnonSubmit, http.MethodPost, "/mock/oidc-pubkeys/revoke", empty},
		{broker.AnonSubmit, http.MethodPost, "/v1/oidc/rotate", empty},
		{broker.AnonSubmit, http.MethodPost, "/v1/governance/proposals", empty},
		{broker.AnonSubmit, http.MethodPost, "/v1/enclave/handoff", empty},
	} {
		t.Run(route.method+" "+route.path, func(t *testing.T) {
			e := newEnv(t, broker.Config{Anon: lim})
			if route.kind != broker.AnonSignup { // (a sign-up spends the global share)
				// The attacker's account, made in process (no source address).
				_, e.attacker, _ = ed25519.GenerateKey(rand.Reader)
				l := loginFor(e, e.attacker)
				apiv1.SignLogin(&l, e.attacker)
				g, err := e.b.CreateAccount(context.Background(), l)
				if err != nil {
					t.Fatal(err)
				}
				e.victim = g.Wallet
			}
			send := func(ip string, body []byte) answer {
				return doFrom(t, clientFrom(ip), route.method, e.srv.URL+route.path, body)
			}
			valid := func() []byte {
				if route.body == nil {
					return nil
				}
				return route.body(e)
			}
			if writes := route.kind == broker.AnonSignup || route.kind == broker.AnonLogin || route.kind == broker.AnonPair; writes {
				// Invalid requests from many addresses do not spend the global share.
				for i := range 8 {
					if a := send(fmt.Sprintf("127.0.1.%d", i+1), []byte(`{"sig":"00"}`)); a.StatusCode == http.StatusTooManyRequests {
						t.Fatalf("invalid request %d: %d %s", i, a.StatusCode, a.Body)
					}
				}
			}
			for i := range 3 {
				if a := send("127.0.0.2", valid()); a.StatusCode == http.StatusTooManyRequests || a.StatusCode >= 500 {
					t.Fatalf("request %d: %d %s", i, a.StatusCode, a.Body)
				}
			}
			wantLimited(t, send("127.0.0.2", valid()), "--"+string(route.kind)+"-rate")
			// Another address has its own share; the global limit (5) then refuses
			// everyone.
			for i := range 2 {
				if a := send("127.0.0.3", valid()); a.StatusCode == http.StatusTooManyRequests {
					t.Fatalf("request %d from another address: %d %s", i, a.StatusCode, a.Body)
				}
			}
			a := send("127.0.0.4", valid())
			wantLimited(t, a, "--"+string(route.kind)+"-rate")
			if !strings.Contains(string(a.Body), "from all addresses") {
				t.Fatalf("global refusal does not say so: %s", a.Body)
			}
		})
	}
}

// X-Forwarded-For is believed only from a configured trusted proxy, and then only
// its right-most address that is not a trusted proxy.
func TestSourceAddress(t *testing.T) {
	lim := broker.AnonLimits{broker.AnonPoll: {PerSource: broker.Rate{Count: 1, Window: time.Hour}, Global: broker.Rate{Count: 100, Window: time.Hour}}}
	for _, tc := range []struct {
		name, peer string
		trusted    []string
		xff        []string // X-Forwarded-For of the first and second request
		sameSource bool     // the second request shares the first one's share
	}{
		{"no proxy: the header is ignored", "192.0.2.1:1000", nil, []string{"198.51.100.1", "198.51.100.2"}, true},
		{"untrusted peer: ignored", "192.0.2.1:1000", []string{"10.0.0.0/8"}, []string{"198.51.100.1", "198.51.100.2"}, true},
		{"trusted proxy: the client", "10.0.0.1:1000", []string{"10.0.0.0/8"}, []string{"198.51.100.1", "198.51.100.2"}, false},
		{"trusted proxy: same client", "10.0.0.1:1000", []string{"10.0.0.0/8"}, []string{"198.51.100.1", "203.0.113.9, 198.51.100.1"}, true},
		{"spoofed left entries are not believed", "10.0.0.1:1000", []string{"10.0.0.0/8"}, []string{"1.1.1.1, 198.51.100.1", "2.2.2.2, 198.51.100.1"}, true},
		{"proxy chain", "10.0.0.1:1000", []string{"10.0.0.0/8"}, []string{"198.51.100.1, 10.0.0.7", "198.51.100.2, 10.0.0.7"}, false},
		{"garbage: the proxy itself", "10.0.0.1:1000", []string{"10.0.0.0/8"}, []string{"not-an-ip", "also not"}, true},
		{"IPv6 /64 is one source", "[2001:db8::1]:1000", nil, nil, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, broker.Config{Anon: lim})
			var prefixes []netip.Prefix
			for _, p := range tc.trusted {
				prefixes = append(prefixes, netip.MustParsePrefix(p))
			}
			h := api.New(e.b, api.Config{TrustedProxies: prefixes})
			codes := []int{}
			for i := range 2 {
				req := httptest.NewRequest(http.MethodGet, "/v1/pair/requests/0123456789abcdef", nil)
				req.RemoteAddr = tc.peer
				if tc.name == "IPv6 /64 is one source" && i == 1 {
					req.RemoteAddr = "[2001:db8::ffff:1]:2000"
				}
				if tc.xff != nil {
					req.Header.Set("X-Forwarded-For", tc.xff[i])
				}
				rec := httptest.NewRecorder()
				h.ServeHTTP(rec, req)
				codes = append(codes, rec.Code)
			}
			if codes[0] != http.StatusNotFound {
				t.Fatalf("first poll: %d", codes[0])
			}
			if limited := codes[1] == http.StatusTooManyRequests; limited != tc.sameSource {
				t.Fatalf("second poll: %d; want it limited: %v", codes[1], tc.sameSource)
			}
		})
	}
}

// liveHeap is the heap still reachable after a full collection.
func liveHeap() int64 {
	runtime.GC()
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return int64(m.HeapAlloc)
}

// 2,000 refused 1 MB pair requests, each naming a distinct owner, from four
// addresses, through the real handler over loopback TCP: the live heap stays
// within 8 MiB of where it was (on the old code, 60 of them kept 173 MiB).
func TestOversizedPairRequestsLeaveNothing(t *testing.T) {
	e := newEnv(t, broker.Config{Anon: broker.AnonLimits{broker.AnonPair: {
		PerSource: broker.Rate{Count: 25, Window: time.Hour}, Global: broker.Rate{Count: 1000, Window: time.Hour}}}})
	big := strings.Repeat("A", 1000_000-200)
	before := liveHeap()
	var wg sync.WaitGroup
	var mu sync.Mutex
	codes := map[int]int{}
	for s := range 4 {
		c := clientFrom(fmt.Sprintf("127.0.0.%d", s+2))
		wg.Go(func() {
			body := []byte(`{"owner":"00000000` + big + `","alias":"bot","scope":[],"proof_jwk":"","hpke_public":"","valid_until":0,"sig":""}`)
			for i := range 500 {
				copy(body[len(`{"owner":"`):], fmt.Sprintf("%08d", s*1000+i)) // a distinct owner each
				req, _ := http.NewRequest(http.MethodPost, e.srv.URL+"/v1/pair/requests", bytes.NewReader(body))
				resp, err := c.Do(req)
				code := 0
				if err == nil {
					io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					code = resp.StatusCode
				}
				mu.Lock()
				codes[code]++
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	t.Logf("statuses %v", codes)
	// A request refused before its body is read may see the connection closed
	// under its upload (status 0) instead of the 429.
	if codes[http.StatusBadRequest] != 100 || codes[http.StatusTooManyRequests]+codes[0] != 1900 {
		t.Errorf("want 100 refused as invalid (25 per address) and 1900 as over the limit; got %v", codes)
	}
	if grown := liveHeap() - before; grown > 8<<20 {
		t.Fatalf("the live heap grew by %d bytes; want at most 8 MiB", grown)
	}
}

// With SignupInvite, a sign-up needs an invite signed by a governance key of this
// broker, for this broker, unexpired and unused; a refused sign-up writes nothing,
// and an invite creates exactly one account.
func TestSignupByInvite(t *testing.T) {
	e := newEnv(t, broker.Config{SignupInvite: true, Anon: unlimited()})
	op, err := broker.LoadOperatorKey(broker.OperatorKeyPath(e.dataDir))
	if err != nil {
		t.Fatal(err)
	}
	_, notOp, _ := ed25519.GenerateKey(rand.Reader)
	ctx := context.Background()
	try := func(invite string) (*apiv1.SessionGrant, error) {
		_, k, _ := ed25519.GenerateKey(rand.Reader)
		l := loginFor(e, k)
		apiv1.SignLogin(&l, k)
		l.Invite = invite
		return e.c.CreateAccount(ctx, l)
	}
	head := func() uint64 { h, _, _ := e.b.Storage().Head(ctx); return h.Seq }
	good := broker.NewInvite(op, e.srv.URL, e.now().Add(time.Hour))
	for name, inv := range map[string]string{
		"no invite":          "",
		"not an invite":      "hello",
		"garbage":            "akinv1.!!!",
		"not the operator's": broker.NewInvite(notOp, e.srv.URL, e.now().Add(time.Hour)),
		"another broker":     broker.NewInvite(op, "https://elsewhere.example", e.now().Add(time.Hour)),
		"expired":            broker.NewInvite(op, e.srv.URL, e.now().Add(-time.Minute)),
		"altered":            good[:len(good)-3] + "AAA",
		"oversized":          "akinv1." + strings.Repeat("A", 4096),
	} {
		before := head()
		_, err := try(inv)
		p := problem.As(err)
		if p.Code != problem.Denied || !strings.Contains(p.Fix, "agentkeys server invite") {
			t.Errorf("%s: want DENIED naming the fix, got %v (fix %q)", name, err, p.Fix)
		}
		if head() != before {
			t.Errorf("%s: a refused sign-up wrote to the ledger", name)
		}
	}
	if _, err := try(good); err != nil {
		t.Fatalf("a valid invite: %v", err)
	}
	before := head()
	if _, err := try(good); code(err) != problem.Denied || !strings.Contains(err.Error(), "already used") {
		t.Fatalf("the invite's second use: %v", err)
	}
	if head() != before {
		t.Fatal("the refused second use wrote to the ledger")
	}
	// Concurrent uses of one fresh invite: exactly one account.
	fresh := broker.NewInvite(op, e.srv.URL, e.now().Add(time.Hour))
	var wg sync.WaitGroup
	var mu sync.Mutex
	ok := 0
	for range 8 {
		wg.Go(func() {
			if _, err := try(fresh); err == nil {
				mu.Lock()
				ok++
				mu.Unlock()
			} else if code(err) != problem.Denied {
				t.Errorf("a losing concurrent use: %v", err)
			}
		})
	}
	wg.Wait()
	if ok != 1 {
		t.Fatalf("%d accounts from one invite", ok)
	}
	// Logins need no invite.
	_, k, _ := ed25519.GenerateKey(rand.Reader)
	l := loginFor(e, k)
	apiv1.SignLogin(&l, k)
	l.Invite = broker.NewInvite(op, e.srv.URL, e.now().Add(time.Hour))
	if _, err := e.c.CreateAccount(ctx, l); err != nil {
		t.Fatal(err)
	}
	l = loginFor(e, k)
	apiv1.SignLogin(&l, k)
	if _, err := e.c.OpenSession(ctx, l); err != nil {
		t.Fatalf("login on an invite-only broker: %v", err)
	}
}
