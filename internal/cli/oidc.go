package cli

import (
	"context"
	"crypto/rand"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/agentkeys/agentkeys/internal/apiv1"
	"github.com/agentkeys/agentkeys/internal/atomicfile"
	"github.com/agentkeys/agentkeys/internal/client"
	"github.com/agentkeys/agentkeys/internal/federation"
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
prints them as one JSON object for machine use; --out DIR writes each document
as its own file in DIR (0644, or 0600 for one holding a secret; an existing file
is replaced only with --force) and prints the commands naming those files.
Nothing is sent anywhere. seaweedfs is a local S3 + STS server standing in for
AWS, to try the AWS setup on one machine.`,
		Example: "  agentkeys oidc register aws --issuer https://keys.example.com --account 123456789012 --bucket agent-data\n" +
			"  agentkeys oidc register aws --issuer https://keys.example.com --account 123456789012 --out aws-setup\n" +
			"  agentkeys oidc register seaweedfs --issuer http://127.0.0.1:8090 --out seaweedfs\n" +
			"  agentkeys oidc register k8s --issuer https://keys.example.com --audience my-cluster",
	}
	var o registerOpts
	cmd.PersistentFlags().StringVar(&o.issuer, "issuer", "", "the broker's public issuer URL (as in its discovery document)")
	cmd.PersistentFlags().BoolVar(&o.asJSON, "json", false, "print one JSON object")
	cmd.PersistentFlags().StringVar(&o.out, "out", "", "write each document as its own file in this directory instead of printing it")
	cmd.PersistentFlags().BoolVar(&o.force, "force", false, "with --out: replace files that exist")

	var aw federation.AWSInput
	aws := registerCmd(e, &o, "aws", "IAM OIDC provider, role trust policy and per-agent-prefix S3 policies",
		"  agentkeys oidc register aws --issuer https://keys.example.com --account 123456789012 --bucket agent-data\n"+
			"  agentkeys oidc register aws --issuer https://keys.example.com --account 123456789012 --pin mrsigner --mrsigner HEX --json",
		func(dir string) (*federation.AWS, error) {
			aw.Issuer, aw.FileDir = o.issuer, dir
			return federation.GenerateAWS(aw)
		},
		func(out *federation.AWS) []docFile {
			return []docFile{{federation.AWSTrustFile, 0o644, out.TrustPolicy}, {federation.AWSRoleFile, 0o644, out.RolePolicy},
				{federation.AWSBucketFile, 0o644, out.BucketPolicy}}
		},
		func(out *federation.AWS, docs []docFile) {
			st := e.steps()
			if docs != nil {
				st.next(false, "Save these three files.\n")
				e.printDocs(docs)
			}
			st.next(true, "Run:\n")
			e.printLines(out.Commands)
			st.next(true, "In the agent's sandbox:\n#   agentkeys daemon aws-credentials --role-arn %s\n", out.RoleARN)
		})
	aws.Flags().StringVar(&aw.Account, "account", "", "12-digit AWS account id")
	aws.Flags().StringVar(&aw.RoleName, "role-name", "agentkeys-agents", "the role agents assume")
	aws.Flags().StringVar(&aw.Bucket, "bucket", "", "the bucket agents share, one prefix per agent wallet (default agentkeys-<account>)")
	aws.Flags().StringVar(&aw.Audience, "audience", apiv1.AWSAudience, "the token audience (client id)")
	aws.Flags().StringVar(&aw.Pin, "pin", "", "pin sub to the enclave: mrenclave, mrsigner or both")
	aws.Flags().StringVar(&aw.MrEnclave, "mrenclave", "", "mrenclave to pin (hex; GET /v1/enclave)")
	aws.Flags().StringVar(&aw.MrSigner, "mrsigner", "", "mrsigner to pin (hex; GET /v1/enclave)")

	var sw federation.SeaweedFSInput
	seaweed := registerCmd(e, &o, "seaweedfs", "A local S3 + STS server (SeaweedFS) trusting this issuer as AWS would: iam.json and its command line",
		"  agentkeys oidc register seaweedfs --issuer http://127.0.0.1:8090\n"+
			"  agentkeys oidc register seaweedfs --issuer http://127.0.0.1:8090 --out seaweedfs --port 8333",
		func(dir string) (*federation.SeaweedFS, error) {
			sw.Issuer, sw.FileDir = o.issuer, dir
			sw.SigningKey = make([]byte, 32)
			rand.Read(sw.SigningKey) // never fails (crypto/rand, Go 1.24)
			return federation.GenerateSeaweedFS(sw)
		},
		func(out *federation.SeaweedFS) []docFile {
			return []docFile{{federation.SeaweedIAMFile, 0o600, out.IAM}} // it holds the STS signing key
		},
		func(out *federation.SeaweedFS, docs []docFile) {
			st := e.steps()
			if docs != nil {
				st.next(false, "Save this file as %s, readable only by you: it holds SeaweedFS's STS signing key.\n", federation.SeaweedIAMFile)
				e.printDocs(docs)
			}
			st.next(true, "Start SeaweedFS (scripts/seaweedfs builds weed): S3 and STS on %s, bucket %q made at start.\n"+
				"#    The broker must allow the audience: agentkeys server --oidc-audience %s\n%s\n",
				out.Endpoint, out.Bucket, out.IAM.Providers[0].Config.ClientID, shellJoin(out.Command))
			st.next(true, "In the agent's sandbox (scope oidc:%s):\n#   agentkeys daemon aws-credentials --role-arn %s --sts-endpoint %s\n",
				out.IAM.Providers[0].Config.ClientID, out.RoleARN, out.Endpoint)
		})
	seaweed.Flags().StringVar(&sw.Bucket, "bucket", federation.SeaweedBucket, "the bucket agents share, one prefix per agent wallet")
	seaweed.Flags().IntVar(&sw.Port, "port", federation.SeaweedPort, "S3 and STS port on 127.0.0.1")
	seaweed.Flags().StringVar(&sw.DataDir, "data-dir", federation.SeaweedDataDir, "SeaweedFS's data directory (weed mini -dir)")
	seaweed.Flags().StringVar(&sw.RoleName, "role-name", "agentkeys-agents", "the role agents assume")
	seaweed.Flags().StringVar(&sw.Audience, "audience", apiv1.AWSAudience, "the token audience (client id)")

	var gc federation.GCPInput
	gcp := registerCmd(e, &o, "gcp", "Workload identity pool and OIDC provider admitting given agents, and the credential configuration for Google's SDKs",
		"  agentkeys oidc register gcp --issuer https://keys.example.com --project my-proj --project-number 123456789 --agent-wallet 0xAGENT\n"+
			"  agentkeys oidc register gcp --issuer https://keys.example.com --project my-proj --project-number 123456789 --agent-wallet 0xAGENT --service-account agents@my-proj.iam.gserviceaccount.com --out gcp-setup",
		func(dir string) (*federation.GCP, error) {
			gc.Issuer, gc.FileDir = o.issuer, dir
			return federation.GenerateGCP(gc)
		},
		func(out *federation.GCP) []docFile {
			return []docFile{{federation.GCPCredentialFile, 0o644, out.Credentials}} // no secret: it names a token file
		},
		func(out *federation.GCP, docs []docFile) {
			st := e.steps()
			fmt.Fprintf(e.stdout, "# The broker must allow the audience: agentkeys server --oidc-audience %s\n", out.Audience)
			fmt.Fprintf(e.stdout, "# Agents' scope: agentkeys agent scope ALIAS --add oidc:%s\n", out.Audience)
			st.next(true, "Run:\n")
			e.printLines(out.Commands)
			if len(out.Principals) > 0 {
				fmt.Fprintf(e.stdout, "\n# Grant roles to each agent (survives broker upgrades: keyed on the wallet, not sub):\n")
				for _, p := range out.Principals {
					fmt.Fprintf(e.stdout, "#   gcloud projects add-iam-policy-binding PROJECT --role=ROLE --member=%s\n", p)
				}
			}
			if docs != nil {
				st.next(true, "Save this file in the agent's sandbox.\n")
				e.printDocs(docs)
			}
			st.next(true, "In the agent's sandbox (every Google SDK and gcloud then just work):\n")
			e.printLines(out.Agent)
		})
	gcp.Flags().StringVar(&gc.Project, "project", "", "GCP project id")
	gcp.Flags().StringVar(&gc.ProjectNumber, "project-number", "", "GCP project number")
	gcp.Flags().StringVar(&gc.Pool, "pool", "agentkeys", "workload identity pool id")
	gcp.Flags().StringVar(&gc.Provider, "provider", "agentkeys-oidc", "provider id")
	gcp.Flags().StringVar(&gc.ServiceAccount, "service-account", "", "service account agents impersonate (optional)")
	gcp.Flags().StringArrayVar(&gc.Wallets, "agent-wallet", nil, "wallet of an agent the provider admits (repeatable; agentkeys agent list)")
	gcp.Flags().StringVar(&gc.TokenFile, "token-file", federation.GCPTokenFile, "where the agent's daemon keeps the token")

	var az federation.AzureInput
	azure := registerCmd(e, &o, "azure", "Federated identity credential of one agent for an app registration, and the agent's environment",
		"  agentkeys oidc register azure --issuer https://keys.example.com --app-id APP --tenant-id TENANT --agent-wallet 0xAGENT --mrenclave HEX --mrsigner HEX\n"+
			"  agentkeys oidc register azure --issuer https://keys.example.com --app-id APP --tenant-id TENANT --subject 'enclave:…:agent:0xabc…' --out azure-setup",
		func(dir string) (*federation.Azure, error) {
			az.Issuer, az.FileDir = o.issuer, dir
			return federation.GenerateAzure(az)
		},
		func(out *federation.Azure) []docFile {
			return []docFile{{federation.AzureCredentialFile, 0o644, out.Credential}}
		},
		func(out *federation.Azure, docs []docFile) {
			st := e.steps()
			fmt.Fprintf(e.stdout, "# The broker must allow the audience, with tokens of at least 15 minutes (Azure's SDKs keep a\n"+
				"# token file 10 minutes; tokens for %s last 1h by default):\n#   agentkeys server --oidc-audience %s\n", apiv1.AzureAudience, apiv1.AzureAudience)
			fmt.Fprintf(e.stdout, "# Entra ID matches sub exactly: when a broker upgrade changes mrenclave or mrsigner, create the credential again.\n")
			if docs != nil {
				st.next(true, "Save this file.\n")
				e.printDocs(docs)
			}
			st.next(true, "Run:\n")
			e.printLines(out.Commands)
			st.next(true, "In the agent's sandbox (its scope: oidc:%s); Azure SDKs' workload identity credential then works:\n", apiv1.AzureAudience)
			e.printLines(out.Agent)
		})
	azure.Flags().StringVar(&az.AppID, "app-id", "", "the app registration's application (client) id")
	azure.Flags().StringVar(&az.TenantID, "tenant-id", "", "the directory (tenant) id")
	azure.Flags().StringVar(&az.Subject, "subject", "", "the agent's sub claim (or give --agent-wallet, --mrenclave, --mrsigner)")
	azure.Flags().StringVar(&az.Wallet, "agent-wallet", "", "the agent's wallet (agentkeys agent list)")
	azure.Flags().StringVar(&az.MrEnclave, "mrenclave", "", "the broker's mrenclave (hex; GET /v1/enclave)")
	azure.Flags().StringVar(&az.MrSigner, "mrsigner", "", "the broker's mrsigner (hex; GET /v1/enclave)")
	azure.Flags().StringVar(&az.Name, "name", "", "credential name (default agentkeys-<wallet prefix>)")
	azure.Flags().StringVar(&az.TokenFile, "token-file", federation.AzureTokenFile, "where the agent's daemon keeps the token")

	var al federation.AliInput
	var aliCA string
	ali := registerCmd(e, &o, "alicloud", "RAM OIDC provider with the issuer's certificate fingerprint, a role trust policy admitting given agents, and the agent's environment",
		"  agentkeys oidc register alicloud --issuer https://keys.example.com --account 1234567890123456 --agent-wallet 0xAGENT\n"+
			"  agentkeys oidc register alicloud --issuer https://keys.internal:8443 --ca-file ca.pem --account 1234567890123456 --agent-wallet 0xAGENT --out ali-setup",
		func(dir string) (*federation.Ali, error) {
			al.Issuer, al.FileDir = o.issuer, dir
			if al.Fingerprint == "" {
				roots, err := caPool(aliCA)
				if err != nil {
					return nil, err
				}
				if al.Fingerprint, err = federation.Fingerprint(context.Background(), o.issuer, roots); err != nil {
					return nil, err
				}
			}
			return federation.GenerateAli(al)
		},
		func(out *federation.Ali) []docFile {
			return []docFile{{federation.AliTrustFile, 0o644, out.TrustPolicy}}
		},
		func(out *federation.Ali, docs []docFile) {
			st := e.steps()
			fmt.Fprintf(e.stdout, "# The broker must allow the audience: agentkeys server --oidc-audience %s\n", federation.AliAudience)
			fmt.Fprintf(e.stdout, "# Fingerprint %s: SHA-1 of the issuer's root CA certificate (add the new one before the CA changes).\n", out.Fingerprint)
			if docs != nil {
				st.next(true, "Save this file.\n")
				e.printDocs(docs)
			}
			st.next(true, "Run, then attach the policies the agents need to the role:\n")
			e.printLines(out.Commands)
			st.next(true, "In the agent's sandbox (its scope: oidc:%s); Alibaba Cloud's credential chain then works:\n", federation.AliAudience)
			e.printLines(out.Agent)
		})
	ali.Flags().StringVar(&al.Account, "account", "", "Alibaba Cloud account id")
	ali.Flags().StringVar(&al.Name, "name", "agentkeys", "OIDC provider name")
	ali.Flags().StringVar(&al.RoleName, "role-name", "agentkeys-agents", "the role agents assume")
	ali.Flags().StringArrayVar(&al.Wallets, "agent-wallet", nil, "wallet of an agent the role admits (repeatable; agentkeys agent list)")
	ali.Flags().StringVar(&al.Fingerprint, "fingerprint", "", "SHA-1 of the issuer's root CA certificate (default: fetched from the issuer over TLS)")
	ali.Flags().StringVar(&aliCA, "ca-file", "", "PEM file of the private CA that signed the issuer's certificate")
	ali.Flags().StringVar(&al.TokenFile, "token-file", federation.AliTokenFile, "where the agent's daemon keeps the token")

	var k8 federation.K8sInput
	k8s := registerCmd(e, &o, "k8s", "Kubernetes structured authentication configuration (apiserver.config.k8s.io/v1)",
		"  agentkeys oidc register k8s --issuer https://keys.example.com --audience my-cluster > auth-config.json",
		func(string) (map[string]any, error) { k8.Issuer = o.issuer; return federation.GenerateK8s(k8) },
		func(out map[string]any) []docFile { return []docFile{{"auth-config.json", 0o644, out}} },
		nil) // the configuration file is JSON either way
	k8s.Flags().StringVar(&k8.Audience, "audience", "kubernetes", "the API server's audience")

	var mn federation.MinIOInput
	minio := registerCmd(e, &o, "minio", "MinIO's OpenID settings (client secret, STS cap) and a role policy confining each agent to its own prefix",
		"  agentkeys oidc register minio --issuer https://keys.example.com --endpoint https://minio.example.com\n"+
			"  agentkeys oidc register minio --issuer https://keys.example.com --endpoint https://minio.example.com --sts-duration 30m --out minio-setup",
		func(dir string) (*federation.MinIO, error) {
			mn.Issuer, mn.FileDir = o.issuer, dir
			mn.ClientSecret = make([]byte, 32)
			rand.Read(mn.ClientSecret) // never fails (crypto/rand, Go 1.24)
			return federation.GenerateMinIO(mn)
		},
		func(out *federation.MinIO) []docFile {
			return []docFile{{federation.MinIOEnvFile, 0o600, rawDoc(out.EnvFile())}, // it holds the client secret
				{federation.MinIOPolicyFile, 0o644, out.Policy}}
		},
		func(out *federation.MinIO, docs []docFile) {
			st := e.steps()
			fmt.Fprintf(e.stdout, "# The broker must allow the audience: agentkeys server --oidc-audience %s\n", out.Audience)
			fmt.Fprintf(e.stdout, "# Agents' scope: agentkeys agent scope ALIAS --add oidc:%s\n", out.Audience)
			fmt.Fprintf(e.stdout, "# Each agent reads and writes only %s/<its wallet, lower case>/ (the wallet claim survives broker upgrades; sub does not).\n", out.Bucket)
			if docs != nil {
				st.next(true, "Save these two files; %s readable only by MinIO's user: it holds the client secret.\n", federation.MinIOEnvFile)
				e.printDocs(docs)
			}
			st.next(true, "Run:\n")
			e.printLines(out.Commands)
			st.next(true, "In the agent's sandbox (its scope: oidc:%s); MinIO's role ARN is %s:\n", out.Audience, out.RoleARN)
			e.printLines(out.Agent)
		})
	minio.Flags().StringVar(&mn.Audience, "audience", federation.MinIOAudience, "the token audience (MinIO's client id)")
	minio.Flags().StringVar(&mn.Bucket, "bucket", federation.MinIOBucket, "the bucket agents share, one prefix per agent wallet")
	minio.Flags().StringVar(&mn.Policy, "policy-name", federation.MinIOPolicyName, "the role policy's name in MinIO")
	minio.Flags().StringVar(&mn.Endpoint, "endpoint", federation.MinIOEndpoint, "MinIO's URL (S3 and STS)")
	minio.Flags().StringVar(&mn.Region, "region", "", "MinIO's site region (MINIO_SITE_REGION), if set")
	minio.Flags().StringVar(&mn.Alias, "alias", "myminio", "the mc alias of the MinIO server")
	minio.Flags().DurationVar(&mn.STSDuration, "sts-duration", federation.MinIOSTSDuration, "the longest credential MinIO issues (MINIO_STS_DURATION, 15m-12h)")
	cmd.AddCommand(aws, seaweed, gcp, azure, ali, k8s, minio)
	return cmd
}

// registerOpts are the flags every `oidc register <cloud>` shares.
type registerOpts struct {
	issuer, out   string
	asJSON, force bool
}

// docFile is one document of a cloud's setup, as --out writes it.
type docFile struct {
	name string
	mode os.FileMode
	doc  any
}

// registerCmd is one `oidc register <cloud>` command: gen builds the cloud's setup
// from the flags (naming files in dir, where --out writes them); files lists its
// documents (nil: commands only); text prints it, with the documents inline when
// given them (nil text: the setup is printed as JSON either way). --json prints
// the setup whole; --out writes the documents and prints what text prints
// besides them (with --json: the files written).
func registerCmd[T any](e *env, o *registerOpts, use, short, example string, gen func(dir string) (T, error),
	files func(T) []docFile, text func(T, []docFile)) *cobra.Command {
	return &cobra.Command{
		Use:     use,
		Short:   short,
		Example: example,
		Args:    cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error {
			out, err := gen(o.out)
			if err != nil {
				return usageProblem(err)
			}
			if o.out == "" {
				if o.force {
					return problem.New(problem.BadRequest, "--force is for --out", "add --out DIR, or omit --force")
				}
				if o.asJSON || text == nil {
					return e.printJSON(out)
				}
				var docs []docFile
				if files != nil {
					docs = files(out)
				}
				text(out, docs)
				return nil
			}
			if files == nil {
				return problem.Newf(problem.BadRequest, "omit --out: run the printed commands", "%s's setup is commands only; there is no document to write", use)
			}
			written, err := writeDocs(o.out, files(out), o.force)
			if err != nil {
				return err
			}
			if o.asJSON {
				return e.printJSON(map[string]any{"files": written})
			}
			for _, w := range written {
				fmt.Fprintf(e.stdout, "# Wrote %s (%s)\n", w.Path, w.Mode)
			}
			if text != nil {
				text(out, nil)
			}
			return nil
		},
	}
}

// writtenFile is one file --out wrote.
type writtenFile struct {
	Name string `json:"name"`
	Path string `json:"path"`
	Mode string `json:"mode"`
}

// writeDocs writes each document as indented JSON to dir/name with its mode.
// Without force it first checks that none exists, and writes none if one does;
// each file appears whole (written beside it, then linked or renamed in place).
func writeDocs(dir string, docs []docFile, force bool) ([]writtenFile, error) {
	if !force {
		var exist []string
		for _, d := range docs {
			if _, err := os.Lstat(filepath.Join(dir, d.name)); err == nil {
				exist = append(exist, d.name)
			}
		}
		if len(exist) > 0 {
			return nil, problem.Newf(problem.Conflict, "pass --force to replace them, or choose another --out directory",
				"%s already has %s; nothing was written", dir, strings.Join(exist, ", "))
		}
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, problem.Wrap(err, problem.BadRequest, "choose an --out directory you can write", "cannot create %s: %v", dir, err)
	}
	var out []writtenFile
	for _, d := range docs {
		b, err := json.MarshalIndent(d.doc, "", "  ")
		if r, ok := d.doc.(rawDoc); ok {
			b, err = []byte(strings.TrimSuffix(string(r), "\n")), nil
		}
		if err != nil {
			return nil, err
		}
		p := filepath.Join(dir, d.name)
		if err := writeFileWhole(p, append(b, '\n'), d.mode, force); err != nil {
			return nil, err
		}
		out = append(out, writtenFile{Name: d.name, Path: p, Mode: fmt.Sprintf("%04o", d.mode)})
	}
	return out, nil
}

// writeFileWhole writes b to path, mode exactly, atomically: replacing path
// when replace, else never (atomicfile.CreateNew fails if path exists).
func writeFileWhole(path string, b []byte, mode os.FileMode, replace bool) error {
	var err error
	if replace {
		err = atomicfile.WriteFile(path, b, mode)
	} else {
		err = atomicfile.CreateNew(path, b, mode)
	}
	if errors.Is(err, fs.ErrExist) {
		return problem.Newf(problem.Conflict, "pass --force to replace it, or choose another --out directory", "%s exists", path)
	}
	if errors.Is(err, fs.ErrPermission) || errors.Is(err, fs.ErrNotExist) {
		return problem.Wrap(err, problem.BadRequest, "choose an --out directory you can write", "cannot write in %s: %v", filepath.Dir(path), err)
	}
	if err != nil {
		return problem.Wrap(err, problem.Internal, "check the directory and retry", "writing %s: %v", path, err)
	}
	return nil
}

// caPool is the system's roots, or only the CA certificates in the PEM file
// path when given.
func caPool(path string) (*x509.CertPool, error) {
	if path == "" {
		return nil, nil
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("--ca-file: %v", err)
	}
	p := x509.NewCertPool()
	if !p.AppendCertsFromPEM(b) {
		return nil, fmt.Errorf("--ca-file %s holds no PEM certificate", path)
	}
	return p, nil
}

// rawDoc is a document written and printed as it is, not as JSON.
type rawDoc string

// printDocs prints each document under a "# name" header.
func (e *env) printDocs(docs []docFile) {
	for _, d := range docs {
		fmt.Fprintf(e.stdout, "\n# %s\n", d.name)
		if r, ok := d.doc.(rawDoc); ok {
			fmt.Fprint(e.stdout, string(r))
			continue
		}
		e.printJSON(d.doc)
	}
}

// shellJoin quotes argv for a POSIX shell.
func shellJoin(argv []string) string {
	q := make([]string, len(argv))
	for i, a := range argv {
		if a != "" && strings.Trim(a, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_./:=@%+,-") == "" {
			q[i] = a
		} else {
			q[i] = "'" + strings.ReplaceAll(a, "'", `'\''`) + "'"
		}
	}
	return strings.Join(q, " ")
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
	cmd.Flags().StringVar(&audience, "audience", apiv1.AWSAudience, "the relying party's audience")
	cmd.Flags().DurationVar(&ttl, "ttl", 0, "token lifetime (default 5m)")
	cmd.Flags().BoolVar(&self, "self", false, "mint for the owner itself")
	return cmd
}

// steps numbers the steps an oidc register command prints, so that a step left
// out (its files were written with --out) leaves no gap in the numbers.
type steps struct {
	w io.Writer
	n int
}

func (e *env) steps() *steps { return &steps{w: e.stdout} }

// next prints the next step's heading, after a blank line when blank.
func (s *steps) next(blank bool, format string, args ...any) {
	s.n++
	if blank {
		fmt.Fprintln(s.w)
	}
	fmt.Fprintf(s.w, "# %d. "+format, append([]any{s.n}, args...)...)
}
