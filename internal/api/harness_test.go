package api_test

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/agentkeys/agentkeys/internal/api"
	"github.com/agentkeys/agentkeys/internal/apiv1"
	"github.com/agentkeys/agentkeys/internal/broker"
	"github.com/agentkeys/agentkeys/internal/client"
	"github.com/agentkeys/agentkeys/internal/clock"
	"github.com/agentkeys/agentkeys/internal/daemon"
	"github.com/agentkeys/agentkeys/internal/enclave"
	"github.com/agentkeys/agentkeys/internal/ledger"
	"github.com/agentkeys/agentkeys/internal/ledger/sqlite"
)

// env is a real broker (enclave, SQLite ledger) behind the real HTTP handler on a
// loopback test server.
type env struct {
	b                *broker.Broker
	srv              *httptest.Server
	handler          http.Handler
	c                *client.Client
	dataDir          string
	platformKey      string       // the platform key file, beside dataDir
	failing          *atomic.Bool // when set, every ledger commit fails
	commits, entries atomic.Int64 // through the driver: commits, entries in them
	commitNanos      atomic.Int64 // time spent in the driver's Commit
	slowCommits      atomic.Int64 // commits that took over slowCommit
	requests         atomic.Int64 // HTTP requests the test server received
	cfg              broker.Config
	clock            *clock.Fake                   // the broker's, the clients' and the daemons' clock: tests move it, nothing waits on the wall
	enc              *enclave.Enclave              // a second handle on the broker's seed, for tests that sign or derive keys
	cleanup          func(func())                  // the env's test's Cleanup: e.enc lives as long as the env
	current          *atomic.Pointer[http.Handler] // what srv serves
	openStore        func() (ledger.Driver, error) // each broker's own handle on a shared store; nil: the data dir's SQLite file

	// anonymous-limit tests
	attacker ed25519.PrivateKey // an account's identity key
	victim   string             // an owner's wallet
}

type failingDriver struct {
	ledger.Driver
	fail                          *atomic.Bool
	commits, entries, nanos, slow *atomic.Int64
}

// slowCommit is the commit time counted as slow: several times a quiet fsync.
const slowCommit = 2 * time.Millisecond

func (f failingDriver) Commit(ctx context.Context, es []ledger.Entry, ws []ledger.Write) error {
	if f.fail.Load() {
		return errors.New("injected: disk unavailable")
	}
	f.commits.Add(1)
	f.entries.Add(int64(len(es)))
	t0 := time.Now()
	defer func() {
		d := time.Since(t0)
		f.nanos.Add(int64(d))
		if d > slowCommit {
			f.slow.Add(1)
		}
	}()
	return f.Driver.Commit(ctx, es, ws)
}

func newEnv(t testing.TB, cfg broker.Config) *env { t.Helper(); return newEnvOn(t, cfg, nil) }

// newEnvOn is newEnv on the store openStore opens (nil: a SQLite file).
func newEnvOn(t testing.TB, cfg broker.Config, openStore func() (ledger.Driver, error)) *env {
	t.Helper()
	return newEnvAt(t, cfg, openStore, testStart)
}

// newEnvAt is newEnvOn with the env's clock starting at start.
func newEnvAt(t testing.TB, cfg broker.Config, openStore func() (ledger.Driver, error), start time.Time) *env {
	t.Helper()
	e := &env{failing: new(atomic.Bool), current: new(atomic.Pointer[http.Handler]), cleanup: t.Cleanup, clock: clock.NewFake(start),
		openStore: openStore}
	h := e.current
	e.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		e.requests.Add(1)
		(*h.Load()).ServeHTTP(w, r)
	}))
	t.Cleanup(e.srv.Close)
	if cfg.DataDir == "" {
		base := t.TempDir()
		cfg.DataDir = filepath.Join(base, "server")
		cfg.PlatformKeyFile = filepath.Join(base, "platform.key")
	}
	e.dataDir, e.platformKey = cfg.DataDir, cfg.PlatformKeyFile
	cfg.Issuer = e.srv.URL
	if cfg.Now != nil {
		t.Fatal("newEnv: the env has its clock; move e.clock instead of setting Now")
	}
	cfg.Now = e.clock.Now
	e.cfg = cfg
	e.open(t)
	var err error
	if e.c, err = client.New(e.srv.URL); err != nil {
		t.Fatal(err)
	}
	e.c = e.c.WithClock(e.clock.Now)
	return e
}

// testStart is where every env's clock starts: far from the wall clock, so a
// check that still read the wall clock would fail, and on a whole second, so a
// proof dated the second the broker started in is accepted (dpop.Verifier).
var testStart = time.Date(2031, time.March, 4, 5, 6, 7, 0, time.UTC)

// now is the time by the env's clock.
func (e *env) now() time.Time { return e.clock.Now() }

// source is the daemon of an agent paired into dir, on the env's clock.
func (e *env) source(dir daemon.Dir) daemon.Source { return daemon.Source{Dir: dir, Now: e.clock.Now} }

// open opens and starts a broker on e's data dir and serves it. Its ledger store
// is the data dir's SQLite file, wrapped to count commits and inject failures.
func (e *env) open(t testing.TB) {
	t.Helper()
	if err := os.MkdirAll(e.dataDir, 0o700); err != nil {
		t.Fatal(err)
	}
	cfg := e.cfg
	if e.openStore != nil {
		d, err := e.openStore()
		if err != nil {
			t.Fatal(err)
		}
		cfg.Store = d
	} else {
		d, err := sqlite.Open(broker.LedgerPath(e.dataDir))
		if err != nil {
			t.Fatal(err)
		}
		cfg.Store = failingDriver{d, e.failing, &e.commits, &e.entries, &e.commitNanos, &e.slowCommits}
	}
	b, err := broker.Open(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(b.Close)
	if err := b.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	e.b = b
	e.handler = api.New(b, api.Config{})
	e.current.Store(&e.handler)
}

// restart closes the broker and serves a new one on the same data dir and URL,
// as a restarted process would.
func (e *env) restart(t testing.TB) {
	t.Helper()
	e.b.Close()
	e.open(t)
}

// enclave opens (once) the broker's enclave from its data dir and platform key,
// as the broker does: the same seed, so the same keys. The broker does not hand
// out its own handle.
func (e *env) enclave(t testing.TB) *enclave.Enclave {
	t.Helper()
	if e.enc == nil {
		enc, err := enclave.Open(enclave.Config{Dir: e.dataDir, PlatformKeyFile: e.platformKey,
			PlatformKeyHex: e.cfg.PlatformKeyHex, DevPlatformKeyInDir: e.cfg.DevPlatformKeyInDataDir, SignerPublicKey: e.cfg.SignerPublicKey})
		if err != nil {
			t.Fatal(err)
		}
		e.cleanup(enc.Close)
		e.enc = enc
	}
	return e.enc
}

// post sends body to the handler as a POST to path with a bearer token, in
// process (no client-side checks on what is sent), and returns the answer.
func (e *env) post(path, token string, body []byte) *httptest.ResponseRecorder {
	req := httptest.NewRequest(http.MethodPost, path, bytes.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+token)
	rec := httptest.NewRecorder()
	e.handler.ServeHTTP(rec, req)
	return rec
}

// owner registers a new owner and returns its session client.
func (e *env) owner(t testing.TB) (*client.Session, *apiv1.SessionGrant) {
	t.Helper()
	_, key, _ := ed25519.GenerateKey(rand.Reader)
	l := apiv1.Login{PublicKey: hex.EncodeToString(key.Public().(ed25519.PublicKey)), Server: e.srv.URL,
		Time: e.now().Unix(), Nonce: hex.EncodeToString(key[:16])}
	apiv1.SignLogin(&l, key)
	g, err := e.c.CreateAccount(context.Background(), l)
	if err != nil {
		t.Fatal(err)
	}
	return e.c.WithToken(g.Token), g
}

// store encrypts secret for owner/agent/service exactly as the CLI does and stores it.
func (e *env) store(t testing.TB, s *client.Session, omni, service string, secret []byte, approval string) {
	t.Helper()
	ct := e.sealFor(t, omni, service, secret)
	if _, err := s.Store(context.Background(), apiv1.StoreBody{Service: service, Ciphertext: ct, Approval: approval}); err != nil {
		t.Fatal(err)
	}
}

func ed25519GenerateKey() (ed25519.PublicKey, ed25519.PrivateKey, error) {
	return ed25519.GenerateKey(rand.Reader)
}

func loginFor(e *env, key ed25519.PrivateKey) apiv1.Login {
	n := make([]byte, 16)
	rand.Read(n)
	return apiv1.Login{PublicKey: hex.EncodeToString(key.Public().(ed25519.PublicKey)), Server: e.srv.URL,
		Time: e.now().Unix(), Nonce: hex.EncodeToString(n)}
}

// unlimited lifts the anonymous-caller limits, for benchmarks and fuzzers that
// sign up, pair or submit many times from one address.
func unlimited() broker.AnonLimits {
	all := broker.AnonLimits{}
	for _, k := range broker.AnonKinds {
		all[k] = broker.AnonLimit{PerSource: broker.Rate{Count: 1 << 20, Window: time.Minute}, Global: broker.Rate{Count: 1 << 20, Window: time.Minute}}
	}
	return all
}
