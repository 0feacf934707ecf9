package e2e

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/agentkeys/agentkeys/internal/apiv1"
	"github.com/agentkeys/agentkeys/internal/broker"
	"github.com/agentkeys/agentkeys/internal/daemon"
	"github.com/agentkeys/agentkeys/internal/dpop"
	"github.com/agentkeys/agentkeys/internal/ledger"
)

// clientFrom is an HTTP client whose connections leave from the loopback address
// ip (Linux routes all of 127.0.0.0/8 to lo), so the broker sees ip as the peer.
func clientFrom(ip string) *http.Client {
	d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(ip)}}
	return &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{DialContext: d.DialContext, MaxIdleConnsPerHost: 4}}
}

// send posts (or gets, when body is nil and method is GET) and returns the status;
// a transport error is status 0.
func send(c *http.Client, method, url string, body []byte) int {
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequest(method, url, rd)
	if err != nil {
		return 0
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := c.Do(req)
	if err != nil {
		return 0
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode
}

// rssKiB reads a field (VmRSS, VmHWM) of /proc/PID/status in KiB.
func rssKiB(t *testing.T, pid int, field string) int {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, field+":"); ok {
			n, err := strconv.Atoi(strings.TrimSuffix(strings.TrimSpace(v), " kB"))
			if err != nil {
				t.Fatalf("%s: %q", field, line)
			}
			return n
		}
	}
	t.Fatalf("no %s in /proc/%d/status", field, pid)
	return 0
}

func signedLogin(server string, key ed25519.PrivateKey) []byte {
	n := make([]byte, 16)
	rand.Read(n)
	l := apiv1.Login{PublicKey: hex.EncodeToString(key.Public().(ed25519.PublicKey)), Server: server,
		Time: time.Now().Unix(), Nonce: hex.EncodeToString(n)}
	apiv1.SignLogin(&l, key)
	b, _ := json.Marshal(l)
	return b
}

func signedPair(t *testing.T, owner, alias string) []byte {
	k, _ := dpop.NewKey()
	hk, err := daemon.NewHPKEKey()
	if err != nil {
		t.Error(err)
		return nil
	}
	jwk, _ := dpop.PublicJWK(k)
	r := apiv1.PairRequest{Owner: owner, Alias: alias, Scope: []string{"openai"}, ProofJWK: string(jwk),
		HPKEPublic: base64.StdEncoding.EncodeToString(hk.PublicKey().Bytes()), ValidUntil: time.Now().Add(5 * time.Minute).Unix()}
	if err := apiv1.SignPairRequest(&r, k); err != nil {
		t.Error(err)
		return nil
	}
	b, _ := json.Marshal(r)
	return b
}

// TestAnonymousCallersBoundedCost is the acceptance test of issue 16 item 2:
// 2,000 anonymous requests of each kind (refused 1 MB pair requests, signed pair
// requests for a victim's wallet, invalid pair requests, polls, sign-ups, logins,
// governance submissions), each kind from four loopback addresses of its own,
// against the real binary at its default limits. The server's RSS grows by at
// most 64 MiB, the ledger by at most what the limits admit in the time taken,
// and meanwhile the victim's real daemon, from 127.0.0.1, pairs. On the old
// code the daemon got 429, the ledger grew by 6,019 entries and RSS by 446 MiB.
func TestAnonymousCallersBoundedCost(t *testing.T) {
	const perKind = 2000
	h := newHarness(t)
	s := h.start(serverOpts{home: t.TempDir()})
	victim := h.akNewOwner(s)
	pid := s.cmd.Process.Pid

	rss0 := rssKiB(t, pid, "VmRSS")
	head0 := s.head().Seq
	start := time.Now()

	kind := 0
	type tally struct {
		mu    sync.Mutex
		codes map[int]int
	}
	// spray sends perKind requests of one kind, spread over four source addresses
	// of its own (127.0.K.2-5 for the K-th kind), and returns the statuses seen.
	spray := func(name string, build func(i int) (method, path string, body []byte)) map[int]int {
		kind++
		var sources []string
		for j := 2; j <= 5; j++ {
			sources = append(sources, fmt.Sprintf("127.0.%d.%d", kind, j))
		}
		tl := &tally{codes: map[int]int{}}
		var wg sync.WaitGroup
		for si, src := range sources {
			c := clientFrom(src)
			wg.Go(func() {
				for i := si; i < perKind; i += len(sources) {
					m, p, b := build(i)
					code := send(c, m, s.url+p, b)
					tl.mu.Lock()
					tl.codes[code]++
					tl.mu.Unlock()
				}
			})
		}
		wg.Wait()
		t.Logf("%s: statuses %v", name, tl.codes)
		if tl.codes[http.StatusInternalServerError] > 0 {
			t.Errorf("%s: %d answers were 500", name, tl.codes[http.StatusInternalServerError])
		}
		return tl.codes
	}

	// 1. Oversized refused pair requests: a distinct ~1 MB owner each.
	big := strings.Repeat("A", 1000_000-200)
	spray("oversized pair requests", func(i int) (string, string, []byte) {
		return http.MethodPost, "/v1/pair/requests",
			[]byte(`{"owner":"` + fmt.Sprintf("%08d", i) + big + `","alias":"bot","scope":[],"proof_jwk":"","hpke_public":"","valid_until":0,"sig":""}`)
	})
	// 2. Valid signed pair requests for the victim's wallet, from everywhere.
	spray("victim pair requests", func(i int) (string, string, []byte) {
		return http.MethodPost, "/v1/pair/requests", signedPair(t, victim.wallet, "spam"+strconv.Itoa(i))
	})

	// 3. The rest of the attack runs in the background while the victim's real
	// daemon, from 127.0.0.1, pairs and the owner approves.
	_, attacker, _ := ed25519.GenerateKey(rand.Reader)
	if code := send(http.DefaultClient, http.MethodPost, s.url+"/v1/accounts", signedLogin(s.url, attacker)); code != http.StatusCreated {
		t.Fatalf("the attacker's own sign-up from 127.0.0.1: %d", code)
	}
	attack := make(chan struct{})
	t.Cleanup(func() { <-attack }) // before the server is stopped
	go func() {
		defer close(attack)
		// 4. Invalid pair requests (unsigned, unknown owner).
		spray("invalid pair requests", func(i int) (string, string, []byte) {
			return http.MethodPost, "/v1/pair/requests",
				[]byte(`{"owner":"` + randomHex(32) + `","alias":"bot","scope":[],"proof_jwk":"{}","hpke_public":"","valid_until":0,"sig":"00"}`)
		})
		// 5. Pair polls of unknown requests.
		spray("pair polls", func(i int) (string, string, []byte) {
			return http.MethodGet, "/v1/pair/requests/" + randomHex(8), nil
		})
		// 6. Sign-ups, each a fresh identity.
		if codes := spray("sign-ups", func(i int) (string, string, []byte) {
			_, k, _ := ed25519.GenerateKey(rand.Reader)
			return http.MethodPost, "/v1/accounts", signedLogin(s.url, k)
		}); codes[http.StatusCreated] == 0 {
			t.Error("no sign-up was admitted at all")
		}
		// 7. Logins of the attacker's own account.
		spray("logins", func(i int) (string, string, []byte) {
			return http.MethodPost, "/v1/sessions", signedLogin(s.url, attacker)
		})
		// 8. Governance submissions signed by a key that is not governance.
		_, notGov, _ := ed25519.GenerateKey(rand.Reader)
		spray("governance submissions", func(i int) (string, string, []byte) {
			e := ledger.Entry{Seq: uint64(i) + 1, Kind: "successor.authorize", Origin: ledger.OriginGovernance,
				Payload: json.RawMessage(`{"mrsigner":"` + randomHex(32) + `"}`), Time: time.Now().UnixNano()}
			ledger.SignGovernance(&e, notGov)
			b, _ := json.Marshal(e)
			return http.MethodPost, "/v1/ledger/entries", b
		})

	}()
	// The bounds are checked even when the pairing fails the test.
	defer func() {
		<-attack
		// Bounds. Ledger: what the default limits admit from 4 addresses per kind
		// while the test ran — sign-ups (2 entries each) per hour, logins and pair
		// requests per minute — plus the real owner's and daemon's own 20.
		lim := broker.DefaultAnonLimits
		minutes := 1 + int(time.Since(start)/time.Minute)
		bound := uint64(4*lim[broker.AnonSignup].PerSource.Count*2 +
			4*(lim[broker.AnonLogin].PerSource.Count+lim[broker.AnonPair].PerSource.Count)*minutes + 20)
		grown := s.head().Seq - head0
		if grown > bound {
			t.Errorf("the ledger grew by %d entries under anonymous load; want at most %d", grown, bound)
		}
		rss1, hwm := rssKiB(t, pid, "VmRSS"), rssKiB(t, pid, "VmHWM")
		t.Logf("server RSS %d KiB before, %d KiB after, peak %d KiB; ledger +%d entries", rss0, rss1, hwm, grown)
		if rss1-rss0 > 64<<10 {
			t.Errorf("server RSS grew by %d KiB under anonymous load; want at most 64 MiB", rss1-rss0)
		}
	}()
	h.pairAgent(s, victim, "real", "openai")

}

// TestSignupInvite: a broker started with --signup invite refuses `init` without
// an invite (with the fix), accepts one the operator signed offline with
// `server invite`, and refuses the same invite a second time.
func TestSignupInvite(t *testing.T) {
	h := newHarness(t)
	srvHome := t.TempDir()
	s := h.start(serverOpts{home: srvHome, args: []string{"--signup", "invite"}})
	alice, bob := t.TempDir(), t.TempDir()
	r := h.cli(alice, "init", "--server", s.url)
	if r.code == 0 || !strings.Contains(r.stderr, "by invite only") || !strings.Contains(r.stderr, "agentkeys server invite") {
		t.Fatalf("init without an invite: exit %d: %s", r.code, r.stderr)
	}
	head := s.head().Seq
	inv := h.cli(srvHome, "server", "invite", "--server", s.url, "--ttl", "1h")
	if inv.code != 0 || !strings.HasPrefix(inv.stdout, "akinv1.") {
		t.Fatalf("server invite: exit %d: %s %s", inv.code, inv.stdout, inv.stderr)
	}
	file := t.TempDir() + "/invite.txt"
	if err := os.WriteFile(file, []byte(inv.stdout), 0o600); err != nil {
		t.Fatal(err)
	}
	if s.head().Seq != head {
		t.Fatal("the refused sign-up or the offline invite wrote to the ledger")
	}
	h.akOK(alice, "init", "--server", s.url, "--invite-file", file)
	r = h.cli(bob, "init", "--server", s.url, "--invite-file", file)
	if r.code == 0 || !strings.Contains(r.stderr, "already used") {
		t.Fatalf("a second init with the same invite: exit %d: %s %s", r.code, r.stderr, r.stdout)
	}
	h.akOK(alice, "init", "--force") // logging in needs no invite
}

// TestAnonymousFlagRefusals: a bad limit, proxy or sign-up mode refuses to start,
// saying how to write it.
func TestAnonymousFlagRefusals(t *testing.T) {
	h := newHarness(t)
	for _, c := range []struct{ flag, value, fix string }{
		{"--pair-rate", "5", "PER_ADDRESS,IN_ALL"},
		{"--signup-rate", "10/1h,lots", "COUNT/WINDOW"},
		{"--login-rate", "0/1m,10/1m", "COUNT/WINDOW"},
		{"--trusted-proxy", "proxy.example", "CIDR"},
		{"--signup", "closed", "--signup invite"},
	} {
		r := h.cli(t.TempDir(), "server", "--listen", "127.0.0.1:0", c.flag, c.value)
		if r.code != 2 || !strings.Contains(r.stderr, "Error: BAD_REQUEST") || !strings.Contains(r.stderr, c.fix) {
			t.Errorf("server %s %s: exit %d: %s", c.flag, c.value, r.code, r.stderr)
		}
	}
}
