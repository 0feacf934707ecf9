package watchdog

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/agentkeys/agentkeys/internal/apiv1"
	"github.com/agentkeys/agentkeys/internal/backoff"
	"github.com/agentkeys/agentkeys/internal/registry"
)

func jwk(kid string, x byte) apiv1.JWK {
	return apiv1.JWK{Kty: "EC", Crv: "P-256", X: strings.Repeat(string('A'+x), 43), Y: "y", Kid: kid, Alg: "ES256", Use: "sig"}
}

// ledger is the registry as a map (the e2e test reads the real one, verified from the chain).
type ledger struct {
	mu      sync.Mutex
	active  map[string]registry.OidcKey
	revoked map[string]bool
	err     error
	reads   int
}

func (l *ledger) Active(context.Context, time.Time) (map[string]registry.OidcKey, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.reads++
	return l.active, l.err
}

func (l *ledger) Revoked(kid string) (bool, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.revoked[kid], nil
}

type rig struct {
	t       *testing.T
	jwks    []apiv1.JWK
	jwksErr int // status to answer instead
	mu      sync.Mutex
	hooks   [][]byte
	hookErr int // fail this many deliveries first
	revokes []string
	revErr  error
	cuts    int
	log     bytes.Buffer
	reg     *prometheus.Registry
	l       *ledger
	w       *Watchdog
	pauses  []time.Duration
}

func newRig(t *testing.T, active ...apiv1.JWK) *rig {
	r := &rig{t: t, reg: prometheus.NewRegistry(), l: &ledger{active: map[string]registry.OidcKey{}, revoked: map[string]bool{}}}
	for _, k := range active {
		r.l.active[k.Kid] = registry.OidcKey{Kid: k.Kid, JWK: k}
		r.jwks = append(r.jwks, k)
	}
	js := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		r.mu.Lock()
		defer r.mu.Unlock()
		if r.jwksErr != 0 {
			w.WriteHeader(r.jwksErr)
			return
		}
		json.NewEncoder(w).Encode(apiv1.JWKS{Keys: r.jwks})
	}))
	hook := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		b, _ := io.ReadAll(req.Body)
		r.mu.Lock()
		defer r.mu.Unlock()
		r.hooks = append(r.hooks, b)
		if r.hookErr > 0 {
			r.hookErr--
			w.WriteHeader(http.StatusBadGateway)
		}
	}))
	t.Cleanup(js.Close)
	t.Cleanup(hook.Close)
	r.w = New(Config{JWKSURL: js.URL, Registry: r.l, Interval: time.Second, Webhook: hook.URL, Metrics: r.reg,
		Log: slog.New(slog.NewJSONHandler(&syncWriter{w: &r.log, mu: &r.mu}, nil)),
		Now: func() time.Time { return time.Unix(1_900_000_000, 0) },
		Revoke: func(_ context.Context, kid, reason string) error {
			r.mu.Lock()
			defer r.mu.Unlock()
			if r.revErr != nil {
				return r.revErr
			}
			r.revokes = append(r.revokes, kid)
			return nil
		},
		Adapters: []Adapter{{Name: "aws", Cut: func(context.Context) error { r.mu.Lock(); r.cuts++; r.mu.Unlock(); return nil }}},
		WebhookRetry: backoff.Backoff{Initial: time.Second, Max: 4 * time.Second, Sleep: func(_ context.Context, d time.Duration) error {
			r.mu.Lock()
			r.pauses = append(r.pauses, d)
			r.mu.Unlock()
			return nil
		}},
		WebhookTries: 3,
	})
	return r
}

type syncWriter struct {
	w  io.Writer
	mu *sync.Mutex
}

func (s *syncWriter) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.w.Write(p)
}

// round runs one round and waits for its webhook deliveries.
func (r *rig) round() {
	r.w.Round(context.Background())
	r.w.hooks.Wait()
}

func (r *rig) lines(msg string) []map[string]any {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []map[string]any
	for _, l := range strings.Split(r.log.String(), "\n") {
		var m map[string]any
		if json.Unmarshal([]byte(l), &m) == nil && m["msg"] == msg {
			out = append(out, m)
		}
	}
	return out
}

func TestGenuineJWKSIsQuiet(t *testing.T) {
	r := newRig(t, jwk("k1", 1), jwk("k2", 2))
	r.round()
	r.round()
	if len(r.hooks) != 0 || len(r.revokes) != 0 || r.cuts != 0 || len(r.lines(EventDrift)) != 0 {
		t.Fatalf("hooks %d revokes %v cuts %d log %s", len(r.hooks), r.revokes, r.cuts, r.log.String())
	}
	if v := testutil.ToFloat64(r.w.rounds); v != 2 {
		t.Fatalf("rounds %v", v)
	}
}

func TestDriftActsOnceAndRetriesTheWebhook(t *testing.T) {
	r := newRig(t, jwk("k1", 1))
	r.jwks = append(r.jwks, jwk("rogue", 9))
	r.hookErr = 1
	r.round()
	drift := r.lines(EventDrift)
	if len(drift) != 1 || drift[0]["kid"] != "rogue" || drift[0]["jwks_url"] != r.w.cfg.JWKSURL || drift[0]["level"] != "ERROR" {
		t.Fatalf("drift lines: %v", drift)
	}
	if len(r.revokes) != 1 || r.revokes[0] != "rogue" || r.cuts != 1 {
		t.Fatalf("revokes %v cuts %d", r.revokes, r.cuts)
	}
	if len(r.hooks) != 2 || !bytes.Equal(r.hooks[0], r.hooks[1]) || len(r.pauses) != 1 || r.pauses[0] != time.Second {
		t.Fatalf("webhook deliveries %d, pauses %v", len(r.hooks), r.pauses)
	}
	var ev Event
	if err := json.Unmarshal(r.hooks[1], &ev); err != nil || ev.Event != EventDrift || ev.Kid != "rogue" || !ev.Revoked ||
		len(ev.Adapters) != 1 || ev.Adapters[0] != "aws" || !ev.DetectedAt.Equal(time.Unix(1_900_000_000, 0)) {
		t.Fatalf("event %+v %v", ev, err)
	}
	r.round() // still served: nothing again
	if len(r.lines(EventDrift)) != 1 || len(r.revokes) != 1 || r.cuts != 1 || len(r.hooks) != 2 {
		t.Fatalf("second round acted again: revokes %v cuts %d hooks %d", r.revokes, r.cuts, len(r.hooks))
	}
	if v := testutil.ToFloat64(r.w.drifts); v != 1 {
		t.Fatalf("drift_total %v", v)
	}
	if v := testutil.ToFloat64(r.w.drifted); v != 1 {
		t.Fatalf("drifted_keys %v", v)
	}
}

func TestWebhookGivesUpAfterItsTries(t *testing.T) {
	r := newRig(t)
	r.jwks = []apiv1.JWK{jwk("rogue", 9)}
	r.hookErr = 10
	r.round()
	if len(r.hooks) != 3 || len(r.pauses) != 2 || r.pauses[1] != 2*time.Second || len(r.lines("webhook not delivered")) != 1 {
		t.Fatalf("deliveries %d pauses %v", len(r.hooks), r.pauses)
	}
}

func TestKnownKidWithOtherMaterialIsDrift(t *testing.T) {
	r := newRig(t, jwk("k1", 1))
	r.jwks = []apiv1.JWK{jwk("k1", 7)}
	r.round()
	if d := r.lines(EventDrift); len(d) != 1 || !strings.Contains(d[0]["reason"].(string), "differs") || len(r.revokes) != 1 {
		t.Fatalf("drift %v revokes %v", d, r.revokes)
	}
}

func TestFailedRevokeIsRetriedNextRound(t *testing.T) {
	r := newRig(t)
	r.jwks = []apiv1.JWK{jwk("rogue", 9)}
	r.revErr = errors.New("CONFLICT")
	r.round()
	var ev Event
	json.Unmarshal(r.hooks[0], &ev)
	if len(r.revokes) != 0 || ev.Revoked || len(r.lines("revoke failed; retrying next round")) != 1 {
		t.Fatalf("revokes %v event %+v", r.revokes, ev)
	}
	r.revErr = nil
	r.round()
	if len(r.revokes) != 1 || len(r.hooks) != 1 {
		t.Fatalf("after retry: revokes %v hooks %d", r.revokes, len(r.hooks))
	}
}

func TestAlreadyRevokedOnTheLedgerIsNotRevokedAgain(t *testing.T) {
	r := newRig(t)
	r.jwks = []apiv1.JWK{jwk("rogue", 9)}
	r.l.revoked["rogue"] = true
	r.round()
	if len(r.revokes) != 0 || len(r.lines(EventDrift)) != 1 || r.cuts != 1 {
		t.Fatalf("revokes %v", r.revokes)
	}
}

func TestMissingKeyIsAWarning(t *testing.T) {
	r := newRig(t, jwk("k1", 1), jwk("k2", 2))
	r.jwks = r.jwks[:1]
	r.round()
	m := r.lines(EventMissing)
	if len(m) != 1 || m[0]["kid"] != "k2" || m[0]["level"] != "WARN" || len(r.lines(EventDrift)) != 0 || len(r.revokes) != 0 || len(r.hooks) != 0 {
		t.Fatalf("missing %v", m)
	}
}

func TestUnreachableJWKSIsItsOwnAlert(t *testing.T) {
	r := newRig(t, jwk("k1", 1))
	r.jwksErr = http.StatusBadGateway
	r.round()
	r.round()
	u := r.lines(EventUnreachable)
	if len(u) != 1 || len(r.lines(EventDrift)) != 0 || len(r.revokes) != 0 || r.cuts != 0 || r.l.reads != 0 {
		t.Fatalf("unreachable lines %v, registry reads %d", u, r.l.reads)
	}
	var ev Event
	if len(r.hooks) != 1 || json.Unmarshal(r.hooks[0], &ev) != nil || ev.Event != EventUnreachable {
		t.Fatalf("hooks %q", r.hooks)
	}
	if v := testutil.ToFloat64(r.w.unreachable); v != 2 {
		t.Fatalf("unreachable_total %v", v)
	}
	r.jwksErr = 0
	r.round()
	if len(r.lines(EventDrift)) != 0 || len(r.lines("JWKS reachable again")) != 1 {
		t.Fatal("recovery not logged, or drift")
	}
}

func TestRegistryUnavailableJudgesNothing(t *testing.T) {
	r := newRig(t)
	r.jwks = []apiv1.JWK{jwk("rogue", 9)}
	r.l.err = errors.New("LEDGER_INVALID")
	r.round()
	if len(r.lines(EventRegistry)) != 1 || len(r.lines(EventDrift)) != 0 || len(r.revokes) != 0 {
		t.Fatal("drift judged without a verified registry")
	}
}

func TestAHostileJWKSIsBounded(t *testing.T) {
	r := newRig(t)
	r.jwks = nil
	for i := range 3 * MaxKeys {
		r.jwks = append(r.jwks, jwk(fmt.Sprintf("rogue-%d", i), byte(i%20)))
	}
	r.round()
	if len(r.revokes) != MaxKeys {
		t.Fatalf("%d revokes for a JWKS of %d keys, want at most %d", len(r.revokes), len(r.jwks), MaxKeys)
	}
}
