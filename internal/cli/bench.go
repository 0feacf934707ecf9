package cli

import (
	"context"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/spf13/cobra"

	"github.com/agentkeys/agentkeys/internal/apiv1"
	"github.com/agentkeys/agentkeys/internal/bench"
	"github.com/agentkeys/agentkeys/internal/client"
	"github.com/agentkeys/agentkeys/internal/daemon"
	"github.com/agentkeys/agentkeys/internal/dpop"
	"github.com/agentkeys/agentkeys/internal/home"
	"github.com/agentkeys/agentkeys/internal/problem"
	"github.com/agentkeys/agentkeys/internal/seal"
)

// benchPairers is how many agents bench pairs at once.
const benchPairers = 8

// benchService is the owner-wide credential bench stores and its agents read.
const benchService = "bench"

// benchOpts are the flags every bench mode shares.
type benchOpts struct {
	servers     []string
	agents      int
	concurrency int
	duration    time.Duration
	state       string
	audience    string
	asJSON      bool
	viaDaemon   bool
	presign     int
}

// benchMaxPresign bounds --presign: a proof is ~560 bytes, so ~110 MB.
const benchMaxPresign = 200_000

func benchCmd(e *env) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "bench",
		Short: "Measure a running broker over HTTP: credential reads, identity-token mints, pairings",
		Long: `A load generator for operators. It creates its own owner on each broker (state in
--state, default $AGENTKEYS_HOME/bench, 0700: the owner's identity key and session
and each agent's daemon keys and session), pairs its agents through the real flow
(pair request, approval signed with the owner's identity key, poll), then drives
the HTTP API with a fresh DPoP proof on every request for --duration and prints
throughput, p50/p90/p99/max latency (of successful requests), errors by code and
bench's own CPU time during the run. Each worker keeps one HTTP/1.1 connection
(direct, no HTTP proxy) and has one request in flight.

Signing a proof costs bench about as much CPU as checking it costs the broker, so
when bench and the broker share a machine, bench's signatures take CPU from the
broker. read and mint --presign N sign N proofs (spread over the agents) before
the run starts: each is still a unique, fresh proof the broker checks and
remembers, used once while under 30 s old; when they run out, proofs are signed
as requests are sent. Use it to measure the broker's capacity from the same
machine, and compare with a run without it (what agents that sign every request
meet).

Agents are kept between runs; a later run pairs only the missing ones. With
several --server URLs the agents are spread over them, one owner per broker.

The broker's limits apply to a bench like to anyone, and refusals are reported as
RATE_LIMITED, not hidden: reads are limited per agent session (server --read-rate,
default 100/1m), mints per agent (--mint-rate, 60/1m), sign-ups, logins, pair
requests and polls per source address and in all (--signup-rate, --login-rate,
--pair-rate, --poll-rate). To measure throughput, run the broker for the bench
with raised limits, e.g.
  agentkeys server --read-rate 1000000/1m --mint-rate 1000000/1m \
    --pair-rate 100000/1m,100000/1m --poll-rate 100000/1m,100000/1m \
    --oidc-audience sts.amazonaws.com
Pairing the agents at the default --pair-rate (10 a minute per address) waits for
the limit, saying so on stderr.`,
		Example: "  agentkeys bench read --server http://127.0.0.1:8090 --agents 16 --duration 10s\n" +
			"  agentkeys bench mint --server http://127.0.0.1:8090 --agents 16 --duration 10s --json\n" +
			"  agentkeys bench mint --server http://127.0.0.1:8090 --agents 16 --duration 10s --presign 60000\n" +
			"  agentkeys bench pair --server http://127.0.0.1:8090 --concurrency 4 --duration 10s\n" +
			"  agentkeys bench read --server http://10.0.0.1:8090,http://10.0.0.2:8090 --agents 32 --duration 30s",
	}
	for _, mode := range []string{"read", "mint", "pair"} {
		cmd.AddCommand(benchModeCmd(e, mode))
	}
	return cmd
}

func benchModeCmd(e *env, mode string) *cobra.Command {
	var o benchOpts
	short := map[string]string{
		"read": "Agents read a credential in session mode (POST /v1/credentials/bench/read), each with a DPoP proof",
		"mint": "Agents mint identity tokens (POST /v1/oidc/token) for --audience, each with a DPoP proof",
		"pair": "Pair new agents: pair request, owner's signed approval, poll and open the sealed session",
	}[mode]
	long := short + ".\n\nSee agentkeys bench --help for the state it keeps and the broker limits that apply."
	if mode == "pair" {
		long += "\n\nEach worker pairs new agents (alias bench-pair-…, empty scope, 5-minute session) for\n" +
			"--duration; --concurrency defaults to --agents. Every pairing is a pair request from\n" +
			"this address, so the broker's --pair-rate bounds it."
	}
	example := fmt.Sprintf("  agentkeys bench %s --server http://127.0.0.1:8090 --agents 4 --duration 10s\n  agentkeys bench %s --server http://127.0.0.1:8090 --agents 16 --duration 30s --json", mode, mode)
	if mode == "pair" {
		example = "  agentkeys bench pair --server http://127.0.0.1:8090 --concurrency 4 --duration 10s\n  agentkeys bench pair --server http://127.0.0.1:8090 --concurrency 8 --duration 30s --json"
	}
	cmd := &cobra.Command{
		Use:     mode,
		Short:   short,
		Long:    long,
		Example: example,
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if len(o.servers) == 0 {
				return problem.New(problem.BadRequest, "--server is required", "e.g. agentkeys bench "+mode+" --server http://127.0.0.1:8090")
			}
			if o.agents < 1 || o.agents > 1000 || o.concurrency < 0 || o.concurrency > 1000 {
				return problem.New(problem.BadRequest, "--agents must be 1-1000 and --concurrency 0-1000", "e.g. --agents 16 (--concurrency defaults to --agents)")
			}
			if o.presign < 0 || o.presign > benchMaxPresign || (o.presign > 0 && o.viaDaemon) {
				return problem.Newf(problem.BadRequest, "e.g. --presign 60000 for a 10s run at up to 6,000/s; not with --via-daemon (the daemons sign their own)",
					"--presign must be 0-%d", benchMaxPresign)
			}
			if o.duration < 100*time.Millisecond || o.duration > 24*time.Hour {
				return problem.New(problem.BadRequest, "--duration must be between 100ms and 24h", "e.g. --duration 10s")
			}
			if o.concurrency == 0 {
				o.concurrency = o.agents
			}
			if o.state == "" {
				o.state = filepath.Join(e.home(), "bench")
			}
			return e.runBench(cmd.Context(), mode, o)
		},
	}
	cmd.Flags().StringSliceVar(&o.servers, "server", nil, "broker URL(s), comma-separated; agents are spread over them")
	cmd.Flags().IntVar(&o.agents, "agents", 4, "agents to pair (kept in --state and reused by later runs)")
	cmd.Flags().IntVar(&o.concurrency, "concurrency", 0, "concurrent requests (default: --agents); worker i uses agent i mod --agents")
	cmd.Flags().DurationVar(&o.duration, "duration", 10*time.Second, "how long to send requests")
	cmd.Flags().StringVar(&o.state, "state", "", "bench's own state directory (default $AGENTKEYS_HOME/bench)")
	cmd.Flags().BoolVar(&o.asJSON, "json", false, "print the result as one JSON object")
	if mode == "read" {
		cmd.Flags().BoolVar(&o.viaDaemon, "via-daemon", false, "read through a daemon's Unix socket (GET /credentials/bench): bench serves one daemon per agent, as daemon serve does")
	}
	if mode != "pair" {
		cmd.Flags().IntVar(&o.presign, "presign", 0, "DPoP proofs to sign before the run starts, spread over the agents (each used once, while under 30s old; then proofs are signed as requests are sent): measures the broker without the load client's signatures on the same cores")
	}
	if mode == "mint" {
		cmd.Flags().StringVar(&o.audience, "audience", apiv1.AWSAudience, "token audience; the broker must accept it (server --oidc-audience)")
	}
	return cmd
}

// benchResult is what bench prints (--json: this object).
type benchResult struct {
	Mode        string         `json:"mode"`
	Servers     []string       `json:"servers"`
	Agents      int            `json:"agents"`
	Paired      int            `json:"paired"` // agents paired by this run (the others were reused)
	Concurrency int            `json:"concurrency"`
	Duration    float64        `json:"duration_seconds"`
	Requests    int            `json:"requests"`
	OK          int            `json:"ok"`
	Errors      map[string]int `json:"errors"`
	Throughput  float64        `json:"throughput_per_second"`
	Latency     bench.Latency  `json:"latency_ms"`
	ViaDaemon   bool           `json:"via_daemon,omitempty"` // read --via-daemon
	Presigned   int            `json:"presigned,omitempty"`  // DPoP proofs signed before the run (--presign)
	CPU         float64        `json:"cpu_seconds"`          // bench's own CPU time during the run (user + system)
}

// benchOwner is bench's owner on one broker.
type benchOwner struct {
	dir home.Dir
	c   *client.Session
	key ed25519.PrivateKey
	s   *home.Session
}

// benchAgent is a paired agent: its broker, session token, proof key and
// channel key, and the proofs it sends (signed before the run with --presign,
// else as requests are sent).
type benchAgent struct {
	server  string
	token   string
	key     *ecdsa.PrivateKey
	channel []byte
	proofs  *bench.Stock
}

// benchProofAge is how old a proof signed before the run may be when it is
// sent: half the broker's iat window (dpop.Skew), so it is fresh when checked.
const benchProofAge = dpop.Skew / 2

// benchPosters returns the op's way to send: worker w POSTs to path as agent
// w mod len(agents), with the agent's next proof, on its own kept connection
// (closed by the returned function).
func benchPosters(agents []benchAgent, workers int, path string, body []byte) (func(ctx context.Context, w int, out any) error, func(), error) {
	conns := make([]*benchConn, workers)
	for w := range conns {
		var err error
		if conns[w], err = newBenchConn(agents[w%len(agents)].server); err != nil {
			return nil, nil, err
		}
	}
	post := func(ctx context.Context, w int, out any) error {
		a := &agents[w%len(agents)]
		for retried := false; ; retried = true {
			p, at, err := a.proofs.Next()
			if err != nil {
				return err
			}
			err = conns[w].post(ctx, path, a.token, p, body, out)
			// A broker that started in the second the proof is dated (or
			// after) refuses it, with a pause to wait: as the agents' client
			// does, bench waits and retries once with a proof made later,
			// dropping the stock's proofs of that second.
			wait, early := client.ProofBeforeStart(err)
			if retried || !early {
				return err
			}
			a.proofs.DropThrough(at)
			select {
			case <-ctx.Done():
				return err
			case <-time.After(wait):
			}
		}
	}
	return post, func() {
		for _, c := range conns {
			c.close()
		}
	}, nil
}

// benchPresign gives each agent its stock of proofs for method and path:
// --presign in all, spread evenly, signed on every core before the run (none
// with --presign 0: each proof is then signed as its request is sent).
func (e *env) benchPresign(agents []benchAgent, o benchOpts, method, path string) error {
	n := o.presign
	if n > 0 && !o.asJSON {
		fmt.Fprintf(e.stderr, "Signing %d DPoP proofs before the run (--presign).\n", n)
	}
	errs := make([]error, len(agents))
	next := make(chan int)
	var wg sync.WaitGroup
	for range runtime.GOMAXPROCS(0) {
		wg.Go(func() {
			for i := range next {
				a := &agents[i]
				share := n / len(agents)
				if i < n%len(agents) {
					share++
				}
				signer, err := dpop.NewSigner(a.key, a.token)
				if err != nil {
					errs[i] = err
					continue
				}
				a.proofs, errs[i] = bench.NewStock(share, benchProofAge, nil, func(now time.Time) (string, error) {
					return signer.Sign(method, a.server+path, now)
				})
			}
		})
	}
	for i := range agents {
		next <- i
	}
	close(next)
	wg.Wait()
	return errors.Join(errs...)
}

func (e *env) runBench(ctx context.Context, mode string, o benchOpts) error {
	if err := os.MkdirAll(o.state, 0o700); err != nil {
		return problem.Wrap(err, problem.BadRequest, "pass a directory you may write with --state", "cannot create %s: %v", o.state, err)
	}
	if err := os.Chmod(o.state, 0o700); err != nil {
		return err
	}
	// One transport for the run, keeping an idle connection per worker, so
	// that the bench measures requests rather than TCP and TLS handshakes.
	hc := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{Proxy: http.ProxyFromEnvironment,
		MaxIdleConns: o.concurrency + 8, MaxIdleConnsPerHost: o.concurrency + 8, IdleConnTimeout: 90 * time.Second, ForceAttemptHTTP2: true}}
	owners := make([]*benchOwner, len(o.servers))
	for i, srv := range o.servers {
		c, err := client.NewWith(strings.TrimSpace(srv), hc)
		if err != nil {
			return err
		}
		if owners[i], err = e.benchOwner(ctx, o.state, c); err != nil {
			return err
		}
	}
	res := benchResult{Mode: mode, Agents: o.agents, Concurrency: o.concurrency, Errors: map[string]int{}}
	for _, ow := range owners {
		res.Servers = append(res.Servers, ow.c.Server())
	}
	var op bench.Op
	switch mode {
	case "pair":
		res.Agents = 0
		op = func(ctx context.Context, w int) error {
			_, err := benchPairOnce(ctx, owners[w%len(owners)], "bench-pair-"+nonce()[:12], []string{}, 5*time.Minute)
			return err
		}
	default:
		scope := []string{benchService}
		if mode == "mint" {
			scope = []string{"oidc:" + o.audience}
		}
		if mode == "read" {
			for _, ow := range owners {
				if err := benchCredential(ctx, ow); err != nil {
					return err
				}
			}
		}
		agents, paired, err := e.benchAgents(ctx, owners, o.agents, scope, o.asJSON)
		if err != nil {
			return err
		}
		res.Paired = paired
		if o.viaDaemon {
			get, stop, err := benchDaemons(ctx, owners, agents, o.concurrency)
			if err != nil {
				return err
			}
			defer stop()
			res.ViaDaemon, op = true, get
		} else if mode == "read" {
			path := "/v1/credentials/" + benchService + "/read" // as client.AgentSession.Read sends it
			if err := e.benchPresign(agents, o, http.MethodPost, path); err != nil {
				return err
			}
			res.Presigned = o.presign
			post, done, err := benchPosters(agents, o.concurrency, path, nil)
			if err != nil {
				return err
			}
			defer done()
			op = func(ctx context.Context, w int) error {
				a := &agents[w%len(agents)]
				var r apiv1.ReadResult
				if err := post(ctx, w, &r); err != nil {
					return err
				}
				v, err := seal.OpenBox(a.channel, []byte(r.Info), r.Sealed)
				if err != nil || len(v) == 0 {
					return problem.New("BAD_ANSWER", "a read's value does not open with the agent's channel key", "report it with the broker's version")
				}
				clear(v)
				return nil
			}
		} else {
			const path = "/v1/oidc/token"
			if err := e.benchPresign(agents, o, http.MethodPost, path); err != nil {
				return err
			}
			res.Presigned = o.presign
			body, err := json.Marshal(apiv1.OIDCRequest{Audience: o.audience})
			if err != nil {
				return err
			}
			post, done, err := benchPosters(agents, o.concurrency, path, body)
			if err != nil {
				return err
			}
			defer done()
			op = func(ctx context.Context, w int) error {
				var t apiv1.OIDCToken
				err := post(ctx, w, &t)
				if err == nil && t.Token == "" {
					return problem.New("BAD_ANSWER", "a mint answered without a token", "report it with the broker's version")
				}
				return err
			}
		}
	}
	var progress func(ok, failed int64, elapsed time.Duration)
	if isTerminal(os.Stderr) && !o.asJSON {
		progress = func(ok, failed int64, elapsed time.Duration) {
			fmt.Fprintf(e.stderr, "\r%s: %s/%s  %d ok  %d errors ", mode, elapsed.Truncate(100*time.Millisecond), o.duration, ok, failed)
		}
	}
	st := bench.Run(ctx, bench.Config{Concurrency: o.concurrency, Duration: o.duration, Op: op, Progress: progress})
	if progress != nil {
		fmt.Fprint(e.stderr, "\r\033[K")
	}
	if ctx.Err() != nil {
		return problem.New(problem.Unreachable, "the bench was interrupted", "run it again; its agents are kept")
	}
	res.Duration = st.Elapsed.Seconds()
	res.OK, res.Errors, res.Throughput, res.Latency = st.OK, st.Errors, st.Throughput, st.Latency
	res.CPU = math.Round(st.CPU.Seconds()*1000) / 1000
	res.Requests = st.OK + st.Failed()
	if o.asJSON {
		return json.NewEncoder(e.stdout).Encode(res)
	}
	e.printBench(res)
	return nil
}

func (e *env) printBench(r benchResult) {
	who := fmt.Sprintf("%d agents (%d paired now, %d reused)", r.Agents, r.Paired, r.Agents-r.Paired)
	if r.Mode == "pair" {
		who = "new agents"
	}
	mode := r.Mode
	if r.ViaDaemon {
		mode += " via daemon sockets"
	}
	fmt.Fprintf(e.stdout, "bench %s: %s, %s, concurrency %d, %.1fs\n", mode, strings.Join(r.Servers, ","), who, r.Concurrency, r.Duration)
	fmt.Fprintf(e.stdout, "  requests    %d (%d ok, %d errors)\n", r.Requests, r.OK, r.Requests-r.OK)
	fmt.Fprintf(e.stdout, "  throughput  %.1f/s\n", r.Throughput)
	fmt.Fprintf(e.stdout, "  latency     p50 %.2fms  p90 %.2fms  p99 %.2fms  max %.2fms\n", r.Latency.P50, r.Latency.P90, r.Latency.P99, r.Latency.Max)
	if r.CPU > 0 && r.Duration > 0 {
		fmt.Fprintf(e.stdout, "  bench CPU   %.2fs (%.0f%% of one core; bench competes with the broker if they share the machine)\n", r.CPU, 100*r.CPU/r.Duration)
	}
	codes := make([]string, 0, len(r.Errors))
	for c := range r.Errors {
		codes = append(codes, c)
	}
	sort.Strings(codes)
	for _, c := range codes {
		fmt.Fprintf(e.stdout, "  error       %s ×%d\n", c, r.Errors[c])
	}
	if r.Errors[string(problem.RateLimited)] > 0 {
		flag := map[string]string{"read": "--read-rate", "mint": "--mint-rate", "pair": "--pair-rate"}[r.Mode]
		fmt.Fprintf(e.stdout, "  The broker's limit refused some requests (RATE_LIMITED): for a bench, run it with a raised %s (see agentkeys bench --help).\n", flag)
	}
}

// benchOwner loads or creates bench's owner on the broker of c: its identity
// key and session live in STATE/<host hash>/owner (0600), like an owner's own.
func (e *env) benchOwner(ctx context.Context, state string, c *client.Client) (*benchOwner, error) {
	h := sha256.Sum256([]byte(c.Server()))
	d := home.Dir(filepath.Join(state, hex.EncodeToString(h[:6])))
	key, err := d.Identity()
	fresh := errors.Is(err, home.ErrMissing)
	if err != nil && !fresh {
		return nil, err
	}
	if fresh {
		if key, err = d.NewIdentity(); err != nil {
			return nil, err
		}
	}
	s, err := d.Session()
	if err == nil && s.Server == c.Server() && time.Until(time.Unix(s.ExpiresAt, 0)) > time.Hour {
		if _, err := c.WithToken(s.Token).Whoami(ctx); err == nil {
			return &benchOwner{dir: d, c: c.WithToken(s.Token), key: key, s: s}, nil
		}
	}
	pinned := ""
	if s != nil && s.Server == c.Server() {
		pinned = s.PlatformKey
	}
	platform := ""
	if _, platform, err = attestedShielding(ctx, c, ""); err != nil {
		return nil, err
	}
	if pinned != "" && pinned != platform {
		return nil, problem.Newf(problem.Denied, "if it is a new broker at the same URL, delete "+string(d)+" and run the bench again",
			"the broker at %s is not the one bench's state was made with: its attestation key changed (pinned %.16s…, now %.16s…)",
			c.Server(), pinned, platform)
	}
	pinned = platform
	login := func() apiv1.Login {
		l := apiv1.Login{PublicKey: hex.EncodeToString(key.Public().(ed25519.PublicKey)), Server: c.Server(), Time: time.Now().Unix(), Nonce: nonce()}
		apiv1.SignLogin(&l, key)
		return l
	}
	g, err := c.CreateAccount(ctx, login())
	if pe := problem.As(err); err != nil && pe.Code == problem.Conflict {
		g, err = c.OpenSession(ctx, login())
	}
	if err != nil {
		return nil, err
	}
	s = &home.Session{Server: c.Server(), Omni: g.Omni, Wallet: g.Wallet, SID: g.SID, Token: g.Token, ExpiresAt: g.ExpiresAt, PlatformKey: pinned}
	if err := d.SaveSession(s); err != nil {
		return nil, err
	}
	return &benchOwner{dir: d, c: c.WithToken(g.Token), key: key, s: s}, nil
}

// benchCredential stores the owner-wide credential the agents read, unless it
// is there: 32 random bytes, encrypted to the attested enclave like `store`.
func benchCredential(ctx context.Context, ow *benchOwner) error {
	list, err := ow.c.List(ctx)
	if err != nil {
		return err
	}
	for _, cr := range list {
		if cr.Service == benchService && (cr.Agent == "" || cr.Agent == apiv1.OwnerWide) {
			return nil
		}
	}
	pub, _, err := attestedShielding(ctx, ow.c.Client, ow.s.PlatformKey)
	if err != nil {
		return err
	}
	secret := make([]byte, 32)
	rand.Read(secret)
	ct, err := seal.To(pub, seal.CredentialInfo(ow.s.Omni, apiv1.OwnerWide, benchService), secret)
	clear(secret)
	if err != nil {
		return err
	}
	_, err = ow.c.Store(ctx, apiv1.StoreBody{Service: benchService, Ciphertext: ct})
	return err
}

// benchAgents returns n agents, agent i on owner i mod len(owners): those kept
// in the state directory that are still active with this generation are
// reused (their scope widened if it lacks scope), the others paired now.
func (e *env) benchAgents(ctx context.Context, owners []*benchOwner, n int, scope []string, quiet bool) ([]benchAgent, int, error) {
	known := make([]map[string]apiv1.Agent, len(owners)) // by alias: the active agents
	for i, ow := range owners {
		list, err := ow.c.Agents(ctx)
		if err != nil {
			return nil, 0, err
		}
		known[i] = map[string]apiv1.Agent{}
		for _, a := range list {
			if a.Status == apiv1.AgentActive && time.Until(time.Unix(a.Expires, 0)) > time.Hour {
				known[i][a.Alias] = a
			}
		}
	}
	out := make([]benchAgent, n)
	sessions := make([]*daemon.Session, n)
	var missing []int
	for i := range n {
		ow := owners[i%len(owners)]
		s, err := benchAgentDir(ow, i).LoadSession()
		a, ok := known[i%len(owners)][fmt.Sprintf("bench-%d", i)]
		if err != nil || !ok || a.Generation != s.Generation {
			missing = append(missing, i)
			continue
		}
		if !containsAll(a.Scope, scope) { // kept from a run of another mode or --audience
			if _, err := ow.c.SetScope(ctx, a.Alias, apiv1.ScopeEdit{Add: scope}); err != nil {
				return nil, 0, err
			}
		}
		sessions[i] = s
	}
	if len(missing) > 0 && !quiet {
		fmt.Fprintf(e.stderr, "Pairing %d bench agent(s); %d kept from earlier runs.\n", len(missing), n-len(missing))
	}
	// Up to benchPairers pairings at once; the first failure stops the others
	// (agents paired so far are kept for the next run).
	pctx, cancel := context.WithCancel(ctx)
	defer cancel()
	next := make(chan int)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for range min(benchPairers, len(missing)) {
		wg.Go(func() {
			for i := range next {
				ow := owners[i%len(owners)]
				s, err := e.benchPairRetry(pctx, ow, fmt.Sprintf("bench-%d", i), append([]string{benchService, "oidc:" + apiv1.AWSAudience}, scope...))
				if err == nil {
					err = benchAgentDir(ow, i).SaveSession(s)
				}
				if err != nil {
					errs[i] = err
					cancel()
					continue
				}
				sessions[i] = s
			}
		})
	}
	for _, i := range missing {
		select {
		case next <- i:
		case <-pctx.Done():
		}
	}
	close(next)
	wg.Wait()
	var first error // the cause, rather than the others' being stopped (UNREACHABLE)
	for _, err := range errs {
		if err != nil && (first == nil || problem.As(first).Code == problem.Unreachable) {
			first = err
		}
	}
	if first != nil {
		return nil, 0, first
	}
	for i, s := range sessions {
		key, err := daemon.DecodeKey(s.ProofKey)
		ch, cerr := base64.StdEncoding.DecodeString(s.ChannelKey)
		if err != nil || cerr != nil {
			return nil, 0, problem.Newf(problem.BadRequest, "delete it; the next run pairs the agent again", "%s is damaged", benchAgentDir(owners[i%len(owners)], i).SessionPath())
		}
		out[i] = benchAgent{server: owners[i%len(owners)].c.Server(), token: s.Token, key: key, channel: ch}
	}
	return out, len(missing), nil
}

// benchDaemons serves a daemon for each agent, as daemon serve does (its
// socket handler on a 0600 Unix socket in a new private directory, the
// session loaded from the agent's daemon directory), and returns the op that
// reads the bench credential through the socket of agent w mod len(agents),
// with a socket client per worker, and the function that stops the daemons.
func benchDaemons(ctx context.Context, owners []*benchOwner, agents []benchAgent, workers int) (bench.Op, func(), error) {
	dir, err := os.MkdirTemp("", "agentkeys-bench-")
	if err != nil {
		return nil, nil, err
	}
	ctx, cancel := context.WithCancel(ctx)
	var served sync.WaitGroup
	stop := func() {
		cancel()
		served.Wait()
		os.RemoveAll(dir)
	}
	// The daemon's log lines are formatted as daemon serve formats them, then dropped.
	log := slog.New(slog.NewTextHandler(io.Discard, &slog.HandlerOptions{Level: slog.LevelInfo}))
	paths := make([]string, len(agents))
	for i := range agents {
		paths[i] = filepath.Join(dir, fmt.Sprintf("d%d.sock", i))
		ln, err := daemon.ListenSocket(paths[i], "")
		if err != nil {
			stop()
			return nil, nil, err
		}
		src := daemon.Source{Dir: benchAgentDir(owners[i%len(owners)], i)}
		served.Go(func() { daemon.ServeSocket(ctx, ln, src, log) })
	}
	clients := make([]*daemon.SocketClient, workers)
	for w := range clients {
		clients[w] = daemon.NewSocketClient(paths[w%len(paths)])
	}
	return func(ctx context.Context, w int) error {
		v, err := clients[w].Get(ctx, benchService, daemon.Wait{})
		if err != nil {
			return err
		}
		defer clear(v)
		if len(v) == 0 {
			return problem.New("BAD_ANSWER", "the daemon answered a value that is not the bench credential", "report it with the broker's version")
		}
		return nil
	}, stop, nil
}

// benchAgentDir is the daemon directory of bench agent i (alias bench-i).
func benchAgentDir(ow *benchOwner, i int) daemon.Dir {
	return daemon.Dir(filepath.Join(string(ow.dir), "agents", fmt.Sprintf("bench-%d", i)))
}

func containsAll(have, want []string) bool {
	for _, w := range want {
		if !slices.Contains(have, w) {
			return false
		}
	}
	return true
}

// benchPairRetry pairs one agent, waiting out the broker's pair limit (saying
// so) instead of failing the whole setup.
func (e *env) benchPairRetry(ctx context.Context, ow *benchOwner, alias string, scope []string) (*daemon.Session, error) {
	slices.Sort(scope)
	scope = slices.Compact(scope)
	denied := false
	for {
		s, err := benchPairOnce(ctx, ow, alias, scope, 0)
		pe := problem.As(err)
		if err != nil && pe.Code == problem.Conflict && !denied {
			// A run stopped between request and approval left a pending
			// request for the alias: the owner denies it, then asks again.
			denied = true
			if err := benchDenyPending(ctx, ow, alias); err != nil {
				return nil, err
			}
			continue
		}
		if err == nil || pe.Code != problem.RateLimited {
			return s, err
		}
		wait := time.Duration(max(pe.RetryAfter, 1)) * time.Second
		fmt.Fprintf(e.stderr, "The broker's pair limit refused pairing %s; waiting %s (raise server --pair-rate for a bench).\n", alias, wait)
		select {
		case <-ctx.Done():
			return nil, problem.New(problem.Unreachable, "stopped while waiting for the pair limit", "run the bench again; agents paired so far are kept")
		case <-time.After(wait):
		}
	}
}

// benchDenyPending denies the owner's pending pair requests for alias.
func benchDenyPending(ctx context.Context, ow *benchOwner, alias string) error {
	list, err := ow.c.PendingPairs(ctx)
	if err != nil {
		return err
	}
	for _, p := range list {
		if p.Alias == alias {
			if err := ow.c.DenyPairing(ctx, p.ID, apiv1.SignDecision(ow.key, ow.c.Server(), p.ID, p.VVCHash, "deny", time.Now().Unix())); err != nil {
				return err
			}
		}
	}
	return nil
}

// benchPairOnce is one pairing through the real flow: the daemon's signed pair
// request, the owner's approval signed with its identity key (after checking
// the VVC as agent approve does), the daemon's poll and opening of the sealed
// session. It stores nothing.
func benchPairOnce(ctx context.Context, ow *benchOwner, alias string, scope []string, ttl time.Duration) (*daemon.Session, error) {
	p, err := daemon.SendPairRequest(ctx, ow.c.Client, ow.s.Wallet, alias, scope, ttl, 10*time.Minute, ow.s.PlatformKey)
	if err != nil {
		return nil, err
	}
	list, err := ow.c.PendingPairs(ctx)
	if err != nil {
		return nil, err
	}
	i := slices.IndexFunc(list, func(pp apiv1.PendingPair) bool { return pp.ID == p.ID })
	if i < 0 {
		return nil, problem.Newf(problem.NotFound, "report it with the broker's version", "pair request %s is not in the owner's pending list", p.ID)
	}
	pp := list[i]
	if h, err := hex.DecodeString(pp.VVCHash); err != nil || len(h) != 32 || apiv1.VVCDigits([32]byte(h)) != p.VVC || pp.Fingerprint != p.Fingerprint {
		return nil, problem.Newf(problem.Denied, "report it with the broker's version", "the owner's view of pair request %s does not match the daemon's VVC", p.ID)
	}
	if _, err := ow.c.ApprovePairing(ctx, p.ID, apiv1.SignDecision(ow.key, ow.c.Server(), p.ID, pp.VVCHash, "approve", time.Now().Unix())); err != nil {
		return nil, err
	}
	key, err := daemon.DecodeKey(p.ProofKey)
	if err != nil {
		return nil, err
	}
	st, err := ow.c.PollPairing(ctx, p.ID, key)
	if err != nil {
		return nil, err
	}
	if st.Status != apiv1.PairApproved || st.Delivery == nil {
		return nil, problem.Newf(problem.Conflict, "report it with the broker's version", "pair request %s is %s after its approval", p.ID, st.Status)
	}
	return p.Open(st.Delivery)
}
