package cli

import (
	"encoding/json"
	"fmt"
	"path/filepath"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/agentkeys/agentkeys/internal/broker"
	"github.com/agentkeys/agentkeys/internal/client"
	"github.com/agentkeys/agentkeys/internal/federation"
	"github.com/agentkeys/agentkeys/internal/oidc"
	"github.com/agentkeys/agentkeys/internal/problem"
)

func oidcCmd(e *env) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "oidc",
		Short: "The broker's OIDC issuer: register it with a cloud, list and rotate its keys, mint for yourself",
		Long: `Clouds trust the broker's OIDC issuer; an agent's daemon exchanges a short-lived
identity token at the cloud's STS and calls the cloud directly. register prints
what to paste into a cloud; keys and rotate manage the issuer's signing keys.`,
		Example: "  agentkeys oidc register aws --issuer https://keys.example.com --account 123456789012 --bucket agent-data\n" +
			"  agentkeys oidc keys --server https://keys.example.com\n" +
			"  agentkeys oidc rotate --server https://keys.example.com --window 24h",
	}
	cmd.AddCommand(oidcRegisterCmd(e), oidcKeysCmd(e), oidcRotateCmd(e), oidcTokenCmd(e))
	return cmd
}

func (e *env) printJSON(v any) error {
	enc := json.NewEncoder(e.stdout)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

func oidcRegisterCmd(e *env) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "register",
		Short: "Print the commands and policies that make a cloud trust this issuer",
		Long: `Prints ready-to-run commands and the policy documents for one cloud; --json
prints them as one JSON object for machine use. Nothing is sent anywhere.`,
		Example: "  agentkeys oidc register aws --issuer https://keys.example.com --account 123456789012 --bucket agent-data\n" +
			"  agentkeys oidc register k8s --issuer https://keys.example.com --audience my-cluster",
	}
	var issuer string
	var asJSON bool
	cmd.PersistentFlags().StringVar(&issuer, "issuer", "", "the broker's public issuer URL (as in its discovery document)")
	cmd.PersistentFlags().BoolVar(&asJSON, "json", false, "print one JSON object")

	var aw federation.AWSInput
	aws := registerCmd(e, &asJSON, "aws", "IAM OIDC provider, role trust policy and per-agent-prefix S3 policies",
		"  agentkeys oidc register aws --issuer https://keys.example.com --account 123456789012 --bucket agent-data\n"+
			"  agentkeys oidc register aws --issuer https://keys.example.com --account 123456789012 --pin mrsigner --mrsigner HEX --json",
		func() (*federation.AWS, error) { aw.Issuer = issuer; return federation.GenerateAWS(aw) },
		func(out *federation.AWS) error {
			fmt.Fprintf(e.stdout, "# 1. Save these three files.\n\n# trust-policy.json\n")
			e.printJSON(out.TrustPolicy)
			fmt.Fprintf(e.stdout, "\n# role-policy.json\n")
			e.printJSON(out.RolePolicy)
			fmt.Fprintf(e.stdout, "\n# bucket-policy.json\n")
			e.printJSON(out.BucketPolicy)
			fmt.Fprintf(e.stdout, "\n# 2. Run:\n")
			e.printLines(out.Commands)
			fmt.Fprintf(e.stdout, "\n# 3. In the agent's sandbox:\n#   agentkeys daemon aws-credentials --role-arn %s\n", out.RoleARN)
			return nil
		})
	aws.Flags().StringVar(&aw.Account, "account", "", "12-digit AWS account id")
	aws.Flags().StringVar(&aw.RoleName, "role-name", "agentkeys-agents", "the role agents assume")
	aws.Flags().StringVar(&aw.Bucket, "bucket", "", "the bucket agents share, one prefix per agent wallet (default agentkeys-<account>)")
	aws.Flags().StringVar(&aw.Audience, "audience", oidc.AWSAudience, "the token audience (client id)")
	aws.Flags().StringVar(&aw.Pin, "pin", "", "pin sub to the enclave: mrenclave, mrsigner or both")
	aws.Flags().StringVar(&aw.MrEnclave, "mrenclave", "", "mrenclave to pin (hex; GET /v1/enclave)")
	aws.Flags().StringVar(&aw.MrSigner, "mrsigner", "", "mrsigner to pin (hex; GET /v1/enclave)")

	var gc federation.GCPInput
	gcp := registerCmd(e, &asJSON, "gcp", "Workload identity pool and OIDC provider with attribute mapping",
		"  agentkeys oidc register gcp --issuer https://keys.example.com --project my-proj --project-number 123456789",
		func() (*federation.GCP, error) { gc.Issuer = issuer; return federation.GenerateGCP(gc) },
		func(out *federation.GCP) error {
			fmt.Fprintf(e.stdout, "# audience for agents' tokens (server --oidc-audience): %s\n", out.Audience)
			e.printLines(out.Commands)
			return nil
		})
	gcp.Flags().StringVar(&gc.Project, "project", "", "GCP project id")
	gcp.Flags().StringVar(&gc.ProjectNumber, "project-number", "", "GCP project number")
	gcp.Flags().StringVar(&gc.Pool, "pool", "agentkeys", "workload identity pool id")
	gcp.Flags().StringVar(&gc.Provider, "provider", "agentkeys-oidc", "provider id")
	gcp.Flags().StringVar(&gc.ServiceAccount, "service-account", "", "service account agents impersonate (optional)")

	var az federation.AzureInput
	azure := registerCmd(e, &asJSON, "azure", "Federated identity credential of an app registration",
		"  agentkeys oidc register azure --issuer https://keys.example.com --app-id APP --subject 'enclave:…:agent:0xabc…'",
		func() (*federation.Azure, error) { az.Issuer = issuer; return federation.GenerateAzure(az) },
		func(out *federation.Azure) error {
			fmt.Fprintln(e.stdout, "# credential.json")
			e.printJSON(out.Credential)
			e.printLines(out.Commands)
			return nil
		})
	azure.Flags().StringVar(&az.AppID, "app-id", "", "the app registration's application (client) id")
	azure.Flags().StringVar(&az.Subject, "subject", "", "the agent's sub claim")
	azure.Flags().StringVar(&az.Name, "name", "agentkeys", "credential name")

	var al federation.AliInput
	ali := registerCmd(e, &asJSON, "alicloud", "RAM OIDC provider and role trust policy",
		"  agentkeys oidc register alicloud --issuer https://keys.example.com --account 1234567890123456",
		func() (*federation.Ali, error) { al.Issuer = issuer; return federation.GenerateAli(al) },
		func(out *federation.Ali) error {
			e.printLines(out.Commands)
			fmt.Fprintln(e.stdout, "# role trust policy")
			return e.printJSON(out.TrustPolicy)
		})
	ali.Flags().StringVar(&al.Account, "account", "", "Alibaba Cloud account id")
	ali.Flags().StringVar(&al.Name, "name", "agentkeys", "OIDC provider name")
	ali.Flags().StringVar(&al.Fingerprint, "fingerprint", "", "SHA-1 fingerprint of the issuer's TLS certificate")

	var k8 federation.K8sInput
	k8s := registerCmd(e, &asJSON, "k8s", "Kubernetes structured authentication configuration (apiserver.config.k8s.io/v1)",
		"  agentkeys oidc register k8s --issuer https://keys.example.com --audience my-cluster > auth-config.json",
		func() (map[string]any, error) { k8.Issuer = issuer; return federation.GenerateK8s(k8) },
		nil) // the configuration file is JSON either way
	k8s.Flags().StringVar(&k8.Audience, "audience", "kubernetes", "the API server's audience")
	cmd.AddCommand(aws, gcp, azure, ali, k8s)
	return cmd
}

// registerCmd is one `oidc register <cloud>` command: gen builds the cloud's setup
// from the flags; --json prints it whole, otherwise text does (nil: JSON always).
func registerCmd[T any](e *env, asJSON *bool, use, short, example string, gen func() (T, error), text func(T) error) *cobra.Command {
	return &cobra.Command{
		Use:     use,
		Short:   short,
		Example: example,
		Args:    cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error {
			out, err := gen()
			if err != nil {
				return usageProblem(err)
			}
			if *asJSON || text == nil {
				return e.printJSON(out)
			}
			return text(out)
		},
	}
}

func (e *env) printLines(lines []string) {
	for _, l := range lines {
		fmt.Fprintln(e.stdout, l)
	}
}

func oidcKeysCmd(e *env) *cobra.Command {
	var server string
	var asJSON bool
	cmd := &cobra.Command{
		Use:     "keys",
		Short:   "List the issuer's signing key versions and their states",
		Example: "  agentkeys oidc keys --server http://127.0.0.1:8090\n  agentkeys oidc keys --json",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := client.New(server)
			if err != nil {
				return err
			}
			keys, err := c.OIDCKeys(cmd.Context())
			if err != nil {
				return err
			}
			if asJSON {
				return e.printJSON(map[string]any{"keys": keys})
			}
			tw := tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "VERSION\tKID\tSTATE\tACTIVE FROM\tUNTIL")
			for _, k := range keys {
				fmt.Fprintf(tw, "v%d\t%s\t%s\t%s\t%s\n", k.Version, k.Kid, k.State, unixOrDash(k.ActiveFrom), unixOrDash(k.ActiveUntil))
			}
			return tw.Flush()
		},
	}
	e.serverFlag(cmd, &server, DefaultServer, "the broker URL")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print as JSON")
	return cmd
}

func unixOrDash(t int64) string {
	if t == 0 {
		return "-"
	}
	return expiry(t)
}

func oidcRotateCmd(e *env) *cobra.Command {
	var server, keyPath string
	var window time.Duration
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "rotate",
		Short: "Rotate the issuer's signing key (operator; governance-signed)",
		Long: `Sends a request signed with the operator (governance) key. The broker derives the
next oidc/issuer/vN, registers it on the ledger, publishes it beside the current
key and signs new tokens with it; the old key stays in the JWKS for --window
(at least the longest token lifetime plus clock skew), so tokens it signed keep
verifying until they expire.`,
		Example: "  agentkeys oidc rotate --server http://127.0.0.1:8090 --window 24h\n" +
			"  agentkeys oidc rotate --server https://keys.example.com --operator-key /secure/operator.key --window 2h",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if keyPath == "" {
				keyPath = broker.OperatorKeyPath(filepath.Join(e.home(), "server"))
			}
			key, err := broker.LoadOperatorKey(keyPath)
			if err != nil {
				return problem.New(problem.BadRequest, "cannot read the operator key: "+err.Error(), "pass --operator-key <data-dir>/operator.key")
			}
			c, err := client.New(server)
			if err != nil {
				return err
			}
			res, err := c.RotateOIDC(cmd.Context(), int64(window/time.Second), key)
			if err != nil {
				return err
			}
			if asJSON {
				return e.printJSON(res)
			}
			fmt.Fprintf(e.stdout, "Rotated: new key v%d (kid %s) signs new tokens; v%d (kid %s) stays published until %s.\n",
				res.Key.Version, res.Key.Kid, res.Previous.Version, res.Previous.Kid, unixOrDash(res.Previous.ActiveUntil))
			return nil
		},
	}
	e.serverFlag(cmd, &server, DefaultServer, "the broker URL")
	cmd.Flags().StringVar(&keyPath, "operator-key", "", "the operator key (default $AGENTKEYS_HOME/server/operator.key)")
	cmd.Flags().DurationVar(&window, "window", 24*time.Hour, "how long the old key stays published")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print as JSON")
	return cmd
}

func oidcTokenCmd(e *env) *cobra.Command {
	var audience string
	var ttl time.Duration
	var self bool
	cmd := &cobra.Command{
		Use:   "token",
		Short: "Mint an identity token for the owner itself (needs --self; audited)",
		Long: `Identity tokens are meant for agents (agentkeys daemon oidc-token). An owner may
mint one for itself only by saying so with --self; the mint is audited. The
command exists to print the token.`,
		Example: "  agentkeys oidc token --audience sts.amazonaws.com --self",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			_, s, err := e.ownerSession()
			if err != nil {
				return err
			}
			t, err := s.OIDCToken(cmd.Context(), audience, int64(ttl/time.Second), self)
			if err != nil {
				return err
			}
			fmt.Fprintln(e.stdout, t.Token)
			return nil
		},
	}
	cmd.Flags().StringVar(&audience, "audience", oidc.AWSAudience, "the relying party's audience")
	cmd.Flags().DurationVar(&ttl, "ttl", 0, "token lifetime (default 5m)")
	cmd.Flags().BoolVar(&self, "self", false, "mint for the owner itself")
	return cmd
}
