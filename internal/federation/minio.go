package federation

import (
	"cmp"
	"crypto/sha1"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"path/filepath"
	"regexp"
	"strings"
	"time"
)

// MinIO defaults. MinIO (the self-hosted S3 many owners run) trusts the
// issuer as an OpenID provider with a role policy: every token it accepts
// gets the one policy, whose ${jwt:preferred_username} (the agent wallet,
// lower case) confines each agent to its own prefix. The names below are
// MinIO's own (internal/config/identity/openid and internal/config in
// github.com/minio/minio).
const (
	MinIOAudience   = "minio"            // the default client id (token audience)
	MinIOBucket     = "agentkeys"        // the bucket agents share
	MinIOPolicyName = "agentkeys-agents" // the role policy
	MinIOEndpoint   = "http://127.0.0.1:9000"
	MinIOEnvFile    = "minio.env"         // MINIO_CONFIG_ENV_FILE; holds the client secret
	MinIOPolicyFile = "minio-policy.json" // mc admin policy create … FILE
	// MinIOSTSDuration is the default cap on the credentials MinIO issues;
	// MinIO's own floor is 900 s.
	MinIOSTSDuration = 15 * time.Minute
	// MinIOWalletVar is the policy variable of the agent wallet: MinIO
	// substitutes only standard claims, and sub changes with the build.
	MinIOWalletVar = "${jwt:preferred_username}"
)

// MinIO's environment variables of an OpenID provider with a role policy
// (MINIO_IDENTITY_OPENID_<KEY>, keys of openid.DefaultKVS) and the STS cap
// (config.EnvMinioStsDuration).
const (
	MinIOEnvConfigURL    = "MINIO_IDENTITY_OPENID_CONFIG_URL"
	MinIOEnvClientID     = "MINIO_IDENTITY_OPENID_CLIENT_ID"
	MinIOEnvClientSecret = "MINIO_IDENTITY_OPENID_CLIENT_SECRET"
	MinIOEnvRolePolicy   = "MINIO_IDENTITY_OPENID_ROLE_POLICY"
	MinIOEnvDisplayName  = "MINIO_IDENTITY_OPENID_DISPLAY_NAME"
	MinIOEnvSTSDuration  = "MINIO_STS_DURATION"
)

// MinIOInput configures MinIO's OpenID provider and role policy.
type MinIOInput struct {
	Issuer   string
	Audience string // client id; default MinIOAudience
	Bucket   string // default MinIOBucket
	Policy   string // role policy name; default MinIOPolicyName
	Endpoint string // MinIO's URL, for the agent's STS calls; default MinIOEndpoint
	Region   string // MinIO's site region (MINIO_SITE_REGION), part of the role ARN; default none
	Alias    string // the mc alias of the server; default myminio
	// STSDuration caps every credential MinIO issues (MINIO_STS_DURATION);
	// default MinIOSTSDuration, at least 15 minutes (MinIO's floor).
	STSDuration time.Duration
	// ClientSecret keeps MinIO from accepting HS256 tokens: at least 16
	// random bytes (the caller draws them). Nobody ever signs with it.
	ClientSecret []byte
	FileDir      string // where minio.env and the policy are saved ("" = the current directory)
}

// MinIO is the setup: MinIO's environment (saved as minio.env, 0600: it holds
// the client secret), the role policy, and the commands.
type MinIO struct {
	Env      []EnvVar `json:"env"`
	Policy   Policy   `json:"policy"`
	RoleARN  string   `json:"role_arn"`
	Bucket   string   `json:"bucket"`
	Endpoint string   `json:"endpoint"` // S3 and STS
	Audience string   `json:"audience"`
	Commands []string `json:"commands"`
	Agent    []string `json:"agent_commands"`
}

// EnvVar is one environment variable of a server's configuration.
type EnvVar struct {
	Name  string `json:"name"`
	Value string `json:"value"`
	Why   string `json:"why"`
}

// EnvFile is the env file MinIO reads (MINIO_CONFIG_ENV_FILE), also a shell
// script setting the same variables: one commented `export NAME='VALUE'` each.
func (m *MinIO) EnvFile() string {
	var b strings.Builder
	b.WriteString("# MinIO's OpenID settings for the AgentKeys issuer (agentkeys oidc register minio).\n" +
		"# Keep this file private (0600): it holds the client secret.\n")
	for _, v := range m.Env {
		fmt.Fprintf(&b, "# %s\nexport %s='%s'\n", v.Why, v.Name, v.Value)
	}
	return b.String()
}

var (
	minioBucketRE = regexp.MustCompile(`^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$`)
	minioNameRE   = regexp.MustCompile(`^[A-Za-z0-9_.-]{1,128}$`)
	minioAliasRE  = regexp.MustCompile(`^[A-Za-z0-9_-]{1,64}$`)
	minioRegionRE = regexp.MustCompile(`^([a-zA-Z][a-zA-Z0-9_-]+)?$`) // MinIO's validRegionRegex
	printableRE   = regexp.MustCompile(`^[!-~]{1,256}$`)
)

// MinIORoleARN is the ARN MinIO gives the role of an OpenID provider with a
// role policy: its resource id is the unpadded base64url SHA-1 of the client
// id (openid.LookupConfig), its region MinIO's site region.
func MinIORoleARN(clientID, region string) string {
	h := sha1.Sum([]byte(clientID))
	return "arn:minio:iam:" + region + "::role/" + base64.RawURLEncoding.EncodeToString(h[:])
}

// GenerateMinIO returns MinIO's OpenID settings, the per-agent-prefix role
// policy and the commands that load them.
func GenerateMinIO(in MinIOInput) (*MinIO, error) {
	if _, err := Host(in.Issuer); err != nil {
		return nil, err
	}
	if strings.ContainsAny(in.Issuer, `'"`) {
		return nil, fmt.Errorf("issuer %q has a quote, which MinIO's env file cannot carry", in.Issuer)
	}
	in.Audience = cmp.Or(in.Audience, MinIOAudience)
	in.Bucket = cmp.Or(in.Bucket, MinIOBucket)
	in.Policy = cmp.Or(in.Policy, MinIOPolicyName)
	in.Endpoint = cmp.Or(in.Endpoint, MinIOEndpoint)
	in.Alias = cmp.Or(in.Alias, "myminio")
	in.STSDuration = cmp.Or(in.STSDuration, MinIOSTSDuration)
	switch {
	case !printableRE.MatchString(in.Audience) || strings.ContainsAny(in.Audience, `'"`):
		return nil, fmt.Errorf("--audience must be 1-256 printable characters without quotes")
	case !minioBucketRE.MatchString(in.Bucket):
		return nil, fmt.Errorf("--bucket %q is not an S3 bucket name (3-63 lower-case letters, digits, '.' and '-')", in.Bucket)
	case !minioNameRE.MatchString(in.Policy):
		return nil, fmt.Errorf("--policy-name must be 1-128 letters, digits and _.-")
	case !minioAliasRE.MatchString(in.Alias):
		return nil, fmt.Errorf("--alias must be 1-64 letters, digits, _ and -")
	case !minioRegionRE.MatchString(in.Region):
		return nil, fmt.Errorf("--region %q is not a MinIO region (a letter, then letters, digits, _ and -)", in.Region)
	case in.STSDuration < 15*time.Minute || in.STSDuration > 12*time.Hour || in.STSDuration%time.Second != 0:
		return nil, fmt.Errorf("--sts-duration must be whole seconds from 15m (MinIO's floor) to 12h")
	case len(in.ClientSecret) < 16:
		return nil, fmt.Errorf("the client secret must be at least 16 random bytes")
	}
	if _, err := Host(in.Endpoint); err != nil {
		return nil, fmt.Errorf("--endpoint: %v", err)
	}
	b := "arn:aws:s3:::" + in.Bucket
	// MinIO fills a policy variable the credential's claims lack from a request
	// parameter of the same name (?preferred_username=…), so each statement
	// also requires sub, which every token has and no parameter can replace,
	// to be an agent's sub ending in the substituted wallet.
	self := []string{"enclave:*:agent:" + MinIOWalletVar}
	out := &MinIO{RoleARN: MinIORoleARN(in.Audience, in.Region), Bucket: in.Bucket, Endpoint: strings.TrimRight(in.Endpoint, "/"), Audience: in.Audience,
		Policy: Policy{Version: "2012-10-17", Statement: []Statement{
			{Sid: "AgentKeysListOwnPrefix", Effect: "Allow", Action: []string{"s3:ListBucket"}, Resource: []string{b},
				Condition: map[string]map[string]any{"StringLike": {"s3:prefix": []string{MinIOWalletVar + "/*", MinIOWalletVar + "/"}, "jwt:sub": self}}},
			{Sid: "AgentKeysObjectsInOwnPrefix", Effect: "Allow", Action: ObjectActions, Resource: []string{b + "/" + MinIOWalletVar + "/*"},
				Condition: map[string]map[string]any{"StringLike": {"jwt:sub": self}}},
		}}}
	out.Env = []EnvVar{
		{MinIOEnvConfigURL, strings.TrimRight(in.Issuer, "/") + "/.well-known/openid-configuration",
			"the issuer's discovery document: MinIO reads its jwks_uri at start and on an unknown key id"},
		{MinIOEnvClientID, in.Audience, "the token audience MinIO accepts (aud); the broker must allow it and agents' scope name it"},
		{MinIOEnvClientSecret, hex.EncodeToString(in.ClientSecret),
			"random and never used to sign: MinIO also verifies HS256 tokens with this secret as the key, so without one it accepts any token signed with an empty key"},
		{MinIOEnvRolePolicy, in.Policy, "every accepted token gets this policy, which confines each agent to the prefix of its wallet"},
		{MinIOEnvDisplayName, "AgentKeys", "the provider's name in MinIO's console"},
		{MinIOEnvSTSDuration, in.STSDuration.String(),
			"caps every STS credential MinIO issues: without it a caller asking DurationSeconds=31536000 with a 60-second token gets credentials for a year, outliving agentkeys agent revoke"},
	}
	env, pol := filepath.Join(in.FileDir, MinIOEnvFile), filepath.Join(in.FileDir, MinIOPolicyFile)
	out.Commands = []string{
		fmt.Sprintf("mc alias set %s %s   # mc asks for the root user's keys (none in argv)", in.Alias, out.Endpoint),
		fmt.Sprintf("mc mb --ignore-existing %s/%s", in.Alias, in.Bucket),
		fmt.Sprintf("mc admin policy create %s %s %s", in.Alias, in.Policy, pol),
		fmt.Sprintf("MINIO_CONFIG_ENV_FILE=%s minio server DATA_DIR   # (re)start MinIO with the settings", env),
	}
	out.Agent = []string{
		fmt.Sprintf("agentkeys daemon aws-credentials --role-arn %s --sts-endpoint %s --audience %s", out.RoleARN, out.Endpoint, in.Audience),
	}
	return out, nil
}
