package e2e

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/agentkeys/agentkeys/internal/daemon"
	"github.com/agentkeys/agentkeys/internal/home"
)

// benchJSON is the --json object of agentkeys bench, decoded strictly.
type benchJSON struct {
	Mode        string         `json:"mode"`
	Servers     []string       `json:"servers"`
	Agents      int            `json:"agents"`
	Paired      int            `json:"paired"`
	Concurrency int            `json:"concurrency"`
	Duration    float64        `json:"duration_seconds"`
	Requests    int            `json:"requests"`
	OK          int            `json:"ok"`
	Errors      map[string]int `json:"errors"`
	Throughput  float64        `json:"throughput_per_second"`
	Latency     struct {
		P50 float64 `json:"p50"`
		P90 float64 `json:"p90"`
		P99 float64 `json:"p99"`
		Max float64 `json:"max"`
	} `json:"latency_ms"`
	CPU       float64 `json:"cpu_seconds"`
	Presigned int     `json:"presigned"`
	ViaDaemon bool    `json:"via_daemon"`
}

// runBench runs agentkeys bench with --json and decodes its one object,
// refusing unknown fields; it fails on a non-zero exit.
func runBench(t *testing.T, h *harness, home string, args ...string) benchJSON {
	t.Helper()
	r := h.cli(home, append([]string{"bench"}, append(args, "--json")...)...)
	if r.code != 0 {
		t.Fatalf("bench %v: exit %d\nstdout %s\nstderr %s", args, r.code, r.stdout, r.stderr)
	}
	if strings.Count(r.stdout, "\n") != 1 {
		t.Fatalf("bench %v --json: want one line, got %q", args, r.stdout)
	}
	var keys map[string]any
	if err := json.Unmarshal([]byte(r.stdout), &keys); err != nil {
		t.Fatalf("bench %v: %v in %q", args, err, r.stdout)
	}
	want := []string{"agents", "concurrency", "cpu_seconds", "duration_seconds", "errors", "latency_ms", "mode", "ok", "paired", "requests", "servers", "throughput_per_second"}
	if slices.Contains(args, "--via-daemon") {
		want = append(want, "via_daemon")
	}
	if slices.Contains(args, "--presign") {
		want = append(want, "presigned")
	}
	slices.Sort(want)
	got := slices.Sorted(func(yield func(string) bool) {
		for k := range keys {
			if !yield(k) {
				return
			}
		}
	})
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("bench --json keys %v, want %v", got, want)
	}
	var b benchJSON
	dec := json.NewDecoder(strings.NewReader(r.stdout))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&b); err != nil {
		t.Fatalf("bench %v: %v", args, err)
	}
	return b
}

// sane checks the figures of a run that should have met no refusal.
func (b benchJSON) sane(t *testing.T, mode string) {
	t.Helper()
	l := b.Latency
	if b.Mode != mode || b.OK < 1 || b.Throughput <= 0 || b.Requests != b.OK || len(b.Errors) != 0 || b.CPU <= 0 ||
		b.Duration < 1 || !(0 < l.P50 && l.P50 <= l.P90 && l.P90 <= l.P99 && l.P99 <= l.Max) {
		t.Fatalf("bench %s: figures not sane: %+v", mode, b)
	}
}

// TestBench runs each mode of agentkeys bench against the real broker, started
// with the limits raised as the docs tell operators, checks the figures and
// the --json shape, that a second run reuses the agents, that a limit's
// refusals are reported as RATE_LIMITED, that agents are spread over several
// brokers, and that no token reaches the output.
func TestBench(t *testing.T) {
	h := newHarness(t)
	raised := []string{"--read-rate", "1000000/1m", "--mint-rate", "1000000/1m", "--pair-rate", "100000/1m,100000/1m",
		"--poll-rate", "100000/1m,100000/1m", "--oidc-audience", "sts.amazonaws.com", "--oidc-audience", "bench-aud"}
	s := h.start(serverOpts{home: t.TempDir(), args: raised})
	me := t.TempDir()
	args := []string{"--server", s.url, "--agents", "4", "--duration", "3s"}

	read := runBench(t, h, me, append([]string{"read"}, args...)...)
	read.sane(t, "read")
	if read.Agents != 4 || read.Paired != 4 || read.Concurrency != 4 || !slices.Equal(read.Servers, []string{s.url}) {
		t.Fatalf("first read run: %+v, want 4 agents paired now, concurrency 4, servers [%s]", read, s.url)
	}
	// The state is private and holds the sessions; no token reaches any output.
	state := filepath.Join(me, "bench")
	dirs, _ := filepath.Glob(filepath.Join(state, "*", "owner"))
	if len(dirs) != 1 {
		t.Fatalf("want one owner under %s, got %v", state, dirs)
	}
	ow, err := home.Dir(filepath.Dir(dirs[0])).Session()
	if err != nil {
		t.Fatal(err)
	}
	h.plant("bench owner token", ow.Token)
	for i := range 4 {
		d := daemon.Dir(filepath.Join(filepath.Dir(dirs[0]), "agents", "bench-"+strconv.Itoa(i)))
		as, err := d.LoadSession()
		if err != nil {
			t.Fatalf("agent bench-%d not kept: %v", i, err)
		}
		h.plant("bench agent token", as.Token)
		if fi, err := os.Stat(d.SessionPath()); err != nil || fi.Mode().Perm() != 0o600 {
			t.Fatalf("%s: %v, mode %v; want 0600", d.SessionPath(), err, fi.Mode())
		}
	}
	if fi, err := os.Stat(state); err != nil || fi.Mode().Perm() != 0o700 {
		t.Fatalf("%s: %v; want 0700", state, err)
	}

	port := s.url[strings.LastIndexByte(s.url, ':')+1:]
	tw := timeWait(t, port)
	again := runBench(t, h, me, append([]string{"read"}, args...)...)
	again.sane(t, "read")
	if again.Paired != 0 || again.Agents != 4 {
		t.Fatalf("second read run paired %d of %d agents; want all 4 reused", again.Paired, again.Agents)
	}
	// Each worker keeps one connection for the run.
	if n := timeWait(t, port) - tw; n > 32 {
		t.Fatalf("%d reads left %d connections to the broker in TIME_WAIT; want each worker's kept open", again.OK, n)
	}
	// Proofs signed before the run: each is used once and checked by the
	// broker (a replayed or stale one would be refused: no errors allowed).
	for _, mode := range []string{"read", "mint"} {
		pre := runBench(t, h, me, append([]string{mode, "--presign", "2000"}, args...)...)
		pre.sane(t, mode)
		if pre.Presigned != 2000 || pre.Paired != 0 {
			t.Fatalf("%s --presign 2000: %+v, want 2000 presigned and the kept agents", mode, pre)
		}
	}
	// Through daemons' sockets: 16 concurrent reads through one daemon, each a
	// broker round trip over the daemon's kept connections (its HTTP client
	// kept 2 idle, so most reads opened a connection and left it in TIME_WAIT).
	tw = timeWait(t, port)
	via := runBench(t, h, me, "read", "--via-daemon", "--server", s.url, "--agents", "1", "--concurrency", "16", "--duration", "2s")
	via.sane(t, "read")
	if !via.ViaDaemon || via.Paired != 0 || via.Concurrency != 16 {
		t.Fatalf("read --via-daemon: %+v, want via_daemon, the kept agent, concurrency 16", via)
	}
	if n := timeWait(t, port) - tw; n > 64 {
		t.Fatalf("%d reads through a daemon left %d connections to the broker in TIME_WAIT; want them kept open", via.OK, n)
	}
	// Concurrent reads through one daemon go to the broker together.
	if n := s.requests("POST /v1/reads"); n == 0 {
		t.Fatalf("%d reads through a daemon, 16 at a time, and no batch of reads reached the broker", via.OK)
	}
	mint := runBench(t, h, me, append([]string{"mint"}, args...)...)
	mint.sane(t, "mint")
	if mint.Paired != 0 {
		t.Fatalf("mint run paired %d agents; want the read run's reused", mint.Paired)
	}
	// Another audience: the kept agents' scope is widened, nothing re-paired.
	aud := runBench(t, h, me, append([]string{"mint", "--audience", "bench-aud"}, args...)...)
	aud.sane(t, "mint")
	if aud.Paired != 0 {
		t.Fatalf("mint for another audience paired %d agents; want the kept ones, their scope widened", aud.Paired)
	}
	// The bench owner's state is an owner home: the operator manages its
	// agents with the usual commands. A revoked agent is paired again.
	if r := h.cli(filepath.Dir(dirs[0]), "agent", "revoke", "bench-2", "--yes"); r.code != 0 {
		t.Fatalf("agent revoke bench-2 in the bench owner's home: exit %d, %s", r.code, r.stderr)
	}
	after := runBench(t, h, me, append([]string{"read"}, args...)...)
	after.sane(t, "read")
	if after.Paired != 1 {
		t.Fatalf("after revoking bench-2: paired %d, want 1", after.Paired)
	}
	// A pending request for an alias bench is about to pair (a run stopped
	// between request and approval leaves one): the bench owner denies it and
	// pairs its own.
	other := t.TempDir()
	r := h.cli(other, "daemon", "pair", "--server", s.url, "--owner", ow.Omni, "--alias", "bench-4", "--no-wait")
	var staleID string
	if r.code != 0 || !strings.HasPrefix(r.stdout, "Pair request ") {
		t.Fatalf("daemon pair --no-wait: exit %d, %s", r.code, r.stderr)
	}
	staleID = strings.Fields(r.stdout)[2]
	five := runBench(t, h, me, "read", "--server", s.url, "--agents", "5", "--duration", "500ms")
	if five.Paired != 1 || five.OK < 1 || len(five.Errors) != 0 {
		t.Fatalf("with a stale pending request for bench-4: %+v, want bench-4 paired", five)
	}
	if r := h.cli(other, "daemon", "pair", "--resume", staleID); r.code == 0 || !strings.Contains(r.stderr, "denied") {
		t.Fatalf("the stale request %s: exit %d, stderr %q; want it denied", staleID, r.code, r.stderr)
	}
	pair := runBench(t, h, me, append([]string{"pair"}, args...)...)
	pair.sane(t, "pair")
	if pair.Agents != 0 || pair.Concurrency != 4 {
		t.Fatalf("pair run: %+v", pair)
	}

	// Text output when piped: the summary, no progress line.
	r = h.cli(me, "bench", "read", "--server", s.url, "--agents", "2", "--duration", "500ms")
	if r.code != 0 || !strings.HasPrefix(r.stdout, "bench read: "+s.url+", 2 agents (0 paired now, 2 reused)") ||
		!strings.Contains(r.stdout, "throughput") || !strings.Contains(r.stdout, "p99") || r.stderr != "" {
		t.Fatalf("text output: exit %d\nstdout %q\nstderr %q", r.code, r.stdout, r.stderr)
	}

	// A broker at a low read limit: the bench reports the refusals, it does
	// not hide them, and says which flag raises the limit.
	low := h.start(serverOpts{home: t.TempDir(), args: []string{"--read-rate", "5/1m", "--pair-rate", "2/15s,100/1m"}})
	lim := runBench(t, h, me, "read", "--server", low.url, "--agents", "1", "--duration", "1s")
	if lim.OK != 5 || lim.Errors["RATE_LIMITED"] < 1 || lim.Requests != lim.OK+lim.Errors["RATE_LIMITED"] || len(lim.Errors) != 1 {
		t.Fatalf("read at --read-rate 5/1m: %+v; want 5 ok and the rest RATE_LIMITED", lim)
	}
	r = h.cli(me, "bench", "read", "--server", low.url, "--agents", "1", "--duration", "200ms")
	if !strings.Contains(r.stdout, "RATE_LIMITED") || !strings.Contains(r.stdout, "--read-rate") {
		t.Fatalf("text output under the limit names neither RATE_LIMITED nor --read-rate: %q", r.stdout)
	}

	// Two brokers: agents spread over both, one owner on each.
	two := runBench(t, h, me, "read", "--server", s.url+","+low.url, "--agents", "2", "--duration", "500ms")
	if !slices.Equal(two.Servers, []string{s.url, low.url}) || two.Paired != 1 || two.OK < 1 {
		t.Fatalf("two brokers: %+v; want agent bench-1 paired on the second", two)
	}
	// The broker's pair limit (2 per 15s from this address, both spent: wide
	// enough that a loaded machine cannot let the window pass first): setup
	// waits for it, saying so and naming the flag, and then pairs.
	r = h.cli(me, "bench", "read", "--server", low.url, "--agents", "3", "--duration", "200ms", "--json")
	if r.code != 0 || !strings.Contains(r.stderr, "pair limit refused pairing bench-2") || !strings.Contains(r.stderr, "--pair-rate") ||
		!strings.Contains(r.stdout, `"paired":1`) {
		t.Fatalf("pairing past the pair limit: exit %d\nstdout %q\nstderr %q", r.code, r.stdout, r.stderr)
	}

	// A new broker at the URL of an old one (another attestation key): bench
	// refuses to use its state there and says what to delete.
	low.stop(os.Interrupt)
	fresh := h.start(serverOpts{home: t.TempDir(), args: []string{"--listen", low.addr}})
	if fresh.url != low.url {
		t.Fatalf("the new broker listens at %s, not %s", fresh.url, low.url)
	}
	r = h.cli(me, "bench", "read", "--server", low.url, "--agents", "1", "--duration", "200ms")
	lowState := filepath.Join(state, benchHash(low.url))
	if r.code == 0 || !strings.Contains(r.stderr, "attestation key changed") || !strings.Contains(r.stderr, "delete "+lowState) {
		t.Fatalf("bench against a new broker at an old URL: exit %d, stderr %q", r.code, r.stderr)
	}
	if err := os.RemoveAll(lowState); err != nil {
		t.Fatal(err)
	}
	if b := runBench(t, h, me, "read", "--server", low.url, "--agents", "1", "--duration", "200ms"); b.Paired != 1 {
		t.Fatalf("after deleting its state: %+v, want a new owner and agent", b)
	}

	// Bad input: a clear error, nothing created.
	r = h.cli(me, "bench", "read", "--agents", "2")
	if r.code == 0 || !strings.Contains(r.stderr, "--server is required") {
		t.Fatalf("without --server: exit %d, stderr %q", r.code, r.stderr)
	}
	r = h.cli(me, "bench", "mint", "--server", s.url, "--agents", "0")
	if r.code == 0 || !strings.Contains(r.stderr, "--agents must be") {
		t.Fatalf("--agents 0: exit %d, stderr %q", r.code, r.stderr)
	}
	for _, bad := range [][]string{{"--presign", "-1"}, {"--presign", "200001"}, {"--presign", "10", "--via-daemon"}} {
		r = h.cli(me, append([]string{"bench", "read", "--server", s.url}, bad...)...)
		if r.code != 2 || !strings.Contains(r.stderr, "--presign must be") {
			t.Fatalf("%v: exit %d, stderr %q; want a usage error naming --presign", bad, r.code, r.stderr)
		}
	}
}

// timeWait counts this machine's TCP connections in TIME_WAIT with port at
// either end (/proc/net/tcp and tcp6).
func timeWait(t *testing.T, port string) int {
	t.Helper()
	p, err := strconv.Atoi(port)
	if err != nil {
		t.Fatal(err)
	}
	hexPort := fmt.Sprintf(":%04X", p)
	n := 0
	for _, f := range []string{"/proc/net/tcp", "/proc/net/tcp6"} {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatalf("counting TIME_WAIT connections: %v", err)
		}
		for _, l := range strings.Split(string(b), "\n")[1:] {
			fs := strings.Fields(l)
			if len(fs) > 3 && fs[3] == "06" && (strings.HasSuffix(fs[1], hexPort) || strings.HasSuffix(fs[2], hexPort)) {
				n++
			}
		}
	}
	return n
}

// benchHash is the directory bench keeps a broker's owner in: 12 hex digits of
// the URL's SHA-256.
func benchHash(url string) string {
	h := sha256.Sum256([]byte(url))
	return hex.EncodeToString(h[:6])
}
