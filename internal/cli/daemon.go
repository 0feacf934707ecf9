package cli

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/term"

	"github.com/agentkeys/agentkeys/internal/daemon"
	"github.com/agentkeys/agentkeys/internal/problem"
)

func daemonCmd(e *env) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "daemon",
		Short: "The agent-side daemon: pair with an owner, serve credentials over MCP or a Unix socket",
		Long: `Run these inside the agent's sandbox. The daemon keeps its keys and session under
$AGENTKEYS_HOME/daemon (0600) and is the only thing in the sandbox that talks to
the broker; every request it makes carries a proof signed by its own key.`,
		Example: "  agentkeys daemon pair --server https://keys.example.com --owner 0xOWNER --alias ci-bot --scope openai,github\n" +
			"  agentkeys daemon mcp\n  agentkeys daemon serve --socket /run/agentkeys.sock\n  agentkeys daemon mcp-config",
	}
	cmd.AddCommand(daemonPairCmd(e), daemonMCPCmd(e), daemonServeCmd(e), daemonMCPConfigCmd(e), daemonStatusCmd(e),
		daemonAWSCmd(e), daemonOIDCTokenCmd(e))
	return cmd
}

func (e *env) daemonDir() daemon.Dir { return daemon.DirOf(e.home()) }

// daemonLog logs to stderr as text; nothing secret is ever passed to it.
func (e *env) daemonLog() *slog.Logger {
	return slog.New(slog.NewTextHandler(e.stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
}

func daemonPairCmd(e *env) *cobra.Command {
	var server, owner, alias, resume, platformPin string
	var scope []string
	var ttl, wait time.Duration
	var noWait, asJSON bool
	cmd := &cobra.Command{
		Use:   "pair",
		Short: "Ask an owner to pair this daemon, show the VVC and wait for approval",
		Long: `Generate this daemon's proof key (P-256) and HPKE key (ML-KEM-768 + X25519), send a
signed pair request to the broker and print its id, its 6-digit VVC (made from the
broker's fresh nonce and this request's signature) and this daemon's key
fingerprint. The owner runs agentkeys agent pending, checks that both match and
approves. While a request for the alias is pending, another is refused. The session
token arrives sealed to this daemon's key and is stored in
$AGENTKEYS_HOME/daemon/session.json (0600). --no-wait returns at once;
--resume ID waits for a request sent earlier. While it waits it shows the time
left on a terminal (stderr), and nothing when piped. --json prints one JSON
line when the request is sent ("status":"pending", with the VVC) and one when
paired ("status":"paired").`,
		Example: "  agentkeys daemon pair --server http://127.0.0.1:8090 --owner 0x1234…abcd --alias ci-bot --scope openai,github\n" +
			"  agentkeys daemon pair --server http://127.0.0.1:8090 --owner OMNI --alias ci-bot --scope openai --no-wait\n" +
			"  agentkeys daemon pair --resume 1f0c9a7e2b4d6c8a\n" +
			"  agentkeys daemon pair --server http://127.0.0.1:8090 --owner OMNI --alias ci-bot --scope openai --json",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx := cmd.Context()
			d := e.daemonDir()
			var p *daemon.Pending
			if resume != "" {
				var err error
				if p, err = d.LoadPending(resume); err != nil {
					return err
				}
			} else {
				if server == "" || owner == "" || alias == "" {
					return problem.New(problem.BadRequest, "--server, --owner and --alias are required",
						"e.g. agentkeys daemon pair --server URL --owner OWNER --alias ci-bot --scope openai")
				}
				var err error
				if p, err = d.NewPairRequest(ctx, server, owner, alias, scope, ttl, wait, platformPin); err != nil {
					return err
				}
				if !asJSON {
					fmt.Fprintf(e.stdout, "Pair request %s sent to owner %s for agent %q, scope [%s].\n", p.ID, p.Owner, p.Alias, strings.Join(p.Scope, ","))
					fmt.Fprintf(e.stdout, "VVC: %s\n", p.VVC)
					fmt.Fprintf(e.stdout, "Daemon key: %s\n", p.Fingerprint)
					fmt.Fprintf(e.stdout, "The owner approves with: agentkeys agent approve %s (and checks that it shows VVC %s and daemon key %s)\n", p.ID, p.VVC, p.Fingerprint)
				}
			}
			if asJSON {
				if err := e.jsonOut(map[string]any{"status": "pending", "id": p.ID, "server": p.Server, "owner": p.Owner, "alias": p.Alias,
					"scope": p.Scope, "vvc": p.VVC, "fingerprint": p.Fingerprint, "expires_at": expiry(p.ExpiresAt)}); err != nil {
					return err
				}
			}
			if noWait {
				if !asJSON {
					fmt.Fprintf(e.stdout, "Not waiting. Later: agentkeys daemon pair --resume %s\n", p.ID)
				}
				return nil
			}
			s, err := e.waitPairing(ctx, d, p)
			if err != nil {
				return err
			}
			if asJSON {
				return e.jsonOut(map[string]any{"status": "paired", "id": p.ID, "server": s.Server, "owner": s.Owner, "alias": s.Alias,
					"agent": s.Agent, "wallet": s.Wallet, "s3_prefix": daemon.S3Prefix(s.Wallet), "generation": s.Generation,
					"expires_at": expiry(s.ExpiresAt)})
			}
			fmt.Fprintf(e.stdout, "Paired: agent %s (generation %d, omni %s), session until %s.\n", s.Alias, s.Generation, s.Agent, expiry(s.ExpiresAt))
			fmt.Fprintln(e.stdout, "Next: agentkeys daemon mcp-config (for an MCP client) or agentkeys daemon serve --socket PATH")
			return nil
		},
	}
	e.serverFlag(cmd, &server, "", "the broker URL")
	cmd.Flags().StringVar(&owner, "owner", "", "the owner's wallet address or omni (agentkeys whoami on the owner's machine)")
	cmd.Flags().StringVar(&alias, "alias", "", "this agent's name, e.g. ci-bot")
	cmd.Flags().StringSliceVar(&scope, "scope", nil, "services the agent asks for, comma-separated")
	cmd.Flags().DurationVar(&ttl, "ttl", 0, "session lifetime to ask for (default: the broker's, 30 days)")
	cmd.Flags().DurationVar(&wait, "expires", 10*time.Minute, "how long the request stays open (at most 1h)")
	cmd.Flags().BoolVar(&noWait, "no-wait", false, "send the request and return")
	cmd.Flags().StringVar(&resume, "resume", "", "wait for an earlier request with this id")
	cmd.Flags().StringVar(&platformPin, "platform-key", "", "pin the platform attestation public key (hex) the broker's quote must verify under (default: the key the quote names)")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON lines: the request when sent, the session when paired")
	return cmd
}

// waitPairing waits for the owner's decision on p (daemon.Dir.WaitPairing); on a
// terminal it shows the time left, redrawn every second.
func (e *env) waitPairing(ctx context.Context, d daemon.Dir, p *daemon.Pending) (*daemon.Session, error) {
	f, ok := e.stderr.(*os.File)
	tty := ok && term.IsTerminal(int(f.Fd()))
	s, err := d.WaitPairing(ctx, p, func() {
		if tty {
			fmt.Fprintf(e.stderr, "\rWaiting for the owner to approve request %s: %s left   ", p.ID, expiresIn(p.ExpiresAt))
		}
	})
	if tty {
		fmt.Fprintln(e.stderr)
	}
	return s, err
}

// cloudFlags adds the cloud defaults of cloud_credentials to cmd.
func cloudFlags(cmd *cobra.Command, src *daemon.Source) {
	cmd.Flags().StringVar(&src.STSEndpoint, "sts-endpoint", "", "STS endpoint URL for cloud_credentials (default: AWS)")
	cmd.Flags().StringVar(&src.AWSAudience, "aws-audience", daemon.DefaultAWSAudience, "token audience for AWS STS")
	cmd.Flags().StringVar(&src.AWSRegion, "aws-region", daemon.DefaultAWSRegion, "AWS region for STS")
	cmd.Flags().StringVar(&src.GCPTokenURL, "gcp-sts-url", "", "GCP STS token endpoint for cloud_credentials (default: Google's)")
	cmd.Flags().StringVar(&src.GCPIAMURL, "gcp-iam-url", "", "GCP IAM credentials endpoint for service-account impersonation (default: Google's)")
	cmd.Flags().StringVar(&src.AzureAuthorityHost, "azure-authority-host", "", "Entra ID authority host for cloud_credentials (default: Azure public cloud)")
	cmd.Flags().StringVar(&src.AliSTSEndpoint, "alicloud-sts-endpoint", "", "Alibaba Cloud STS host[:port] for cloud_credentials (default: sts.aliyuncs.com)")
	chainFlag(cmd, src)
	mailSendFlags(cmd, src)
}

// chainFlag adds --chain-verified-oidc (default on): identity tokens are
// dual-verified against the ledger's key registry before any use (§10.2).
func chainFlag(cmd *cobra.Command, src *daemon.Source) {
	cmd.Flags().VarPF(notFlag{&src.Unverified}, "chain-verified-oidc", "",
		"refuse identity tokens whose key the ledger's registry does not vouch for (=false only for a bring-your-own issuer)").NoOptDefVal = "true"
}

// notFlag is a boolean flag stored negated (the flag's default, true, is the
// zero value of the field).
type notFlag struct{ p *bool }

func (f notFlag) String() string { return strconv.FormatBool(!*f.p) }
func (f notFlag) Type() string   { return "bool" }
func (f notFlag) Set(v string) error {
	b, err := strconv.ParseBool(v)
	*f.p = !b
	return err
}

func daemonMCPCmd(e *env) *cobra.Command {
	var src daemon.Source
	var socket string
	cmd := &cobra.Command{
		Use:   "mcp",
		Short: "Serve the agent's credentials to an MCP client on stdio",
		Long: `An MCP server on stdin/stdout with the tools get_credential{service,
wait_seconds?}, list_credentials{} and cloud_credentials{provider:"aws",
role_arn, session_name?, duration?} (or provider "gcp" with audience,
service_account?; "azure" with client_id, tenant_id; "alicloud" with role_arn,
oidc_provider_arn: the setups agentkeys oidc register prints); their input schemas state the rules the
daemon checks. Tool errors start with a stable code: BAD_REQUEST, DENIED,
NOT_FOUND, RATE_LIMITED, REVOKED or UNREACHABLE. Logs (never values) go to stderr.
It stops quietly (exit 0) when its client closes stdin or sends SIGINT/SIGTERM.
With --socket PATH it is a thin front of a daemon that runs as another user
(agentkeys daemon serve --socket PATH --socket-group GROUP): the same tools, every
call forwarded to that socket; it holds no keys, so the agent's user never can.
Configure your MCP client with the output of agentkeys daemon mcp-config.`,
		Example: "  agentkeys daemon mcp\n  agentkeys daemon mcp --socket /run/agentkeys/agentkeys.sock",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			log := e.daemonLog()
			if socket != "" {
				for _, f := range []string{"sts-endpoint", "aws-audience", "aws-region", "chain-verified-oidc"} {
					if cmd.Flags().Changed(f) {
						return problem.Newf(problem.BadRequest, "pass --"+f+" to agentkeys daemon serve, which calls STS",
							"--%s does nothing with --socket: the daemon behind the socket calls STS", f)
					}
				}
				log.Info("mcp front starting", "socket", socket)
				return daemon.ServeMCP(cmd.Context(), daemon.NewSocketClient(socket), log)
			}
			src.Dir, src.Checks, src.Keys = e.daemonDir(), daemon.NewChecks(daemon.DefaultCheckTTL, time.Now), daemon.NewKeyViews()
			src.Tokens = daemon.NewCloudTokens(daemon.DefaultCloudTokens)
			if err := src.Dir.CheckPrivate(); err != nil {
				return err
			}
			log.Info("mcp server starting", "home", e.home(), "paired", src.Dir.Paired())
			return daemon.ServeMCP(cmd.Context(), src, log)
		},
	}
	cmd.Flags().StringVar(&socket, "socket", "", "be a front of the daemon serving this socket (it runs as another user; no keys here)")
	cloudFlags(cmd, &src)
	return cmd
}

func daemonServeCmd(e *env) *cobra.Command {
	var socket, group string
	var src daemon.Source
	var tokenFiles []string
	var tokenTTL time.Duration
	cmd := &cobra.Command{
		Use:   "serve",
		Short: "Serve the agent's credentials over HTTP on a Unix socket (0600, or 0660 for a group)",
		Long: `For tools that do not speak MCP: GET /credentials → {"services":[…]},
GET /credentials/{service} → {"service":…,"value":…}; errors are
{"error":{"code","message","fix"}} with the codes of agentkeys daemon mcp;
GET /cloud/aws?role_arn=ARN → credential_process JSON;
GET /cloud/gcp?audience=…, /cloud/azure?client_id=…&tenant_id=…,
/cloud/alicloud?role_arn=…&oidc_provider_arn=… → cloud_credentials' JSON.
The socket is 0600. Run as its own user with --socket-group GROUP (the agent
user's group), the daemon makes it 0660 for that group: the agent reaches it
(agentkeys daemon mcp --socket PATH, agentkeys run --socket PATH) but cannot
read the daemon's keys. The daemon refuses to start when its directory is open
to other users, and a socket directory every user may write.
--oidc-token-file AUD=PATH keeps a web-identity token file (0600) fresh for
AWS_WEB_IDENTITY_TOKEN_FILE-style consumers (GOOGLE_APPLICATION_CREDENTIALS'
file source, AZURE_FEDERATED_TOKEN_FILE, ALIBABA_CLOUD_OIDC_TOKEN_FILE):
rewritten at 80% of its lifetime (default 5m, 1h for api://AzureADTokenExchange,
whose SDKs keep the file 10 minutes).`,
		Example: "  agentkeys daemon serve --socket /run/agentkeys.sock\n" +
			"  curl --unix-socket /run/agentkeys.sock http://agentkeys/credentials/openai\n" +
			"  runuser -u agentkeys -- agentkeys daemon serve --socket /run/agentkeys/agentkeys.sock --socket-group agent",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			d := e.daemonDir()
			if group != "" {
				if socket == "" {
					return problem.New(problem.BadRequest, "--socket-group needs --socket PATH in a directory the group may enter",
						"e.g. --socket /run/agentkeys/agentkeys.sock --socket-group agent")
				}
				abs, _ := filepath.Abs(socket)
				dir, _ := filepath.Abs(string(d))
				if rel, err := filepath.Rel(dir, abs); err == nil && rel != ".." && !strings.HasPrefix(rel, ".."+string(filepath.Separator)) {
					return problem.Newf(problem.BadRequest, "put the socket outside it, e.g. /run/agentkeys/agentkeys.sock",
						"%s is in the daemon's own directory, which only the daemon's user may enter", socket)
				}
			}
			if err := d.CheckPrivate(); err != nil {
				return err
			}
			if socket == "" {
				socket = filepath.Join(e.home(), "daemon", "agentkeys.sock")
				os.MkdirAll(filepath.Dir(socket), 0o700)
			}
			files := map[string]string{} // path → audience
			for _, tf := range tokenFiles {
				aud, path, ok := strings.Cut(tf, "=")
				if !ok || aud == "" || path == "" {
					return problem.Newf(problem.BadRequest, "write it as AUDIENCE=PATH, e.g. sts.amazonaws.com=/run/aws-token", "--oidc-token-file %q", tf)
				}
				files[path] = aud
			}
			ln, err := daemon.ListenSocket(socket, group)
			if err != nil {
				return err
			}
			defer os.Remove(socket)
			log := e.daemonLog()
			src.Dir, src.Checks, src.Keys = d, daemon.NewChecks(daemon.DefaultCheckTTL, time.Now), daemon.NewKeyViews()
			src.Tokens = daemon.NewCloudTokens(daemon.DefaultCloudTokens)
			// The token-file refreshers and the socket server are one group:
			// whichever way it ends, the rest stop and are joined.
			ctx, stop := context.WithCancel(cmd.Context())
			defer stop()
			var refreshers sync.WaitGroup
			for path, aud := range files {
				refreshers.Go(func() { src.KeepTokenFile(ctx, aud, path, int64(tokenTTL/time.Second), log) })
			}
			log.Info("listening", "socket", socket, "group", group, "paired", d.Paired())
			err = daemon.ServeSocket(ctx, ln, src, log)
			stop()
			refreshers.Wait()
			return err
		},
	}
	cmd.Flags().StringVar(&socket, "socket", "", "socket path (default $AGENTKEYS_HOME/daemon/agentkeys.sock)")
	cmd.Flags().StringVar(&group, "socket-group", "", "make the socket 0660 for this group (the agent user's); needs --socket")
	cmd.Flags().StringArrayVar(&tokenFiles, "oidc-token-file", nil, "keep an identity token for AUDIENCE in PATH (repeatable), as AUDIENCE=PATH")
	cmd.Flags().DurationVar(&tokenTTL, "oidc-token-ttl", 0, "lifetime of tokens written to --oidc-token-file (default: the broker's, 5m; 1h for api://AzureADTokenExchange)")
	cloudFlags(cmd, &src)
	return cmd
}

func daemonMCPConfigCmd(e *env) *cobra.Command {
	var client, socket string
	cmd := &cobra.Command{
		Use:   "mcp-config",
		Short: "Print MCP client configuration for this daemon",
		Long: `Prints JSON to paste into an MCP client's configuration. --client claude (Claude
Desktop's claude_desktop_config.json, Claude Code's .mcp.json) is the default;
--client cursor prints the same for Cursor's mcp.json; --client vscode prints VS
Code's .vscode/mcp.json shape. With --socket PATH the client starts the thin
front (agentkeys daemon mcp --socket PATH) of a daemon that runs as another user.
The command it names is this binary: it refuses one in Go's build cache (go run)
or a temp dir, which would vanish; install the binary first (go install).`,
		Example: "  agentkeys daemon mcp-config\n  agentkeys daemon mcp-config --client vscode > .vscode/mcp.json\n" +
			"  agentkeys daemon mcp-config --socket /run/agentkeys/agentkeys.sock",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			self, err := os.Executable()
			if err != nil {
				return err
			}
			if r, err := filepath.EvalSymlinks(self); err == nil {
				self = r
			}
			if err := checkInstalled(cmd.Context(), self, e.getenv); err != nil {
				return err
			}
			var server map[string]any
			if socket != "" {
				abs, err := filepath.Abs(socket)
				if err != nil {
					return err
				}
				server = map[string]any{"command": self, "args": []string{"daemon", "mcp", "--socket", abs}}
			} else {
				home, err := filepath.Abs(e.home())
				if err != nil {
					return err
				}
				server = map[string]any{"command": self, "args": []string{"daemon", "mcp"}, "env": map[string]string{"AGENTKEYS_HOME": home}}
			}
			var out any
			switch client {
			case "claude", "cursor", "":
				out = map[string]any{"mcpServers": map[string]any{"agentkeys": server}}
			case "vscode":
				server["type"] = "stdio"
				out = map[string]any{"servers": map[string]any{"agentkeys": server}}
			default:
				return problem.Newf(problem.BadRequest, "use --client claude, cursor or vscode", "unknown MCP client %q", client)
			}
			return e.printJSON(out)
		},
	}
	cmd.Flags().StringVar(&client, "client", "claude", "claude, cursor or vscode")
	cmd.Flags().StringVar(&socket, "socket", "", "configure the front of the daemon serving this socket (daemon mcp --socket)")
	return cmd
}

func daemonStatusCmd(e *env) *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "status",
		Short: "Ask the broker about this daemon's session: paired, revoked, expired or unreachable",
		Long: `Asks the broker (GET /v1/whoami with the agent session and a proof) and
prints the state: paired, revoked (by the owner, or the alias was paired again),
expired or unreachable; with the agent, its generation and scope, the session's
expiry, and the agent's wallet and S3 prefix (the wallet in lower case, as the
bucket policy sees it). Never the token. Exit code 0 when paired, 3 when revoked
or expired (or not paired: --json says "state":"unpaired"), 5 when the broker
cannot be reached.`,
		Example: "  agentkeys daemon status\n  agentkeys daemon status --json",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			d := e.daemonDir()
			if !d.Paired() && asJSON {
				p := daemon.ErrNotPaired
				if err := e.jsonOut(map[string]any{"state": "unpaired", "detail": p.Message, "fix": p.Fix}); err != nil {
					return err
				}
				return exitError{code: p.ExitCode()}
			}
			st, err := daemon.Source{Dir: d}.Status(cmd.Context())
			if err != nil {
				return err
			}
			s := st.Session
			wallet, generation, expires := s.Wallet, s.Generation, s.ExpiresAt
			scope := []string{}
			if w := st.Whoami; w != nil {
				wallet, generation, expires, scope = w.Wallet, w.Generation, w.ExpiresAt, w.Scope
				if scope == nil {
					scope = []string{}
				}
			}
			out := map[string]any{"state": st.State, "server": s.Server, "owner": s.Owner, "alias": s.Alias, "agent": s.Agent,
				"wallet": wallet, "token_wallet": strings.ToLower(wallet), "s3_prefix": daemon.S3Prefix(wallet), "generation": generation, "scope": scope,
				"expires_at": expiry(expires)}
			if p := st.Problem; p != nil {
				out["detail"], out["fix"] = p.Message, p.Fix
			}
			if asJSON {
				if err := e.jsonOut(out); err != nil {
					return err
				}
			} else {
				fmt.Fprintf(e.stdout, "State:      %s\n", st.State)
				if p := st.Problem; p != nil {
					fmt.Fprintf(e.stdout, "            %s\n            Fix: %s\n", p.Message, p.Fix)
				}
				fmt.Fprintf(e.stdout, "Server:     %s\nOwner:      %s\nAgent:      %s (generation %d, omni %s)\n", s.Server, s.Owner, s.Alias, generation, s.Agent)
				fmt.Fprintf(e.stdout, "Wallet:     %s (in identity tokens and cloud policies: %s)\nS3 prefix:  %s\n",
					wallet, strings.ToLower(wallet), daemon.S3Prefix(wallet))
				if st.Whoami != nil {
					fmt.Fprintf(e.stdout, "Scope:      %s\n", scopeText(scope))
				}
				fmt.Fprintf(e.stdout, "Session:    until %s (%s)\n", expiry(expires), expiresIn(expires))
			}
			switch st.State {
			case daemon.StatePaired:
				return nil
			case daemon.StateUnreachable:
				return exitError{code: problem.ExitUnreachable}
			}
			return exitError{code: problem.ExitDenied}
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print as JSON")
	return cmd
}

func daemonAWSCmd(e *env) *cobra.Command {
	var r daemon.AWSRequest
	var src daemon.Source
	cmd := &cobra.Command{
		Use:   "aws-credentials",
		Short: "Print AWS credential_process JSON for a role (mints a token, calls STS itself)",
		Long: `Mints an identity token through the paired session, exchanges it at STS
(AssumeRoleWithWebIdentity) and prints the AWS credential_process JSON. The
credentials are cached under $AGENTKEYS_HOME/daemon/cloud (0600) until shortly
before they expire, so an SDK calling it often does not mint each time. Use it
from ~/.aws/config:
  [profile agent]
  credential_process = agentkeys daemon aws-credentials --role-arn ARN`,
		Example: "  agentkeys daemon aws-credentials --role-arn arn:aws:iam::123456789012:role/agentkeys-agents\n" +
			"  agentkeys daemon aws-credentials --role-arn ARN --sts-endpoint http://127.0.0.1:8333",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			src.Dir = e.daemonDir()
			cr, err := src.AWSCredentials(cmd.Context(), r)
			if err != nil {
				return err
			}
			return json.NewEncoder(e.stdout).Encode(cr)
		},
	}
	cmd.Flags().StringVar(&r.RoleARN, "role-arn", "", "the role to assume")
	cmd.Flags().StringVar(&r.SessionName, "session-name", "", "role session name (default agentkeys-<alias>)")
	cmd.Flags().Int32Var(&r.Duration, "duration", 0, "credential lifetime in seconds (default: the role's)")
	cmd.Flags().StringVar(&r.STSEndpoint, "sts-endpoint", "", "STS endpoint URL (default: AWS)")
	cmd.Flags().StringVar(&r.Region, "region", daemon.DefaultAWSRegion, "AWS region for STS")
	cmd.Flags().StringVar(&r.Audience, "audience", daemon.DefaultAWSAudience, "token audience")
	chainFlag(cmd, &src)
	cmd.MarkFlagRequired("role-arn")
	return cmd
}

func daemonOIDCTokenCmd(e *env) *cobra.Command {
	var audience, out string
	var ttl time.Duration
	var src daemon.Source
	cmd := &cobra.Command{
		Use:   "oidc-token",
		Short: "Mint an identity token for an audience; print it or write it to a 0600 file",
		Long: `Mints a short-lived identity token through the paired session (the agent's scope
must allow oidc:<audience> or oidc:*). Without --out it prints the token (the
command exists to print it); with --out it writes the file 0600, for
AWS_WEB_IDENTITY_TOKEN_FILE-style consumers. daemon serve --oidc-token-file keeps
such a file fresh.`,
		Example: "  agentkeys daemon oidc-token --audience sts.amazonaws.com --out /run/agent/aws-token",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			src.Dir = e.daemonDir()
			if out != "" {
				exp, err := src.WriteTokenFile(cmd.Context(), audience, out, int64(ttl/time.Second))
				if err != nil {
					return err
				}
				fmt.Fprintf(e.stdout, "Wrote %s (0600), valid until %s.\n", out, expiry(exp))
				return nil
			}
			t, err := src.OIDCToken(cmd.Context(), audience, int64(ttl/time.Second))
			if err != nil {
				return err
			}
			fmt.Fprintln(e.stdout, t.Token)
			return nil
		},
	}
	cmd.Flags().StringVar(&audience, "audience", daemon.DefaultAWSAudience, "the relying party's audience")
	cmd.Flags().StringVar(&out, "out", "", "write the token to this file (0600) instead of printing it")
	cmd.Flags().DurationVar(&ttl, "ttl", 0, "token lifetime (default: the broker's, 5m)")
	chainFlag(cmd, &src)
	return cmd
}
