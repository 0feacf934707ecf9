package watchdog

import (
	"context"
	"crypto/ed25519"
	"fmt"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/service/iam"

	"github.com/agentkeys/agentkeys/internal/client"
	"github.com/agentkeys/agentkeys/internal/registry"
)

// GovernanceRevoker revokes a kid with a governance entry (oidc.key.revoke)
// signed by key, submitted to the broker behind c. This is the one place the
// watchdog signs: the key is the incident key it was given, a governance key
// whose signature alone carries out a revoke and nothing else.
func GovernanceRevoker(c *client.Client, key ed25519.PrivateKey) Revoker {
	return func(ctx context.Context, kid, reason string) error {
		_, err := c.SubmitGovernance(ctx, registry.KindOidcKeyRevoke, registry.OidcRevoke{Kid: kid, Reason: reason}, key)
		return err
	}
}

// AWS cuts AWS off from the issuer: it removes ClientID (the audience AWS
// accepts, sts.amazonaws.com by default) from the IAM OIDC provider, so STS
// refuses every token of the issuer until an operator adds it back.
type AWS struct {
	ProviderARN string
	ClientID    string
	Endpoint    string // "" = AWS's IAM endpoint
	Region      string // signing region; "" = us-east-1
}

// Adapter returns a as a watchdog adapter. Credentials come from the AWS
// SDK's default chain (environment, shared config, instance role).
func (a AWS) Adapter() Adapter {
	return Adapter{Name: "aws", Cut: func(ctx context.Context) error {
		region := a.Region
		if region == "" {
			region = "us-east-1"
		}
		cfg, err := config.LoadDefaultConfig(ctx, config.WithRegion(region))
		if err != nil {
			return fmt.Errorf("AWS configuration: %w", err)
		}
		cl := iam.NewFromConfig(cfg, func(o *iam.Options) {
			if a.Endpoint != "" {
				o.BaseEndpoint = aws.String(a.Endpoint)
			}
		})
		_, err = cl.RemoveClientIDFromOpenIDConnectProvider(ctx, &iam.RemoveClientIDFromOpenIDConnectProviderInput{
			OpenIDConnectProviderArn: aws.String(a.ProviderARN), ClientID: aws.String(a.ClientID)})
		return err
	}}
}
