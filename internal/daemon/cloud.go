package daemon

import (
	"cmp"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/sts"
	"github.com/aws/smithy-go"

	"github.com/agentkeys/agentkeys/internal/apiv1"
	"github.com/agentkeys/agentkeys/internal/backoff"
	"github.com/agentkeys/agentkeys/internal/client"
	"github.com/agentkeys/agentkeys/internal/home"
	"github.com/agentkeys/agentkeys/internal/problem"
)

// Defaults of an AWSRequest.
const (
	DefaultAWSAudience = apiv1.AWSAudience
	DefaultAWSRegion   = "us-east-1"
)

// OIDCToken mints an identity token for audience through the agent session
// (ttl 0 = the broker's default). The caller must not log the token.
func (s Source) OIDCToken(ctx context.Context, audience string, ttl int64) (*apiv1.OIDCToken, error) {
	sess, c, err := s.agent()
	if err != nil {
		return nil, Stable(err)
	}
	return s.mint(ctx, sess, c, audience, ttl)
}

// mint mints a token and dual-verifies it (DualVerify) before anyone uses it:
// every token the daemon hands out, writes or exchanges comes through here.
func (s Source) mint(ctx context.Context, sess *Session, c *client.AgentSession, audience string, ttl int64) (*apiv1.OIDCToken, error) {
	t, err := c.OIDCToken(ctx, audience, ttl)
	if err != nil {
		return nil, Stable(err)
	}
	if err := s.DualVerify(ctx, sess, t.Token); err != nil {
		return nil, err
	}
	return t, nil
}

// AWSRequest asks for AWS credentials for a role.
type AWSRequest struct {
	RoleARN     string
	SessionName string // default agentkeys-<alias>
	Duration    int32  // seconds; 0 = the role's default
	STSEndpoint string // default: the Source's, else AWS's regional endpoint
	Region      string // default: the Source's, else DefaultAWSRegion
	Audience    string // default: the Source's, else DefaultAWSAudience
}

// AWSCredentials is the credential_process JSON (Version 1).
type AWSCredentials struct {
	Version         int       `json:"Version"`
	AccessKeyID     string    `json:"AccessKeyId"`
	SecretAccessKey string    `json:"SecretAccessKey"`
	SessionToken    string    `json:"SessionToken"`
	Expiration      time.Time `json:"Expiration"`
}

type cachedCreds struct {
	AWSCredentials
	IssuedAt time.Time `json:"issued_at"`
}

// The rules of cloud_credentials' inputs (STS's, narrowed to printable
// ASCII): the daemon checks them itself, and the tool's input schema states
// them.
const (
	minARN, maxARN           = 20, 2048
	arnPattern               = `^arn:[!-~]+$`
	anyARNPattern            = `^(arn|acs):[!-~]+$` // AWS's or Alibaba Cloud's
	sessionNamePattern       = `^[\w+=,.@-]{2,64}$`
	minDuration, maxDuration = 900, 43200 // seconds
)

var (
	sessionName = regexp.MustCompile(sessionNamePattern)
	arnRE       = regexp.MustCompile(arnPattern)
)

// validARN reports whether s is what STS accepts as a RoleArn (20-2048
// characters), narrowed to ARNs of printable ASCII.
func validARN(s string) bool {
	return len(s) >= minARN && len(s) <= maxARN && arnRE.MatchString(s)
}

// loggableARN is arn if it is one, else a short stand-in (see Loggable).
func loggableARN(arn string) string {
	if validARN(arn) {
		return arn
	}
	return fmt.Sprintf("(invalid, %d bytes)", len(arn))
}

// checkAWS checks what the daemon can check itself, before minting a token:
// the role ARN, the session name and the duration (STS: 900 s to 12 h).
func checkAWS(r AWSRequest) error {
	if r.RoleARN == "" {
		return problem.New(CodeBadRequest, "role_arn is required", "pass the ARN printed by agentkeys oidc register aws")
	}
	if !validARN(r.RoleARN) {
		return problem.Newf(CodeBadRequest, "pass the ARN printed by agentkeys oidc register aws, e.g. arn:aws:iam::123456789012:role/agentkeys-agents",
			"role_arn (%d bytes) is not an ARN of 20-2048 printable characters", len(r.RoleARN))
	}
	if r.SessionName != "" && !sessionName.MatchString(r.SessionName) {
		return problem.New(CodeBadRequest, "session_name must be 2-64 characters of letters, digits and +=,.@_-", "pass another --session-name")
	}
	if r.Duration != 0 && (r.Duration < minDuration || r.Duration > maxDuration) {
		return problem.New(CodeBadRequest, "duration must be 900 to 43200 seconds", "omit it for the role's default, or pass e.g. 3600")
	}
	return nil
}

// refreshMargin is how long before expiry cached credentials are replaced:
// 10% of their lifetime, at most 5 minutes.
func refreshMargin(lifetime time.Duration) time.Duration { return min(5*time.Minute, lifetime/10) }

func (d Dir) cloudCachePath(key string) string {
	h := sha256.Sum256([]byte(key))
	return filepath.Join(string(d), "cloud", hex.EncodeToString(h[:16])+".json")
}

// AWSCredentials returns credentials for r.RoleARN: from the daemon's cache
// (0600 files under $AGENTKEYS_HOME/daemon/cloud) while they are fresh and the
// broker still accepts the session and its scope (checkCloud), else it mints an
// identity token and calls STS AssumeRoleWithWebIdentity itself. The broker
// never sees the STS answer. The caller must not log the result.
func (s Source) AWSCredentials(ctx context.Context, r AWSRequest) (*AWSCredentials, error) {
	if err := checkAWS(r); err != nil {
		return nil, err
	}
	sess, c, err := s.agent()
	if err != nil {
		return nil, Stable(err)
	}
	r.STSEndpoint = cmp.Or(r.STSEndpoint, s.STSEndpoint)
	r.Region = cmp.Or(r.Region, s.AWSRegion, DefaultAWSRegion)
	r.Audience = cmp.Or(r.Audience, s.AWSAudience, DefaultAWSAudience)
	if r.SessionName == "" {
		r.SessionName = "agentkeys-" + sess.Alias
	}
	if !sessionName.MatchString(r.SessionName) {
		return nil, problem.New(problem.BadRequest, "session_name must be 2-64 characters of letters, digits and +=,.@_-", "pass another --session-name")
	}
	key := fmt.Sprintf("aws|%s|%s|%s|%s|%d|%s|%s", sess.Agent, r.STSEndpoint, r.Region, r.RoleARN, r.Duration, r.SessionName, r.Audience)
	path := s.Dir.cloudCachePath(key)
	// The key names the agent, so a re-paired daemon (a new agent) misses; a
	// damaged file misses too and is replaced below.
	var cached cachedCreds
	if read(path, &cached) == nil && cached.Expiration.Sub(s.now()) > refreshMargin(cached.Expiration.Sub(cached.IssuedAt)) {
		if err := s.checkCloud(ctx, sess, c, r.Audience); err != nil {
			if p := problem.As(err); p.Code != CodeUnreachable {
				os.Remove(path) // refused for good: forget them
			}
			return nil, err
		}
		return &cached.AWSCredentials, nil
	}
	tok, err := s.mint(ctx, sess, c, r.Audience, 0)
	if err != nil {
		return nil, err
	}
	creds, err := AssumeRole(ctx, r, tok.Token)
	if err != nil {
		return nil, err
	}
	if err := write(path, cachedCreds{AWSCredentials: *creds, IssuedAt: s.now()}); err != nil {
		return nil, err
	}
	return creds, nil
}

// AssumeRole exchanges an identity token at STS (anonymous request).
func AssumeRole(ctx context.Context, r AWSRequest, token string) (*AWSCredentials, error) {
	cl := sts.NewFromConfig(aws.Config{Region: r.Region, Credentials: aws.AnonymousCredentials{}}, func(o *sts.Options) {
		if r.STSEndpoint != "" {
			o.BaseEndpoint = aws.String(r.STSEndpoint)
		}
	})
	in := &sts.AssumeRoleWithWebIdentityInput{RoleArn: aws.String(r.RoleARN), RoleSessionName: aws.String(r.SessionName),
		WebIdentityToken: aws.String(token)}
	if r.Duration > 0 {
		in.DurationSeconds = aws.Int32(r.Duration)
	}
	out, err := cl.AssumeRoleWithWebIdentity(ctx, in)
	if err != nil {
		var ae smithy.APIError
		if errors.As(err, &ae) {
			return nil, problem.Newf(problem.Denied, "check the role's trust policy (agentkeys oidc register aws) and the agent's oidc scope",
				"STS refused the identity token: %s: %s", ae.ErrorCode(), ae.ErrorMessage())
		}
		return nil, problem.Wrap(err, problem.Unreachable, "check --sts-endpoint and the network", "cannot reach STS: %v", err)
	}
	if out.Credentials == nil || out.Credentials.Expiration == nil {
		return nil, problem.New(problem.Unreachable, "STS answered without credentials", "retry")
	}
	cr := out.Credentials
	return &AWSCredentials{Version: 1, AccessKeyID: aws.ToString(cr.AccessKeyId), SecretAccessKey: aws.ToString(cr.SecretAccessKey),
		SessionToken: aws.ToString(cr.SessionToken), Expiration: cr.Expiration.UTC()}, nil
}

// WriteTokenFile mints a token for audience and writes it to path (0600,
// atomically); it returns the token's expiry (unix seconds).
func (s Source) WriteTokenFile(ctx context.Context, audience, path string, ttl int64) (int64, error) {
	t, err := s.OIDCToken(ctx, audience, ttl)
	if err != nil {
		return 0, err
	}
	if err := home.WriteFile(path, []byte(t.Token)); err != nil {
		return 0, err
	}
	return t.ExpiresAt, nil
}

// KeepTokenFile keeps a web-identity token file fresh until ctx ends: it
// rewrites the file when 80% of the token's lifetime has passed, and retries
// failures with backoff.
func (s Source) KeepTokenFile(ctx context.Context, audience, path string, ttl int64, log *slog.Logger) {
	retry := backoff.Backoff{Initial: time.Second, Max: time.Minute, Jitter: 0.2}
	for {
		start := s.now()
		exp, err := s.WriteTokenFile(ctx, audience, path, ttl)
		var wait time.Duration
		if err != nil {
			p := Stable(err)
			log.Warn("token file not refreshed", "path", path, "audience", audience, "code", p.Code)
			wait = retry.Next()
		} else {
			retry.Reset()
			expires := time.Unix(exp, 0)
			wait = max(time.Second, expires.Sub(start)*4/5)
			log.Info("token file refreshed", "path", path, "audience", audience, "expires", expires.UTC().Format(time.RFC3339))
		}
		if backoff.Sleep(ctx, wait) != nil {
			return
		}
	}
}
