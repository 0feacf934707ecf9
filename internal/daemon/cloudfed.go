package daemon

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"regexp"
	"strconv"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/cloud"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
	"github.com/Azure/azure-sdk-for-go/sdk/azidentity"
	"github.com/aliyun/credentials-go/credentials/providers"
	"github.com/google/jsonschema-go/jsonschema"
	"golang.org/x/oauth2/google/externalaccount"

	"github.com/agentkeys/agentkeys/internal/apiv1"
	"github.com/agentkeys/agentkeys/internal/federation"
	"github.com/agentkeys/agentkeys/internal/problem"
)

// The clouds cloud_credentials serves besides AWS.
const (
	ProviderGCP      = "gcp"
	ProviderAzure    = "azure"
	ProviderAlicloud = "alicloud"
)

// Defaults of a CloudRequest.
const (
	DefaultGCPScope   = "https://www.googleapis.com/auth/cloud-platform"
	DefaultAzureScope = "https://management.azure.com/.default"
)

// CloudRequest asks for a short-lived credential of GCP, Azure or Alibaba
// Cloud, set up with agentkeys oidc register <cloud>.
type CloudRequest struct {
	Provider string
	// GCP: the workload identity provider's audience, an optional service
	// account to impersonate, the scope (default DefaultGCPScope).
	Audience, ServiceAccount string
	// Azure: the app registration's client id and its tenant; the scope
	// (default DefaultAzureScope).
	ClientID, TenantID string
	Scope              string
	// Alibaba Cloud: the role, the RAM OIDC provider, the session name
	// (default agentkeys-<alias>) and duration (0: an hour).
	RoleARN, OIDCProviderARN, SessionName string
	Duration                              int32
}

// CloudToken is a cloud's short-lived credential: a bearer access token
// (GCP, Azure) or an STS key triple (Alibaba Cloud). The caller must not log it.
type CloudToken struct {
	Provider        string `json:"provider"`
	AccessToken     string `json:"access_token,omitempty"`
	TokenType       string `json:"token_type,omitempty"`
	AccessKeyID     string `json:"access_key_id,omitempty"`
	AccessKeySecret string `json:"access_key_secret,omitempty"`
	SecurityToken   string `json:"security_token,omitempty"`
	// Expiration is when the credential expires; for Alibaba Cloud, whose
	// library does not report it, a lower bound: the start of the exchange
	// plus the duration asked (STS counts from its receipt of the request).
	Expiration time.Time `json:"expiration,omitzero"`
}

// The rules of cloud_credentials' inputs for the other clouds: the daemon
// checks them itself, and the tool's input schema states them per provider.
const (
	gcpAudiencePattern = `^//iam\.googleapis\.com/projects/[0-9]{1,20}/locations/global/workloadIdentityPools/[a-z0-9-]{4,32}/providers/[a-z0-9-]{4,32}$`
	gcpAccountPattern  = `^[a-z0-9-]{6,30}@[a-z0-9.-]{1,200}$`
	azureIDPattern     = `^[A-Za-z0-9.-]{1,128}$`
	aliRolePattern     = `^acs:ram::[0-9]{1,32}:role/[\w.@+=,-]{1,64}$`
	aliProviderPattern = `^acs:ram::[0-9]{1,32}:oidc-provider/[\w.@+=,-]{1,128}$`
	scopePattern       = `^[ -~]{1,1000}$`
)

var (
	gcpAudienceRE = regexp.MustCompile(gcpAudiencePattern)
	gcpAccountRE  = regexp.MustCompile(gcpAccountPattern)
	azureIDRE     = regexp.MustCompile(azureIDPattern)
	aliRoleRE     = regexp.MustCompile(aliRolePattern)
	aliProviderRE = regexp.MustCompile(aliProviderPattern)
	scopeRE       = regexp.MustCompile(scopePattern)
	anyARNRE      = regexp.MustCompile(anyARNPattern)
)

// checkCloudRequest checks what the daemon can check itself before minting a
// token: exactly what the tool's input schema says.
func checkCloudRequest(r CloudRequest) error {
	if r.RoleARN != "" && (len(r.RoleARN) < minARN || len(r.RoleARN) > maxARN || !anyARNRE.MatchString(r.RoleARN)) {
		return problem.New(CodeBadRequest, "role_arn is not an ARN of 20-2048 printable characters", "pass the ARN agentkeys oidc register printed")
	}
	if r.SessionName != "" && !sessionName.MatchString(r.SessionName) {
		return problem.New(CodeBadRequest, "session_name must be 2-64 characters of letters, digits and +=,.@_-", "pass another session_name")
	}
	if r.Duration != 0 && (r.Duration < minDuration || r.Duration > maxDuration) {
		return problem.New(CodeBadRequest, "duration must be 900 to 43200 seconds", "omit it for the default")
	}
	badScope := r.Scope != "" && !scopeRE.MatchString(r.Scope) // GCP's and Azure's
	switch r.Provider {
	case ProviderGCP:
		if !gcpAudienceRE.MatchString(r.Audience) {
			return problem.New(CodeBadRequest, "audience must be the workload identity provider's, //iam.googleapis.com/projects/NUMBER/locations/global/workloadIdentityPools/POOL/providers/PROVIDER",
				"pass the audience agentkeys oidc register gcp printed")
		}
		if r.ServiceAccount != "" && !gcpAccountRE.MatchString(r.ServiceAccount) {
			return problem.New(CodeBadRequest, "service_account is not a service account email", "pass e.g. agents@my-proj.iam.gserviceaccount.com, or omit it")
		}
	case ProviderAzure:
		if !azureIDRE.MatchString(r.ClientID) || !azureIDRE.MatchString(r.TenantID) {
			return problem.New(CodeBadRequest, "client_id and tenant_id are required (the app registration's ids)",
				"pass the AZURE_CLIENT_ID and AZURE_TENANT_ID agentkeys oidc register azure printed")
		}
	case ProviderAlicloud:
		if !aliRoleRE.MatchString(r.RoleARN) || !aliProviderRE.MatchString(r.OIDCProviderARN) {
			return problem.New(CodeBadRequest, "role_arn and oidc_provider_arn must be RAM ARNs (acs:ram::ACCOUNT:role/NAME, acs:ram::ACCOUNT:oidc-provider/NAME)",
				"pass the ALIBABA_CLOUD_ROLE_ARN and ALIBABA_CLOUD_OIDC_PROVIDER_ARN agentkeys oidc register alicloud printed")
		}
		return nil
	default:
		return problem.New(CodeBadRequest, "provider must be aws, gcp, azure or alicloud", "pass one of them")
	}
	if badScope {
		return problem.New(CodeBadRequest, "scope must be 1-1000 printable characters", "omit it for the default")
	}
	return nil
}

// cloudSchemaRules are the per-provider parts of cloud_credentials' input
// schema (checkAWS and checkCloudRequest check the same).
func cloudSchemaRules() []*jsonschema.Schema {
	when := func(provider string, required []string, patterns map[string]string) *jsonschema.Schema {
		var c any = provider
		then := &jsonschema.Schema{Required: required, Properties: map[string]*jsonschema.Schema{}}
		for k, pat := range patterns {
			then.Properties[k] = &jsonschema.Schema{Type: "string", Pattern: pat}
		}
		return &jsonschema.Schema{If: &jsonschema.Schema{Required: []string{"provider"}, Properties: map[string]*jsonschema.Schema{"provider": {Const: &c}}}, Then: then}
	}
	return []*jsonschema.Schema{
		when("aws", []string{"role_arn"}, map[string]string{"role_arn": arnPattern}),
		when(ProviderGCP, []string{"audience"}, map[string]string{"audience": gcpAudiencePattern, "service_account": gcpAccountPattern, "scope": scopePattern}),
		when(ProviderAzure, []string{"client_id", "tenant_id"}, map[string]string{"client_id": azureIDPattern, "tenant_id": azureIDPattern, "scope": scopePattern}),
		when(ProviderAlicloud, []string{"role_arn", "oidc_provider_arn"}, map[string]string{"role_arn": aliRolePattern, "oidc_provider_arn": aliProviderPattern}),
	}
}

// audience is the token audience of r's cloud.
func (r CloudRequest) audience() string {
	switch r.Provider {
	case ProviderGCP:
		return r.Audience
	case ProviderAzure:
		return apiv1.AzureAudience
	}
	return federation.AliAudience
}

// CloudToken returns r's cloud credential: from s.Tokens while it is fresh
// and the broker still accepts the session and its scope (checkCloud, as for
// AWS), else it mints an identity token for the cloud and exchanges it there
// (Exchange) and remembers the answer. Without s.Tokens every call is a mint
// and an exchange.
func (s Source) CloudToken(ctx context.Context, r CloudRequest) (*CloudToken, error) {
	if err := checkCloudRequest(r); err != nil {
		return nil, err
	}
	sess, c, err := s.agent()
	if err != nil {
		return nil, Stable(err)
	}
	if r.SessionName == "" {
		r.SessionName = "agentkeys-" + sess.Alias
		if !sessionName.MatchString(r.SessionName) {
			r.SessionName = "agentkeys"
		}
	}
	// The key names the agent (a re-paired daemon misses), the endpoint and
	// every field of the request, each quoted so that none can run into the next.
	key := fmt.Sprintf("%q", []string{sess.Agent, r.Provider, s.cloudEndpoint(r.Provider), r.Audience, r.ServiceAccount, r.ClientID,
		r.TenantID, r.Scope, r.RoleARN, r.OIDCProviderARN, r.SessionName, strconv.Itoa(int(r.Duration))})
	if t, ok := s.Tokens.get(key, s.now()); ok {
		if err := s.checkCloud(ctx, sess, c, r.audience()); err != nil {
			if p := problem.As(err); p.Code != CodeUnreachable {
				s.Tokens.drop(key) // refused for good: forget it
			}
			return nil, err
		}
		return t, nil
	}
	tok, err := s.mint(ctx, sess, c, r.audience(), 0)
	if err != nil {
		return nil, err
	}
	issued := s.now()
	t, err := s.Exchange(ctx, r, tok.Token)
	if err != nil {
		return nil, err
	}
	if t.Provider == ProviderAlicloud && t.Expiration.IsZero() {
		// Alibaba Cloud's library does not report the expiry; STS grants
		// exactly the duration asked (the library asks an hour by default),
		// counted from its receipt of the request: after issued.
		t.Expiration = issued.Add(time.Duration(cmp.Or(int(r.Duration), aliDefaultDuration)) * time.Second).UTC()
	}
	s.Tokens.put(key, *t, issued, s.now())
	return t, nil
}

// aliDefaultDuration is the lifetime Alibaba Cloud's OIDC provider asks when
// none is given (seconds).
const aliDefaultDuration = 3600

// cloudEndpoint is the endpoint override s uses for provider ("" = the cloud's).
func (s Source) cloudEndpoint(provider string) string {
	switch provider {
	case ProviderGCP:
		return s.GCPTokenURL + " " + s.GCPIAMURL
	case ProviderAzure:
		return s.AzureAuthorityHost
	}
	return s.AliSTSEndpoint
}

// Exchange trades an identity token already minted (and, where the daemon
// verifies tokens, verified) for r's cloud credential, through the cloud's
// own Go library: Google's external_account token source (RFC 8693 at GCP
// STS, then service-account impersonation when asked), azidentity's client
// assertion credential (Entra ID), Alibaba Cloud's OIDC credentials provider
// (AssumeRoleWithOIDC). The endpoints are the Source's overrides or the
// clouds' own.
func (s Source) Exchange(ctx context.Context, r CloudRequest, token string) (*CloudToken, error) {
	switch r.Provider {
	case ProviderGCP:
		cfg := externalaccount.Config{Audience: r.Audience, SubjectTokenType: federation.GCPSubjectTokenType, TokenURL: s.GCPTokenURL,
			Scopes: []string{cmp.Or(r.Scope, DefaultGCPScope)}, SubjectTokenSupplier: staticToken(token)}
		if r.ServiceAccount != "" {
			cfg.ServiceAccountImpersonationURL = federation.GCPImpersonationURL(cmp.Or(s.GCPIAMURL, federation.GCPIAMCredentialsURL), r.ServiceAccount)
		}
		ts, err := externalaccount.NewTokenSource(ctx, cfg)
		if err != nil {
			return nil, exchangeError("GCP STS", err)
		}
		t, err := ts.Token()
		if err != nil {
			return nil, exchangeError("GCP STS", err)
		}
		return &CloudToken{Provider: r.Provider, AccessToken: t.AccessToken, TokenType: t.Type(), Expiration: t.Expiry.UTC()}, nil
	case ProviderAzure:
		opts := &azidentity.ClientAssertionCredentialOptions{}
		if s.AzureAuthorityHost != "" {
			opts.ClientOptions = azcore.ClientOptions{Cloud: cloud.Configuration{ActiveDirectoryAuthorityHost: s.AzureAuthorityHost}}
			opts.DisableInstanceDiscovery = true
		}
		cred, err := azidentity.NewClientAssertionCredential(r.TenantID, r.ClientID, func(context.Context) (string, error) { return token, nil }, opts)
		if err != nil {
			return nil, exchangeError("Entra ID", err)
		}
		t, err := cred.GetToken(ctx, policy.TokenRequestOptions{Scopes: []string{cmp.Or(r.Scope, DefaultAzureScope)}})
		if err != nil {
			return nil, exchangeError("Entra ID", err)
		}
		return &CloudToken{Provider: r.Provider, AccessToken: t.Token, TokenType: "Bearer", Expiration: t.ExpiresOn.UTC()}, nil
	case ProviderAlicloud:
		b := providers.NewOIDCCredentialsProviderBuilder().WithOIDCToken(token).WithRoleArn(r.RoleARN).
			WithOIDCProviderARN(r.OIDCProviderARN).WithRoleSessionName(r.SessionName)
		if r.Duration != 0 {
			b = b.WithDurationSeconds(int(r.Duration))
		}
		if s.AliSTSEndpoint != "" {
			b = b.WithSTSEndpoint(s.AliSTSEndpoint)
		}
		p, err := b.Build()
		if err != nil {
			return nil, exchangeError("Alibaba Cloud STS", err)
		}
		cr, err := p.GetCredentials()
		if err != nil {
			return nil, exchangeError("Alibaba Cloud STS", err)
		}
		return &CloudToken{Provider: r.Provider, AccessKeyID: cr.AccessKeyId, AccessKeySecret: cr.AccessKeySecret, SecurityToken: cr.SecurityToken}, nil
	}
	return nil, checkCloudRequest(r)
}

type staticToken string

func (t staticToken) SubjectToken(context.Context, externalaccount.SupplierOptions) (string, error) {
	return string(t), nil
}

// exchangeError is UNREACHABLE when the cloud could not be reached, else
// DENIED with what the cloud said (its answer names no token).
func exchangeError(who string, err error) error {
	var ne net.Error
	var ue *url.Error
	if errors.As(err, &ne) || errors.As(err, &ue) || errors.Is(err, context.DeadlineExceeded) {
		return problem.Wrap(err, problem.Unreachable, "check the network and the daemon's endpoint flags", "cannot reach %s: %v", who, err)
	}
	return problem.Newf(problem.Denied, "check the setup agentkeys oidc register printed (audience, condition, subject or trust policy) and the agent's oidc scope",
		"%s refused the identity token: %v", who, err)
}
