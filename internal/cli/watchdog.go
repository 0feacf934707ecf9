package cli

import (
	"context"
	"crypto/ed25519"
	"encoding/hex"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"slices"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/spf13/cobra"

	"github.com/agentkeys/agentkeys/internal/apiv1"
	"github.com/agentkeys/agentkeys/internal/audit"
	"github.com/agentkeys/agentkeys/internal/broker"
	"github.com/agentkeys/agentkeys/internal/client"
	"github.com/agentkeys/agentkeys/internal/problem"
	"github.com/agentkeys/agentkeys/internal/watchdog"
)

func watchdogCmd(e *env) *cobra.Command {
	var jwksURL, registryURL, webhook, incidentKey, platformPin, iamEndpoint, providerARN, clientID, awsRegion, metricsListen, logFormat string
	var interval time.Duration
	cmd := &cobra.Command{
		Use:   "watchdog",
		Short: "Watch the issuer's served JWKS against the keys the ledger vouches for; cut a hijacked issuer off",
		Long: `Every --interval it reads the JWKS at --jwks-url (the URL clouds fetch) and the
OIDC key registry of the broker at --registry-url, verified from the ledger's
entries under the enclave's attested keys (--platform-key pins the attestation
key; without it the key the quote names is trusted for this run). A served key
the ledger does not vouch for is drift: one JWKS_URL_DRIFT_DETECTED log line
(kid, jwks_url), the metric agentkeys_watchdog_drift_total, then once per kid a
governance revoke of the kid signed with --incident-key (an incident key of the
governance set: governance keygen, then governance init --incident; it can
only revoke OIDC keys, and a full member key is refused), the AWS adapter
(--aws-oidc-provider-arn: RemoveClientIDFromOpenIDConnectProvider, so STS refuses
the issuer's tokens) and a JSON POST to --webhook (retried with backoff). A
ledger key missing from the JWKS is a warning (JWKS_KEY_MISSING); a JWKS that
cannot be read is its own alert (JWKS_UNREACHABLE), not drift. AWS credentials
come from the SDK's default chain. It runs until SIGINT/SIGTERM.`,
		Example: "  agentkeys watchdog --jwks-url https://keys.example.com/.well-known/jwks.json --registry-url https://keys.internal:8443 \\\n" +
			"    --incident-key /etc/agentkeys/incident.key --webhook https://hooks.example.com/agentkeys \\\n" +
			"    --aws-oidc-provider-arn arn:aws:iam::123456789012:oidc-provider/keys.example.com",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx := cmd.Context()
			for _, f := range []struct{ name, v string }{{"jwks-url", jwksURL}, {"registry-url", registryURL}, {"webhook", webhook}, {"aws-iam-endpoint", iamEndpoint}} {
				if f.v == "" {
					continue
				}
				if u, err := url.Parse(f.v); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
					return problem.Newf(problem.BadRequest, "pass an http(s) URL, e.g. https://keys.example.com/.well-known/jwks.json", "--%s %q is not an http(s) URL", f.name, f.v)
				}
			}
			if interval < time.Second {
				return problem.New(problem.BadRequest, "--interval must be at least 1s", "pass e.g. --interval 30s")
			}
			if iamEndpoint != "" && providerARN == "" {
				return problem.New(problem.BadRequest, "--aws-iam-endpoint needs --aws-oidc-provider-arn", "pass the ARN of the IAM OIDC provider to cut off")
			}
			h, err := logHandler(e.stderr, logFormat, 0)
			if err != nil {
				return err
			}
			var key ed25519.PrivateKey
			if incidentKey != "" {
				if key, err = incidentSigner(incidentKey); err != nil {
					return err
				}
			}
			c, err := client.New(registryURL)
			if err != nil {
				return err
			}
			pins, err := audit.Attest(ctx, c, platformPin)
			if err != nil {
				return err
			}
			if key != nil {
				if err := checkIncidentKey(cmd.Context(), c, key, incidentKey); err != nil {
					return err
				}
			}
			cfg := watchdog.Config{JWKSURL: jwksURL, Registry: audit.NewKeyView(c, pins), Interval: interval, Webhook: webhook}
			if key != nil {
				cfg.Revoke = watchdog.GovernanceRevoker(c, key)
			}
			if providerARN != "" {
				cfg.Adapters = append(cfg.Adapters, watchdog.AWS{ProviderARN: providerARN, ClientID: clientID, Endpoint: iamEndpoint, Region: awsRegion}.Adapter())
			}
			log := slog.New(h)
			if metricsListen != "" {
				reg := prometheus.NewRegistry()
				cfg.Metrics = reg
				ln, err := net.Listen("tcp", metricsListen)
				if err != nil {
					return problem.Wrap(err, problem.BadRequest, "pass a free address, e.g. --metrics-listen 127.0.0.1:9465", "cannot listen on %s: %v", metricsListen, err)
				}
				srv := &http.Server{Handler: promhttp.HandlerFor(reg, promhttp.HandlerOpts{}), ReadHeaderTimeout: 10 * time.Second}
				go srv.Serve(ln)
				defer srv.Close()
				log.Info("metrics", "addr", ln.Addr().String())
			}
			cfg.Log = log
			log.Info("watchdog starting", "jwks_url", jwksURL, "registry_url", registryURL, "interval", interval.String(),
				"platform_key", pins.PlatformKey, "revoke", cfg.Revoke != nil, "webhook", webhook != "", "aws", providerARN != "")
			err = watchdog.New(cfg).Run(ctx)
			if errors.Is(err, context.Canceled) {
				return nil
			}
			return err
		},
	}
	f := cmd.Flags()
	f.StringVar(&jwksURL, "jwks-url", "", "the JWKS URL relying parties fetch (the issuer's /.well-known/jwks.json)")
	f.StringVar(&registryURL, "registry-url", "", "the broker whose ledger holds the OIDC key registry")
	f.DurationVar(&interval, "interval", 30*time.Second, "time between rounds (at least 1s)")
	f.StringVar(&webhook, "webhook", "", "POST a JSON event here on drift and when the JWKS is unreachable")
	f.StringVar(&incidentKey, "incident-key", "", "incident key (PEM Ed25519, governance init --incident) that signs the revoke of a drifted kid; without it nothing is revoked")
	f.StringVar(&platformPin, "platform-key", "", "pin the platform attestation public key (hex) the broker's quote must verify under")
	f.StringVar(&providerARN, "aws-oidc-provider-arn", "", "IAM OIDC provider to remove --aws-client-id from on drift")
	f.StringVar(&iamEndpoint, "aws-iam-endpoint", "", "IAM endpoint URL (default: AWS's)")
	f.StringVar(&clientID, "aws-client-id", apiv1.AWSAudience, "the client id (audience) to remove from the IAM OIDC provider")
	f.StringVar(&awsRegion, "aws-region", "us-east-1", "AWS signing region for IAM")
	f.StringVar(&metricsListen, "metrics-listen", "", "serve Prometheus metrics on this address (e.g. 127.0.0.1:9465)")
	f.StringVar(&logFormat, "log-format", "auto", "text, json, or auto: text on a terminal, JSON otherwise")
	cmd.MarkFlagRequired("jwks-url")
	cmd.MarkFlagRequired("registry-url")
	return cmd
}

// checkIncidentKey refuses a key that is not one of the governance set's
// incident keys: a full member key on the watchdog's machine could change
// everything if that machine leaked it, and a key outside the set revokes
// nothing.
func checkIncidentKey(ctx context.Context, c *client.Client, key ed25519.PrivateKey, path string) error {
	g, err := c.Governance(ctx)
	if err != nil {
		return err
	}
	pub := hex.EncodeToString(key.Public().(ed25519.PublicKey))
	const fix = "make an incident key (agentkeys governance keygen --out incident.key) and add it to the set (agentkeys governance init --member … --incident PUBLIC_KEY --out p.json, then sign and submit it)"
	switch {
	case slices.Contains(g.Members, pub):
		return problem.Newf(problem.Denied, fix, "--incident-key %s is a full governance member key: the watchdog holds an incident key, which can only revoke OIDC keys", path)
	case !slices.Contains(g.Incident, pub):
		return problem.Newf(problem.Denied, fix, "--incident-key %s is not an incident key of the broker's governance set: it would revoke nothing", path)
	}
	return nil
}

// incidentSigner loads the key the watchdog signs revocations with: a PEM
// Ed25519 incident key in a file only its owner may read.
func incidentSigner(path string) (ed25519.PrivateKey, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return nil, problem.Wrap(err, problem.BadRequest, "pass --incident-key PATH, a PEM Ed25519 incident key (governance keygen)", "cannot read the incident key: %v", err)
	}
	if fi.Mode().Perm()&0o077 != 0 {
		return nil, problem.Newf(problem.Denied, "chmod 600 "+path, "the incident key %s is %v: other users may read it", path, fi.Mode().Perm())
	}
	key, err := broker.LoadOperatorKey(path)
	if err != nil {
		return nil, problem.Wrap(err, problem.BadRequest, "pass --incident-key PATH, a PEM Ed25519 incident key (governance keygen --out)", "cannot read the incident key: %v", err)
	}
	return key, nil
}
