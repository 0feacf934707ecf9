package daemon

// Sending in AWS mode (§9): the message built and DKIM-signed as for the
// edge goes to SES SendRawEmail, signed with the daemon's own STS
// credentials (AssumeRoleWithWebIdentity with its own identity token): no
// long-lived key, and the broker is not on the path.

import (
	"context"
	"errors"
	"net/url"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ses"
	sestypes "github.com/aws/aws-sdk-go-v2/service/ses/types"
	"github.com/aws/smithy-go"

	"github.com/agentkeys/agentkeys/internal/problem"
)

// safeEndpoint reports whether u is an endpoint the daemon may send signed
// requests (and the message) to: https, or http on loopback.
func safeEndpoint(u string) bool {
	p, err := url.Parse(u)
	if err != nil || p.Host == "" || p.User != nil {
		return false
	}
	return p.Scheme == "https" || p.Scheme == "http" && loopback(p.Hostname())
}

// sendSES sends raw (already DKIM-signed) from from to to with SES
// SendRawEmail and returns SES's message id.
func (s Source) sendSES(ctx context.Context, cfg *MailSES, from string, to []string, raw []byte) (string, error) {
	region := cfg.Region
	if region == "" {
		region = DefaultAWSRegion
	}
	creds := aws.NewCredentialsCache(aws.CredentialsProviderFunc(func(ctx context.Context) (aws.Credentials, error) {
		c, err := s.AWSCredentials(ctx, AWSRequest{RoleARN: cfg.RoleARN, Region: region})
		if err != nil {
			return aws.Credentials{}, err
		}
		return aws.Credentials{AccessKeyID: c.AccessKeyID, SecretAccessKey: c.SecretAccessKey, SessionToken: c.SessionToken,
			CanExpire: true, Expires: c.Expiration, Source: "agentkeys"}, nil
	}))
	cl := ses.NewFromConfig(aws.Config{Region: region, Credentials: creds}, func(o *ses.Options) {
		if cfg.Endpoint != "" {
			o.BaseEndpoint = aws.String(cfg.Endpoint)
		}
	})
	out, err := cl.SendRawEmail(ctx, &ses.SendRawEmailInput{Source: aws.String(from), Destinations: to,
		RawMessage: &sestypes.RawMessage{Data: raw}})
	if err != nil {
		return "", sesProblem(err)
	}
	return aws.ToString(out.MessageId), nil
}

// sesProblem is a failed SendRawEmail as a stable problem: the daemon's own
// refusals (no credentials) as they are, SES's refusals DENIED (throttling
// UNREACHABLE: retry), anything else UNREACHABLE.
func sesProblem(err error) error {
	var p *problem.Error
	if errors.As(err, &p) {
		return p
	}
	var ae smithy.APIError
	if errors.As(err, &ae) {
		msg := ae.ErrorMessage()
		if len(msg) > 200 {
			msg = msg[:200] + "…"
		}
		if ae.ErrorFault() == smithy.FaultServer || ae.ErrorCode() == "Throttling" {
			return problem.Newf(CodeUnreachable, "retry later", "SES deferred the message: %s: %s", ae.ErrorCode(), msg)
		}
		return problem.Newf(CodeDenied, "verify the domain in SES and apply the role policy agentkeys mail aws-setup prints (it allows sending only as inboxes this agent holds send on)",
			"SES refused the message: %s: %s", ae.ErrorCode(), msg)
	}
	return problem.Newf(CodeUnreachable, `check "send"."ses"."endpoint" in mail.json and the network`, "cannot reach SES: %v", err)
}
