package cli

import (
	"context"
	"crypto/ed25519"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/spf13/cobra"

	"github.com/agentkeys/agentkeys/internal/api"
	"github.com/agentkeys/agentkeys/internal/apiv1"
	"github.com/agentkeys/agentkeys/internal/archive"
	"github.com/agentkeys/agentkeys/internal/attest"
	"github.com/agentkeys/agentkeys/internal/broker"
	"github.com/agentkeys/agentkeys/internal/client"
	"github.com/agentkeys/agentkeys/internal/enclave"
	"github.com/agentkeys/agentkeys/internal/ledger"
	"github.com/agentkeys/agentkeys/internal/ledger/ledgerstore"
	"github.com/agentkeys/agentkeys/internal/mailedge"
	"github.com/agentkeys/agentkeys/internal/oidc"
	"github.com/agentkeys/agentkeys/internal/problem"
)

func serverCmd(e *env) *cobra.Command {
	var dataDir, ledgerURL, platformKey, listen, metricsListen, logLevel, logFormat, signerKey, issuer, readRate, mintRate string
	var maxBody int64
	var sessionTTL, approvalWindow, oidcMaxTTL, oidcSkew, followEvery, maxLag time.Duration
	var audiences, publicURLs, trustedProxies []string
	var dev bool
	var signup, handoffFrom, edgeSecret string
	var arch archiveFlags
	var mf mailFlags
	anonRates := map[broker.AnonKind]*string{}
	cmd := &cobra.Command{
		Use:   "server",
		Short: "Run the broker: enclave, ledger and HTTP API",
		Long: `Run the broker. With no flags it serves a single-machine deployment: data in
$AGENTKEYS_HOME/server (default ~/.agentkeys/server), embedded SQLite ledger,
HTTP on 127.0.0.1:8090. The first start creates and seals the master seed and
creates the operator (governance) key; later starts unseal the same seed.
--ledger URL keeps the ledger elsewhere (default sqlite://<data-dir>/ledger.db),
e.g. in PostgreSQL: --ledger postgres://USER@HOST:PORT/DATABASE (the
schema is created and migrated at start; a database that cannot be reached
exits 5). Its password goes in PGPASSWORD or ~/.pgpass, never in the URL: a
command line is readable by every user of the machine.

Several brokers may run on one PostgreSQL database behind a load balancer
(docs/scale-out.md). Each follows the entries the others commit: woken by
PostgreSQL's LISTEN/NOTIFY, and polling every --follow-every as a backstop;
/readyz answers not ready while it last caught up with the store longer than
--max-lag ago. On PostgreSQL the DPoP replay store and every rate limit (read,
mint, anonymous) live in the database too, so a proof is accepted once across
all brokers and each limit is exact across them, not per broker. Every broker
needs a copy of the same seed.sealed and the same platform key; the operator
key stays offline.

The platform key that seals the seed (the stand-in for a CPU's sealing key) is
$AGENTKEYS_HOME/platform.key (--platform-key PATH), or AGENTKEYS_PLATFORM_KEY
(64 hex characters) when set. It never lives in the data dir, so that a copy of
the data dir alone opens nothing: the server refuses a platform key inside it
unless --dev. Back the two up apart.

Without --mrsigner-key the broker runs under the built-in dev signer, tier dev.
With --mrsigner-key HEX (the public key agentkeys release keygen printed) it runs
as tier production, and only if its executable carries that key's signature,
<executable>.sig (agentkeys release sign); otherwise it refuses to start.

Agents' daemons sign each request for the URL they were given (--server); the
broker accepts the --issuer URL and each --public-url, never a name taken from
the request's Host header.

Requests without a session (sign-up, login, pair requests and polls, governance
submissions) are limited per source address and in all: each --KIND-rate is
PER_ADDRESS,IN_ALL, e.g. --signup-rate 10/1h,200/1h. The source address is the
TCP peer; behind a reverse proxy, name it with --trusted-proxy so that its
X-Forwarded-For is believed. --signup invite admits new owners only with an
invite the operator signs (agentkeys server invite).

--handoff-from URL starts a successor (docs/incident-response.md, design §10.3):
a signed release whose mrsigner governance authorized (agentkeys governance
authorize-successor), with an empty data dir and its own platform key. Its
enclave makes an ephemeral HPKE key, quotes it, and asks the running broker at
URL for the seed, which arrives sealed to that key; it seals it under its own
mrsigner. On a shared PostgreSQL ledger it then serves; with the embedded
SQLite ledger it stops, and the operator stops the old broker, copies its
ledger.db into the new data dir and starts the successor without the flag.

--mail-domain D (repeatable) also runs the mail edge in this process
(agentkeys mail-edge --help has the whole story): inbound SMTP for D's inboxes
on --smtp-listen and submission for agents on --submission-listen, messages
written to a local store under <data-dir>/mail (--mail-store). --mail-edge-secret
FILE instead serves a separate agentkeys mail-edge, which presents that secret.

Prometheus metrics are at GET /metrics on the API. With --metrics-listen ADDR
they are served only there, on a listener of their own (e.g. one reachable
from the monitoring network alone), and the API's /metrics answers 404.`,
		Example: "  agentkeys server\n  agentkeys server --data-dir /var/lib/agentkeys/server --platform-key /etc/agentkeys/platform.key --listen 127.0.0.1:9000\n" +
			"  agentkeys server --issuer https://keys.example.com --public-url https://keys.internal.example:8443\n" +
			"  PGPASSFILE=/etc/agentkeys/pgpass agentkeys server --ledger postgres://agentkeys@db.example:5432/agentkeys?sslmode=verify-full\n" +
			"  agentkeys server --signup invite --trusted-proxy 10.0.0.0/8 --pair-rate 20/1m,300/1m\n" +
			"  agentkeys server --listen 0.0.0.0:8090 --metrics-listen 127.0.0.1:9100   # /metrics apart from the API\n" +
			"  agentkeys server --mail-domain agents.example.com   # + the mail edge: SMTP on 127.0.0.1:2525, submission on 127.0.0.1:2587\n" +
			"  agentkeys server --mrsigner-key 3b6a27bcceb6a42d62a3a8d02a6f0d73653215771de243a63ac048a18b59da29   # a signed release\n" +
			"  agentkeys server --data-dir /var/lib/agentkeys/new --mrsigner-key 3b6a…29 --handoff-from https://keys.example.com   # a successor",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if dataDir == "" {
				dataDir = filepath.Join(e.home(), "server")
			}
			if ledgerURL != "" {
				src, err := ledgerstore.Parse(ledgerURL)
				if err != nil {
					return problem.New(problem.BadRequest, "--ledger: "+err.Error(), "pass --ledger "+ledgerstore.SQLite("/var/lib/agentkeys/ledger.db")+" or postgres://USER@HOST:PORT/DATABASE, or drop it for the file in --data-dir")
				}
				if src.HasPassword() {
					return passwordInArgv(src)
				}
			}
			if platformKey != "" && e.getenv("AGENTKEYS_PLATFORM_KEY") != "" {
				return problem.New(problem.BadRequest, "--platform-key and AGENTKEYS_PLATFORM_KEY both name the platform key",
					"pass one of them: unset AGENTKEYS_PLATFORM_KEY, or drop --platform-key")
			}
			if platformKey == "" {
				platformKey = filepath.Join(e.home(), "platform.key")
			}
			level := slog.LevelInfo
			if err := level.UnmarshalText([]byte(logLevel)); err != nil {
				return problem.Newf(problem.BadRequest, "use debug, info, warn or error", "--log-level %q is not a level", logLevel)
			}
			var signer []byte
			if signerKey != "" {
				var err error
				if signer, err = parseSignerKey(signerKey); err != nil {
					return err
				}
			}
			var handoff func(attest.Quote, []byte) ([]byte, error)
			if handoffFrom != "" {
				if signer == nil {
					return problem.New(problem.BadRequest, "--handoff-from needs --mrsigner-key: only a signed release (tier production) receives the seed",
						"pass --mrsigner-key HEX, the public key whose signature this executable's .sig carries (agentkeys release sign)")
				}
				c, err := client.New(handoffFrom)
				if err != nil {
					return problem.Wrap(err, problem.BadRequest, "pass the running broker's URL, e.g. --handoff-from https://keys.example.com", "--handoff-from: %v", err)
				}
				handoff = receiveHandoff(cmd.Context(), c)
			}
			limit, window, err := parseRate("--read-rate", readRate)
			if err != nil {
				return err
			}
			mintLimit, mintWindow, err := parseRate("--mint-rate", mintRate)
			if err != nil {
				return err
			}
			anon := broker.AnonLimits{}
			for k, v := range anonRates {
				if anon[k], err = parseAnonRate("--"+string(k)+"-rate", *v); err != nil {
					return err
				}
			}
			proxies, err := parseProxies(trustedProxies)
			if err != nil {
				return err
			}
			if signup != "open" && signup != "invite" {
				return problem.Newf(problem.BadRequest, "use --signup open or --signup invite", "--signup %q is not a sign-up mode", signup)
			}
			h, err := logHandler(e.stderr, logFormat, level)
			if err != nil {
				return err
			}
			log := slog.New(h)
			if oidcMaxTTL > oidc.MaxTTL*time.Second || oidcMaxTTL < time.Second {
				return problem.New(problem.BadRequest, "--oidc-max-ttl must be between 1s and 1h", "pass e.g. --oidc-max-ttl 1h")
			}
			if followEvery <= 0 || maxLag <= followEvery {
				return problem.New(problem.BadRequest, "--follow-every and --max-lag must be positive, --max-lag longer than --follow-every",
					"pass e.g. --follow-every 1s --max-lag 5s")
			}
			if err := mf.check(e.getenv); err != nil {
				return err
			}
			var history *archive.Archive
			if arch.where != "" {
				if history, err = arch.openArchive(cmd, false); err != nil {
					return err
				}
			}
			return runServer(cmd.Context(), log, serverConfig{mail: &mf, edgeSecret: edgeSecret, listen: listen, metricsListen: metricsListen, maxBody: maxBody, issuer: issuer, dev: dev, trustedProxies: proxies,
				broker: broker.Config{DataDir: dataDir, LedgerURL: ledgerURL, PlatformKeyFile: platformKey, PlatformKeyHex: e.getenv("AGENTKEYS_PLATFORM_KEY"),
					DevPlatformKeyInDataDir: dev, SignerPublicKey: signer, PublicURLs: publicURLs,
					SessionTTL: sessionTTL, ReadLimit: limit, ReadWindow: window,
					MintLimit: mintLimit, MintWindow: mintWindow, ApprovalWindow: approvalWindow,
					OIDCAudiences: audiences, OIDCMaxTTL: oidcMaxTTL, OIDCSkew: oidcSkew, Anon: anon, SignupInvite: signup == "invite",
					FollowEvery: followEvery, MaxLag: maxLag, Handoff: handoff, Archive: history}})
		},
	}
	cmd.Flags().StringVar(&dataDir, "data-dir", "", "where the sealed seed, ledger and operator key live (default $AGENTKEYS_HOME/server)")
	cmd.Flags().StringVar(&ledgerURL, "ledger", "", "the ledger store as a URL: sqlite:///var/lib/agentkeys/ledger.db or postgres://USER@HOST:PORT/DATABASE (default sqlite://<data-dir>/ledger.db)")
	cmd.Flags().DurationVar(&followEvery, "follow-every", broker.DefaultFollowEvery, "on a shared ledger store (PostgreSQL): how often to look for entries other brokers committed, besides their notifications")
	cmd.Flags().DurationVar(&maxLag, "max-lag", broker.DefaultMaxLag, "on a shared ledger store: /readyz answers not ready when this broker last caught up with the store longer ago than this")
	cmd.Flags().StringVar(&platformKey, "platform-key", "", "file holding the platform key that seals the seed, outside the data dir (default $AGENTKEYS_HOME/platform.key)")
	cmd.Flags().StringVar(&listen, "listen", "127.0.0.1:8090", "address for the HTTP API")
	cmd.Flags().StringVar(&metricsListen, "metrics-listen", "", "serve GET /metrics on this address only, not on the API (default: on the API)")
	cmd.Flags().StringVar(&signerKey, "mrsigner-key", "", "release-signing ed25519 public key (hex; release keygen prints it): run as tier production, only if <executable>.sig verifies; default: the dev signer (tier dev)")
	cmd.Flags().StringVar(&handoffFrom, "handoff-from", "", "start as a successor: receive the seed from the running broker at this URL (needs --mrsigner-key and an empty data dir)")
	arch.flags(cmd, "archive", "where audit export wrote the entries audit prune dropped (DIR or s3://BUCKET/PREFIX): serve them from there")
	cmd.Flags().StringVar(&logLevel, "log-level", "info", "debug, info, warn or error")
	cmd.Flags().StringVar(&logFormat, "log-format", "auto", "text, json, or auto: text on a terminal, JSON otherwise")
	cmd.Flags().Int64Var(&maxBody, "max-body", api.DefaultMaxBody, "largest accepted request body in bytes")
	cmd.Flags().StringVar(&issuer, "issuer", "", "this broker's public URL, the iss of its tokens (default http://<listen address>)")
	cmd.Flags().StringArrayVar(&publicURLs, "public-url", nil, "another URL clients reach this broker at (repeatable); agents' proofs must name the --issuer or one of these")
	cmd.Flags().DurationVar(&sessionTTL, "session-ttl", 30*24*time.Hour, "lifetime of owner sessions")
	cmd.Flags().StringVar(&readRate, "read-rate", "100/1m", "credential reads allowed per session, as COUNT/WINDOW")
	cmd.Flags().StringVar(&mintRate, "mint-rate", "60/1m", "identity-token mints (refused ones included) allowed per agent or owner, as COUNT/WINDOW; DKIM signings per agent are limited alike")
	cmd.Flags().DurationVar(&approvalWindow, "approval-window", 2*time.Minute, "how long an approval allows its one read")
	cmd.Flags().StringArrayVar(&audiences, "oidc-audience", nil, "an audience identity tokens may be minted for (repeatable), e.g. sts.amazonaws.com")
	cmd.Flags().DurationVar(&oidcMaxTTL, "oidc-max-ttl", oidc.MaxTTL*time.Second, "longest identity token lifetime (at most 1h)")
	cmd.Flags().DurationVar(&oidcSkew, "oidc-skew", time.Minute, "clock skew allowed to relying parties; a rotation keeps the old key at least --oidc-max-ttl plus this")
	cmd.Flags().BoolVar(&dev, "dev", false, "development: allow a plain-http --issuer on a non-loopback host and a platform key inside the data dir")
	cmd.Flags().StringVar(&signup, "signup", "open", "who may create an owner account: open (anyone) or invite (agentkeys server invite)")
	cmd.Flags().StringArrayVar(&trustedProxies, "trusted-proxy", nil, "a reverse proxy (CIDR or IP, repeatable) whose X-Forwarded-For names the caller; default none: the TCP peer")
	mf.register(cmd.Flags(), "<data-dir>/mail")
	cmd.Flags().StringVar(&edgeSecret, "mail-edge-secret", "", "serve a separate agentkeys mail-edge: the file holding the secret it presents (made, 0600, if missing)")
	for _, k := range broker.AnonKinds {
		d := broker.DefaultAnonLimits[k]
		anonRates[k] = cmd.Flags().String(string(k)+"-rate", d.PerSource.String()+","+d.Global.String(), anonHelp[k]+" per source address and in all, as COUNT/WINDOW,COUNT/WINDOW")
	}
	cmd.AddCommand(serverInviteCmd(e))
	return cmd
}

var anonHelp = map[broker.AnonKind]string{
	broker.AnonSignup: "sign-ups (POST /v1/accounts)",
	broker.AnonLogin:  "logins (POST /v1/sessions)",
	broker.AnonPair:   "pair requests (POST /v1/pair/requests)",
	broker.AnonPoll:   "pair polls (GET /v1/pair/requests/ID)",
	broker.AnonSubmit: "governance submissions (ledger entries, registries, oidc rotate) and seed handoffs",
}

// parseAnonRate parses PER_ADDRESS,IN_ALL, e.g. 10/1h,200/1h.
func parseAnonRate(flag, s string) (broker.AnonLimit, error) {
	src, all, ok := strings.Cut(s, ",")
	if !ok {
		return broker.AnonLimit{}, problem.Newf(problem.BadRequest, "write it as PER_ADDRESS,IN_ALL, e.g. 10/1h,200/1h",
			"%s %q needs a rate per source address and one in all", flag, s)
	}
	n1, w1, err := parseRate(flag, src)
	if err != nil {
		return broker.AnonLimit{}, err
	}
	n2, w2, err := parseRate(flag, all)
	if err != nil {
		return broker.AnonLimit{}, err
	}
	return broker.AnonLimit{PerSource: broker.Rate{Count: n1, Window: w1}, Global: broker.Rate{Count: n2, Window: w2}}, nil
}

// parseProxies parses --trusted-proxy values: CIDR prefixes or single addresses.
func parseProxies(vals []string) ([]netip.Prefix, error) {
	var out []netip.Prefix
	for _, v := range vals {
		p, err := netip.ParsePrefix(v)
		if err != nil {
			a, aerr := netip.ParseAddr(v)
			if aerr != nil {
				return nil, problem.Newf(problem.BadRequest, "pass a CIDR such as 10.0.0.0/8 or one address such as 10.0.0.5",
					"--trusted-proxy %q is not an address or CIDR", v)
			}
			p = netip.PrefixFrom(a.Unmap(), a.Unmap().BitLen())
		}
		out = append(out, p.Masked())
	}
	return out, nil
}

func serverInviteCmd(e *env) *cobra.Command {
	var server, keyPath string
	var ttl time.Duration
	cmd := &cobra.Command{
		Use:   "invite",
		Short: "Sign an invite that lets one person create an owner account (operator)",
		Long: `Prints an invite for a broker started with --signup invite. It is signed with the
operator (governance) key, offline: nothing is sent. The invite creates exactly one
owner account, on the broker --server names, before it expires. Hand it over like a
password; the new owner runs agentkeys init --server URL --invite-file FILE.`,
		Example: "  agentkeys server invite --server https://keys.example.com > invite.txt\n" +
			"  agentkeys server invite --server https://keys.example.com --operator-key /secure/operator.key --ttl 24h",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			key, err := e.operatorKey(keyPath)
			if err != nil {
				return err
			}
			if ttl <= 0 {
				return problem.New(problem.BadRequest, "--ttl must be positive", "pass e.g. --ttl 168h")
			}
			u, err := url.Parse(server)
			if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
				return problem.Newf(problem.BadRequest, "pass the broker's URL, its --issuer", "--server %q is not an http(s) URL", server)
			}
			fmt.Fprintln(e.stdout, broker.NewInvite(key, server, time.Now().Add(ttl)))
			return nil
		},
	}
	e.serverFlag(cmd, &server, DefaultServer, "the broker's URL (its --issuer) the invite is for")
	cmd.Flags().StringVar(&keyPath, "operator-key", "", "the operator key (default $AGENTKEYS_HOME/server/operator.key)")
	cmd.Flags().DurationVar(&ttl, "ttl", 7*24*time.Hour, "how long the invite can be used")
	return cmd
}

// passwordInArgv refuses a --ledger URL with a password: argv is readable by every
// local user (ps, /proc). The message names the URL without it.
func passwordInArgv(src ledgerstore.Source) error {
	return problem.Newf(problem.BadRequest, "drop the password from the URL and set it in PGPASSWORD or ~/.pgpass (PostgreSQL's own places, which agentkeys reads)",
		"--ledger %s carries a password, and a command line is readable by every user of this machine", src)
}

// unreachableStore is the answer to a ledger store that cannot be reached (exit
// 5); the driver's message names the URL without its password.
func unreachableStore(err error) error {
	return problem.Wrap(err, problem.Unreachable, "start the database, or correct --ledger (postgres://USER@HOST:PORT/DATABASE) or its password (PGPASSWORD, ~/.pgpass)",
		"%v", err)
}

// receiveHandoff is the successor's side of the handoff: it sends the
// enclave's quote and HPKE key to the running broker and returns its sealed
// answer. A refusal stops the start with the broker's reason and fix.
func receiveHandoff(ctx context.Context, c *client.Client) func(attest.Quote, []byte) ([]byte, error) {
	return func(q attest.Quote, key []byte) ([]byte, error) {
		res, err := c.Handoff(ctx, apiv1.HandoffRequest{Quote: q, Key: hex.EncodeToString(key)})
		if err != nil {
			fix := "check --handoff-from and that the broker there runs"
			if p, ok := errors.AsType[*problem.Error](err); ok && p.Fix != "" {
				fix = p.Fix
			}
			return nil, problem.Wrap(err, StartRefused, fix, "the broker at %s sent no seed: %v; no seed was sealed", c.Server(), err)
		}
		sealed, err := hex.DecodeString(res.Sealed)
		if err != nil {
			return nil, problem.Newf(StartRefused, "check that --handoff-from names an AgentKeys broker", "the broker at %s answered with a malformed sealed seed", c.Server())
		}
		return sealed, nil
	}
}

// StartRefused is the code of a server that refuses to start (exit 1).
const StartRefused problem.Code = "START_REFUSED"

type serverConfig struct {
	listen, issuer string
	metricsListen  string // "" = /metrics on the API
	dev            bool
	maxBody        int64
	broker         broker.Config
	trustedProxies []netip.Prefix
	mail           *mailFlags // the in-process mail edge, on with --mail-domain
	edgeSecret     string     // --mail-edge-secret: the separate edge's secret file
}

// parseRate parses the COUNT/WINDOW value of flag, e.g. 100/1m.
func parseRate(flag, s string) (int, time.Duration, error) {
	n, w, ok := strings.Cut(s, "/")
	count, err1 := strconv.Atoi(n)
	window, err2 := time.ParseDuration(w)
	if !ok || err1 != nil || err2 != nil || count < 1 || window <= 0 {
		return 0, 0, problem.Newf(problem.BadRequest, "write it as COUNT/WINDOW, e.g. 100/1m", "%s %q is not a rate", flag, s)
	}
	return count, window, nil
}

func runServer(ctx context.Context, log *slog.Logger, cfg serverConfig) error {
	ln, err := net.Listen("tcp", cfg.listen)
	if err != nil {
		return problem.Wrap(err, problem.BadRequest, "choose a free address with --listen", "cannot listen on %s: %v", cfg.listen, err)
	}
	defer ln.Close()
	var mln net.Listener
	if cfg.metricsListen != "" {
		if mln, err = net.Listen("tcp", cfg.metricsListen); err != nil {
			return problem.Wrap(err, problem.BadRequest, "choose a free address with --metrics-listen", "cannot listen on %s: %v", cfg.metricsListen, err)
		}
		defer mln.Close()
	}
	bc := cfg.broker
	bc.Logger, bc.Issuer = log, cfg.issuer
	if bc.Issuer == "" {
		bc.Issuer = "http://" + ln.Addr().String()
	}
	bc.Issuer = strings.TrimRight(bc.Issuer, "/")
	u, err := url.Parse(bc.Issuer)
	if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
		return problem.Newf(problem.BadRequest, "pass the public URL clients use, e.g. https://keys.example.com", "--issuer %q is not an http(s) URL", cfg.issuer)
	}
	if u.Scheme == "http" && !loopbackHost(u.Hostname()) && !cfg.dev {
		return problem.Newf(problem.BadRequest, "use an https --issuer in production, or pass --dev for a development setup",
			"--issuer %q is plain http on a non-loopback host: clouds would fetch the signing keys over an unauthenticated channel", bc.Issuer)
	}
	for _, p := range bc.PublicURLs {
		pu, err := url.Parse(p)
		if err != nil || (pu.Scheme != "https" && pu.Scheme != "http") || pu.Host == "" || pu.User != nil || pu.RawQuery != "" || pu.ForceQuery || pu.Fragment != "" {
			return problem.Newf(problem.BadRequest, "pass a URL clients use, as scheme://host[:port][/path], e.g. https://keys.internal.example:8443",
				"--public-url %q is not an http(s) URL without query or fragment", p)
		}
		if pu.Scheme == "http" && !loopbackHost(pu.Hostname()) && !cfg.dev {
			return problem.Newf(problem.BadRequest, "use an https --public-url, or pass --dev for a development setup",
				"--public-url %q is plain http on a non-loopback host: agents' tokens would cross the network unencrypted", p)
		}
	}
	mailOn := cfg.mail != nil && len(cfg.mail.domains) > 0
	if mailOn {
		auds := slices.Clone(bc.OIDCAudiences)
		for _, a := range cfg.mail.edgeAudiences() {
			if !slices.Contains(auds, a) {
				auds = append(auds, a)
			}
		}
		bc.OIDCAudiences = auds
	}
	var edgeSecret []byte
	if cfg.edgeSecret != "" {
		var created bool
		if edgeSecret, created, err = loadEdgeSecret(cfg.edgeSecret, true); err != nil {
			return err
		}
		if created {
			log.Warn("created the mail edge secret: copy it to the mail edge's host (mode 0600) for agentkeys mail-edge --edge-secret", "path", cfg.edgeSecret)
		}
	}
	reg := prometheus.NewRegistry()
	bc.Registerer = reg
	b, err := broker.Open(bc)
	var unsigned *enclave.ReleaseError
	if errors.As(err, &unsigned) {
		return problem.Newf(StartRefused, "sign this exact executable with the key whose public half is --mrsigner-key "+
			"(agentkeys release sign --key KEY --binary "+unsigned.Executable+"), or start without --mrsigner-key to run as tier dev",
			"--mrsigner-key is set, so this build runs only as a signed release, and %s does not verify: %s", unsigned.SigFile, unsigned.Reason)
	}
	if errors.Is(err, ledger.ErrUnreachable) {
		return unreachableStore(err)
	}
	if p, ok := errors.AsType[*problem.Error](err); ok && p.Code == StartRefused {
		return p // a refused handoff: the predecessor's answer, with its fix
	}
	if err != nil {
		// one line: the enclave's message names the cause and the fix
		return problem.Wrap(err, StartRefused, "", "%v", err)
	}
	defer b.Close()
	if bc.Handoff != nil {
		log.Info("received the seed by handoff and sealed it under this build's mrsigner", "path", filepath.Join(bc.DataDir, "seed.sealed"))
		if _, ok, err := b.Storage().Head(ctx); err != nil {
			return err
		} else if !ok {
			log.Info("the ledger store is empty, so this successor stops here: stop the old broker, copy its ledger.db into the data dir (or point --ledger at the shared database), then start this build again without --handoff-from",
				"data_dir", bc.DataDir, "ledger", broker.LedgerPath(bc.DataDir))
			return nil
		}
	} else if b.SeedCreated() {
		pk := bc.PlatformKeyFile
		if bc.PlatformKeyHex != "" {
			pk = "AGENTKEYS_PLATFORM_KEY"
		}
		log.Info("created and sealed a new master seed",
			"path", filepath.Join(bc.DataDir, "seed.sealed"), "platform_key", pk)
	}
	srv := httpServer(api.New(b, api.Config{Logger: log, Registry: reg, MaxBody: cfg.maxBody, TrustedProxies: cfg.trustedProxies, NoMetrics: mln != nil, MailEdgeSecret: edgeSecret}), log)
	servers, listeners := []*http.Server{srv}, []net.Listener{ln}
	metricsAddr := ""
	if mln != nil {
		mux := http.NewServeMux()
		mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
		servers, listeners = append(servers, httpServer(mux, log)), append(listeners, mln)
		metricsAddr = mln.Addr().String()
	}
	if u.Scheme == "http" { // said once the broker opened, so that a refusal to start stays one line
		log.Warn("the OIDC issuer is plain http: for loopback and development only; clouds require https in production", "issuer", bc.Issuer)
	}
	m := b.Measurements()
	log.Info("listening", "addr", ln.Addr().String(), "url", "http://"+ln.Addr().String(), "issuer", bc.Issuer, "data_dir", bc.DataDir,
		"tier", string(m.Tier), "mrenclave", fmt.Sprintf("%x", m.MrEnclave[:8]), "mrsigner", fmt.Sprintf("%x", m.MrSigner[:8]), "metrics_addr", metricsAddr)
	// Every goroutine of the server is in group and joined before the broker
	// closes: the listeners' servers and the broker's start.
	ctx, stop := context.WithCancel(ctx)
	defer stop()
	mailDone := make(<-chan error)
	if mailOn {
		stopMail, done, err := cfg.mail.start(ctx, mailRuntime{issuer: bc.Issuer, dir: mailedge.LookupFunc(b.MailLookup), inboxes: b.MailInboxes, keys: b.JWKS,
			limiters: broker.NewMemoryLimiter, storeDir: filepath.Join(bc.DataDir, "mail"), log: log})
		if err != nil {
			return err
		}
		defer func() { stopMail(); <-done }()
		mailDone = done
	}
	var group sync.WaitGroup
	serveErr := make(chan error, len(servers))
	for i, s := range servers {
		group.Go(func() { serveErr <- s.Serve(listeners[i]) })
	}
	group.Go(func() {
		if err := b.Start(ctx); err != nil {
			attrs := []any{"err", err.Error()}
			if p, ok := errors.AsType[*problem.Error](err); ok && p.Fix != "" {
				attrs = append(attrs, "fix", p.Fix)
			}
			log.Error("broker is not ready", attrs...)
			return
		}
		if b.OperatorKeyCreated { // and genesis names it (a broker that lost the race to write genesis removed its own)
			log.Warn("created the operator key: it is the 1-of-1 governance key in genesis; back it up and keep it offline",
				"path", broker.OperatorKeyPath(bc.DataDir))
		}
		log.Info("ready")
	})
	var failed error
	select {
	case <-ctx.Done():
		log.Info("shutting down")
	case err := <-serveErr:
		if !errors.Is(err, http.ErrServerClosed) {
			failed = err
		}
	case err := <-mailDone:
		failed = fmt.Errorf("the mail edge stopped: %w", err)
	}
	stop()
	shutCtx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for _, s := range servers {
		if err := s.Shutdown(shutCtx); err != nil {
			log.Warn("shutdown did not finish in time", "err", err.Error())
		}
	}
	group.Wait()
	if failed != nil {
		return failed
	}
	log.Info("stopped")
	return nil
}

// httpServer serves h with the server's timeouts, logging through log.
func httpServer(h http.Handler, log *slog.Logger) *http.Server {
	return &http.Server{
		Handler:           h,
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       30 * time.Second,
		WriteTimeout:      60 * time.Second,
		IdleTimeout:       2 * time.Minute,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
}

// loopbackHost reports whether host is localhost or a loopback IP.
func loopbackHost(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// operatorKey loads the operator (governance) key from path, by default
// $AGENTKEYS_HOME/server/operator.key.
func (e *env) operatorKey(path string) (ed25519.PrivateKey, error) {
	if path == "" {
		path = broker.OperatorKeyPath(filepath.Join(e.home(), "server"))
	}
	key, err := broker.LoadOperatorKey(path)
	if err != nil {
		return nil, problem.Wrap(err, problem.BadRequest, "pass --operator-key <data-dir>/operator.key", "cannot read the operator key: %v", err)
	}
	return key, nil
}
