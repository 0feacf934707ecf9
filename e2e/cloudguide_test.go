package e2e

import (
	"crypto/sha1"
	"encoding/hex"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// This file runs docs/connect-your-cloud.md's `agentkeys oidc register` blocks
// as written (placeholders filled in by the table), and checks that what each
// prints matches what the guide says it prints: the sandbox blocks the guide
// shows (its "…" standing for any text) are lines of the output, and the
// files hold what the guide says. The cloud CLIs (gcloud, az, aliyun,
// kubectl, mc) cannot run here: their tests are clouds_test.go, k8s_test.go
// and minio_test.go (MinIO started with the files `oidc register minio` wrote).

const cloudDoc = "../docs/connect-your-cloud.md"

// wantShown fails t unless each line of the guide's block (continuations
// joined, "…" matching any text) is a line of out.
func wantShown(t *testing.T, what, block, out string) {
	t.Helper()
	for _, l := range strings.Split(strings.ReplaceAll(block, "\\\n", ""), "\n") {
		l = strings.Join(strings.Fields(l), " ")
		if l == "" {
			continue
		}
		parts := strings.Split(l, "…")
		for i, p := range parts {
			parts[i] = regexp.QuoteMeta(p)
		}
		if !regexp.MustCompile(`(?m)^` + strings.Join(parts, `\S*`) + `$`).MatchString(out) {
			t.Errorf("%s: the guide shows %q, the command prints no such line:\n%s", what, l, out)
		}
	}
}

func TestGuideConnectCloudRegister(t *testing.T) {
	h := newHarness(t)
	work := t.TempDir()
	path := "PATH=" + binDir + string(os.PathListSeparator) + os.Getenv("PATH")
	// A TLS issuer, for the fingerprint `oidc register alicloud` fetches.
	issuer := httptest.NewTLSServer(http.NotFoundHandler())
	t.Cleanup(issuer.Close)
	trustCert(t, issuer)
	tm := h.newTerminal("operator", work, nil, path, "HOME="+t.TempDir(), "SSL_CERT_FILE="+os.Getenv("SSL_CERT_FILE"))
	const w1, w2 = "0x52908400098527886E0F7030069857D2E4169EE7", "0x8617E340B3D01FA5F11F306F4090FD50E238070D"
	lower := strings.ToLower(w1)

	t.Run("gcp", func(t *testing.T) {
		b := docBlocks(t, cloudDoc, "## GCP: workload identity federation", "sh")
		if len(b) != 2 {
			t.Fatalf("want the register and sandbox blocks, got %d", len(b))
		}
		out := tm.run(substitute(t, "the GCP block", b[0], [][2]string{
			{"0xAGENT_WALLET [--agent-wallet 0xOTHER…]", w1 + " --agent-wallet " + w2},
			{"[--service-account agents@my-proj.iam.gserviceaccount.com]", "--service-account agents@my-proj.iam.gserviceaccount.com"}}), nil)
		out = strings.ReplaceAll(out, "\r", "")
		aud := "//iam.googleapis.com/projects/123456789012/locations/global/workloadIdentityPools/agentkeys/providers/agentkeys-oidc"
		wantIn(t, "oidc register gcp", out, "--oidc-audience "+aud, "gcloud iam workload-identity-pools create agentkeys ",
			"gcloud iam workload-identity-pools providers create-oidc agentkeys-oidc ", "google.subject=assertion.agentkeys_user_wallet",
			"attribute.agentkeys_user_wallet=", "attribute.agentkeys_owner_wallet=", "attribute.agentkeys_enclave_tier=", "attribute.agentkeys_sub=",
			"assertion.agentkeys_user_wallet in ['"+lower+"', '"+strings.ToLower(w2)+"']")
		if n := strings.Count(out, "gcloud iam service-accounts add-iam-policy-binding agents@my-proj.iam.gserviceaccount.com "); n != 2 {
			t.Errorf("oidc register gcp: %d service-account bindings, want one per agent (2):\n%s", n, out)
		}
		wantShown(t, "oidc register gcp", b[1], out)
		var cred struct {
			Type             string `json:"type"`
			Audience         string `json:"audience"`
			CredentialSource struct {
				File string `json:"file"`
			} `json:"credential_source"`
		}
		if err := json.Unmarshal(fileBytes(t, filepath.Join(work, "gcp-setup", "gcp-credentials.json")), &cred); err != nil {
			t.Fatal(err)
		}
		if cred.Type != "external_account" || cred.CredentialSource.File != "/run/agentkeys/gcp-token" || cred.Audience != aud {
			t.Errorf("gcp-credentials.json: %+v", cred)
		}
	})

	t.Run("azure", func(t *testing.T) {
		b := docBlocks(t, cloudDoc, "## Azure: a federated identity credential per agent", "sh")
		if len(b) != 2 {
			t.Fatalf("want the register and sandbox blocks, got %d", len(b))
		}
		me, ms := strings.Repeat("a1", 32), strings.Repeat("b2", 32)
		out := strings.ReplaceAll(tm.run(substitute(t, "the Azure block", b[0], [][2]string{
			{"0xAGENT_WALLET", w1}, {"--mrenclave HEX --mrsigner HEX", "--mrenclave " + me + " --mrsigner " + ms}}), nil), "\r", "")
		wantIn(t, "oidc register azure", out, "az ad app federated-credential create --id APP_CLIENT_ID --parameters ")
		wantShown(t, "oidc register azure", b[1], out)
		var cred struct {
			Issuer    string   `json:"issuer"`
			Subject   string   `json:"subject"`
			Audiences []string `json:"audiences"`
		}
		if err := json.Unmarshal(fileBytes(t, filepath.Join(work, "azure-setup", "credential.json")), &cred); err != nil {
			t.Fatal(err)
		}
		if cred.Issuer != "https://keys.example.com" || cred.Subject != "enclave:"+me+":"+ms+":agent:"+lower ||
			len(cred.Audiences) != 1 || cred.Audiences[0] != "api://AzureADTokenExchange" {
			t.Errorf("credential.json: %+v", cred)
		}
	})

	t.Run("alicloud", func(t *testing.T) {
		b := docBlocks(t, cloudDoc, "## Alibaba Cloud: RAM OIDC provider and role", "sh")
		if len(b) != 2 {
			t.Fatalf("want the register and sandbox blocks, got %d", len(b))
		}
		out := strings.ReplaceAll(tm.run(substitute(t, "the Alibaba Cloud block", b[0], [][2]string{
			{"https://keys.example.com", issuer.URL}, {"0xAGENT_WALLET", w1}}), nil), "\r", "")
		sum := sha1.Sum(issuer.Certificate().Raw)
		fp := hex.EncodeToString(sum[:])
		wantIn(t, "oidc register alicloud", out, "aliyun ims CreateOIDCProvider --OIDCProviderName agentkeys --IssuerUrl "+issuer.URL+" --ClientIds sts.aliyuncs.com --Fingerprints "+fp,
			"aliyun ram CreateRole ")
		wantShown(t, "oidc register alicloud", b[1], out)
		policy := string(fileBytes(t, filepath.Join(work, "ali-setup", "alicloud-trust-policy.json")))
		wantIn(t, "alicloud-trust-policy.json", policy, "oidc:iss", "oidc:aud", "StringLike", "enclave:*:agent:"+lower)
	})

	t.Run("minio", func(t *testing.T) {
		b := docBlocks(t, cloudDoc, "## MinIO: OpenID provider with a per-agent role policy", "sh")
		if len(b) != 2 {
			t.Fatalf("want the register and sandbox blocks, got %d", len(b))
		}
		out := strings.ReplaceAll(tm.run(b[0], nil), "\r", "")
		wantIn(t, "oidc register minio", out, "--oidc-audience minio", "mc alias set myminio https://minio.example.com ", "mc mb --ignore-existing myminio/agentkeys",
			"mc admin policy create myminio agentkeys-agents minio-setup/minio-policy.json",
			"MINIO_CONFIG_ENV_FILE=minio-setup/minio.env minio server DATA_DIR")
		wantShown(t, "oidc register minio", b[1], out)
		envFile := filepath.Join(work, "minio-setup", "minio.env")
		if fileMode(t, envFile) != 0o600 {
			t.Errorf("minio.env is %o, want 0600", fileMode(t, envFile))
		}
		wantIn(t, "minio.env", string(fileBytes(t, envFile)),
			"export MINIO_IDENTITY_OPENID_CONFIG_URL='https://keys.example.com/.well-known/openid-configuration'",
			"export MINIO_IDENTITY_OPENID_CLIENT_ID='minio'", "export MINIO_IDENTITY_OPENID_CLIENT_SECRET='",
			"export MINIO_IDENTITY_OPENID_ROLE_POLICY='agentkeys-agents'", "export MINIO_STS_DURATION='15m0s'")
		wantIn(t, "minio-policy.json", string(fileBytes(t, filepath.Join(work, "minio-setup", "minio-policy.json"))),
			`"arn:aws:s3:::agentkeys/${jwt:preferred_username}/*"`, `"${jwt:preferred_username}/"`)
	})

	t.Run("k8s", func(t *testing.T) {
		b := docBlocks(t, cloudDoc, "## Kubernetes: structured authentication", "sh")
		if len(b) != 2 {
			t.Fatalf("want the register and kubectl blocks, got %d", len(b))
		}
		tm.run(b[0], nil)
		var cfg struct {
			APIVersion string `json:"apiVersion"`
			Kind       string `json:"kind"`
			JWT        []struct {
				Issuer struct {
					URL       string   `json:"url"`
					Audiences []string `json:"audiences"`
				} `json:"issuer"`
				ClaimMappings struct {
					Username struct{ Expression string } `json:"username"`
					Groups   struct{ Expression string } `json:"groups"`
				} `json:"claimMappings"`
			} `json:"jwt"`
		}
		if err := json.Unmarshal(fileBytes(t, filepath.Join(work, "auth-config.json")), &cfg); err != nil {
			t.Fatal(err)
		}
		if cfg.APIVersion != "apiserver.config.k8s.io/v1" || cfg.Kind != "AuthenticationConfiguration" || len(cfg.JWT) != 1 ||
			cfg.JWT[0].Issuer.URL != "https://keys.example.com" || strings.Join(cfg.JWT[0].Issuer.Audiences, ",") != "my-cluster" ||
			!strings.Contains(cfg.JWT[0].ClaimMappings.Username.Expression, "'agentkeys:'") ||
			!strings.Contains(cfg.JWT[0].ClaimMappings.Groups.Expression, "'agentkeys:owner:'") {
			t.Errorf("auth-config.json: %+v", cfg)
		}
	})
}
