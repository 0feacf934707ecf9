package federation

import (
	"encoding/base64"
	"fmt"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/agentkeys/agentkeys/internal/apiv1"
)

// SeaweedFS defaults. SeaweedFS (`weed mini`) is a local S3 + STS server
// standing in for AWS: it trusts the issuer through its discovery document and
// applies the same per-agent-prefix policy, so the AWS setup can be tried on one
// machine. The role's account is a placeholder (SeaweedFS looks the
// role up by name), and the bucket is created by `weed mini -bucket`.
const (
	SeaweedAccount      = "000000000000"
	SeaweedBucket       = "agentkeys"
	SeaweedPort         = 8333
	SeaweedProviderName = "agentkeys"
	SeaweedDataDir      = "weed-data"
	SeaweedIAMFile      = "iam.json"
	seaweedPolicy       = "agentkeys-own-prefix"
)

// SeaweedFSInput configures the local S3 + STS server.
type SeaweedFSInput struct {
	Issuer     string
	Bucket     string // default agentkeys
	Audience   string // default sts.amazonaws.com
	RoleName   string // default agentkeys-agents
	Port       int    // S3 and STS port on 127.0.0.1, default 8333
	DataDir    string // weed mini -dir, default weed-data
	FileDir    string // where iam.json is saved ("" = the current directory)
	SigningKey []byte // STS session signing key: at least 16 random bytes (the caller draws them)
	Pin        string
	MrEnclave  string
	MrSigner   string
}

// SeaweedFS is the local setup: SeaweedFS's iam.json and the command that
// starts it.
type SeaweedFS struct {
	RoleARN  string     `json:"role_arn"`
	Bucket   string     `json:"bucket"`
	Endpoint string     `json:"endpoint"` // S3 and STS
	IAM      SeaweedIAM `json:"iam"`      // iam.json
	Command  []string   `json:"command"`  // weed mini's argv ("weed" first)
}

// SeaweedIAM is SeaweedFS's advanced IAM configuration (-s3.iam.config).
type SeaweedIAM struct {
	STS       SeaweedSTS        `json:"sts"`
	Policy    SeaweedPolicyCfg  `json:"policy"`
	Providers []SeaweedProvider `json:"providers"`
	Policies  []SeaweedPolicy   `json:"policies"`
	Roles     []SeaweedRole     `json:"roles"`
}

// SeaweedSTS configures the STS sessions SeaweedFS issues.
type SeaweedSTS struct {
	TokenDuration    string `json:"tokenDuration"`
	MaxSessionLength string `json:"maxSessionLength"`
	Issuer           string `json:"issuer"`
	SigningKey       string `json:"signingKey"` // base64; a secret: whoever has it can mint sessions
}

// SeaweedPolicyCfg is the policy engine's setting; Deny by default.
type SeaweedPolicyCfg struct {
	DefaultEffect string `json:"defaultEffect"`
	StoreType     string `json:"storeType"`
}

// SeaweedProvider is an OIDC identity provider SeaweedFS trusts.
type SeaweedProvider struct {
	Name    string                `json:"name"`
	Type    string                `json:"type"`
	Enabled bool                  `json:"enabled"`
	Config  SeaweedProviderConfig `json:"config"`
}

// SeaweedProviderConfig names the issuer, the audience and the claim that
// becomes the wallet principal tag.
type SeaweedProviderConfig struct {
	Issuer                  string   `json:"issuer"`
	ClientID                string   `json:"clientId"`
	AllowedPrincipalTagKeys []string `json:"allowedPrincipalTagKeys"`
}

// SeaweedPolicy is a named policy document.
type SeaweedPolicy struct {
	Name     string `json:"name"`
	Document Policy `json:"document"`
}

// SeaweedRole is a role with its trust policy and attached policies.
type SeaweedRole struct {
	RoleName         string   `json:"roleName"`
	RoleArn          string   `json:"roleArn"`
	TrustPolicy      Policy   `json:"trustPolicy"`
	AttachedPolicies []string `json:"attachedPolicies"`
}

// GenerateSeaweedFS returns the iam.json and the `weed mini` command of a
// SeaweedFS on 127.0.0.1 that trusts the issuer as AWS would with the
// documents of GenerateAWS.
func GenerateSeaweedFS(in SeaweedFSInput) (*SeaweedFS, error) {
	if in.Bucket == "" {
		in.Bucket = SeaweedBucket
	}
	if in.Port == 0 {
		in.Port = SeaweedPort
	}
	if in.Port < 1 || in.Port > 65535 {
		return nil, fmt.Errorf("--port must be 1-65535, not %d", in.Port)
	}
	if in.DataDir == "" {
		in.DataDir = SeaweedDataDir
	}
	doc, err := GenerateAWS(AWSInput{Issuer: in.Issuer, Account: SeaweedAccount, RoleName: in.RoleName, Bucket: in.Bucket,
		Audience: in.Audience, Pin: in.Pin, MrEnclave: in.MrEnclave, MrSigner: in.MrSigner})
	if err != nil {
		return nil, err
	}
	iam, err := SeaweedIAMFromAWS(doc, in.Issuer, in.SigningKey)
	if err != nil {
		return nil, err
	}
	iamPath := filepath.Join(in.FileDir, SeaweedIAMFile)
	return &SeaweedFS{RoleARN: doc.RoleARN, Bucket: in.Bucket, Endpoint: "http://127.0.0.1:" + strconv.Itoa(in.Port), IAM: *iam,
		Command: []string{"weed", "mini", "-ip", "127.0.0.1", "-ip.bind", "127.0.0.1", "-dir", in.DataDir,
			"-s3.port", strconv.Itoa(in.Port), "-s3.iam.config", iamPath, "-bucket", in.Bucket,
			"-webdav=false", "-admin.ui=false", "-s3.port.iceberg=0", "-s3.port.lance=0"}}, nil
}

// SeaweedIAMFromAWS translates the AWS documents into SeaweedFS's iam.json. The
// storage statements go in verbatim, except the NotAction Deny (SeaweedFS's
// policy engine has no NotAction; its defaultEffect Deny has the same effect).
// The trust policy names the provider by name, and its condition keys are
// SeaweedFS's spelling of the same claims: <host>:aud → oidc:aud, <host>:sub →
// oidc:sub, and the request tag (which SeaweedFS takes from the claim) →
// oidc:agentkeys_user_wallet. SeaweedFS knows only the
// sts:AssumeRoleWithWebIdentity action of the trust statement.
func SeaweedIAMFromAWS(doc *AWS, issuer string, signingKey []byte) (*SeaweedIAM, error) {
	if len(signingKey) < 16 {
		return nil, fmt.Errorf("the STS signing key must be at least 16 random bytes")
	}
	host, err := Host(issuer)
	if err != nil {
		return nil, err
	}
	var storage []Statement
	for _, s := range doc.RolePolicy.Statement {
		if s.Sid == DenyOtherSid {
			if len(s.NotAction) == 0 || s.Effect != "Deny" {
				return nil, fmt.Errorf("the deny-other statement is not a NotAction Deny: %+v", s)
			}
			continue
		}
		if len(s.NotAction) != 0 {
			return nil, fmt.Errorf("statement %s uses NotAction, which SeaweedFS does not know", s.Sid)
		}
		storage = append(storage, s)
	}
	trust := make([]Statement, len(doc.TrustPolicy.Statement))
	for i, s := range doc.TrustPolicy.Statement {
		s.Principal = map[string]any{"Federated": SeaweedProviderName}
		s.Action = []string{"sts:AssumeRoleWithWebIdentity"}
		cond := map[string]map[string]any{}
		for op, kv := range s.Condition {
			cond[op] = map[string]any{}
			for k, v := range kv {
				switch k {
				case host + ":aud":
					k = "oidc:aud"
				case host + ":sub":
					k = "oidc:sub"
				case "aws:RequestTag/" + apiv1.TagUserWallet:
					k = "oidc:" + apiv1.TagUserWallet
				default:
					return nil, fmt.Errorf("trust condition key %q has no SeaweedFS spelling", k)
				}
				cond[op][k] = v
			}
		}
		s.Condition = cond
		trust[i] = s
	}
	roleName := doc.RoleARN[strings.LastIndexByte(doc.RoleARN, '/')+1:]
	return &SeaweedIAM{
		STS: SeaweedSTS{TokenDuration: "1h", MaxSessionLength: "12h", Issuer: "seaweedfs-sts",
			SigningKey: base64.StdEncoding.EncodeToString(signingKey)},
		Policy: SeaweedPolicyCfg{DefaultEffect: "Deny", StoreType: "memory"},
		Providers: []SeaweedProvider{{Name: SeaweedProviderName, Type: "oidc", Enabled: true,
			Config: SeaweedProviderConfig{Issuer: issuer, ClientID: doc.Audience, AllowedPrincipalTagKeys: []string{apiv1.TagUserWallet}}}},
		Policies: []SeaweedPolicy{{Name: seaweedPolicy, Document: Policy{Version: "2012-10-17", Statement: storage}}},
		Roles: []SeaweedRole{{RoleName: roleName, RoleArn: doc.RoleARN,
			TrustPolicy: Policy{Version: "2012-10-17", Statement: trust}, AttachedPolicies: []string{seaweedPolicy}}},
	}, nil
}
