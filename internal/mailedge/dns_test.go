package mailedge

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"fmt"
	"math/big"
	"net"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/emersion/go-msgauth/dkim"

	"github.com/agentkeys/agentkeys/internal/blobstore/localstore"
	"github.com/agentkeys/agentkeys/internal/broker"
	"github.com/agentkeys/agentkeys/internal/clock"
)

// countingResolver is a resolver that counts the queries it answers, by
// type and name; with gate set, each query waits for it to close.
type countingResolver struct {
	resolver
	mu   sync.Mutex
	n    map[string]int
	gate chan struct{}
}

func newCountingResolver() *countingResolver {
	return &countingResolver{resolver: resolver{txt: map[string][]string{}}, n: map[string]int{}}
}

func (r *countingResolver) count(ctx context.Context, q string) error {
	r.mu.Lock()
	r.n[q]++
	r.mu.Unlock()
	if r.gate != nil {
		select {
		case <-r.gate:
		case <-ctx.Done():
			return &net.DNSError{Err: ctx.Err().Error(), Name: q, IsTimeout: true, IsTemporary: true}
		}
	}
	return nil
}

func (r *countingResolver) LookupTXT(ctx context.Context, name string) ([]string, error) {
	if err := r.count(ctx, "TXT "+name); err != nil {
		return nil, err
	}
	return r.resolver.LookupTXT(ctx, name)
}
func (r *countingResolver) LookupIPAddr(ctx context.Context, host string) ([]net.IPAddr, error) {
	if err := r.count(ctx, "A "+host); err != nil {
		return nil, err
	}
	return r.resolver.LookupIPAddr(ctx, host)
}
func (r *countingResolver) LookupMX(ctx context.Context, name string) ([]*net.MX, error) {
	if err := r.count(ctx, "MX "+name); err != nil {
		return nil, err
	}
	return r.resolver.LookupMX(ctx, name)
}

func (r *countingResolver) counts() map[string]int {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := map[string]int{}
	for k, v := range r.n {
		out[k] = v
	}
	return out
}

func (r *countingResolver) total() int {
	n := 0
	for _, v := range r.counts() {
		n += v
	}
	return n
}

// senderDomain publishes SPF, DKIM (Ed25519) and DMARC for sender.example
// on r and returns a message signed by it.
func senderDomain(t testing.TB, r *countingResolver) []byte {
	pub, priv, _ := ed25519.GenerateKey(rand.Reader)
	r.txt["sender.example"] = []string{"v=spf1 ip4:192.0.2.10 -all"}
	r.txt["s1._domainkey.sender.example"] = []string{"v=DKIM1; k=ed25519; p=" + base64.StdEncoding.EncodeToString(pub)}
	r.txt["_dmarc.sender.example"] = []string{"v=DMARC1; p=reject"}
	var signed bytes.Buffer
	raw := message("news@sender.example", addrA, "flood", "hello\r\n")
	if err := dkim.Sign(&signed, bytes.NewReader(raw), &dkim.SignOptions{Domain: "sender.example", Selector: "s1", Signer: priv}); err != nil {
		t.Fatal(err)
	}
	return signed.Bytes()
}

func dnsEdge(t testing.TB, r Resolver, now func() time.Time) *Edge {
	st, err := localstore.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	e, err := New(Config{Domains: []string{domain}, Store: st, Directory: &directory{}, Resolver: r, Limiters: broker.NewMemoryLimiter, Now: now})
	if err != nil {
		t.Fatal(err)
	}
	return e
}

const wantPass = "spf=pass"

// TestDNSCache: a flood of mail from one domain asks DNS once per name (the
// answers, negative ones too, are cached), and again once the cache time
// passes.
func TestDNSCache(t *testing.T) {
	r := newCountingResolver()
	msg := senderDomain(t, r)
	clk := clock.NewFake(t0)
	e := dnsEdge(t, r, clk.Now)
	ip := net.ParseIP("192.0.2.10")
	for i := range 20 {
		ar := e.authResults(context.Background(), ip, "mta.sender.example", "news@sender.example", msg)
		if !strings.Contains(ar, wantPass) || !strings.Contains(ar, "dkim=pass") || !strings.Contains(ar, "dmarc=pass") {
			t.Fatalf("message %d: %s", i, ar)
		}
	}
	for q, n := range r.counts() {
		if n != 1 {
			t.Errorf("%q asked %d times for 20 messages, want once", q, n)
		}
	}
	before := r.total()
	clk.Advance(dnsCacheTTL + time.Second)
	e.authResults(context.Background(), ip, "mta.sender.example", "news@sender.example", msg)
	if got := r.total(); got != 2*before {
		t.Errorf("after the cache time: %d queries in all, want %d (each name once more)", got, 2*before)
	}
}

// TestDNSCacheInFlight: messages from one domain arriving together wait for
// one query instead of each making its own, and the first one's client
// leaving does not fail the others.
func TestDNSCacheInFlight(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r := newCountingResolver()
		msg := senderDomain(t, r)
		r.gate = make(chan struct{})
		e := dnsEdge(t, r, time.Now)
		var wg sync.WaitGroup
		first, leave := context.WithCancel(context.Background())
		wg.Go(func() {
			e.authResults(first, net.ParseIP("192.0.2.10"), "mta.sender.example", "news@sender.example", msg)
		})
		synctest.Wait() // the first message's SPF query is out
		for range 9 {
			wg.Go(func() {
				if ar := e.authResults(context.Background(), net.ParseIP("192.0.2.10"), "mta.sender.example", "news@sender.example", msg); !strings.Contains(ar, wantPass) {
					t.Errorf("%s", ar)
				}
			})
		}
		synctest.Wait()
		if n := r.counts()["TXT sender.example"]; n != 1 {
			t.Errorf("10 messages at once asked for the SPF record %d times, want once", n)
		}
		leave()
		synctest.Wait()
		close(r.gate)
		wg.Wait()
	})
}

// TestDNSCacheSize: the cache holds at most its size, whatever the names.
func TestDNSCacheSize(t *testing.T) {
	r := newCountingResolver()
	c := newDNSCache(r, 3, time.Now)
	for i := range 10 {
		c.LookupTXT(context.Background(), fmt.Sprintf("n%d.example", i))
	}
	if n := c.len(); n > 3 {
		t.Fatalf("the cache holds %d names, its size is 3", n)
	}
	// The last name asked is held: asked again, it is answered from the cache.
	c.LookupTXT(context.Background(), "n9.example")
	if n := r.counts()["TXT n9.example"]; n != 1 {
		t.Fatalf("a cached name was asked again: %d", n)
	}
}

// TestSPFLimits: an SPF record that would make more than 10 DNS lookups, or
// more than 2 void ones, is a permerror after at most that many (RFC 7208 §4.6.4).
func TestSPFLimits(t *testing.T) {
	r := newCountingResolver()
	var incl []string
	for i := range 20 {
		incl = append(incl, fmt.Sprintf("include:i%d.loop.example", i))
		r.txt[fmt.Sprintf("i%d.loop.example", i)] = []string{"v=spf1 include:loop.example -all"}
	}
	r.txt["loop.example"] = []string{"v=spf1 " + strings.Join(incl, " ") + " -all"}
	r.txt["void.example"] = []string{"v=spf1 a:v1.void.example a:v2.void.example a:v3.void.example a:v4.void.example -all"}
	e := dnsEdge(t, r, time.Now)
	for _, d := range []string{"loop.example", "void.example"} {
		before := r.total()
		ar := e.authResults(context.Background(), net.ParseIP("192.0.2.10"), "mta."+d, "x@"+d, message("x@"+d, addrA, "s", "x"))
		if !strings.Contains(ar, "spf=permerror") {
			t.Errorf("%s: %s, want spf=permerror", d, ar)
		}
		if n := r.total() - before; n > 14 { // SPF's 11, DKIM none, DMARC 2
			t.Errorf("%s: %d DNS queries for one message", d, n)
		}
	}
}

// TestDKIMKeyTooLarge: a DKIM key of more than 4,096 bits is a permerror,
// never verified (RFC 8301 §3.2 asks verifiers to handle 1,024 to 4,096).
func TestDKIMKeyTooLarge(t *testing.T) {
	r := newCountingResolver()
	signer, err := rsa.GenerateKey(rand.Reader, 1024)
	if err != nil {
		t.Fatal(err)
	}
	n, _ := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 8192))
	n.SetBit(n, 8191, 1).SetBit(n, 0, 1)
	der, err := x509.MarshalPKIXPublicKey(&rsa.PublicKey{N: n, E: 65537})
	if err != nil {
		t.Fatal(err)
	}
	r.txt["big._domainkey.sender.example"] = []string{"v=DKIM1; k=rsa; p=" + base64.StdEncoding.EncodeToString(der)}
	var signed bytes.Buffer
	if err := dkim.Sign(&signed, bytes.NewReader(message("x@sender.example", addrA, "s", "x")), &dkim.SignOptions{Domain: "sender.example", Selector: "big", Signer: signer}); err != nil {
		t.Fatal(err)
	}
	e := dnsEdge(t, r, time.Now)
	ar := e.authResults(context.Background(), net.ParseIP("192.0.2.10"), "mta.sender.example", "x@sender.example", signed.Bytes())
	if !strings.Contains(ar, "dkim=permerror") {
		t.Fatalf("an 8,192-bit key: %s, want dkim=permerror", ar)
	}
}
