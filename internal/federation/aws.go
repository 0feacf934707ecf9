package federation

import (
	"fmt"
	"path/filepath"
	"strings"

	"github.com/agentkeys/agentkeys/internal/apiv1"
)

// The files the AWS documents are saved as.
const (
	AWSTrustFile  = "trust-policy.json"
	AWSRoleFile   = "role-policy.json"
	AWSBucketFile = "bucket-policy.json"
)

// AWSInput configures the AWS documents.
type AWSInput struct {
	Issuer    string
	Account   string
	RoleName  string // default agentkeys-agents
	Bucket    string // default agentkeys-<account>
	Audience  string // default sts.amazonaws.com
	Pin       string
	MrEnclave string
	MrSigner  string
	FileDir   string // where the documents are saved, as the commands name them ("" = the current directory)
}

// AWS is everything to paste into an AWS account.
type AWS struct {
	ProviderARN  string   `json:"provider_arn"`
	RoleARN      string   `json:"role_arn"`
	Audience     string   `json:"audience"`
	Bucket       string   `json:"bucket"`
	TrustPolicy  Policy   `json:"trust_policy"`
	RolePolicy   Policy   `json:"role_policy"`   // identity policy of the role
	BucketPolicy Policy   `json:"bucket_policy"` // the same statements, for the bucket, naming the role
	Commands     []string `json:"commands"`      // aws CLI commands, in order
}

// GenerateAWS returns the provider, role trust policy and bucket policies.
func GenerateAWS(in AWSInput) (*AWS, error) {
	host, err := Host(in.Issuer)
	if err != nil {
		return nil, err
	}
	if len(in.Account) != 12 || strings.Trim(in.Account, "0123456789") != "" {
		return nil, fmt.Errorf("--account must be the 12-digit AWS account id")
	}
	if in.RoleName == "" {
		in.RoleName = "agentkeys-agents"
	}
	if in.Bucket == "" {
		in.Bucket = "agentkeys-" + in.Account
	}
	if in.Audience == "" {
		in.Audience = apiv1.AWSAudience
	}
	sub, err := SubPattern(in.Pin, in.MrEnclave, in.MrSigner)
	if err != nil {
		return nil, err
	}
	out := &AWS{ProviderARN: "arn:aws:iam::" + in.Account + ":oidc-provider/" + host,
		RoleARN: "arn:aws:iam::" + in.Account + ":role/" + in.RoleName, Audience: in.Audience, Bucket: in.Bucket}
	cond := map[string]map[string]any{
		"StringEquals": {host + ":aud": in.Audience},
		"Null":         {"aws:RequestTag/" + apiv1.TagUserWallet: "false"},
	}
	if sub != "" {
		cond["StringLike"] = map[string]any{host + ":sub": sub}
	}
	out.TrustPolicy = Policy{Version: "2012-10-17", Statement: []Statement{{Sid: "AgentKeysWebIdentity", Effect: "Allow",
		Principal: map[string]any{"Federated": out.ProviderARN},
		Action:    []string{"sts:AssumeRoleWithWebIdentity", "sts:TagSession"}, Condition: cond}}}
	out.RolePolicy = Policy{Version: "2012-10-17", Statement: StorageStatements(in.Bucket)}
	out.BucketPolicy = Policy{Version: "2012-10-17", Statement: RoleBucketStatements(in.Bucket, out.RoleARN)}
	out.Commands = []string{
		fmt.Sprintf("aws iam create-open-id-connect-provider --url %s --client-id-list %s", in.Issuer, in.Audience),
		fmt.Sprintf("aws iam create-role --role-name %s --assume-role-policy-document file://%s --max-session-duration 3600", in.RoleName, filepath.Join(in.FileDir, AWSTrustFile)),
		fmt.Sprintf("aws iam put-role-policy --role-name %s --policy-name agentkeys-own-prefix --policy-document file://%s", in.RoleName, filepath.Join(in.FileDir, AWSRoleFile)),
		fmt.Sprintf("aws s3api put-bucket-policy --bucket %s --policy file://%s", in.Bucket, filepath.Join(in.FileDir, AWSBucketFile)),
	}
	return out, nil
}
