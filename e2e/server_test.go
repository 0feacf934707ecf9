package e2e

import (
	"bytes"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/agentkeys/agentkeys/internal/apiv1"
	"github.com/agentkeys/agentkeys/internal/attest"
	"github.com/agentkeys/agentkeys/internal/broker"
	"github.com/agentkeys/agentkeys/internal/enclave"
	"github.com/agentkeys/agentkeys/internal/ledger"
)

// wantKeys are the published enclave keys and their algorithms.
var wantKeys = map[string]string{
	"shielding/v1":   enclave.AlgShielding,
	"issuer/jwt/v1":  enclave.AlgES256,
	"oidc/issuer/v1": enclave.AlgES256,
	"ledger/v1":      enclave.AlgEdDSA,
}

// enclaveInfo fetches and decodes GET /v1/enclave.
func (s *server) enclaveInfo() apiv1.EnclaveInfo {
	t := s.h.t
	t.Helper()
	code, body := s.get("/v1/enclave")
	if code != http.StatusOK {
		t.Fatalf("GET /v1/enclave = %d %s", code, body)
	}
	var info apiv1.EnclaveInfo
	if err := json.Unmarshal(body, &info); err != nil {
		t.Fatalf("GET /v1/enclave: %v: %s", err, body)
	}
	return info
}

// checkQuote verifies q under the platform key it names and that its report data
// is AttestationReportData(nonce, keys).
func checkQuote(t *testing.T, q attest.Quote, nonce []byte, keys []attest.KeyInfo) {
	t.Helper()
	pub, err := hex.DecodeString(q.PlatformKey)
	if err != nil || len(pub) != ed25519.PublicKeySize {
		t.Fatalf("quote platform_key %q is not an ed25519 public key", q.PlatformKey)
	}
	if err := attest.Verify(q, pub); err != nil {
		t.Fatalf("quote does not verify: %v", err)
	}
	rd := attest.ReportData(nonce, keys)
	if q.ReportData != hex.EncodeToString(rd[:]) {
		t.Fatalf("quote report_data %s, want AttestationReportData(%q, keys) = %x", q.ReportData, nonce, rd)
	}
	// The verification is meaningful: the same quote with other report data fails.
	forged := q
	other := attest.ReportData(append(nonce, 'x'), keys)
	forged.ReportData = hex.EncodeToString(other[:])
	if attest.Verify(forged, pub) == nil {
		t.Fatal("a quote with altered report_data still verifies")
	}
}

// metric returns the value of an unlabelled metric line "name value".
func metric(t *testing.T, text, name string) (float64, bool) {
	t.Helper()
	for line := range strings.Lines(text) {
		f := strings.Fields(line)
		if len(f) == 2 && f[0] == name {
			v, err := strconv.ParseFloat(f[1], 64)
			if err != nil {
				t.Fatalf("metric line %q: %v", line, err)
			}
			return v, true
		}
	}
	return 0, false
}

func fileMode(t *testing.T, path string) os.FileMode {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Mode().Perm()
}

// TestQuickPath is the first-start experience: default data dir, the enclave's
// published keys and quotes, health and metrics, file modes, and both audits.
func TestQuickPath(t *testing.T) {
	h := newHarness(t)
	home := t.TempDir()
	s := h.start(serverOpts{home: home}) // default data dir: $AGENTKEYS_HOME/server
	dataDir := filepath.Join(home, "server")

	// First start says what it created, and where.
	logs := parseLogs(t, s.stderr.String())
	var sawSeed, sawOperator bool
	for _, l := range logs {
		switch l.str("msg") {
		case "created and sealed a new master seed":
			sawSeed = l.str("path") == filepath.Join(dataDir, "seed.sealed") && l.str("platform_key") == filepath.Join(home, "platform.key")
		case "listening":
			if l.str("data_dir") != dataDir {
				t.Errorf("listening line data_dir = %q, want %q", l.str("data_dir"), dataDir)
			}
		}
		if strings.HasPrefix(l.str("msg"), "created the operator key") {
			sawOperator = l.str("level") == "WARN" && l.str("path") == broker.OperatorKeyPath(dataDir)
		}
	}
	if !sawSeed || !sawOperator {
		t.Errorf("first start must log the sealed seed and (WARN) the operator key with their paths; logs:\n%s", s.stderr.String())
	}

	// GET /v1/enclave
	info := s.enclaveInfo()
	exe := sha256.Sum256(fileBytes(t, bin))
	if info.MrEnclave != hex.EncodeToString(exe[:]) {
		t.Errorf("mrenclave %s is not SHA-256 of the binary (%x)", info.MrEnclave, exe)
	}
	if info.Tier != "dev" || len(info.MrSigner) != 64 {
		t.Errorf("tier %q mrsigner %q, want dev and 64 hex", info.Tier, info.MrSigner)
	}
	seen := map[string]bool{}
	for _, k := range info.Keys {
		seen[k.Path] = true
		if alg, ok := wantKeys[k.Path]; ok && k.Alg != alg {
			t.Errorf("key %s alg %q, want %q", k.Path, k.Alg, alg)
		}
		pub, err := hex.DecodeString(k.Public)
		if err != nil || len(pub) == 0 {
			t.Errorf("key %s public %q is not hex", k.Path, k.Public)
			continue
		}
		if k.Kid != attest.Kid(k.Path, pub) {
			t.Errorf("key %s kid %q, want %q", k.Path, k.Kid, attest.Kid(k.Path, pub))
		}
	}
	for p := range wantKeys {
		if !seen[p] {
			t.Errorf("GET /v1/enclave does not list %s: %+v", p, info.Keys)
		}
	}
	if info.Quote.MrEnclave != info.MrEnclave || info.Quote.MrSigner != info.MrSigner || string(info.Quote.Tier) != info.Tier {
		t.Errorf("quote measurements %+v differ from the enclave's", info.Quote)
	}
	checkQuote(t, info.Quote, nil, info.Keys)

	// GET /v1/attestation?nonce=
	var abc, abd attest.Quote
	for nonce, q := range map[string]*attest.Quote{"abc": &abc, "abd": &abd} {
		code, body := s.get("/v1/attestation?nonce=" + nonce)
		if code != http.StatusOK {
			t.Fatalf("attestation nonce=%s: %d %s", nonce, code, body)
		}
		if err := json.Unmarshal(body, q); err != nil {
			t.Fatal(err)
		}
		checkQuote(t, *q, []byte(nonce), info.Keys)
	}
	if abc.ReportData == abd.ReportData {
		t.Error("quotes for nonces abc and abd have the same report_data")
	}
	if abc.PlatformKey != info.Quote.PlatformKey {
		t.Error("attestation quotes are signed by a different platform key than /v1/enclave's quote")
	}

	// Genesis names the attested ledger key and the operator key as governance.
	es := s.allEntries()
	if len(es) == 0 || es[0].Kind != ledger.KindGenesis || es[0].Origin != ledger.OriginEnclave {
		t.Fatalf("first entry is not an enclave genesis: %+v", es)
	}
	var g ledger.Genesis
	if err := json.Unmarshal(es[0].Payload, &g); err != nil {
		t.Fatal(err)
	}
	for _, k := range info.Keys {
		if k.Path == "ledger/v1" && g.LedgerKey != k.Public {
			t.Errorf("genesis ledger_key %s is not the attested ledger/v1 key %s", g.LedgerKey, k.Public)
		}
	}
	opPub := hex.EncodeToString(operatorKey(t, dataDir).Public().(ed25519.PublicKey))
	if g.Governance.Threshold != 1 || len(g.Governance.Keys) != 1 || g.Governance.Keys[0] != opPub {
		t.Errorf("genesis governance %+v, want 1-of-1 operator key %s", g.Governance, opPub)
	}

	// Health and metrics.
	if code, body := s.get("/healthz"); code != http.StatusOK || !strings.Contains(string(body), `"ok"`) {
		t.Errorf("/healthz = %d %s", code, body)
	}
	code, body := s.get("/metrics")
	if code != http.StatusOK {
		t.Fatalf("/metrics = %d", code)
	}
	if v, ok := metric(t, string(body), "agentkeys_ready"); !ok || v != 1 {
		t.Errorf("/metrics agentkeys_ready = %v (present %v), want 1", v, ok)
	}
	if v, ok := metric(t, string(body), "agentkeys_ledger_entries_total"); !ok || v < 1 {
		t.Errorf("/metrics agentkeys_ledger_entries_total = %v (present %v), want ≥ 1 (genesis)", v, ok)
	}
	if v, ok := metric(t, string(body), "agentkeys_ledger_commit_duration_seconds_count"); !ok || v < 1 {
		t.Errorf("/metrics agentkeys_ledger_commit_duration_seconds_count = %v (present %v), want ≥ 1 (genesis)", v, ok)
	}
	if _, ok := metric(t, string(body), "agentkeys_ledger_queue_depth"); !ok {
		t.Errorf("/metrics has no agentkeys_ledger_queue_depth")
	}
	if !strings.Contains(string(body), "\nagentkeys_http_request_duration_seconds_count{") {
		t.Errorf("/metrics has no agentkeys_http_request_duration_seconds histogram")
	}

	// Files with secrets are 0600, the data dir 0700.
	if m := fileMode(t, dataDir); m != 0o700 {
		t.Errorf("data dir mode %o, want 700", m)
	}
	for _, f := range []string{"seed.sealed", "operator.key", "ledger.db"} {
		if m := fileMode(t, filepath.Join(dataDir, f)); m != 0o600 {
			t.Errorf("%s mode %o, want 600", f, m)
		}
	}
	// The platform key lives beside the data dir, never in it.
	if m := fileMode(t, filepath.Join(home, "platform.key")); m != 0o600 {
		t.Errorf("platform.key mode %o, want 600", m)
	}
	if _, err := os.Stat(filepath.Join(dataDir, "platform.key")); err == nil {
		t.Error("platform.key is in the data dir")
	}

	// Both audits pass while the server runs.
	t.Log(h.auditOK(home, "--server", s.url))
	t.Log(h.auditOK(home, "--data-dir", dataDir))
}

// TestRestart: a graceful stop, then the same data dir gives the same keys and the
// same genesis (disaster recovery by re-derivation), and nothing is created twice.
func TestRestart(t *testing.T) {
	h := newHarness(t)
	home := t.TempDir()
	opts := serverOpts{home: home, dataDir: filepath.Join(t.TempDir(), "data")}
	s1 := h.start(opts)
	info1 := s1.enclaveInfo()
	gen1 := s1.allEntries()[0]
	seed1 := fileBytes(t, filepath.Join(opts.dataDir, "seed.sealed"))
	op1 := fileBytes(t, broker.OperatorKeyPath(opts.dataDir))
	if code := s1.stop(syscall.SIGTERM); code != 0 {
		t.Fatalf("SIGTERM: exit code %d, want 0", code)
	}
	if !strings.Contains(s1.stderr.String(), `"msg":"stopped"`) {
		t.Errorf("no \"stopped\" log line after SIGTERM:\n%s", s1.stderr.String())
	}

	s2 := h.start(opts)
	info2 := s2.enclaveInfo()
	keys1 := map[string]attest.KeyInfo{}
	for _, k := range info1.Keys {
		keys1[k.Path] = k
	}
	if len(info2.Keys) != len(info1.Keys) {
		t.Errorf("restart lists %d keys, first start %d", len(info2.Keys), len(info1.Keys))
	}
	for _, k := range info2.Keys {
		if k != keys1[k.Path] {
			t.Errorf("key %s changed across restart: %+v → %+v", k.Path, keys1[k.Path], k)
		}
	}
	if info2.MrEnclave != info1.MrEnclave || info2.MrSigner != info1.MrSigner || info2.Quote.PlatformKey != info1.Quote.PlatformKey {
		t.Error("measurements or platform key changed across restart")
	}
	gen2 := s2.allEntries()[0]
	j1, _ := json.Marshal(gen1)
	j2, _ := json.Marshal(gen2)
	if !bytes.Equal(j1, j2) {
		t.Errorf("genesis changed across restart:\n%s\n%s", j1, j2)
	}
	if !bytes.Equal(seed1, fileBytes(t, filepath.Join(opts.dataDir, "seed.sealed"))) ||
		!bytes.Equal(op1, fileBytes(t, broker.OperatorKeyPath(opts.dataDir))) {
		t.Error("seed.sealed or operator.key was rewritten by the restart")
	}
	first, second := s1.stderr.String(), s2.stderr.String()
	for _, msg := range []string{"created the operator key", "created and sealed a new master seed"} {
		if !strings.Contains(first, msg) {
			t.Errorf("first start did not log %q", msg)
		}
		if strings.Contains(second, msg) {
			t.Errorf("restart logged %q again", msg)
		}
	}
	if code := s2.stop(syscall.SIGINT); code != 0 {
		t.Fatalf("SIGINT: exit code %d, want 0", code)
	}
	if !strings.Contains(s2.stderr.String(), `"msg":"stopped"`) {
		t.Error("no \"stopped\" log line after SIGINT")
	}
	h.auditOK(home, "--data-dir", opts.dataDir)
}

// refused runs a server that must refuse to start, and returns its one stderr line.
func refused(t *testing.T, h *harness, o serverOpts) string {
	t.Helper()
	s := h.spawn(o)
	if code := s.waitExit(startTimeout); code != 1 {
		t.Fatalf("exit code %d, want 1; stderr:\n%s", code, s.stderr.String())
	}
	out := s.stderr.String()
	if strings.Count(out, "\n") != 1 || !strings.HasSuffix(out, "\n") {
		t.Fatalf("stderr is not exactly one line: %q", out)
	}
	if s.stdout.String() != "" {
		t.Errorf("stdout is not empty: %q", s.stdout.String())
	}
	line := strings.TrimSpace(out)
	if !strings.HasPrefix(line, "Error: START_REFUSED: ") {
		t.Errorf("refusal line does not start with \"Error: START_REFUSED: \": %q", line)
	}
	return line
}

// TestStartRefusals: a wrong platform key or a seed sealed under another mrsigner
// stops the server with one line naming cause and fix, and the seed is untouched.
func TestStartRefusals(t *testing.T) {
	t.Run("env platform key", func(t *testing.T) {
		h := newHarness(t)
		k1, k2 := randomHex(32), randomHex(32)
		h.plant("AGENTKEYS_PLATFORM_KEY of the first start", k1)
		h.plant("wrong AGENTKEYS_PLATFORM_KEY", k2)
		o := serverOpts{home: t.TempDir(), platformKey: k1}
		dir := o.effectiveDataDir()
		s := h.start(o)
		keys := s.enclaveInfo().Keys
		if code := s.stop(syscall.SIGTERM); code != 0 {
			t.Fatalf("stop: exit %d", code)
		}
		for _, f := range []string{filepath.Join(dir, "platform.key"), o.platformKeyFile()} {
			if _, err := os.Stat(f); err == nil {
				t.Errorf("the platform key given in the environment was written to %s", f)
			}
		}
		seed := fileBytes(t, filepath.Join(dir, "seed.sealed"))

		o.platformKey = k2
		line := refused(t, h, o)
		for _, want := range []string{"platform key", "AGENTKEYS_PLATFORM_KEY", "restore"} {
			if !strings.Contains(line, want) {
				t.Errorf("refusal does not mention %q: %s", want, line)
			}
		}
		if !bytes.Equal(seed, fileBytes(t, filepath.Join(dir, "seed.sealed"))) {
			t.Error("seed.sealed changed after the refused start")
		}

		// The right key still opens the same seed.
		o.platformKey = k1
		s = h.start(o)
		if got := s.enclaveInfo().Keys; fmt.Sprint(got) != fmt.Sprint(keys) {
			t.Errorf("keys after the refused start differ: %v vs %v", got, keys)
		}
	})

	t.Run("platform.key file replaced", func(t *testing.T) {
		h := newHarness(t)
		o := serverOpts{home: t.TempDir()}
		dir := o.effectiveDataDir()
		s := h.start(o)
		if code := s.stop(syscall.SIGTERM); code != 0 {
			t.Fatalf("stop: exit %d", code)
		}
		orig := fileBytes(t, o.platformKeyFile())
		seed := fileBytes(t, filepath.Join(dir, "seed.sealed"))
		other := randomHex(32)
		h.plant("replacement platform.key", other)
		if err := os.WriteFile(o.platformKeyFile(), []byte(other+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		line := refused(t, h, o)
		if !strings.Contains(line, "platform key") || !strings.Contains(line, "restore") {
			t.Errorf("refusal does not name the platform key and the fix: %s", line)
		}
		if !bytes.Equal(seed, fileBytes(t, filepath.Join(dir, "seed.sealed"))) {
			t.Error("seed.sealed changed after the refused start")
		}
		if err := os.WriteFile(o.platformKeyFile(), orig, 0o600); err != nil {
			t.Fatal(err)
		}
		h.start(o)
	})

	t.Run("data dir in use", func(t *testing.T) {
		h := newHarness(t)
		o := serverOpts{home: t.TempDir()}
		s := h.start(o)
		line := refused(t, h, o)
		if !strings.Contains(line, "another") {
			t.Errorf("refusal does not say another server holds the data dir: %s", line)
		}
		if code, body := s.get("/readyz"); code != http.StatusOK {
			t.Errorf("the first server is no longer ready after the refused second start: %d %s", code, body)
		}
		governanceEntries(t, s, operatorKey(t, o.effectiveDataDir()), 2)
	})

	t.Run("other mrsigner", func(t *testing.T) {
		h := newHarness(t)
		o := serverOpts{home: t.TempDir()}
		dir := o.effectiveDataDir()
		s := h.start(o)
		info := s.enclaveInfo()
		if code := s.stop(syscall.SIGTERM); code != 0 {
			t.Fatalf("stop: exit %d", code)
		}
		seed := fileBytes(t, filepath.Join(dir, "seed.sealed"))
		// a release signed by another key: it may run, but not unseal this seed
		keyFile := filepath.Join(t.TempDir(), "release.key")
		pub := strings.TrimSpace(h.akOK(t.TempDir(), "release", "keygen", "--out", keyFile))
		plantPEM(h, "release-signing key", keyFile)
		exe := copyBinary(t)
		h.akOK(t.TempDir(), "release", "sign", "--key", keyFile, "--binary", exe)
		o2 := o
		o2.exe = exe
		o2.args = []string{"--mrsigner-key", pub}
		line := refused(t, h, o2)
		for _, want := range []string{"mrsigner", "handoff"} {
			if !strings.Contains(line, want) {
				t.Errorf("refusal does not mention %q: %s", want, line)
			}
		}
		if !bytes.Equal(seed, fileBytes(t, filepath.Join(dir, "seed.sealed"))) {
			t.Error("seed.sealed changed after the refused start")
		}
		s = h.start(o)
		if again := s.enclaveInfo(); fmt.Sprint(again.Keys) != fmt.Sprint(info.Keys) || again.MrSigner != info.MrSigner {
			t.Error("the dev build does not serve the same keys after the refused start")
		}
	})
}

// TestLimits: body size limit, unknown routes and out-of-range parameters get JSON
// errors with the right status, and change nothing.
func TestLimits(t *testing.T) {
	h := newHarness(t)
	home := t.TempDir()
	s := h.start(serverOpts{home: home, args: []string{"--max-body", "1024"}})
	before := s.head()

	cases := []struct {
		name, method, path string
		body               []byte
		status             int
		code               string
	}{
		{"body over --max-body", http.MethodPost, "/v1/ledger/entries",
			[]byte(`{"kind":"` + strings.Repeat("a", 2000) + `"}`), http.StatusRequestEntityTooLarge, "TOO_LARGE"},
		{"body over --max-body on a registry route", http.MethodPost, "/mock/enclave-successors/authorize",
			[]byte(`{"kind":"` + strings.Repeat("a", 2000) + `"}`), http.StatusRequestEntityTooLarge, "TOO_LARGE"},
		{"body under --max-body but not an entry", http.MethodPost, "/v1/ledger/entries",
			[]byte(`{"kind":"` + strings.Repeat("a", 900) + `"}`), http.StatusBadRequest, "BAD_REQUEST"},
		{"unknown route", http.MethodGet, "/v1/no-such-thing", nil, http.StatusNotFound, "NOT_FOUND"},
		{"unknown route, POST", http.MethodPost, "/v2/ledger/entries", []byte(`{}`), http.StatusNotFound, "NOT_FOUND"},
		{"attestation without nonce", http.MethodGet, "/v1/attestation", nil, http.StatusBadRequest, "BAD_REQUEST"},
		{"attestation nonce too long", http.MethodGet, "/v1/attestation?nonce=" + strings.Repeat("n", 257), nil, http.StatusBadRequest, "BAD_REQUEST"},
		{"entries limit=5000", http.MethodGet, "/v1/ledger/entries?limit=5000", nil, http.StatusBadRequest, "BAD_REQUEST"},
		{"entries limit=0", http.MethodGet, "/v1/ledger/entries?limit=0", nil, http.StatusBadRequest, "BAD_REQUEST"},
		{"entries from=-1", http.MethodGet, "/v1/ledger/entries?from=-1", nil, http.StatusBadRequest, "BAD_REQUEST"},
		{"entries limit=abc", http.MethodGet, "/v1/ledger/entries?limit=abc", nil, http.StatusBadRequest, "BAD_REQUEST"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			ct := ""
			if c.body != nil {
				ct = "application/json"
			}
			status, body := s.do(c.method, c.path, ct, c.body)
			if status != c.status {
				t.Fatalf("status %d, want %d: %s", status, c.status, body)
			}
			code, msg, _ := apiError(t, body)
			if code != c.code || msg == "" {
				t.Errorf("error code %q message %q, want code %s", code, msg, c.code)
			}
		})
	}
	// The largest page is accepted.
	if status, body := s.get(fmt.Sprintf("/v1/ledger/entries?limit=%d", apiv1.MaxEntriesPage)); status != http.StatusOK {
		t.Errorf("limit=%d: %d %s", apiv1.MaxEntriesPage, status, body)
	}
	assertNothingWritten(t, s, before)
	if code, _ := s.get("/healthz"); code != http.StatusOK {
		t.Errorf("server unhealthy after the bad requests: %d", code)
	}
}

// assertNothingWritten checks that every entry after before is an enclave
// checkpoint (which the broker writes on its own timer), i.e. no request wrote.
func assertNothingWritten(t *testing.T, s *server, before *apiv1.HeadInfo) {
	t.Helper()
	es := s.allEntries()
	if uint64(len(es)) <= before.Seq || es[before.Seq].Hash() != before.Hash {
		t.Fatalf("the ledger no longer holds the old head seq %d", before.Seq)
	}
	for _, e := range es[before.Seq+1:] {
		if e.Kind != ledger.KindCheckpoint || e.Origin != ledger.OriginEnclave {
			t.Errorf("seq %d (%s from %s) was written after a refused request", e.Seq, e.Kind, e.Origin)
		}
	}
}

// TestMetricsListen: with --metrics-listen the metrics are served on their own
// listener and not on the API; a busy metrics address refuses to start.
func TestMetricsListen(t *testing.T) {
	h := newHarness(t)
	s := h.start(serverOpts{home: t.TempDir(), args: []string{"--metrics-listen", "127.0.0.1:0"}})
	l, err := s.waitLog(`"listening"`, startTimeout, msgIs("listening"))
	if err != nil {
		t.Fatal(err)
	}
	maddr := l.str("metrics_addr")
	if !strings.HasPrefix(maddr, "127.0.0.1:") || maddr == s.addr {
		t.Fatalf("listening line has metrics_addr %q, want 127.0.0.1:<port> apart from the API's %s", maddr, s.addr)
	}
	resp, err := http.Get("http://" + maddr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /metrics on --metrics-listen = %d", resp.StatusCode)
	}
	if v, ok := metric(t, string(body), "agentkeys_ready"); !ok || v != 1 {
		t.Errorf("/metrics on --metrics-listen: agentkeys_ready = %v (present %v), want 1", v, ok)
	}
	if code, body := s.get("/metrics"); code != http.StatusNotFound || strings.Contains(string(body), "agentkeys_ready") {
		t.Errorf("the API's /metrics with --metrics-listen = %d %.80s, want 404", code, body)
	}
	resp, err = http.Get("http://" + maddr + "/v1/enclave")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNotFound {
		t.Errorf("the metrics listener serves GET /v1/enclave: %d, want 404", resp.StatusCode)
	}

	// A second server on the same metrics address refuses to start (exit 2, a
	// bad flag, as a busy --listen).
	s2 := h.spawn(serverOpts{home: t.TempDir(), args: []string{"--metrics-listen", maddr}})
	if code := s2.waitExit(startTimeout); code != 2 || !strings.Contains(s2.stderr.String(), "--metrics-listen") {
		t.Errorf("a busy --metrics-listen: exit %d, stderr %s", code, s2.stderr.String())
	}
	if code := s.stop(os.Interrupt); code != 0 {
		t.Errorf("server stopped with exit %d, want 0", code)
	}
}
