package federation

import (
	"cmp"
	"fmt"
	"path/filepath"
	"regexp"
	"strings"

	"github.com/agentkeys/agentkeys/internal/apiv1"
)

// GCP's endpoints and token types (RFC 8693), as its external_account
// credential configuration names them.
const (
	GCPTokenURL          = "https://sts.googleapis.com/v1/token"
	GCPIAMCredentialsURL = "https://iamcredentials.googleapis.com" // service-account impersonation
	GCPSubjectTokenType  = "urn:ietf:params:oauth:token-type:jwt"
	GCPCredentialFile    = "gcp-credentials.json"
	GCPTokenFile         = "/run/agentkeys/gcp-token"
)

// GCPInput configures a GCP workload identity pool provider.
type GCPInput struct {
	Issuer, Project, ProjectNumber, Pool, Provider, ServiceAccount string
	// Wallets are the agent wallets the provider admits (its attribute
	// condition); at least one. Printed lower-case, as tokens carry them.
	Wallets []string
	// TokenFile is where the agent's daemon keeps the token (default GCPTokenFile).
	TokenFile string
	FileDir   string // where the credential configuration is saved ("" = the current directory)
}

// GCP is the workload identity federation setup.
type GCP struct {
	Audience         string            `json:"audience"`
	AttributeMapping map[string]string `json:"attribute_mapping"`
	Condition        string            `json:"attribute_condition"`
	// Credentials is the external_account credential configuration
	// (GOOGLE_APPLICATION_CREDENTIALS) reading the daemon's token file.
	Credentials map[string]any `json:"credential_configuration"`
	Principals  []string       `json:"principals"` // one principalSet per agent wallet, for IAM bindings
	Commands    []string       `json:"commands"`   // gcloud commands, in order
	Agent       []string       `json:"agent_commands"`
}

// GCPMapping is the provider's attribute mapping: every source is a claim the
// broker emits (oidc.ClaimsSupported). google.subject is the wallet, not sub:
// sub embeds the enclave measurements and changes when the build does.
var GCPMapping = [][2]string{ // in the order the command lists them
	{"google.subject", "assertion." + apiv1.TagUserWallet},
	{"attribute." + apiv1.TagUserWallet, "assertion." + apiv1.TagUserWallet},
	{"attribute.agentkeys_owner_wallet", "assertion.agentkeys_owner_wallet"},
	{"attribute.agentkeys_enclave_tier", "assertion.agentkeys_enclave_tier"},
	{"attribute.agentkeys_sub", "assertion.sub"},
}

// GenerateGCP returns the pool and provider commands, the attribute condition
// admitting only the given agents, and the credential configuration.
func GenerateGCP(in GCPInput) (*GCP, error) {
	if _, err := Host(in.Issuer); err != nil {
		return nil, err
	}
	if in.Project == "" || in.ProjectNumber == "" {
		return nil, fmt.Errorf("--project and --project-number are required")
	}
	if strings.Trim(in.ProjectNumber, "0123456789") != "" {
		return nil, fmt.Errorf("--project-number must be digits (gcloud projects describe PROJECT --format='value(projectNumber)')")
	}
	wallets, err := Wallets(in.Wallets)
	if err != nil {
		return nil, err
	}
	in.Pool = cmp.Or(in.Pool, "agentkeys")
	in.Provider = cmp.Or(in.Provider, "agentkeys-oidc")
	in.TokenFile = cmp.Or(in.TokenFile, GCPTokenFile)
	pool := fmt.Sprintf("projects/%s/locations/global/workloadIdentityPools/%s", in.ProjectNumber, in.Pool)
	aud := "//iam.googleapis.com/" + pool + "/providers/" + in.Provider
	m := map[string]string{}
	var pairs []string
	for _, kv := range GCPMapping {
		m[kv[0]] = kv[1]
		pairs = append(pairs, kv[0]+"="+kv[1])
	}
	quoted := make([]string, len(wallets))
	for i, w := range wallets {
		quoted[i] = "'" + w + "'"
	}
	cond := "assertion." + apiv1.TagUserWallet + " in [" + strings.Join(quoted, ", ") + "]"
	creds := map[string]any{
		"type":               "external_account",
		"audience":           aud,
		"subject_token_type": GCPSubjectTokenType,
		"token_url":          GCPTokenURL,
		"credential_source":  map[string]any{"file": in.TokenFile, "format": map[string]any{"type": "text"}},
	}
	if in.ServiceAccount != "" {
		creds["service_account_impersonation_url"] = GCPImpersonationURL(GCPIAMCredentialsURL, in.ServiceAccount)
	}
	out := &GCP{Audience: aud, AttributeMapping: m, Condition: cond, Credentials: creds, Commands: []string{
		fmt.Sprintf("gcloud iam workload-identity-pools create %s --project=%s --location=global --display-name=AgentKeys", in.Pool, in.Project),
		fmt.Sprintf("gcloud iam workload-identity-pools providers create-oidc %s --project=%s --location=global --workload-identity-pool=%s --issuer-uri=%s --allowed-audiences=%s --attribute-mapping=%s --attribute-condition=\"%s\"",
			in.Provider, in.Project, in.Pool, in.Issuer, aud, strings.Join(pairs, ","), cond),
	}}
	for _, w := range wallets {
		p := "principalSet://iam.googleapis.com/" + pool + "/attribute." + apiv1.TagUserWallet + "/" + w
		out.Principals = append(out.Principals, p)
		if in.ServiceAccount != "" {
			out.Commands = append(out.Commands, fmt.Sprintf(
				"gcloud iam service-accounts add-iam-policy-binding %s --project=%s --role=roles/iam.workloadIdentityUser --member=%s",
				in.ServiceAccount, in.Project, p))
		}
	}
	out.Agent = []string{
		fmt.Sprintf("agentkeys daemon serve --oidc-token-file %s=%s", aud, in.TokenFile),
		"export GOOGLE_APPLICATION_CREDENTIALS=" + filepath.Join(in.FileDir, GCPCredentialFile),
	}
	return out, nil
}

// GCPImpersonationURL is the generateAccessToken URL of a service account at
// the IAM credentials endpoint base.
func GCPImpersonationURL(base, serviceAccount string) string {
	return strings.TrimRight(base, "/") + "/v1/projects/-/serviceAccounts/" + serviceAccount + ":generateAccessToken"
}

// Wallets checks agent wallets (0x and 40 hex digits) and returns them
// lower-case, the form tokens carry and relying parties compare.
func Wallets(ws []string) ([]string, error) {
	if len(ws) == 0 {
		return nil, fmt.Errorf("--agent-wallet is required (repeatable): the wallet of each agent to admit, from agentkeys agent list")
	}
	out := make([]string, len(ws))
	for i, w := range ws {
		if len(w) != 42 || !strings.HasPrefix(w, "0x") || strings.Trim(strings.ToLower(w[2:]), "0123456789abcdef") != "" {
			return nil, fmt.Errorf("--agent-wallet %q is not a wallet (0x and 40 hex digits)", w)
		}
		out[i] = strings.ToLower(w)
	}
	return out, nil
}

// AzureCredentialFile is the file the federated credential is saved as.
const AzureCredentialFile = "credential.json"

// AzureTokenFile is where the agent's daemon keeps the Azure token by default.
const AzureTokenFile = "/run/agentkeys/azure-token"

// AzureInput configures an Azure federated identity credential.
type AzureInput struct {
	Issuer, AppID, TenantID, Name string
	// Subject is the agent's sub; or it is built from Wallet, MrEnclave and
	// MrSigner (GET /v1/enclave) as the broker builds it.
	Subject, Wallet, MrEnclave, MrSigner string
	TokenFile                            string // default AzureTokenFile
	FileDir                              string // where credential.json is saved ("" = the current directory)
}

// Azure is the federated identity credential and the agent's environment.
type Azure struct {
	Credential map[string]any    `json:"federated_credential"`
	Env        map[string]string `json:"env"` // what the Azure SDKs' workload identity credential reads
	Commands   []string          `json:"commands"`
	Agent      []string          `json:"agent_commands"`
}

// subjectRE is the shape of an agent's sub (apiv1.Subject).
var subjectRE = regexp.MustCompile(`^enclave:[0-9a-f]{1,128}:[0-9a-f]{1,128}:agent:0x[0-9a-f]{40}$`)

// GenerateAzure returns the federated credential of one agent for an app
// registration. Entra ID matches sub exactly, so one credential is one agent,
// and a broker upgrade that changes the enclave measurements changes every
// agent's sub: the credentials must then be created again.
func GenerateAzure(in AzureInput) (*Azure, error) {
	if _, err := Host(in.Issuer); err != nil {
		return nil, err
	}
	if in.AppID == "" || in.TenantID == "" {
		return nil, fmt.Errorf("--app-id and --tenant-id (the app registration's client and directory ids) are required")
	}
	if in.Subject == "" {
		if in.Wallet == "" || in.MrEnclave == "" || in.MrSigner == "" {
			return nil, fmt.Errorf("pass --subject (the agent's sub), or --agent-wallet with --mrenclave and --mrsigner (GET /v1/enclave)")
		}
		w, err := Wallets([]string{in.Wallet})
		if err != nil {
			return nil, err
		}
		in.Subject = apiv1.Subject(strings.ToLower(in.MrEnclave), strings.ToLower(in.MrSigner), "agent", w[0])
	}
	if !subjectRE.MatchString(in.Subject) {
		return nil, fmt.Errorf("--subject %q is not an agent's sub (enclave:<mrenclave>:<mrsigner>:agent:<wallet lower-case>)", in.Subject)
	}
	in.Name = cmp.Or(in.Name, "agentkeys-"+in.Subject[len(in.Subject)-40:len(in.Subject)-32])
	in.TokenFile = cmp.Or(in.TokenFile, AzureTokenFile)
	c := map[string]any{"name": in.Name, "issuer": in.Issuer, "subject": in.Subject,
		"audiences": []string{apiv1.AzureAudience}, "description": "AgentKeys agent " + in.Subject[strings.LastIndex(in.Subject, ":")+1:]}
	return &Azure{Credential: c,
		Env:      map[string]string{"AZURE_FEDERATED_TOKEN_FILE": in.TokenFile, "AZURE_CLIENT_ID": in.AppID, "AZURE_TENANT_ID": in.TenantID},
		Commands: []string{fmt.Sprintf("az ad app federated-credential create --id %s --parameters %s", in.AppID, filepath.Join(in.FileDir, AzureCredentialFile))},
		Agent: []string{
			fmt.Sprintf("agentkeys daemon serve --oidc-token-file %s=%s", apiv1.AzureAudience, in.TokenFile),
			"export AZURE_FEDERATED_TOKEN_FILE=" + in.TokenFile + " AZURE_CLIENT_ID=" + in.AppID + " AZURE_TENANT_ID=" + in.TenantID,
		}}, nil
}

// AliAudience is the audience Alibaba Cloud STS expects (the provider's client id).
const AliAudience = "sts.aliyuncs.com"

// AliTrustFile is the file the role trust policy is saved as.
const AliTrustFile = "alicloud-trust-policy.json"

// AliTokenFile is where the agent's daemon keeps the Alibaba Cloud token by default.
const AliTokenFile = "/run/agentkeys/alicloud-token"

// AliInput configures an Alibaba Cloud RAM OIDC provider and role.
type AliInput struct {
	Issuer, Account, Name, RoleName, Fingerprint string
	// Wallets are the agents the role admits (its trust policy); at least one.
	Wallets   []string
	TokenFile string // default AliTokenFile
	FileDir   string // where the trust policy is saved ("" = the current directory)
}

// Ali is the RAM OIDC provider, the role trust policy and the agent's environment.
type Ali struct {
	ProviderARN string            `json:"oidc_provider_arn"`
	RoleARN     string            `json:"role_arn"`
	Fingerprint string            `json:"fingerprint"`
	TrustPolicy map[string]any    `json:"trust_policy"`
	Env         map[string]string `json:"env"` // what Alibaba Cloud's credential chain reads
	Commands    []string          `json:"commands"`
	Agent       []string          `json:"agent_commands"`
}

// AliSubPatterns are the oidc:sub patterns of the agents' wallets: the wallet
// ends sub, and the measurements before it are left open, so the pin survives
// a broker upgrade (RAM conditions can read only iss, aud and sub).
func AliSubPatterns(wallets []string) []string {
	out := make([]string, len(wallets))
	for i, w := range wallets {
		out[i] = "enclave:*:agent:" + w
	}
	return out
}

// GenerateAli returns the RAM OIDC provider command and the role trust
// policy, which admits only the given agents' tokens for sts.aliyuncs.com.
func GenerateAli(in AliInput) (*Ali, error) {
	if _, err := Host(in.Issuer); err != nil {
		return nil, err
	}
	if in.Account == "" || strings.Trim(in.Account, "0123456789") != "" {
		return nil, fmt.Errorf("--account (the Alibaba Cloud account id, digits) is required")
	}
	if len(in.Fingerprint) != 40 || strings.Trim(strings.ToLower(in.Fingerprint), "0123456789abcdef") != "" {
		return nil, fmt.Errorf("the fingerprint must be 40 hex digits (SHA-1 of the issuer's root CA certificate)")
	}
	wallets, err := Wallets(in.Wallets)
	if err != nil {
		return nil, err
	}
	in.Name = cmp.Or(in.Name, "agentkeys")
	in.RoleName = cmp.Or(in.RoleName, "agentkeys-agents")
	in.TokenFile = cmp.Or(in.TokenFile, AliTokenFile)
	out := &Ali{ProviderARN: "acs:ram::" + in.Account + ":oidc-provider/" + in.Name, RoleARN: "acs:ram::" + in.Account + ":role/" + in.RoleName,
		Fingerprint: strings.ToLower(in.Fingerprint)}
	out.TrustPolicy = map[string]any{"Version": "1", "Statement": []map[string]any{{
		"Action": "sts:AssumeRole", "Effect": "Allow",
		"Principal": map[string]any{"Federated": []string{out.ProviderARN}},
		"Condition": map[string]any{
			"StringEquals": map[string]any{"oidc:aud": []string{AliAudience}, "oidc:iss": []string{in.Issuer}},
			"StringLike":   map[string]any{"oidc:sub": AliSubPatterns(wallets)},
		},
	}}}
	out.Env = map[string]string{"ALIBABA_CLOUD_OIDC_TOKEN_FILE": in.TokenFile, "ALIBABA_CLOUD_ROLE_ARN": out.RoleARN,
		"ALIBABA_CLOUD_OIDC_PROVIDER_ARN": out.ProviderARN}
	out.Commands = []string{
		fmt.Sprintf("aliyun ims CreateOIDCProvider --OIDCProviderName %s --IssuerUrl %s --ClientIds %s --Fingerprints %s", in.Name, in.Issuer, AliAudience, out.Fingerprint),
		fmt.Sprintf("aliyun ram CreateRole --RoleName %s --AssumeRolePolicyDocument \"$(cat %s)\"", in.RoleName, filepath.Join(in.FileDir, AliTrustFile)),
	}
	out.Agent = []string{
		fmt.Sprintf("agentkeys daemon serve --oidc-token-file %s=%s", AliAudience, in.TokenFile),
		"export ALIBABA_CLOUD_OIDC_TOKEN_FILE=" + in.TokenFile + " ALIBABA_CLOUD_ROLE_ARN=" + out.RoleARN + " ALIBABA_CLOUD_OIDC_PROVIDER_ARN=" + out.ProviderARN,
	}
	return out, nil
}

// K8sInput configures a Kubernetes structured authentication config.
type K8sInput struct {
	Issuer, Audience string
}

// GenerateK8s returns an apiserver AuthenticationConfiguration (apiserver.config.k8s.io/v1).
func GenerateK8s(in K8sInput) (map[string]any, error) {
	if _, err := Host(in.Issuer); err != nil {
		return nil, err
	}
	if in.Audience == "" {
		in.Audience = "kubernetes"
	}
	return map[string]any{
		"apiVersion": "apiserver.config.k8s.io/v1",
		"kind":       "AuthenticationConfiguration",
		"jwt": []map[string]any{{
			"issuer":               map[string]any{"url": in.Issuer, "audiences": []string{in.Audience}, "audienceMatchPolicy": "MatchAny"},
			"claimValidationRules": []map[string]any{{"expression": "has(claims." + apiv1.TagUserWallet + ")", "message": "an AgentKeys agent token"}},
			"claimMappings": map[string]any{
				"username": map[string]any{"expression": "'agentkeys:' + claims." + apiv1.TagUserWallet},
				"groups":   map[string]any{"expression": "['agentkeys:owner:' + claims.agentkeys_owner_wallet]"},
				"uid":      map[string]any{"claim": "sub"},
			},
		}},
	}, nil
}
