// Package api is the broker's HTTP interface: it decodes requests, calls package
// broker and encodes answers. It decides nothing itself. Every error body is
// {"error":{"code","message","fix"}}, and no handler logs a request body.
package api

import (
	"crypto/sha256"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"net/netip"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/agentkeys/agentkeys/internal/broker"
	"github.com/agentkeys/agentkeys/internal/problem"
)

// DefaultMaxBody caps request bodies (bytes).
const DefaultMaxBody = 1 << 20

// Config configures the HTTP layer.
type Config struct {
	Logger   *slog.Logger
	Registry *prometheus.Registry // the broker's metrics are registered here too
	MaxBody  int64
	// TrustedProxies are the peers whose X-Forwarded-For is believed when the
	// broker limits anonymous callers by address (default none: the TCP peer).
	TrustedProxies []netip.Prefix
	// NoMetrics leaves GET /metrics off this handler: the operator serves it on
	// a listener of its own (server --metrics-listen).
	NoMetrics bool
	// MailEdgeSecret, when set, turns on POST /v1/mail/edge/lookup for the
	// separate mail edge that presents it (server --mail-edge-secret).
	MailEdgeSecret []byte
}

type server struct {
	b        Broker
	log      *slog.Logger
	maxBody  int64
	requests *prometheus.CounterVec
	latency  *prometheus.HistogramVec
	// trustedProxies: see Config.TrustedProxies.
	trustedProxies []netip.Prefix
	edgeSecret     []byte // SHA-256 of Config.MailEdgeSecret; nil: the edge lookup is off
}

// New returns the broker's HTTP handler: b is a *broker.Broker in production.
func New(b Broker, cfg Config) http.Handler {
	if cfg.MaxBody <= 0 {
		cfg.MaxBody = DefaultMaxBody
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Registry == nil {
		cfg.Registry = prometheus.NewRegistry()
	}
	s := &server{b: b, log: cfg.Logger, maxBody: cfg.MaxBody, trustedProxies: cfg.TrustedProxies,
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "agentkeys_http_requests_total", Help: "HTTP requests by route and status."}, []string{"route", "code"}),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "agentkeys_http_request_duration_seconds", Help: "HTTP request latency by route.",
			Buckets: prometheus.ExponentialBuckets(0.0001, 2, 16)}, []string{"route"}),
	}
	if len(cfg.MailEdgeSecret) > 0 {
		sum := sha256.Sum256(cfg.MailEdgeSecret)
		s.edgeSecret = sum[:]
	}
	cfg.Registry.MustRegister(s.requests, s.latency, collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))

	mux := http.NewServeMux()
	handle := func(pattern string, h func(w http.ResponseWriter, r *http.Request) error) {
		mux.Handle(pattern, s.wrap(pattern, h))
	}
	if !cfg.NoMetrics {
		mux.Handle("GET /metrics", promhttp.HandlerFor(cfg.Registry, promhttp.HandlerOpts{}))
	}
	handle("GET /healthz", s.healthz)
	handle("GET /readyz", s.readyz)
	handle("GET /v1/enclave", s.enclaveInfo)
	handle("GET /v1/attestation", s.attestation)
	handle("GET /v1/ledger/head", s.ledgerHead)
	handle("GET /v1/ledger/entries", s.ledgerEntries)
	handle("POST /v1/ledger/entries", s.anon(broker.AnonSubmit, s.submitEntry("")))
	// The /mock/* registry routes are the exact paths §10.1 fixes for tools. The
	// writes stay mounted because §10 needs them: successor authorize/deauthorize
	// are governance's (the seed-migration runbook), and so is
	// /mock/oidc-pubkeys/revoke (the watchdog's answer to drift, §10.2). Each is
	// the same anonymous, admission-limited broker.Submit as POST
	// /v1/ledger/entries, pinned to one kind; the broker checks the signature
	// and origin. See routesOIDC for /mock/oidc-pubkeys/register.
	handle("GET /mock/enclave-successors", s.successors)
	handle("POST /mock/enclave-successors/authorize", s.anon(broker.AnonSubmit, s.submitEntry("successor.authorize")))
	handle("POST /mock/enclave-successors/deauthorize", s.anon(broker.AnonSubmit, s.submitEntry("successor.deauthorize")))
	// A successor asking for the seed (§10.3): anonymous (it has no account),
	// so admission-limited like governance submissions; each attempt costs
	// one quote check and one ledger entry.
	handle("POST /v1/enclave/handoff", s.anon(broker.AnonSubmit, s.handoff))
	handle("POST /v1/accounts", s.anon(broker.AnonSignup, s.createAccount))
	handle("POST /v1/sessions", s.anon(broker.AnonLogin, s.openSession))
	handle("DELETE /v1/sessions/current", s.authed(s.logout))
	handle("GET /v1/whoami", s.authed(s.whoami))
	handle("POST /v1/credentials", s.authed(s.storeCredential))
	handle("GET /v1/credentials", s.authed(s.listCredentials))
	handle("POST /v1/credentials/{service}/read", s.authed(s.readCredential))
	handle("POST /v1/reads", s.authed(s.readBatch))
	handle("DELETE /v1/credentials/{service}", s.authed(s.deleteCredential))
	handle("GET /v1/approvals", s.authed(s.listApprovals))
	handle("POST /v1/approvals/{id}/approve", s.authed(s.approve))
	handle("GET /v1/usage", s.authed(s.usage))
	s.routesAgent(handle)
	s.routesOIDC(handle)
	s.routesGovernance(handle)
	s.routesMail(handle)
	s.routesMailSign(handle)
	s.routesMailEdge(handle)
	mux.Handle("/", s.wrap("unknown", func(http.ResponseWriter, *http.Request) error {
		return problem.New(problem.NotFound, "no such endpoint", "check the URL and method; see the README for the API")
	}))
	return mux
}

// statusWriter remembers the status code for logs and metrics.
type statusWriter struct {
	http.ResponseWriter
	code int
}

func (w *statusWriter) WriteHeader(code int) {
	w.code = code
	w.ResponseWriter.WriteHeader(code)
}

// wrap adds the body limit, error encoding, metrics and an access log line.
func (s *server) wrap(route string, h func(http.ResponseWriter, *http.Request) error) http.Handler {
	// The route's latency histogram and its count of 200 answers, looked up by
	// their labels once, at the route's first such answer, rather than on every
	// request (a route never used has no series, as before).
	var latency atomic.Pointer[prometheus.Observer]
	var ok atomic.Pointer[prometheus.Counter]
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		sw := &statusWriter{ResponseWriter: w, code: http.StatusOK}
		r.Body = http.MaxBytesReader(sw, r.Body, s.maxBody)
		if err := h(sw, r); err != nil {
			p := problem.As(err)
			if p.Code == problem.Internal {
				s.log.Error("request failed", "route", route, "err", err.Error())
			}
			if p.RetryAfter > 0 {
				sw.Header().Set("Retry-After", strconv.Itoa(p.RetryAfter))
			}
			writeJSON(sw, p.Status(), map[string]*problem.Error{"error": p})
		}
		if sw.code == http.StatusOK {
			once(&ok, func() prometheus.Counter { return s.requests.WithLabelValues(route, "200") }).Inc()
		} else {
			s.requests.WithLabelValues(route, strconv.Itoa(sw.code)).Inc()
		}
		once(&latency, func() prometheus.Observer { return s.latency.WithLabelValues(route) }).Observe(time.Since(start).Seconds())
		s.log.Debug("request", "method", r.Method, "route", route, "status", sw.code, "dur_ms", float64(time.Since(start).Microseconds())/1000)
	})
}

// once returns *p, setting it to mk() the first time (two first callers may
// both make it: WithLabelValues returns the same series to each).
func once[T any](p *atomic.Pointer[T], mk func() T) T {
	if v := p.Load(); v != nil {
		return *v
	}
	v := mk()
	p.Store(&v)
	return v
}

func writeJSON(w http.ResponseWriter, status int, v any) { writeJSONCache(w, status, "no-store", v) }

// writeJSONCache is writeJSON with the given Cache-Control.
func writeJSONCache(w http.ResponseWriter, status int, cacheControl string, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		status, b = http.StatusInternalServerError, []byte(`{"error":{"code":"INTERNAL","message":"the answer could not be encoded"}}`)
	}
	h := w.Header()
	h["Content-Type"] = []string{"application/json"}
	h["Cache-Control"] = []string{cacheControl}
	w.WriteHeader(status)
	w.Write(append(b, '\n'))
}

// decode reads a JSON body into v, refusing unknown fields and trailing data.
func decode(r *http.Request, v any) error {
	dec := json.NewDecoder(r.Body)
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			return problem.Newf(problem.TooLarge, "send a smaller body", "request body is larger than %d bytes", tooBig.Limit)
		}
		return problem.Newf(problem.BadRequest, "send one JSON object with the documented fields", "request body is not valid: %v", err)
	}
	if dec.More() {
		return problem.New(problem.BadRequest, "request body has data after the JSON object", "send exactly one JSON object")
	}
	return nil
}

func (s *server) healthz(w http.ResponseWriter, _ *http.Request) error {
	writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
	return nil
}

func (s *server) readyz(w http.ResponseWriter, _ *http.Request) error {
	if ok, why := s.b.Ready(); !ok {
		writeJSON(w, http.StatusServiceUnavailable, map[string]any{"ready": false, "reason": why})
		return nil
	}
	writeJSON(w, http.StatusOK, map[string]any{"ready": true})
	return nil
}
