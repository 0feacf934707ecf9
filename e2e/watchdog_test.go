package e2e

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/agentkeys/agentkeys/internal/broker"
	"github.com/agentkeys/agentkeys/internal/cli"
	"github.com/agentkeys/agentkeys/internal/ledger"
	"github.com/agentkeys/agentkeys/internal/registry"
	"github.com/agentkeys/agentkeys/internal/watchdog"
)

// requestLog is a loopback HTTP endpoint that keeps every request it gets.
type requestLog struct {
	mu   sync.Mutex
	reqs []loggedRequest
	srv  *httptest.Server
}

type loggedRequest struct {
	method, path string
	header       http.Header
	host         string
	query        url.Values
	body         []byte
	at           time.Time
}

// newRequestLog records requests and answers each with answer(i) (i counts from 0).
func newRequestLog(t *testing.T, answer func(i int, w http.ResponseWriter)) *requestLog {
	r := &requestLog{}
	r.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		b, _ := io.ReadAll(io.LimitReader(req.Body, 1<<20))
		r.mu.Lock()
		i := len(r.reqs)
		r.reqs = append(r.reqs, loggedRequest{method: req.Method, path: req.URL.Path, header: req.Header.Clone(), host: req.Host,
			query: req.URL.Query(), body: b, at: time.Now()})
		r.mu.Unlock()
		answer(i, w)
	}))
	t.Cleanup(r.srv.Close)
	return r
}

func (r *requestLog) all() []loggedRequest {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.reqs)
}

// Test AWS credentials of the IAM endpoint (not real ones).
const (
	iamKeyID  = "AKIDWATCHDOGTEST0001"
	iamSecret = "watchdog-test-secret-key/not-real+0000000"
	iamARN    = "arn:aws:iam::123456789012:oidc-provider/keys.example.com"
)

// verifySigV4 checks an AWS Signature Version 4 (header form) over a loggedRequest
// request with the test's secret, computed here from the specification, not by
// the SDK that signed it.
func verifySigV4(t *testing.T, r loggedRequest, keyID, secret, region, service string) {
	t.Helper()
	auth := r.header.Get("Authorization")
	const alg = "AWS4-HMAC-SHA256 "
	if !strings.HasPrefix(auth, alg) {
		t.Fatalf("Authorization is not SigV4: %q", auth)
	}
	fields := map[string]string{}
	for _, f := range strings.Split(strings.TrimPrefix(auth, alg), ",") {
		k, v, _ := strings.Cut(strings.TrimSpace(f), "=")
		fields[k] = v
	}
	amzDate := r.header.Get("X-Amz-Date")
	if len(amzDate) != 16 {
		t.Fatalf("X-Amz-Date %q", amzDate)
	}
	scope := amzDate[:8] + "/" + region + "/" + service + "/aws4_request"
	if fields["Credential"] != keyID+"/"+scope {
		t.Fatalf("credential scope %q, want %s/%s", fields["Credential"], keyID, scope)
	}
	signed := strings.Split(fields["SignedHeaders"], ";")
	if !slices.Contains(signed, "host") || !slices.Contains(signed, "x-amz-date") {
		t.Fatalf("signed headers %v miss host or x-amz-date", signed)
	}
	var canonHeaders strings.Builder
	for _, h := range signed {
		v := strings.Join(r.header.Values(h), ",")
		switch h {
		case "host":
			v = r.host
		case "content-length":
			v = strconv.Itoa(len(r.body))
		}
		canonHeaders.WriteString(h + ":" + strings.Join(strings.Fields(v), " ") + "\n")
	}
	keys := make([]string, 0, len(r.query))
	for k := range r.query {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var q []string
	for _, k := range keys {
		for _, v := range r.query[k] {
			q = append(q, url.QueryEscape(k)+"="+strings.ReplaceAll(url.QueryEscape(v), "+", "%20"))
		}
	}
	bodyHash := sha256.Sum256(r.body)
	path := r.path
	if path == "" {
		path = "/"
	}
	canon := strings.Join([]string{r.method, path, strings.Join(q, "&"), canonHeaders.String(), fields["SignedHeaders"], hex.EncodeToString(bodyHash[:])}, "\n")
	ch := sha256.Sum256([]byte(canon))
	toSign := "AWS4-HMAC-SHA256\n" + amzDate + "\n" + scope + "\n" + hex.EncodeToString(ch[:])
	mac := func(key []byte, s string) []byte {
		m := hmac.New(sha256.New, key)
		m.Write([]byte(s))
		return m.Sum(nil)
	}
	k := mac([]byte("AWS4"+secret), amzDate[:8])
	k = mac(k, region)
	k = mac(k, service)
	k = mac(k, "aws4_request")
	if want := hex.EncodeToString(mac(k, toSign)); !hmac.Equal([]byte(want), []byte(fields["Signature"])) {
		t.Fatalf("SigV4 signature does not verify with the test's credentials\ncanonical request:\n%s", canon)
	}
}

// TestWatchdogCutsOffRogueJWKS: the issuer URL starts serving a key that is not
// on the ledger (a man in the middle, standing in for a hijacked issuer URL).
// The watchdog, at --interval 1s, logs JWKS_URL_DRIFT_DETECTED, revokes the kid
// on the ledger with the incident key, removes the client id from the IAM OIDC
// provider (a valid SigV4-signed call to a recording IAM endpoint) and posts
// the event to the webhook (retried after a failure), within interval + 5 s;
// the daemon then refuses the rogue kid's tokens before contacting STS.
func TestWatchdogCutsOffRogueJWKS(t *testing.T) {
	h := newHarness(t)
	h.plant("IAM secret access key", iamSecret)
	m := &mitm{t: t, rogue: newRogue(t), mode: "pass"}
	issuerURL, to := m.start(t)
	o := serverOpts{home: t.TempDir(), args: []string{"--public-url", issuerURL, "--oidc-audience", "sts.amazonaws.com"}}
	s := h.start(o)
	to(s.url)
	own := h.akNewOwner(s)
	dh := h.pairAgentIn(t.TempDir(), &server{h: h, url: issuerURL}, own, "bot", "oidc:*")

	hook := newRequestLog(t, func(i int, w http.ResponseWriter) {
		if i == 0 {
			w.WriteHeader(http.StatusServiceUnavailable) // the first delivery fails: the watchdog retries
		}
	})
	iam := newRequestLog(t, func(_ int, w http.ResponseWriter) {
		w.Header().Set("Content-Type", "text/xml")
		io.WriteString(w, `<RemoveClientIDFromOpenIDConnectProviderResponse xmlns="https://iam.amazonaws.com/doc/2010-05-08/">`+
			`<ResponseMetadata><RequestId>7a62c49f-347e-4fc4-9331-6e8eEXAMPLE</RequestId></ResponseMetadata></RemoveClientIDFromOpenIDConnectProviderResponse>`)
	})
	sts := newRequestLog(t, func(_ int, w http.ResponseWriter) {
		w.Header().Set("Content-Type", "text/xml")
		w.WriteHeader(http.StatusForbidden)
		io.WriteString(w, `<ErrorResponse><Error><Type>Sender</Type><Code>AccessDenied</Code><Message>recording endpoint</Message></Error></ErrorResponse>`)
	})
	awsCreds := func(home string) cliResult {
		return h.cli(home, "daemon", "aws-credentials", "--role-arn", "arn:aws:iam::123456789012:role/agentkeys-agents", "--sts-endpoint", sts.srv.URL)
	}
	// Before: a genuine token reaches STS (which refuses it: it is a requestLog).
	if r := awsCreds(dh); r.code == 0 || !strings.Contains(r.stderr, "STS refused") || len(sts.all()) != 1 {
		t.Fatalf("genuine token: exit %d, %d STS requests: %s", r.code, len(sts.all()), r.stderr)
	}

	incidentKey := addIncidentKey(t, h, s, o.home, broker.OperatorKeyPath(o.effectiveDataDir()))
	// a full member key is refused as the watchdog's key: it could do anything
	if r := h.cli(t.TempDir(), "watchdog", "--jwks-url", issuerURL+"/.well-known/jwks.json", "--registry-url", s.url,
		"--incident-key", broker.OperatorKeyPath(o.effectiveDataDir())); r.code != 3 || !strings.Contains(r.stderr, "full governance member key") {
		t.Fatalf("watchdog with the operator key: exit %d %s", r.code, r.stderr)
	}
	stranger := filepath.Join(t.TempDir(), "stranger.key")
	h.akOK(o.home, "governance", "keygen", "--out", stranger)
	if r := h.cli(t.TempDir(), "watchdog", "--jwks-url", issuerURL+"/.well-known/jwks.json", "--registry-url", s.url,
		"--incident-key", stranger); r.code != 3 || !strings.Contains(r.stderr, "not an incident key") {
		t.Fatalf("watchdog with a key outside the set: exit %d %s", r.code, r.stderr)
	}
	wd := exec.Command(bin, "watchdog", "--jwks-url", issuerURL+"/.well-known/jwks.json", "--registry-url", s.url, "--interval", "1s",
		"--webhook", hook.srv.URL, "--incident-key", incidentKey,
		"--aws-iam-endpoint", iam.srv.URL, "--aws-oidc-provider-arn", iamARN, "--log-format", "json", "--metrics-listen", "127.0.0.1:0")
	wd.Env = childEnv("AGENTKEYS_HOME="+t.TempDir(), "AWS_ACCESS_KEY_ID="+iamKeyID, "AWS_SECRET_ACCESS_KEY="+iamSecret,
		"AWS_CONFIG_FILE=/nonexistent", "AWS_SHARED_CREDENTIALS_FILE=/nonexistent", "AWS_EC2_METADATA_DISABLED=true")
	logs := h.newOutput()
	wd.Stdout, wd.Stderr = h.newOutput(), logs
	if err := wd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { wd.Process.Kill(); wd.Wait() })
	lines := func() []logLine {
		var out []logLine
		for _, l := range strings.Split(logs.String(), "\n") {
			var ll logLine
			if json.Unmarshal([]byte(l), &ll) == nil {
				out = append(out, ll)
			}
		}
		return out
	}
	var metricsAddr string
	if !waitFor(startTimeout, func() bool {
		for _, l := range lines() {
			if l.str("msg") == "metrics" {
				metricsAddr = l.str("addr")
			}
		}
		return metricsAddr != "" && strings.Contains(logs.String(), `"watchdog starting"`)
	}) {
		t.Fatalf("watchdog did not start: %s", logs.String())
	}
	metric := func(name string) float64 {
		res, err := http.Get("http://" + metricsAddr + "/metrics")
		if err != nil {
			t.Fatal(err)
		}
		defer res.Body.Close()
		b, _ := io.ReadAll(res.Body)
		for _, l := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(l, name+" "); ok {
				var f float64
				json.Unmarshal([]byte(v), &f)
				return f
			}
		}
		return -1
	}
	rounds := func(n float64) {
		t.Helper()
		from := metric("agentkeys_watchdog_rounds_total")
		if !waitFor(30*time.Second, func() bool { return metric("agentkeys_watchdog_rounds_total") >= from+n }) {
			t.Fatalf("the watchdog did not run %v more rounds", n)
		}
	}
	// two clean rounds against the genuine JWKS first
	rounds(2)
	if strings.Contains(logs.String(), watchdog.EventDrift) || len(hook.all()) != 0 || len(iam.all()) != 0 {
		t.Fatalf("drift reported against the genuine JWKS: %s", logs.String())
	}

	m.set("resign")
	served := time.Now()
	revoked := func() *ledger.Entry {
		for _, e := range s.allEntries() {
			var r registry.OidcRevoke
			if e.Kind == registry.KindOidcKeyRevoke && json.Unmarshal(e.Payload, &r) == nil && r.Kid == m.rogue.kid {
				return &e
			}
		}
		return nil
	}
	var e *ledger.Entry
	for deadline := served.Add(30 * time.Second); e == nil && time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		e = revoked()
	}
	took := time.Since(served)
	if e == nil {
		t.Fatalf("no governance revoke of the rogue kid within 30 s; watchdog log:\n%s", logs.String())
	}
	t.Logf("drift detection at --interval 1s: rogue key served → revoke committed (seq %d) in %s", e.Seq, took.Round(time.Millisecond))
	// The target (and the figure docs/design.md gives): ≤ 5 s at
	// --interval 1s; this bound is what CI enforces.
	if took > 5*time.Second {
		t.Errorf("revoke committed %s after the rogue key was served, want within 5 s at --interval 1s", took)
	}
	if e.Origin != ledger.OriginGovernance {
		t.Fatalf("revoke origin %s", e.Origin)
	}
	var drift []logLine
	for _, l := range lines() {
		if l.str("msg") == watchdog.EventDrift {
			drift = append(drift, l)
		}
	}
	if len(drift) != 1 || drift[0].str("kid") != m.rogue.kid || drift[0].str("jwks_url") != issuerURL+"/.well-known/jwks.json" || drift[0].str("level") != "ERROR" {
		t.Fatalf("drift log lines: %v", drift)
	}

	// the IAM endpoint got one valid, signed RemoveClientIDFromOpenIDConnectProvider
	if !waitFor(10*time.Second, func() bool { return len(iam.all()) >= 1 }) {
		t.Fatalf("no IAM call; watchdog log:\n%s", logs.String())
	}
	calls := iam.all()
	form, _ := url.ParseQuery(string(calls[0].body))
	if len(calls) != 1 || calls[0].method != http.MethodPost || form.Get("Action") != "RemoveClientIDFromOpenIDConnectProvider" ||
		form.Get("OpenIDConnectProviderArn") != iamARN || form.Get("ClientID") != "sts.amazonaws.com" {
		t.Fatalf("IAM calls: %d, first %s %s", len(calls), calls[0].method, calls[0].body)
	}
	verifySigV4(t, calls[0], iamKeyID, iamSecret, "us-east-1", "iam")

	// the webhook: a 503 first, then the event, retried
	if !waitFor(15*time.Second, func() bool { return len(hook.all()) >= 2 }) {
		t.Fatalf("webhook deliveries: %d; watchdog log:\n%s", len(hook.all()), logs.String())
	}
	var ev watchdog.Event
	got := hook.all()
	if err := json.Unmarshal(got[1].body, &ev); err != nil || ev.Event != watchdog.EventDrift || ev.Kid != m.rogue.kid || !ev.Revoked ||
		!slices.Equal(ev.Adapters, []string{"aws"}) || string(got[0].body) != string(got[1].body) || got[1].header.Get("Content-Type") != "application/json" {
		t.Fatalf("webhook: %v %+v (first %s)", err, ev, got[0].body)
	}

	// the daemon refuses the rogue kid's token before contacting STS
	before := len(sts.all())
	if r := awsCreds(dh); r.code == 0 || !strings.Contains(r.stderr, "DualVerifyRejected") {
		t.Fatalf("rogue token: exit %d: %s", r.code, r.stderr)
	}
	if n := len(sts.all()); n != before {
		t.Fatalf("the daemon sent the rogue kid's token to STS (%d requests)", n-before)
	}
	// the drift stays logged once, and nothing is revoked or cut twice
	rounds(2)
	if d := metric("agentkeys_watchdog_drift_total"); d != 1 {
		t.Fatalf("agentkeys_watchdog_drift_total %v, want 1", d)
	}
	if n := strings.Count(logs.String(), `"msg":"`+watchdog.EventDrift+`"`); n != 1 || len(iam.all()) != 1 {
		t.Fatalf("after more rounds: %d drift lines, %d IAM calls", n, len(iam.all()))
	}
	incidentKeyOnlyRevokes(t, h, s, incidentKey)
}

// addIncidentKey makes an incident key and adds it to the 1-of-1 set of s,
// signed by the operator key, as docs/incident-response.md says; it returns
// the key's file.
func addIncidentKey(t *testing.T, h *harness, s *server, home, operatorKey string) string {
	t.Helper()
	key := filepath.Join(t.TempDir(), "incident.key")
	var info cli.GovernanceKeyInfo
	if err := json.Unmarshal([]byte(h.akOK(home, "governance", "keygen", "--out", key, "--json")), &info); err != nil {
		t.Fatal(err)
	}
	plantPEM(h, "incident key", key)
	g, err := s.client.Governance(context.Background())
	if err != nil || len(g.Members) != 1 {
		t.Fatalf("governance: %+v %v", g, err)
	}
	p := filepath.Join(t.TempDir(), "add-incident.json")
	h.akOK(home, "governance", "init", "--server", s.url, "--member", g.Members[0], "--incident", info.PublicKey, "--threshold", "1", "--out", p)
	h.akOK(home, "governance", "sign", p, "--key", operatorKey)
	h.akOK(home, "governance", "submit", p)
	if g, err := s.client.Governance(context.Background()); err != nil || !slices.Equal(g.Incident, []string{info.PublicKey}) {
		t.Fatalf("governance after adding the incident key: %+v %v", g, err)
	}
	return key
}

// incidentKeyOnlyRevokes: the key the watchdog holds (a machine's file, the
// likeliest governance key to leak) can do nothing but revoke OIDC keys: every
// other governance change signed with it, in entry and in proposal form, is
// refused and writes nothing.
func incidentKeyOnlyRevokes(t *testing.T, h *harness, s *server, key string) {
	t.Helper()
	home := t.TempDir()
	before := len(s.allEntries())
	prop := home + "/p.json"
	h.akOK(home, "governance", "init", "--server", s.url, "--member", strings.Repeat("ab", 32), "--threshold", "1", "--out", prop)
	h.akOK(home, "governance", "sign", prop, "--key", key)
	for _, c := range []struct {
		what string
		args []string
	}{
		{"replace the governance set", []string{"governance", "submit", prop}},
		{"rotate the session key", []string{"governance", "rotate-session-key", "--server", s.url, "--key", key}},
		{"authorize a successor", []string{"governance", "authorize-successor", strings.Repeat("cd", 32), "--platform-key", strings.Repeat("ef", 32), "--server", s.url, "--key", key}},
		{"rotate the OIDC key", []string{"oidc", "rotate", "--server", s.url, "--operator-key", key, "--window", "24h"}},
	} {
		if r := h.cli(home, c.args...); r.code != 3 || !strings.Contains(r.stderr, "incident") {
			t.Errorf("the watchdog's incident key could %s: exit %d, want 3 (DENIED, naming the incident key)\n%s%s", c.what, r.code, r.stdout, r.stderr)
		}
	}
	for _, e := range s.allEntries()[before:] {
		if e.Origin == ledger.OriginGovernance {
			t.Fatalf("a refused change signed by the incident key was written: %s at seq %d", e.Kind, e.Seq)
		}
	}
}

// TestWatchdogRefusesBadFlags: usage errors and an incident key others may read
// are refused before the watchdog contacts anything.
func TestWatchdogRefusesBadFlags(t *testing.T) {
	h := newHarness(t)
	home := t.TempDir()
	key := home + "/incident.key"
	h.akOK(home, "release", "keygen", "--out", key)
	os.Chmod(key, 0o644)
	base := []string{"watchdog", "--jwks-url", "http://127.0.0.1:1/.well-known/jwks.json", "--registry-url", "http://127.0.0.1:1"}
	for _, c := range []struct {
		args []string
		code int
		want string
	}{
		{[]string{"watchdog"}, 2, "BAD_REQUEST"},
		{append(slices.Clone(base), "--interval", "100ms"), 2, "--interval must be at least 1s"},
		{[]string{"watchdog", "--jwks-url", "ftp://x", "--registry-url", "http://127.0.0.1:1"}, 2, "is not an http(s) URL"},
		{append(slices.Clone(base), "--aws-iam-endpoint", "http://127.0.0.1:1"), 2, "needs --aws-oidc-provider-arn"},
		{append(slices.Clone(base), "--incident-key", key), 3, "chmod 600"},
	} {
		r := h.cli(home, c.args...)
		if r.code != c.code || !strings.Contains(r.stderr, c.want) || !strings.Contains(r.stderr, "Fix:") {
			t.Errorf("%v: exit %d: %s", c.args[1:], r.code, r.stderr)
		}
	}
}
