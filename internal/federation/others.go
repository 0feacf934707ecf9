package federation

import (
	"fmt"
	"path/filepath"
	"strings"

	"github.com/agentkeys/agentkeys/internal/apiv1"
)

// GCPInput configures a GCP workload identity pool provider.
type GCPInput struct {
	Issuer, Project, ProjectNumber, Pool, Provider, ServiceAccount string
}

// GCP is the workload identity federation setup.
type GCP struct {
	Audience         string            `json:"audience"`
	AttributeMapping map[string]string `json:"attribute_mapping"`
	Condition        string            `json:"attribute_condition"`
	Commands         []string          `json:"commands"`
}

// GenerateGCP returns the pool and provider commands with the attribute mapping.
func GenerateGCP(in GCPInput) (*GCP, error) {
	if _, err := Host(in.Issuer); err != nil {
		return nil, err
	}
	if in.Project == "" || in.ProjectNumber == "" {
		return nil, fmt.Errorf("--project and --project-number are required")
	}
	if in.Pool == "" {
		in.Pool = "agentkeys"
	}
	if in.Provider == "" {
		in.Provider = "agentkeys-oidc"
	}
	aud := fmt.Sprintf("//iam.googleapis.com/projects/%s/locations/global/workloadIdentityPools/%s/providers/%s", in.ProjectNumber, in.Pool, in.Provider)
	mapping := [][2]string{ // in the order the command lists them
		{"google.subject", "assertion.sub"},
		{"attribute.agentkeys_user_wallet", "assertion." + apiv1.TagUserWallet},
		{"attribute.agentkeys_owner_wallet", "assertion.agentkeys_owner_wallet"},
		{"attribute.enclave_tier", "assertion.agentkeys_enclave_tier"},
	}
	m := map[string]string{}
	var pairs []string
	for _, kv := range mapping {
		m[kv[0]] = kv[1]
		pairs = append(pairs, kv[0]+"="+kv[1])
	}
	cond := "has(assertion." + apiv1.TagUserWallet + ")"
	out := &GCP{Audience: aud, AttributeMapping: m, Condition: cond, Commands: []string{
		fmt.Sprintf("gcloud iam workload-identity-pools create %s --project=%s --location=global --display-name=AgentKeys", in.Pool, in.Project),
		fmt.Sprintf("gcloud iam workload-identity-pools providers create-oidc %s --project=%s --location=global --workload-identity-pool=%s --issuer-uri=%s --allowed-audiences=%s --attribute-mapping=%s --attribute-condition='%s'",
			in.Provider, in.Project, in.Pool, in.Issuer, aud, strings.Join(pairs, ","), cond),
	}}
	if in.ServiceAccount != "" {
		out.Commands = append(out.Commands, fmt.Sprintf(
			"gcloud iam service-accounts add-iam-policy-binding %s --project=%s --role=roles/iam.workloadIdentityUser --member='principalSet://iam.googleapis.com/projects/%s/locations/global/workloadIdentityPools/%s/*'",
			in.ServiceAccount, in.Project, in.ProjectNumber, in.Pool))
	}
	return out, nil
}

// AzureCredentialFile is the file the federated credential is saved as.
const AzureCredentialFile = "credential.json"

// AzureInput configures an Azure federated identity credential.
type AzureInput struct {
	Issuer, AppID, Subject, Name string
	FileDir                      string // where credential.json is saved ("" = the current directory)
}

// Azure is the federated identity credential.
type Azure struct {
	Credential map[string]any `json:"federated_credential"`
	Commands   []string       `json:"commands"`
}

// GenerateAzure returns the federated credential JSON for an app registration.
// Azure matches sub exactly, so one credential is one agent.
func GenerateAzure(in AzureInput) (*Azure, error) {
	if _, err := Host(in.Issuer); err != nil {
		return nil, err
	}
	if in.AppID == "" || in.Subject == "" {
		return nil, fmt.Errorf("--app-id and --subject (the agent's sub, from agentkeys daemon oidc-token) are required")
	}
	if in.Name == "" {
		in.Name = "agentkeys"
	}
	c := map[string]any{"name": in.Name, "issuer": in.Issuer, "subject": in.Subject,
		"audiences": []string{"api://AzureADTokenExchange"}, "description": "AgentKeys agent identity"}
	return &Azure{Credential: c, Commands: []string{
		fmt.Sprintf("az ad app federated-credential create --id %s --parameters %s", in.AppID, filepath.Join(in.FileDir, AzureCredentialFile))}}, nil
}

// AliInput configures an Alibaba Cloud RAM OIDC provider.
type AliInput struct {
	Issuer, Account, Name, Fingerprint string
}

// Ali is the RAM OIDC provider and role trust policy.
type Ali struct {
	TrustPolicy map[string]any `json:"trust_policy"`
	Commands    []string       `json:"commands"`
}

// GenerateAli returns the RAM OIDC provider command and the role trust policy.
func GenerateAli(in AliInput) (*Ali, error) {
	if _, err := Host(in.Issuer); err != nil {
		return nil, err
	}
	if in.Account == "" {
		return nil, fmt.Errorf("--account (the Alibaba Cloud account id) is required")
	}
	if in.Name == "" {
		in.Name = "agentkeys"
	}
	if in.Fingerprint == "" {
		in.Fingerprint = "<SHA-1 fingerprint of the issuer's TLS certificate>"
	}
	tp := map[string]any{"Version": "1", "Statement": []map[string]any{{
		"Action": "sts:AssumeRole", "Effect": "Allow",
		"Principal": map[string]any{"Federated": []string{"acs:ram::" + in.Account + ":oidc-provider/" + in.Name}},
		"Condition": map[string]any{"StringEquals": map[string]any{"oidc:aud": "sts.aliyuncs.com", "oidc:iss": in.Issuer}},
	}}}
	return &Ali{TrustPolicy: tp, Commands: []string{
		fmt.Sprintf("aliyun ims CreateOIDCProvider --OIDCProviderName %s --IssuerUrl %s --ClientIds sts.aliyuncs.com --Fingerprints %s", in.Name, in.Issuer, in.Fingerprint),
	}}, nil
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
