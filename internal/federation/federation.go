// Package federation generates what a cloud needs to trust this broker's OIDC
// issuer (§8): provider registration commands, role trust policies and the
// per-agent-prefix storage policy, for AWS, GCP, Azure, Alibaba Cloud and
// Kubernetes, and SeaweedFS's configuration to try the AWS setup locally. It is
// the one source of these documents: `agentkeys oidc register` prints them and
// the SeaweedFS integration tests load them. It calls no cloud.
package federation

import (
	"fmt"
	"net/url"
	"strings"

	"github.com/agentkeys/agentkeys/internal/apiv1"
)

// WalletVar is the policy variable of the agent's wallet session tag.
const WalletVar = "${aws:PrincipalTag/" + apiv1.TagUserWallet + "}"

// Policy is an IAM-style policy document.
type Policy struct {
	Version   string      `json:"Version"`
	Statement []Statement `json:"Statement"`
}

// Statement is one IAM policy statement.
type Statement struct {
	Sid       string                    `json:"Sid,omitempty"`
	Effect    string                    `json:"Effect"`
	Principal map[string]any            `json:"Principal,omitempty"`
	Action    []string                  `json:"Action,omitempty"`
	NotAction []string                  `json:"NotAction,omitempty"`
	Resource  []string                  `json:"Resource,omitempty"`
	Condition map[string]map[string]any `json:"Condition,omitempty"`
}

// Pin modes of the sub condition.
const (
	PinNone      = ""
	PinMrEnclave = "mrenclave"
	PinMrSigner  = "mrsigner"
	PinBoth      = "both"
)

// Host returns the issuer's host and path as clouds key conditions by
// (issuer without the scheme).
func Host(issuer string) (string, error) {
	u, err := url.Parse(issuer)
	if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
		return "", fmt.Errorf("issuer %q is not an http(s) URL", issuer)
	}
	return u.Host + strings.TrimRight(u.Path, "/"), nil
}

// SubPattern returns the StringLike pattern of a pin mode ("" for none).
func SubPattern(pin, mrenclave, mrsigner string) (string, error) {
	switch pin {
	case PinNone:
		return "", nil
	case PinMrEnclave:
		if mrenclave == "" {
			return "", fmt.Errorf("--pin mrenclave needs --mrenclave")
		}
		return "enclave:" + mrenclave + ":*", nil
	case PinMrSigner:
		if mrsigner == "" {
			return "", fmt.Errorf("--pin mrsigner needs --mrsigner")
		}
		return "enclave:*:" + mrsigner + ":*", nil
	case PinBoth:
		if mrenclave == "" || mrsigner == "" {
			return "", fmt.Errorf("--pin both needs --mrenclave and --mrsigner")
		}
		return "enclave:" + mrenclave + ":" + mrsigner + ":*", nil
	}
	return "", fmt.Errorf("--pin must be mrenclave, mrsigner or both, not %q", pin)
}

// ObjectActions are the actions an agent has on objects under its prefix.
var ObjectActions = []string{"s3:GetObject", "s3:PutObject", "s3:DeleteObject"}

// StorageStatements are the per-agent-prefix statements: ListBucket limited to
// the wallet prefix in its own statement, object actions under the prefix, a
// Deny of everything when the wallet tag is missing (otherwise tag-less
// principals share the literal "${…}" prefix), and a Deny of every other action.
func StorageStatements(bucket string) []Statement {
	b := "arn:aws:s3:::" + bucket
	return []Statement{
		{Sid: "AgentKeysListOwnPrefix", Effect: "Allow", Action: []string{"s3:ListBucket"}, Resource: []string{b},
			Condition: map[string]map[string]any{"StringLike": {"s3:prefix": []string{WalletVar + "/*", WalletVar + "/"}}}},
		{Sid: "AgentKeysObjectsInOwnPrefix", Effect: "Allow", Action: ObjectActions, Resource: []string{b + "/" + WalletVar + "/*"}},
		{Sid: "AgentKeysDenyWithoutWalletTag", Effect: "Deny", Action: []string{"s3:*"}, Resource: []string{b, b + "/*"},
			Condition: map[string]map[string]any{"Null": {"aws:PrincipalTag/" + apiv1.TagUserWallet: "true"}}},
		{Sid: DenyOtherSid, Effect: "Deny", NotAction: append([]string{"s3:ListBucket"}, ObjectActions...), Resource: []string{b, b + "/*"}},
	}
}

// RoleBucketStatements are StorageStatements as a bucket policy states them:
// each naming the agents' role as its principal.
func RoleBucketStatements(bucket, roleARN string) []Statement {
	bs := StorageStatements(bucket)
	for i := range bs {
		bs[i].Principal = map[string]any{"AWS": roleARN}
	}
	return bs
}

// DenyOtherSid names the statement that denies every action not granted.
const DenyOtherSid = "AgentKeysDenyOtherActions"
