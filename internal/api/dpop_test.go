package api_test

import (
	"context"
	"net/http"
	"testing"
	"time"

	"github.com/agentkeys/agentkeys/internal/broker"
	"github.com/agentkeys/agentkeys/internal/daemon"
	"github.com/agentkeys/agentkeys/internal/dpop"
)

// agentCaller is a paired agent's token and proof key, for requests made by hand.
type agentCaller struct {
	e     *env
	dir   daemon.Dir
	token string
	sign  func(method, htu string, at time.Time) string
}

func (e *env) agentCaller(t *testing.T) *agentCaller {
	t.Helper()
	owner, g, idKey := e.ownerKey(t)
	e.store(t, owner, g.Omni, "openai", []byte("sk-dpop-test"), "")
	d := e.pairAgent(t, owner, idKey, g.Wallet, "bot", "openai")
	sess, err := d.LoadSession()
	if err != nil {
		t.Fatal(err)
	}
	key, err := daemon.DecodeKey(sess.ProofKey)
	if err != nil {
		t.Fatal(err)
	}
	return &agentCaller{e: e, dir: d, token: sess.Token, sign: func(method, htu string, at time.Time) string {
		p, err := dpop.Sign(key, method, htu, sess.Token, at)
		if err != nil {
			t.Fatal(err)
		}
		return p
	}}
}

// send sends GET /v1/agent/credentials to the test server with proof, and Host
// header host ("" = the server's address); it returns the status.
func (a *agentCaller) send(t *testing.T, host, proof string) int {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, a.e.srv.URL+"/v1/agent/credentials", nil)
	if err != nil {
		t.Fatal(err)
	}
	if host != "" {
		req.Host = host
	}
	req.Header.Set("Authorization", "Bearer "+a.token)
	req.Header.Set("DPoP", proof)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

const agentPath = "/v1/agent/credentials"

// TestProofHostHeaderIsIgnored: the URL a proof must name is the broker's
// public URL, never one made from the request's Host header — which the sender
// chooses, so a proof made for another server would otherwise pass here.
func TestProofHostHeaderIsIgnored(t *testing.T) {
	e := newEnv(t, broker.Config{})
	a := e.agentCaller(t)
	if code := a.send(t, "evil.example", a.sign("GET", "http://evil.example"+agentPath, e.now())); code != http.StatusUnauthorized {
		t.Fatalf("a proof for http://evil.example sent with Host: evil.example: %d, want 401", code)
	}
	if code := a.send(t, "evil.example", a.sign("GET", e.srv.URL+agentPath, e.now())); code != http.StatusOK {
		t.Fatalf("a proof for the broker's URL sent with another Host: %d, want 200", code)
	}
}

// TestProofFromBeforeRestartRefused: the replay cache is memory, so the broker
// refuses proofs dated before it started; the daemon makes a new proof.
func TestProofFromBeforeRestartRefused(t *testing.T) {
	e := newEnv(t, broker.Config{})
	a := e.agentCaller(t)
	p := a.sign("GET", e.srv.URL+agentPath, e.now())
	if code := a.send(t, "", p); code != http.StatusOK {
		t.Fatalf("first use: %d", code)
	}
	if code := a.send(t, "", p); code != http.StatusUnauthorized {
		t.Fatalf("replay: %d, want 401", code)
	}
	e.clock.Advance(300 * time.Millisecond) // the restart comes a moment later
	e.restart(t)
	if code := a.send(t, "", p); code != http.StatusUnauthorized {
		t.Fatalf("replay after a restart: %d, want 401", code)
	}
	// iat has whole seconds: a new proof dated the second the broker restarted
	// in may be older than the restart, so it is refused too...
	if code := a.send(t, "", a.sign("GET", e.srv.URL+agentPath, e.now())); code != http.StatusUnauthorized {
		t.Fatalf("a new proof dated the restart's second: %d, want 401", code)
	}
	// ...and once the next second has begun, the daemon's own client makes a
	// new proof and is served.
	e.clock.Advance(700 * time.Millisecond)
	if v, err := e.source(a.dir).Get(context.Background(), "openai", daemon.Wait{}); err != nil || string(v) != "sk-dpop-test" {
		t.Fatalf("the daemon after the restart: %q %v", v, err)
	}
}

// TestProofNamesAPublicURL: a broker reached under several names accepts a
// proof for any URL it is configured with (RFC 9449 §4.3 comparison), and no
// other.
func TestProofNamesAPublicURL(t *testing.T) {
	e := newEnv(t, broker.Config{PublicURLs: []string{"https://keys.example.com", "https://lb.example.net:8443/"}})
	a := e.agentCaller(t)
	for htu, want := range map[string]int{
		e.srv.URL + agentPath:                                 http.StatusOK,
		"https://keys.example.com" + agentPath:                http.StatusOK,
		"HTTPS://Keys.Example.com:443" + agentPath + "?x=1":   http.StatusOK,
		"https://lb.example.net:8443" + agentPath:             http.StatusOK,
		"https://lb.example.net" + agentPath:                  http.StatusUnauthorized,
		"https://keys.example.com:8443" + agentPath:           http.StatusUnauthorized,
		"http://keys.example.com" + agentPath:                 http.StatusUnauthorized,
		"https://keys.example.com.evil.example" + agentPath:   http.StatusUnauthorized,
		"https://keys.example.com/v1/agent/credentials/extra": http.StatusUnauthorized,
	} {
		if code := a.send(t, "", a.sign("GET", htu, e.now())); code != want {
			t.Errorf("proof for %s: %d, want %d", htu, code, want)
		}
	}
	for _, bad := range []string{"keys.example.com", "ftp://keys.example.com", "https://keys.example.com/?q=1", "https://keys.example.com/#f", "https://u@keys.example.com"} {
		if b, err := broker.Open(broker.Config{DataDir: t.TempDir(), Issuer: e.srv.URL, PublicURLs: []string{bad}}); err == nil {
			b.Close()
			t.Errorf("public URL %q accepted", bad)
		}
	}
}
