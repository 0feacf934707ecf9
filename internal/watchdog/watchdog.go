// Package watchdog watches an issuer's served JWKS against the OIDC keys the
// ledger vouches for (§10.2). Each round it reads the JWKS and the registry
// (verified from the chain by audit, never taken on a server's word); a
// served key the ledger does not vouch for — unknown, revoked, retired, or a
// known kid with other key material — is drift: one JWKS_URL_DRIFT_DETECTED log
// line and a metric, then, once per kid, a governance revoke of the kid, the
// cloud adapters (AWS: remove the client id from the IAM OIDC provider) and a
// webhook POST. A ledger key missing from the JWKS is a warning; a JWKS that
// cannot be read is its own alert (JWKS_UNREACHABLE), never drift.
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
	"sort"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/agentkeys/agentkeys/internal/apiv1"
	"github.com/agentkeys/agentkeys/internal/backoff"
	"github.com/agentkeys/agentkeys/internal/registry"
)

// Events, as logged and posted.
const (
	EventDrift       = "JWKS_URL_DRIFT_DETECTED"
	EventMissing     = "JWKS_KEY_MISSING"
	EventUnreachable = "JWKS_UNREACHABLE"
	EventRegistry    = "REGISTRY_UNAVAILABLE"
)

// MaxJWKS bounds the JWKS document the watchdog reads, and MaxKeys the keys of
// it that are compared (a real JWKS has a handful): a hostile JWKS cannot make
// the watchdog sign more than MaxKeys revocations.
const (
	MaxJWKS = 1 << 20
	MaxKeys = 64
)

// Registry is the verified registry (a *audit.View).
type Registry interface {
	Active(ctx context.Context, now time.Time) (map[string]registry.OidcKey, error)
	Revoked(kid string) (bool, error)
}

// Revoker revokes a kid on the ledger (GovernanceRevoker).
type Revoker func(ctx context.Context, kid, reason string) error

// Adapter cuts a cloud off from the issuer (AWSAdapter.Cut).
type Adapter struct {
	Name string
	Cut  func(ctx context.Context) error
}

// Config configures a Watchdog.
type Config struct {
	JWKSURL  string
	Registry Registry
	Interval time.Duration
	Webhook  string    // "" = none
	Revoke   Revoker   // nil = no revoke (no incident key)
	Adapters []Adapter // run once when drift is first seen
	HTTP     *http.Client
	Log      *slog.Logger
	Metrics  *prometheus.Registry // nil = not exported
	Now      func() time.Time
	// WebhookRetry paces webhook retries (default 1 s doubling to 30 s, 6 tries).
	WebhookRetry backoff.Backoff
	WebhookTries int
}

// Event is the webhook's JSON body.
type Event struct {
	Event      string    `json:"event"`
	Kid        string    `json:"kid"`
	JWKSURL    string    `json:"jwks_url"`
	DetectedAt time.Time `json:"detected_at"`
	Reason     string    `json:"reason"`
	Revoked    bool      `json:"revoked"`            // the ledger shows the kid revoked
	Adapters   []string  `json:"adapters,omitempty"` // cloud adapters that cut the issuer off
}

// Watchdog runs rounds; Run loops them.
type Watchdog struct {
	cfg   Config
	drift map[string]*incident // by kid, for this process
	down  bool                 // the JWKS was unreachable last round
	cut   map[string]bool      // adapters that succeeded
	hooks sync.WaitGroup

	rounds, drifts, unreachable, missing prometheus.Counter
	drifted                              prometheus.Gauge
}

type incident struct {
	ev       Event
	revoked  bool
	notified bool
}

// New returns a watchdog for cfg.
func New(cfg Config) *Watchdog {
	if cfg.HTTP == nil {
		cfg.HTTP = &http.Client{Timeout: 10 * time.Second}
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	if cfg.WebhookRetry.Initial == 0 {
		cfg.WebhookRetry = backoff.Backoff{Initial: time.Second, Max: 30 * time.Second, Jitter: 0.2}
	}
	if cfg.WebhookTries == 0 {
		cfg.WebhookTries = 6
	}
	c := func(name, help string) prometheus.Counter {
		return prometheus.NewCounter(prometheus.CounterOpts{Name: name, Help: help})
	}
	w := &Watchdog{cfg: cfg, drift: map[string]*incident{}, cut: map[string]bool{},
		rounds:      c("agentkeys_watchdog_rounds_total", "Watchdog rounds run."),
		drifts:      c("agentkeys_watchdog_drift_total", "Served JWKS keys found not vouched for by the ledger (once per kid)."),
		unreachable: c("agentkeys_watchdog_jwks_unreachable_total", "Rounds in which the JWKS could not be read."),
		missing:     c("agentkeys_watchdog_jwks_missing_total", "Ledger-active keys found missing from the JWKS."),
		drifted:     prometheus.NewGauge(prometheus.GaugeOpts{Name: "agentkeys_watchdog_drifted_keys", Help: "Keys drifting in the last round."}),
	}
	if cfg.Metrics != nil {
		cfg.Metrics.MustRegister(w.rounds, w.drifts, w.unreachable, w.missing, w.drifted)
	}
	return w
}

// Run runs a round at once and then every Interval until ctx ends; it waits for
// webhook deliveries in flight before it returns.
func (w *Watchdog) Run(ctx context.Context) error {
	defer w.hooks.Wait()
	for {
		w.Round(ctx)
		if backoff.Sleep(ctx, w.cfg.Interval) != nil {
			return nil
		}
	}
}

// Round compares the JWKS with the registry once and acts on drift.
func (w *Watchdog) Round(ctx context.Context) {
	w.rounds.Inc()
	log := w.cfg.Log
	served, err := w.fetchJWKS(ctx)
	if err != nil {
		w.unreachable.Inc()
		if !w.down {
			log.Error(EventUnreachable, "event", EventUnreachable, "jwks_url", w.cfg.JWKSURL, "error", err.Error())
			w.notify(ctx, Event{Event: EventUnreachable, JWKSURL: w.cfg.JWKSURL, DetectedAt: w.cfg.Now().UTC(), Reason: err.Error()})
		}
		w.down = true
		return
	}
	if w.down {
		log.Info("JWKS reachable again", "jwks_url", w.cfg.JWKSURL)
		w.down = false
	}
	active, err := w.cfg.Registry.Active(ctx, w.cfg.Now())
	if err != nil {
		log.Error(EventRegistry, "event", EventRegistry, "error", err.Error())
		return
	}
	drifted := Compare(served, active)
	w.drifted.Set(float64(len(drifted)))
	for _, d := range drifted {
		inc, seen := w.drift[d.Kid]
		if !seen {
			inc = &incident{ev: Event{Event: EventDrift, Kid: d.Kid, JWKSURL: w.cfg.JWKSURL, DetectedAt: w.cfg.Now().UTC(), Reason: d.Reason}}
			w.drift[d.Kid] = inc
			w.drifts.Inc()
			log.Error(EventDrift, "event", EventDrift, "kid", d.Kid, "jwks_url", w.cfg.JWKSURL, "reason", d.Reason)
		}
		w.act(ctx, inc)
	}
	for _, kid := range Missing(served, active) {
		w.missing.Inc()
		log.Warn(EventMissing, "event", EventMissing, "kid", kid, "jwks_url", w.cfg.JWKSURL)
	}
}

// act takes the actions of a drift incident that have not succeeded yet:
// revoke, adapters, then the webhook (once, in the background, retried).
func (w *Watchdog) act(ctx context.Context, inc *incident) {
	log := w.cfg.Log
	if !inc.revoked && w.cfg.Revoke != nil {
		if done, err := w.cfg.Registry.Revoked(inc.ev.Kid); err == nil && done {
			inc.revoked = true
		} else if err := w.cfg.Revoke(ctx, inc.ev.Kid, "watchdog: "+inc.ev.Reason+" at "+w.cfg.JWKSURL); err != nil {
			log.Error("revoke failed; retrying next round", "kid", inc.ev.Kid, "error", err.Error())
		} else {
			inc.revoked = true
			log.Info("kid revoked on the ledger", "kid", inc.ev.Kid)
		}
	}
	for _, a := range w.cfg.Adapters {
		if w.cut[a.Name] {
			continue
		}
		if err := a.Cut(ctx); err != nil {
			log.Error("cloud adapter failed; retrying next round", "adapter", a.Name, "error", err.Error())
			continue
		}
		w.cut[a.Name] = true
		log.Info("cloud adapter cut the issuer off", "adapter", a.Name)
	}
	if !inc.notified {
		inc.notified = true
		ev := inc.ev
		ev.Revoked = inc.revoked
		for _, a := range w.cfg.Adapters {
			if w.cut[a.Name] {
				ev.Adapters = append(ev.Adapters, a.Name)
			}
		}
		w.notify(ctx, ev)
	}
}

// notify posts ev to the webhook in the background, retried with backoff
// until it is delivered, the tries are spent or ctx ends.
func (w *Watchdog) notify(ctx context.Context, ev Event) {
	if w.cfg.Webhook == "" {
		return
	}
	body, _ := json.Marshal(ev)
	w.hooks.Go(func() {
		retry := w.cfg.WebhookRetry
		for try := 1; ; try++ {
			err := w.post(ctx, body)
			if err == nil {
				return
			}
			if try >= w.cfg.WebhookTries {
				w.cfg.Log.Error("webhook not delivered", "event", ev.Event, "kid", ev.Kid, "tries", try, "error", err.Error())
				return
			}
			if retry.Wait(ctx) != nil {
				return
			}
		}
	})
}

func (w *Watchdog) post(ctx context.Context, body []byte) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, w.cfg.Webhook, bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	res, err := w.cfg.HTTP.Do(req)
	if err != nil {
		return err
	}
	io.Copy(io.Discard, io.LimitReader(res.Body, 64<<10))
	res.Body.Close()
	if res.StatusCode/100 != 2 {
		return fmt.Errorf("webhook answered %s", res.Status)
	}
	return nil
}

func (w *Watchdog) fetchJWKS(ctx context.Context) ([]apiv1.JWK, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, w.cfg.JWKSURL, nil)
	if err != nil {
		return nil, err
	}
	res, err := w.cfg.HTTP.Do(req)
	if err != nil {
		return nil, err
	}
	defer res.Body.Close()
	if res.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("JWKS answered %s", res.Status)
	}
	b, err := io.ReadAll(io.LimitReader(res.Body, MaxJWKS+1))
	if err != nil {
		return nil, err
	}
	if len(b) > MaxJWKS {
		return nil, fmt.Errorf("JWKS is larger than %d bytes", MaxJWKS)
	}
	var doc apiv1.JWKS
	if err := json.Unmarshal(b, &doc); err != nil {
		return nil, errors.New("JWKS is not a JSON key set")
	}
	if len(doc.Keys) > MaxKeys {
		w.cfg.Log.Warn("JWKS has too many keys; comparing the first ones", "keys", len(doc.Keys), "compared", MaxKeys)
		doc.Keys = doc.Keys[:MaxKeys]
	}
	return doc.Keys, nil
}

// Drift is one served key the ledger does not vouch for.
type Drift struct {
	Kid    string
	Reason string
}

// Compare returns the served keys the ledger does not vouch for, by kid: a kid
// not active on the ledger, or an active kid served with other key material.
func Compare(served []apiv1.JWK, active map[string]registry.OidcKey) []Drift {
	var out []Drift
	seen := map[string]bool{}
	for _, k := range served {
		if seen[k.Kid] {
			continue
		}
		seen[k.Kid] = true
		a, ok := active[k.Kid]
		switch {
		case !ok:
			out = append(out, Drift{Kid: k.Kid, Reason: "served key is not active on the ledger"})
		case a.JWK != k:
			out = append(out, Drift{Kid: k.Kid, Reason: "served key material differs from the ledger's"})
		}
	}
	return out
}

// Missing returns the ledger-active kids the JWKS does not serve, sorted.
func Missing(served []apiv1.JWK, active map[string]registry.OidcKey) []string {
	have := map[string]bool{}
	for _, k := range served {
		have[k.Kid] = true
	}
	var out []string
	for kid := range active {
		if !have[kid] {
			out = append(out, kid)
		}
	}
	sort.Strings(out)
	return out
}
