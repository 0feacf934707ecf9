package cli

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	awsconfig "github.com/aws/aws-sdk-go-v2/config"
	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/agentkeys/agentkeys/internal/apiv1"
	"github.com/agentkeys/agentkeys/internal/blobstore"
	"github.com/agentkeys/agentkeys/internal/blobstore/localstore"
	"github.com/agentkeys/agentkeys/internal/blobstore/s3store"
	"github.com/agentkeys/agentkeys/internal/broker"
	"github.com/agentkeys/agentkeys/internal/imapedge"
	"github.com/agentkeys/agentkeys/internal/mail"
	"github.com/agentkeys/agentkeys/internal/maildns"
	"github.com/agentkeys/agentkeys/internal/mailedge"
	"github.com/agentkeys/agentkeys/internal/problem"
	"github.com/agentkeys/agentkeys/internal/ratelimit"
)

// mailFlags are the mail edge's flags, shared by agentkeys server (the edge
// in process, on when --mail-domain is given) and agentkeys mail-edge.
type mailFlags struct {
	domains, audiences            []string
	smtpListen, submissionListen  string
	imapListen                    string
	store, tlsCert, tlsKey, relay string
	hostname                      string
	ipRate, rcptRate, senderRate  string
	relayUser, relayPasswordFile  string
	maxSize                       int64
	relayAuth                     *mailedge.RelayAuth // from --relay-user and its password, by check
}

// relayPasswordEnv holds the --relay-user password when no
// --relay-password-file is given (never a flag: argv is visible to every
// user of the host).
const relayPasswordEnv = "AGENTKEYS_RELAY_PASSWORD"

func (f *mailFlags) register(fs *pflag.FlagSet, storeDefault string) {
	fs.StringArrayVar(&f.domains, "mail-domain", nil, "run the mail edge for this domain (repeatable): inbound SMTP and submission for its inboxes")
	fs.StringVar(&f.smtpListen, "smtp-listen", "127.0.0.1:2525", "address of the inbound SMTP listener (the MX)")
	fs.StringVar(&f.submissionListen, "submission-listen", "127.0.0.1:2587", "address of the submission listener agents send through (\"\" = none)")
	fs.StringVar(&f.imapListen, "imap-listen", "127.0.0.1:2143", "address of the IMAP server agents read their inboxes through, signing in with an identity token (\"\" = none); implicit TLS with --mail-tls-cert")
	fs.Int64Var(&f.maxSize, "mail-max-size", mailedge.DefaultMaxSize, "largest message accepted, in bytes (larger ones get 552)")
	fs.StringVar(&f.store, "mail-store", "", "where messages are written: a directory (default "+storeDefault+"), or s3://BUCKET[?endpoint=URL&path-style=true&region=R] with credentials from the AWS environment or config files")
	fs.StringVar(&f.tlsCert, "mail-tls-cert", "", "PEM certificate (chain) offered with STARTTLS; without it the edge listens on loopback only")
	fs.StringVar(&f.tlsKey, "mail-tls-key", "", "PEM private key of --mail-tls-cert")
	fs.StringVar(&f.relay, "relay", "", "smarthost host:port that submission relays other domains' recipients to (STARTTLS unless on loopback); default: refuse them")
	fs.StringVar(&f.relayUser, "relay-user", "", "the account the edge signs in to --relay with (SASL PLAIN, over TLS; in the clear only to a loopback relay); its password from --relay-password-file or $"+relayPasswordEnv)
	fs.StringVar(&f.relayPasswordFile, "relay-password-file", "", "file holding the --relay-user password on one line (mode 0600)")
	fs.StringArrayVar(&f.audiences, "mail-audience", nil, "an audience of the identity tokens the edge accepts (repeatable; default: each --mail-domain)")
	fs.StringVar(&f.hostname, "mail-hostname", "", "the edge's name in its greeting and Authentication-Results (default the first --mail-domain)")
	fs.StringVar(&f.ipRate, "mail-ip-rate", mailedge.DefaultIPRate.String(), "inbound messages (and refused recipients or logins) per source address, as COUNT/WINDOW")
	fs.StringVar(&f.rcptRate, "mail-rcpt-rate", mailedge.DefaultRecipientRate.String(), "messages per recipient inbox, as COUNT/WINDOW")
	fs.StringVar(&f.senderRate, "mail-sender-rate", mailedge.DefaultSenderRate.String(), "submitted messages per agent, as COUNT/WINDOW")
}

// mailRuntime is what the edge needs from where it runs.
type mailRuntime struct {
	issuer   string
	dir      mailedge.Directory
	inboxes  inboxLister // the inboxes an agent holds rights on (IMAP)
	keys     mailedge.KeySource
	limiters ratelimit.New
	storeDir string // default store directory
	log      *slog.Logger
}

// check validates the flags (before anything starts) and reads the relay
// password (getenv is the environment).
func (f *mailFlags) check(getenv func(string) string) error {
	for i, d := range f.domains {
		f.domains[i] = maildns.Normalize(d)
		if !maildns.Valid(f.domains[i]) {
			return problem.Newf(problem.BadRequest, "pass a domain name, e.g. --mail-domain agents.example.com", "--mail-domain %q is not a domain name", d)
		}
	}
	if f.maxSize < 1024 {
		return problem.New(problem.BadRequest, "--mail-max-size is in bytes and at least 1024", "pass e.g. --mail-max-size 26214400 (25 MiB)")
	}
	if (f.tlsCert == "") != (f.tlsKey == "") {
		return problem.New(problem.BadRequest, "--mail-tls-cert and --mail-tls-key go together", "pass both, or neither for a loopback-only edge")
	}
	if f.relay != "" {
		if _, _, err := net.SplitHostPort(f.relay); err != nil {
			return problem.Newf(problem.BadRequest, "pass the smarthost as host:port, e.g. --relay smtp.example.net:587", "--relay %q is not host:port", f.relay)
		}
	}
	if err := f.loadRelayAuth(getenv); err != nil {
		return err
	}
	for flag, v := range map[string]string{"--mail-ip-rate": f.ipRate, "--mail-rcpt-rate": f.rcptRate, "--mail-sender-rate": f.senderRate} {
		if _, _, err := parseRate(flag, v); err != nil {
			return err
		}
	}
	return nil
}

// loadRelayAuth reads the --relay-user password from --relay-password-file
// (a file only its owner may read) or the environment.
func (f *mailFlags) loadRelayAuth(getenv func(string) string) error {
	env := getenv(relayPasswordEnv)
	switch {
	case f.relayUser == "" && (f.relayPasswordFile != "" || env != ""):
		return problem.New(problem.BadRequest, "a relay password needs --relay-user", "pass --relay-user USER with --relay-password-file, or unset "+relayPasswordEnv)
	case f.relayUser == "":
		return nil
	case f.relay == "":
		return problem.New(problem.BadRequest, "--relay-user needs --relay host:port", "pass the smarthost, e.g. --relay smtp.example.net:587")
	case f.relayPasswordFile != "" && env != "":
		return problem.New(problem.BadRequest, "the relay password is given twice", "pass --relay-password-file or set "+relayPasswordEnv+", not both")
	case f.relayPasswordFile == "" && env == "":
		return problem.New(problem.BadRequest, "--relay-user needs its password", "put it in a file (chmod 600) and pass --relay-password-file FILE, or set "+relayPasswordEnv)
	}
	pass := env
	if f.relayPasswordFile != "" {
		fi, err := os.Stat(f.relayPasswordFile)
		if err != nil {
			return problem.Wrap(err, problem.BadRequest, "name a file holding the relay password (mode 0600)", "cannot read --relay-password-file: %v", err)
		}
		if fi.Mode().Perm()&0o077 != 0 {
			return problem.Newf(problem.BadRequest, "chmod 600 "+f.relayPasswordFile, "the relay password file %s is open to other users (mode %#o)", f.relayPasswordFile, fi.Mode().Perm())
		}
		b, err := os.ReadFile(f.relayPasswordFile)
		if err != nil {
			return problem.Wrap(err, problem.BadRequest, "name a file holding the relay password (mode 0600)", "cannot read --relay-password-file: %v", err)
		}
		pass = strings.TrimRight(string(b), "\r\n")
	}
	if pass == "" || strings.ContainsAny(pass, "\r\n\x00") {
		return problem.New(problem.BadRequest, "the relay password is empty or spans lines", "put the password alone on the first line of --relay-password-file (or in "+relayPasswordEnv+")")
	}
	f.relayAuth = &mailedge.RelayAuth{User: f.relayUser, Password: pass}
	return nil
}

// edgeAudiences are the audiences of the tokens the edge accepts.
func (f *mailFlags) edgeAudiences() []string {
	if len(f.audiences) > 0 {
		return f.audiences
	}
	return f.domains
}

func rate(s string) mailedge.Rate {
	n, w, _ := parseRate("", s) // checked by check
	return mailedge.Rate{Count: n, Window: w}
}

// start opens the store and listeners and serves the edge until ctx ends or
// a listener fails; it returns once everything has stopped.
func (f *mailFlags) start(ctx context.Context, rt mailRuntime) (stop func(), done <-chan error, err error) {
	cfg := mailedge.Config{Domains: f.domains, Hostname: f.hostname, Directory: rt.dir, MaxSize: f.maxSize, Relay: f.relay, RelayAuth: f.relayAuth, RelayImplicitTLS: strings.HasSuffix(f.relay, ":465"),
		IPRate: rate(f.ipRate), RecipientRate: rate(f.rcptRate), SenderRate: rate(f.senderRate), Limiters: rt.limiters, Logger: rt.log,
		Verifier: mailedge.NewVerifier(rt.issuer, f.edgeAudiences(), rt.keys, nil)}
	dir := f.store
	if dir == "" {
		dir = rt.storeDir
	}
	if cfg.Store, err = openMailStore(ctx, dir); err != nil {
		return nil, nil, err
	}
	if f.tlsCert != "" {
		cert, err := tls.LoadX509KeyPair(f.tlsCert, f.tlsKey)
		if err != nil {
			return nil, nil, problem.Wrap(err, problem.BadRequest, "pass a PEM certificate and its key with --mail-tls-cert and --mail-tls-key", "cannot load the mail TLS certificate: %v", err)
		}
		cfg.TLS = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	}
	e, err := mailedge.New(cfg)
	if err != nil {
		return nil, nil, problem.Wrap(err, problem.BadRequest, "check the --mail-* flags", "%v", err)
	}
	type listener struct {
		flag, addr string
		serve      func(net.Listener) error
	}
	ls := []listener{{"--smtp-listen", f.smtpListen, e.ServeInbound}}
	if f.submissionListen != "" {
		ls = append(ls, listener{"--submission-listen", f.submissionListen, e.ServeSubmission})
	}
	imapCtx, stopIMAP := context.WithCancel(ctx)
	if f.imapListen != "" {
		is, err := imapedge.New(imapedge.Config{Store: cfg.Store, Auth: imapAuth{cfg.Verifier}, Directory: imapDirectory{rt.inboxes},
			TLS: cfg.TLS, Log: rt.log})
		if err != nil {
			stopIMAP()
			return nil, nil, err
		}
		ls = append(ls, listener{"--imap-listen", f.imapListen, func(ln net.Listener) error { return is.Serve(imapCtx, ln) }})
	}
	closeEdge := func() { e.Close(); stopIMAP() }
	var lns []net.Listener
	closeAll := func() {
		for _, ln := range lns {
			ln.Close()
		}
	}
	for _, l := range ls {
		ln, err := net.Listen("tcp", l.addr)
		if err != nil {
			closeAll()
			stopIMAP()
			return nil, nil, problem.Wrap(err, problem.BadRequest, "choose a free address with "+l.flag, "cannot listen on %s: %v", l.addr, err)
		}
		if cfg.TLS == nil && !mailedge.IsLoopback(ln.Addr()) {
			ln.Close()
			closeAll()
			stopIMAP()
			return nil, nil, problem.Newf(problem.BadRequest, "pass --mail-tls-cert and --mail-tls-key (STARTTLS), or listen on a loopback address",
				"%s %s is not a loopback address, and mail in the clear is for loopback only", l.flag, l.addr)
		}
		lns = append(lns, ln)
	}
	errc := make(chan error, len(lns))
	for i, ln := range lns {
		go func() { errc <- ls[i].serve(ln) }()
	}
	attrs := []any{"smtp_addr", lns[0].Addr().String(), "domains", strings.Join(f.domains, ","), "store", dir, "audiences", strings.Join(f.edgeAudiences(), ",")}
	for i, l := range ls[1:] {
		attrs = append(attrs, strings.TrimSuffix(strings.TrimPrefix(l.flag, "--"), "-listen")+"_addr", lns[i+1].Addr().String())
	}
	rt.log.Info("mail edge listening", attrs...)
	done2 := make(chan error, 1)
	go func() {
		var first error
		for range lns {
			if err := <-errc; err != nil && first == nil {
				first = err
				closeEdge()
			}
		}
		done2 <- first
		close(done2) // later receives see it done
	}()
	return closeEdge, done2, nil
}

// inboxLister lists the live inboxes an agent (omni) holds rights on: the
// broker's MailInboxes in its process, Remote.Inboxes for a separate edge.
type inboxLister func(ctx context.Context, agentOmni string) ([]apiv1.MailLookup, error)

// imapAuth signs IMAP sessions in with the same identity tokens submission
// takes (mailedge.Verifier: the broker's issuer and keys, an edge audience).
type imapAuth struct{ v *mailedge.Verifier }

func (a imapAuth) Authenticate(ctx context.Context, token string) (imapedge.Agent, error) {
	ag, err := a.v.Verify(ctx, token)
	if err != nil {
		return imapedge.Agent{}, err
	}
	return imapedge.Agent{Omni: ag.Omni, Wallet: ag.Wallet, Expires: ag.Expiry}, nil
}

// imapDirectory offers an agent the live inboxes it holds read on, asked of
// the broker on every mailbox command (a revoked grant, agent or inbox acts on
// the next one).
type imapDirectory struct{ list inboxLister }

func (d imapDirectory) Mailboxes(ctx context.Context, a imapedge.Agent) ([]imapedge.Mailbox, error) {
	ls, err := d.list(ctx, a.Omni)
	if err != nil {
		return nil, err
	}
	var out []imapedge.Mailbox
	for _, l := range ls {
		if l.Live && slices.Contains(l.Rights, mail.Read) {
			out = append(out, imapedge.Mailbox{Address: l.Address, Prefix: l.Prefix})
		}
	}
	return out, nil
}

// openMailStore opens --mail-store: a local directory, or an S3 bucket as
// s3://BUCKET?endpoint=URL&path-style=true&region=R. S3 credentials come from
// the SDK's usual places (AWS_ACCESS_KEY_ID…, ~/.aws), never from argv.
func openMailStore(ctx context.Context, spec string) (blobstore.Store, error) {
	if !strings.HasPrefix(spec, "s3://") {
		st, err := localstore.Open(spec)
		if err != nil {
			return nil, problem.Wrap(err, problem.BadRequest, "pass a directory this user can write with --mail-store", "cannot open the mail store: %v", err)
		}
		return st, nil
	}
	bad := func(why string) error {
		return problem.Newf(problem.BadRequest, "write it as s3://BUCKET or s3://BUCKET?endpoint=http://127.0.0.1:8333&path-style=true&region=us-east-1 (credentials in AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or ~/.aws)",
			"--mail-store %q: %s", spec, why)
	}
	u, err := url.Parse(spec)
	if err != nil || u.Host == "" || u.Path != "" || u.User != nil || u.Fragment != "" {
		return nil, bad("not an s3://BUCKET URL")
	}
	cfg := s3store.Config{Bucket: u.Host}
	for k, v := range u.Query() {
		switch {
		case len(v) != 1:
			return nil, bad(k + " is given more than once")
		case k == "endpoint":
			eu, err := url.Parse(v[0])
			if err != nil || (eu.Scheme != "http" && eu.Scheme != "https") || eu.Host == "" || eu.User != nil {
				return nil, bad("endpoint is not an http(s) URL without credentials")
			}
			cfg.Endpoint = v[0]
		case k == "path-style":
			cfg.PathStyle = v[0] == "true"
		case k == "region":
			cfg.Region = v[0]
		default:
			return nil, bad("unknown parameter " + k + " (endpoint, path-style, region)")
		}
	}
	ac, err := awsconfig.LoadDefaultConfig(ctx)
	if err != nil {
		return nil, problem.Wrap(err, problem.BadRequest, "set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or an AWS profile", "cannot load AWS credentials for --mail-store: %v", err)
	}
	cfg.Credentials = ac.Credentials
	if cfg.Region == "" {
		cfg.Region = ac.Region
	}
	return s3store.New(cfg)
}

// loadEdgeSecret reads the edge secret at path (at least 32 characters, in a
// file only its owner may read); with create, a missing file is made with 32
// random bytes in hex, 0600.
func loadEdgeSecret(path string, create bool) ([]byte, bool, error) {
	b, err := os.ReadFile(path)
	created := false
	if errors.Is(err, fs.ErrNotExist) && create {
		var k [32]byte
		rand.Read(k[:])
		if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
			return nil, false, err
		}
		if err := os.WriteFile(path, []byte(hex.EncodeToString(k[:])+"\n"), 0o600); err != nil {
			return nil, false, err
		}
		b, err, created = []byte(hex.EncodeToString(k[:])), nil, true
	}
	if err != nil {
		return nil, false, problem.Wrap(err, problem.BadRequest, "name the file the server's --mail-edge-secret made (copy it to the edge's host, mode 0600)", "cannot read the mail edge secret: %v", err)
	}
	if fi, err := os.Stat(path); err == nil && fi.Mode().Perm()&0o077 != 0 {
		return nil, false, problem.Newf(problem.BadRequest, "chmod 600 "+path, "the mail edge secret %s is readable by other users", path)
	}
	s := strings.TrimSpace(string(b))
	if len(s) < 32 {
		return nil, false, problem.Newf(problem.BadRequest, "put at least 32 random characters in it, or delete it and let agentkeys server --mail-edge-secret make one", "the mail edge secret in %s is too short", path)
	}
	return []byte(s), created, nil
}

func mailEdgeCmd(e *env) *cobra.Command {
	var server, secretFile, logLevel, logFormat string
	var f mailFlags
	cmd := &cobra.Command{
		Use:   "mail-edge",
		Short: "Run the mail edge as its own process: inbound SMTP (MX), submission and IMAP",
		Long: `Run the mail edge apart from the broker, e.g. on the host the MX record names.
It takes mail for each --mail-domain: only for live inboxes (550 at RCPT
otherwise), up to --mail-max-size (552), within the --mail-*-rate limits (451);
it records SPF, DKIM and DMARC in an Authentication-Results header prepended to
the message and writes the message unparsed to the object store under
<agent wallet>/<inbox address>/<unix-nanos>-<hash8>.eml, answering 250 only once
it is stored durably. It writes nothing to the ledger.

Submission (--submission-listen) takes an agent's identity token for one of
the --mail-audience values (default: the mail domains, e.g. agents.example.com,
which an agent holding a right on an inbox of that domain may mint) over SASL
OAUTHBEARER, lets the agent send only as an inbox it holds send on, delivers to
our inboxes and relays other domains to --relay: over STARTTLS with the
smarthost's certificate verified (implicit TLS on port 465), in the clear only
to a loopback address. With --relay-user the edge signs in to the smarthost
(SASL PLAIN, never in the clear except to loopback); the password comes from
--relay-password-file (mode 0600) or $AGENTKEYS_RELAY_PASSWORD, never argv.

Limits on every SMTP connection (inbound and submission), so an anonymous
caller's cost is bounded: 200 connections per listener and 10 per source
address (IPv6: per /64; loopback, this host, is not held to the 10); 5 minutes
to send each command (or a whole message after DATA, RFC 5321's server
timeout) and 15 minutes for the whole connection; 1,000 commands between two
accepted messages, 50 recipients per message, 5 unknown recipients and 3
failed logins per connection (then 421 and the connection closes); lines of
2,000 bytes; refused recipients and failed logins spend the source address's
--mail-ip-rate, and past it logins are refused before any token is checked.
SPF is evaluated within RFC 7208's limits (10 DNS lookups, 2 void ones), DKIM
for at most 5 signatures and RSA keys of 1,024 to 4,096 bits, all DNS for one
message within 10 seconds, answers cached for 60 seconds (at most 10,000
names). IMAP: 256 connections, 16 per address, 30 seconds and 64 KiB to sign
in, 10 failed sign-ins per address in 10 minutes.

IMAP (--imap-listen) serves each inbox the token's agent holds read on as a
read-only mailbox, signing in with the same tokens (AUTHENTICATE OAUTHBEARER;
no passwords); implicit TLS with --mail-tls-cert.

It asks the broker at --server about inboxes and rights (POST
/v1/mail/edge/lookup and /v1/mail/edge/inboxes), presenting the secret in --edge-secret: the file the
broker's --mail-edge-secret made, copied here with mode 0600. It checks tokens
against the broker's published keys (/.well-known/jwks.json).

Without --mail-tls-cert it listens on loopback addresses only. To run the edge
inside the broker instead, pass --mail-domain to agentkeys server.`,
		Example: "  agentkeys mail-edge --server https://keys.example.com --edge-secret /etc/agentkeys/edge.secret \\\n" +
			"      --mail-domain agents.example.com --smtp-listen 0.0.0.0:25 --submission-listen 0.0.0.0:587 --imap-listen 0.0.0.0:993 \\\n" +
			"      --mail-tls-cert /etc/ssl/mx.pem --mail-tls-key /etc/ssl/mx.key --mail-store /var/lib/agentkeys/mail --relay smtp.example.net:587 \\\n" +
			"      --relay-user agents@example.net --relay-password-file /etc/agentkeys/relay.pass",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if len(f.domains) == 0 {
				return problem.New(problem.BadRequest, "the mail edge needs at least one --mail-domain", "pass e.g. --mail-domain agents.example.com")
			}
			if secretFile == "" {
				return problem.New(problem.BadRequest, "the mail edge needs --edge-secret FILE", "copy the file agentkeys server --mail-edge-secret FILE made to this host (mode 0600) and name it")
			}
			if err := f.check(e.getenv); err != nil {
				return err
			}
			level := slog.LevelInfo
			if err := level.UnmarshalText([]byte(logLevel)); err != nil {
				return problem.Newf(problem.BadRequest, "use debug, info, warn or error", "--log-level %q is not a level", logLevel)
			}
			h, err := logHandler(e.stderr, logFormat, level)
			if err != nil {
				return err
			}
			log := slog.New(h)
			secret, _, err := loadEdgeSecret(secretFile, false)
			if err != nil {
				return err
			}
			server = strings.TrimRight(server, "/")
			if u, err := url.Parse(server); err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
				return problem.Newf(problem.BadRequest, "pass the broker's URL, e.g. --server https://keys.example.com", "--server %q is not an http(s) URL", server)
			} else if u.Scheme == "http" && !loopbackHost(u.Hostname()) {
				return problem.Newf(problem.BadRequest, "reach the broker over https (or run the edge on its host, over loopback)",
					"--server %q is plain http on a non-loopback host: the edge secret would cross the network in the clear", server)
			}
			tr := http.DefaultTransport.(*http.Transport).Clone()
			tr.MaxIdleConnsPerHost = 64 // a lookup per recipient, from many SMTP connections at once: keep them open
			hc := &http.Client{Timeout: 10 * time.Second, Transport: tr}
			disc, err := discover(cmd.Context(), hc, server)
			if err != nil {
				return problem.Wrap(err, problem.Unreachable, "start the broker, or correct --server", "cannot reach the broker at %s: %v", server, err)
			}
			dir := mailedge.NewRemote(server, secret, hc)
			if _, err := dir.Lookup(cmd.Context(), "postmaster@"+f.domains[0], ""); err != nil {
				return problem.Wrap(err, problem.Denied, "start the broker with --mail-edge-secret FILE and pass the same file here with --edge-secret", "the broker refused the edge: %v", err)
			}
			stop, done, err := f.start(cmd.Context(), mailRuntime{issuer: disc.Issuer, dir: mailedge.NewCache(dir, nil), inboxes: dir.Inboxes, keys: mailedge.RemoteJWKS(server+apiv1.JWKSPath, hc),
				limiters: broker.NewMemoryLimiter, storeDir: filepath.Join(e.home(), "mail"), log: log})
			if err != nil {
				return err
			}
			defer stop()
			select {
			case <-cmd.Context().Done():
				log.Info("shutting down")
				stop()
				<-done
			case err := <-done:
				if err != nil {
					return err
				}
			}
			log.Info("stopped")
			return nil
		},
	}
	e.serverFlag(cmd, &server, DefaultServer, "the broker's URL")
	cmd.Flags().StringVar(&secretFile, "edge-secret", "", "file holding the secret the broker's --mail-edge-secret made (mode 0600)")
	cmd.Flags().StringVar(&logLevel, "log-level", "info", "debug, info, warn or error")
	cmd.Flags().StringVar(&logFormat, "log-format", "auto", "text, json, or auto: text on a terminal, JSON otherwise")
	f.register(cmd.Flags(), "$AGENTKEYS_HOME/mail")
	return cmd
}

// discover reads the broker's OpenID discovery document: its issuer (the iss
// of the tokens the edge accepts) and JWKS URL.
func discover(ctx context.Context, hc *http.Client, server string) (*apiv1.Discovery, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, server+"/.well-known/openid-configuration", nil)
	if err != nil {
		return nil, err
	}
	res, err := hc.Do(req)
	if err != nil {
		return nil, err
	}
	defer res.Body.Close()
	if res.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET /.well-known/openid-configuration: %s", res.Status)
	}
	var d apiv1.Discovery
	if err := json.NewDecoder(io.LimitReader(res.Body, 1<<20)).Decode(&d); err != nil || d.Issuer == "" || d.JWKSURI == "" {
		return nil, fmt.Errorf("the discovery document names no issuer or JWKS: %v", err)
	}
	return &d, nil
}
