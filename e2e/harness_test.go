package e2e

import (
	"bufio"
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/agentkeys/agentkeys/internal/apiv1"
	"github.com/agentkeys/agentkeys/internal/backoff"
	"github.com/agentkeys/agentkeys/internal/broker"
	"github.com/agentkeys/agentkeys/internal/client"
	"github.com/agentkeys/agentkeys/internal/daemon"
	"github.com/agentkeys/agentkeys/internal/ledger"
)

// bin is the agentkeys binary built by TestMain, in binDir.
var bin, binDir string

func TestMain(m *testing.M) { os.Exit(runMain(m)) }

func runMain(m *testing.M) int {
	// Outside the temp dir, as an installed binary is: daemon mcp-config refuses
	// to print a command path there.
	cache, err := os.UserCacheDir()
	if err == nil {
		cache = filepath.Join(cache, "agentkeys-test")
		err = os.MkdirAll(cache, 0o700)
	}
	if err == nil {
		binDir, err = os.MkdirTemp(cache, "e2e-")
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2e:", err)
		return 1
	}
	defer os.RemoveAll(binDir)
	bin = filepath.Join(binDir, "agentkeys")
	build := exec.Command("go", "build", "-o", bin, "github.com/agentkeys/agentkeys/cmd/agentkeys")
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "e2e: building agentkeys:", err)
		return 1
	}
	return m.Run()
}

// Deadlines for process milestones. They bound waits; nothing asserts on time.
const (
	startTimeout = 30 * time.Second
	stopTimeout  = 20 * time.Second
	cliTimeout   = 60 * time.Second
)

// output is a concurrency-safe buffer that a process writes to and tests wait on.
type output struct {
	mu      sync.Mutex
	buf     bytes.Buffer
	changed chan struct{} // closed and replaced on every write
}

func newOutput() *output { return &output{changed: make(chan struct{})} }

func (o *output) Write(p []byte) (int, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.buf.Write(p)
	close(o.changed)
	o.changed = make(chan struct{})
	return len(p), nil
}

func (o *output) String() string {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.buf.String()
}

func (o *output) snapshot() (string, <-chan struct{}) {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.buf.String(), o.changed
}

// harness tracks every process a test starts, so that all their output can be
// searched for planted secrets when the test ends.
type harness struct {
	t       *testing.T
	mu      sync.Mutex
	outputs []*output
	secrets map[string]string // secret text → what it is (never printed)
}

func newHarness(t *testing.T) *harness {
	t.Helper()
	h := &harness{t: t, secrets: map[string]string{}}
	// Registered first, so it runs last: after every process has been stopped.
	t.Cleanup(h.checkSecrets)
	return h
}

func (h *harness) newOutput() *output {
	o := newOutput()
	h.mu.Lock()
	h.outputs = append(h.outputs, o)
	h.mu.Unlock()
	return o
}

// plant records a secret that must never appear in any process output.
func (h *harness) plant(what, secret string) {
	if len(secret) < 16 {
		h.t.Fatalf("planted secret %s is too short to search for", what)
	}
	h.mu.Lock()
	h.secrets[secret] = what
	h.mu.Unlock()
}

// plantServer plants the secrets a server keeps on disk: the operator key in
// its data dir (its PEM body and raw seed) and the platform key file.
func (h *harness) plantServer(o serverOpts) {
	dir := o.effectiveDataDir()
	if b, err := os.ReadFile(broker.OperatorKeyPath(dir)); err == nil {
		blk, _ := pem.Decode(b)
		if blk == nil {
			h.t.Fatalf("operator key in %s is not PEM", dir)
		}
		body := strings.TrimSpace(string(b))
		body = strings.TrimPrefix(body, "-----BEGIN PRIVATE KEY-----")
		body = strings.TrimSuffix(body, "-----END PRIVATE KEY-----")
		for _, line := range strings.Fields(body) {
			h.plant("operator key PEM body line", line)
		}
		h.plant("operator key PEM body", strings.Join(strings.Fields(body), ""))
		k, err := broker.LoadOperatorKey(broker.OperatorKeyPath(dir))
		if err != nil {
			h.t.Fatal(err)
		}
		h.plant("operator private key (hex seed)", hex.EncodeToString(k.Seed()))
	}
	if b, err := os.ReadFile(o.platformKeyFile()); err == nil {
		h.plant("platform.key contents", strings.TrimSpace(string(b)))
	}
}

// allOutput is everything every process of this test printed so far.
func (h *harness) allOutput() string {
	h.mu.Lock()
	defer h.mu.Unlock()
	var sb strings.Builder
	for _, o := range h.outputs {
		sb.WriteString(o.String())
		sb.WriteByte('\n')
	}
	return sb.String()
}

func (h *harness) checkSecrets() {
	all := h.allOutput()
	lower := strings.ToLower(all)
	h.mu.Lock()
	defer h.mu.Unlock()
	for s, what := range h.secrets {
		if strings.Contains(all, s) || strings.Contains(lower, strings.ToLower(s)) {
			h.t.Errorf("secret leaked: the %s appeared in the output of a process", what)
		}
	}
}

// childEnv is the test process environment without any AGENTKEYS_ variable, plus kv.
func childEnv(kv ...string) []string {
	var env []string
	for _, e := range os.Environ() {
		if !strings.HasPrefix(e, "AGENTKEYS_") {
			env = append(env, e)
		}
	}
	return append(env, kv...)
}

// serverOpts describes one server process.
type serverOpts struct {
	home        string   // AGENTKEYS_HOME (required)
	dataDir     string   // --data-dir; "" = the default, $AGENTKEYS_HOME/server
	platformKey string   // AGENTKEYS_PLATFORM_KEY, when set
	args        []string // extra flags
	env         []string // extra environment variables
	exe         string   // the executable to run; "" = the built binary (bin)
}

func (o serverOpts) effectiveDataDir() string {
	if o.dataDir != "" {
		return o.dataDir
	}
	return filepath.Join(o.home, "server")
}

// platformKeyFile is the server's platform key file: --platform-key when
// passed, else the default $AGENTKEYS_HOME/platform.key (outside the data dir).
func (o serverOpts) platformKeyFile() string {
	for i, a := range o.args {
		if a == "--platform-key" && i+1 < len(o.args) {
			return o.args[i+1]
		}
	}
	return filepath.Join(o.home, "platform.key")
}

// server is a running `agentkeys server` process.
type server struct {
	h      *harness
	opts   serverOpts
	cmd    *exec.Cmd
	stdout *output
	stderr *output
	done   chan struct{} // closed when the process has exited
	state  *os.ProcessState

	addr   string // host:port from the "listening" log line
	url    string
	client *client.Client
}

// spawn starts a server process without waiting for anything. It is killed when
// the test ends.
func (h *harness) spawn(o serverOpts) *server {
	h.t.Helper()
	if o.home == "" {
		h.t.Fatal("serverOpts.home is required")
	}
	args := []string{"server", "--listen", "127.0.0.1:0"}
	if o.dataDir != "" {
		args = append(args, "--data-dir", o.dataDir)
	}
	args = append(args, o.args...)
	env := []string{"AGENTKEYS_HOME=" + o.home}
	if o.platformKey != "" {
		env = append(env, "AGENTKEYS_PLATFORM_KEY="+o.platformKey)
	}
	env = append(env, o.env...)
	s := &server{h: h, opts: o, stdout: h.newOutput(), stderr: h.newOutput(), done: make(chan struct{})}
	exe := bin
	if o.exe != "" {
		exe = o.exe
	}
	s.cmd = exec.Command(exe, args...)
	s.cmd.Env = childEnv(env...)
	s.cmd.Stdout, s.cmd.Stderr = s.stdout, s.stderr
	if err := s.cmd.Start(); err != nil {
		h.t.Fatalf("starting server: %v", err)
	}
	go func() {
		s.cmd.Wait()
		s.state = s.cmd.ProcessState
		close(s.done)
	}()
	h.t.Cleanup(func() {
		select {
		case <-s.done:
		default:
			s.cmd.Process.Kill()
			<-s.done
		}
		if h.t.Failed() {
			h.t.Logf("server stderr (%s):\n%s", s.opts.effectiveDataDir(), s.stderr.String())
		}
	})
	return s
}

// start spawns a server and waits until it is ready.
func (h *harness) start(o serverOpts) *server {
	h.t.Helper()
	s := h.spawn(o)
	s.waitListening()
	s.waitReady()
	return s
}

// logLine is one JSON log record.
type logLine map[string]any

func (l logLine) str(k string) string { v, _ := l[k].(string); return v }

// parseLogs parses server stderr as JSON lines; a line that is not JSON is a failure.
func parseLogs(t *testing.T, text string) []logLine {
	t.Helper()
	var out []logLine
	sc := bufio.NewScanner(strings.NewReader(text))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		if strings.TrimSpace(sc.Text()) == "" {
			continue
		}
		var l logLine
		if err := json.Unmarshal(sc.Bytes(), &l); err != nil {
			t.Errorf("server log line is not JSON: %q", sc.Text())
			continue
		}
		out = append(out, l)
	}
	return out
}

// waitFor polls cond until it holds or timeout passes, and reports whether it
// held. It stands in for fixed sleeps: a test waits as long as the condition
// takes and no longer, and fails with its own message when it never holds. The
// polls back off from 1 ms to 250 ms.
func waitFor(timeout time.Duration, cond func() bool) bool {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	pause := backoff.Backoff{Initial: time.Millisecond, Max: 250 * time.Millisecond}
	for !cond() {
		if pause.Wait(ctx) != nil {
			return cond()
		}
	}
	return true
}

// requests is how many requests to route the server has answered, whatever
// their status, by its /metrics (agentkeys_http_requests_total).
func (s *server) requests(route string) float64 {
	s.h.t.Helper()
	code, body := s.get("/metrics")
	if code != http.StatusOK {
		s.h.t.Fatalf("/metrics = %d", code)
	}
	n := 0.0
	for line := range strings.Lines(string(body)) {
		if strings.HasPrefix(line, "agentkeys_http_requests_total{") && strings.Contains(line, `route="`+route+`"`) {
			f := strings.Fields(line)
			v, err := strconv.ParseFloat(f[len(f)-1], 64)
			if err != nil {
				s.h.t.Fatalf("metric line %q: %v", line, err)
			}
			n += v
		}
	}
	return n
}

// waitLog waits until a complete log line satisfies match, the process exits, or
// the deadline passes.
func (s *server) waitLog(what string, timeout time.Duration, match func(logLine) bool) (logLine, error) {
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	for {
		text, changed := s.stderr.snapshot()
		if i := strings.LastIndexByte(text, '\n'); i >= 0 {
			for _, line := range strings.Split(text[:i], "\n") {
				var l logLine
				if json.Unmarshal([]byte(line), &l) == nil && match(l) {
					return l, nil
				}
			}
		}
		select {
		case <-changed:
		case <-s.done:
			// the process may have written its last lines just before exiting
			if text, _ := s.stderr.snapshot(); text != "" {
				for _, line := range strings.Split(text, "\n") {
					var l logLine
					if json.Unmarshal([]byte(line), &l) == nil && match(l) {
						return l, nil
					}
				}
			}
			return nil, fmt.Errorf("server exited (%v) before logging %s; stderr:\n%s", s.state, what, s.stderr.String())
		case <-deadline.C:
			return nil, fmt.Errorf("no %s log line within %s; stderr:\n%s", what, timeout, s.stderr.String())
		}
	}
}

func msgIs(msg string) func(logLine) bool {
	return func(l logLine) bool { return l.str("msg") == msg }
}

// waitListening waits for the "listening" line and takes the address from it.
func (s *server) waitListening() {
	t := s.h.t
	t.Helper()
	l, err := s.waitLog(`"listening"`, startTimeout, msgIs("listening"))
	if err != nil {
		t.Fatal(err)
	}
	s.addr = l.str("addr")
	if !strings.HasPrefix(s.addr, "127.0.0.1:") || strings.HasSuffix(s.addr, ":0") {
		t.Fatalf("listening line has addr %q, want 127.0.0.1:<port>", s.addr)
	}
	s.url = "http://" + s.addr
	if s.client, err = client.New(s.url); err != nil {
		t.Fatal(err)
	}
	s.h.plantServer(s.opts)
}

// waitReady waits for the "ready" line, then checks that /readyz agrees.
func (s *server) waitReady() {
	t := s.h.t
	t.Helper()
	if _, err := s.waitLog(`"ready"`, startTimeout, msgIs("ready")); err != nil {
		t.Fatal(err)
	}
	code, body := s.get("/readyz")
	if code != http.StatusOK || !strings.Contains(string(body), `"ready":true`) {
		t.Fatalf("after the ready log line, /readyz = %d %s", code, body)
	}
}

// waitExit waits for the process to end and returns its exit code (-1 if killed by
// a signal).
func (s *server) waitExit(timeout time.Duration) int {
	t := s.h.t
	t.Helper()
	select {
	case <-s.done:
	case <-time.After(timeout):
		t.Fatalf("server did not exit within %s; stderr:\n%s", timeout, s.stderr.String())
	}
	return s.state.ExitCode()
}

// stop sends sig and returns the exit code.
func (s *server) stop(sig os.Signal) int {
	s.h.t.Helper()
	if err := s.cmd.Process.Signal(sig); err != nil {
		s.h.t.Fatalf("signalling server: %v", err)
	}
	return s.waitExit(stopTimeout)
}

// kill is kill -9.
func (s *server) kill() {
	s.h.t.Helper()
	s.cmd.Process.Kill()
	if code := s.waitExit(stopTimeout); code != -1 {
		if ws, ok := s.state.Sys().(syscall.WaitStatus); !ok || !ws.Signaled() {
			s.h.t.Fatalf("server was not killed by SIGKILL: exit code %d", code)
		}
	}
}

// get fetches path and returns status and body.
func (s *server) get(path string) (int, []byte) {
	s.h.t.Helper()
	return s.do(http.MethodGet, path, "", nil)
}

// do sends one request and returns status and body.
func (s *server) do(method, path, contentType string, body []byte) (int, []byte) {
	t := s.h.t
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, s.url+path, rd)
	if err != nil {
		t.Fatal(err)
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: reading body: %v", method, path, err)
	}
	return resp.StatusCode, b
}

// postJSON posts v as JSON (or v itself when it is []byte) to path.
func (s *server) postJSON(path string, v any) (int, []byte) {
	s.h.t.Helper()
	b, ok := v.([]byte)
	if !ok {
		var err error
		if b, err = json.Marshal(v); err != nil {
			s.h.t.Fatal(err)
		}
	}
	return s.do(http.MethodPost, path, "application/json", b)
}

// apiError decodes {"error":{"code","message","fix"}}; it fails the test if body
// is not that shape.
func apiError(t *testing.T, body []byte) (code, message, fix string) {
	t.Helper()
	var eb struct {
		Error *struct {
			Code, Message, Fix string
		} `json:"error"`
	}
	if err := json.Unmarshal(body, &eb); err != nil || eb.Error == nil || eb.Error.Code == "" {
		t.Fatalf("error body is not {\"error\":{\"code\",…}}: %s", body)
	}
	return eb.Error.Code, eb.Error.Message, eb.Error.Fix
}

// operatorKey loads the operator key from a data dir.
func operatorKey(t *testing.T, dataDir string) ed25519.PrivateKey {
	t.Helper()
	k, err := broker.LoadOperatorKey(broker.OperatorKeyPath(dataDir))
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// allEntries pages through GET /v1/ledger/entries.
func (s *server) allEntries() []ledger.Entry {
	t := s.h.t
	t.Helper()
	var all []ledger.Entry
	for from := uint64(0); ; {
		p, err := s.client.Entries(context.Background(), from, apiv1.MaxEntriesPage)
		if err != nil {
			t.Fatalf("GET /v1/ledger/entries?from=%d: %v", from, err)
		}
		all = append(all, p.Entries...)
		if len(p.Entries) < apiv1.MaxEntriesPage {
			return all
		}
		from = p.Next
	}
}

// head fetches GET /v1/ledger/head.
func (s *server) head() *apiv1.HeadInfo {
	s.h.t.Helper()
	hd, err := s.client.Head(context.Background())
	if err != nil {
		s.h.t.Fatalf("GET /v1/ledger/head: %v", err)
	}
	return hd
}

// cliResult is one finished CLI run.
type cliResult struct {
	stdout, stderr string
	code           int
}

// cli runs the agentkeys binary with AGENTKEYS_HOME=home.
func (h *harness) cli(home string, args ...string) cliResult {
	h.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), cliTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Env = childEnv("AGENTKEYS_HOME=" + home)
	stdout, stderr := h.newOutput(), h.newOutput()
	cmd.Stdout, cmd.Stderr = stdout, stderr
	err := cmd.Run()
	var ee *exec.ExitError
	if err != nil && !errors.As(err, &ee) {
		h.t.Fatalf("running agentkeys %s: %v", strings.Join(args, " "), err)
	}
	if ctx.Err() != nil {
		h.t.Fatalf("agentkeys %s did not finish within %s", strings.Join(args, " "), cliTimeout)
	}
	return cliResult{stdout: stdout.String(), stderr: stderr.String(), code: cmd.ProcessState.ExitCode()}
}

// auditOK runs `audit verify` with args and checks it passes with one summary line.
func (h *harness) auditOK(home string, args ...string) string {
	h.t.Helper()
	r := h.cli(home, append([]string{"audit", "verify"}, args...)...)
	if r.code != 0 || r.stderr != "" {
		h.t.Fatalf("audit verify %v: exit %d, stderr %q, stdout %q", args, r.code, r.stderr, r.stdout)
	}
	if !strings.HasPrefix(r.stdout, "ledger valid: ") || strings.Count(r.stdout, "\n") != 1 || !strings.HasSuffix(r.stdout, "\n") {
		h.t.Fatalf("audit verify %v: want one line \"ledger valid: …\", got %q", args, r.stdout)
	}
	return strings.TrimSpace(r.stdout)
}

// randomHex returns n random bytes in lowercase hex.
func randomHex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// newEntry builds an unsigned governance entry linking to hd.
func newEntry(t *testing.T, hd *apiv1.HeadInfo, kind string, payload any) ledger.Entry {
	t.Helper()
	p, err := ledger.MarshalPayload(payload)
	if err != nil {
		t.Fatal(err)
	}
	ht, err := time.Parse(time.RFC3339Nano, hd.Time)
	if err != nil {
		t.Fatalf("head time %q: %v", hd.Time, err)
	}
	return ledger.Entry{Seq: hd.Seq + 1, PrevHash: hd.Hash, Time: max(time.Now().UnixNano(), ht.UnixNano()),
		Kind: kind, Origin: ledger.OriginGovernance, Payload: p}
}

// fileBytes reads a file or fails.
func fileBytes(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// agentSession is the session a paired daemon home dh holds, and its proof key.
func agentSession(t *testing.T, dh string) (*daemon.Session, *ecdsa.PrivateKey) {
	t.Helper()
	sess, err := daemon.DirOf(dh).LoadSession()
	if err != nil {
		t.Fatal(err)
	}
	key, err := daemon.DecodeKey(sess.ProofKey)
	if err != nil {
		t.Fatal(err)
	}
	return sess, key
}
