package e2e

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	v4 "github.com/aws/aws-sdk-go-v2/aws/signer/v4"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/smithy-go/middleware"
	smithyhttp "github.com/aws/smithy-go/transport/http"

	"github.com/agentkeys/agentkeys/internal/apiv1"
	"github.com/agentkeys/agentkeys/internal/daemon"
	"github.com/agentkeys/agentkeys/internal/enclave"
	"github.com/agentkeys/agentkeys/internal/federation"
	"github.com/agentkeys/agentkeys/internal/porttest"
)

// MinIO (AGPL-3.0) is a test-only program: scripts/minio builds the pinned
// version once into the test cache, and these tests start it as a separate
// process on loopback. It is never linked into agentkeys.

// minioTimeout bounds MinIO's start.
const minioTimeout = 90 * time.Second

// minioBinary returns the pinned MinIO binary: $AGENTKEYS_MINIO, or what
// scripts/minio builds (once) and prints. No binary is a failure, not a skip.
func minioBinary(t *testing.T) string {
	return pinnedBinary(t, "AGENTKEYS_MINIO", "minio", "the MinIO binary (the relying party these tests need)")
}

// minioServer is a running MinIO on loopback: S3 and STS on endpoint.
type minioServer struct {
	*weed // the S3 helpers: endpoint, bucket, the root client
	root  aws.Credentials
}

// startMinIO starts MinIO on port with the settings in envFile (as
// MINIO_CONFIG_ENV_FILE, which is how the guide starts it), creates bucket
// with the root user, and loads policyFile as the canned policy name through
// the admin API (what `mc admin policy create` calls).
func (h *harness) startMinIO(port int, envFile, bucket, name, policyFile string) *minioServer {
	t := h.t
	t.Helper()
	dir := t.TempDir()
	m := &minioServer{weed: &weed{endpoint: fmt.Sprintf("http://127.0.0.1:%d", port), bucket: bucket, out: h.newOutput()},
		root: aws.Credentials{AccessKeyID: "akadmin" + randomHex(4), SecretAccessKey: randomHex(20)}}
	cmd := exec.Command(minioBinary(t), "server", "--quiet", "--address", fmt.Sprintf("127.0.0.1:%d", port),
		"--console-address", fmt.Sprintf("127.0.0.1:%d", porttest.Free(t)), "--certs-dir", filepath.Join(dir, "certs"), filepath.Join(dir, "data"))
	cmd.Env = childEnv("HOME="+dir, "MINIO_CONFIG_ENV_FILE="+envFile, "MINIO_ROOT_USER="+m.root.AccessKeyID, "MINIO_ROOT_PASSWORD="+m.root.SecretAccessKey,
		"MINIO_BROWSER=off", "MINIO_UPDATE=off")
	cmd.Stdout, cmd.Stderr = m.out, m.out
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting MinIO: %v", err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	t.Cleanup(func() {
		cmd.Process.Signal(os.Interrupt)
		select {
		case <-done:
		case <-time.After(15 * time.Second):
			cmd.Process.Kill()
			<-done
		}
		if t.Failed() {
			t.Logf("MinIO output (tail):\n%s", tail(m.out.String(), 60))
		}
	})
	m.admin = m.s3(m.root)
	var err error
	if !waitFor(minioTimeout, func() bool {
		select {
		case <-done:
			return true
		default:
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_, err = m.admin.CreateBucket(ctx, &s3.CreateBucketInput{Bucket: aws.String(bucket)})
		return err == nil
	}) || err != nil {
		t.Fatalf("MinIO did not accept CreateBucket within %s: %v\n%s", minioTimeout, err, tail(m.out.String(), 60))
	}
	// IAM initializes after S3 answers: until then the admin API says 503
	policy := fileBytes(t, policyFile)
	if !waitFor(minioTimeout, func() bool {
		err = m.adminPut("/minio/admin/v3/add-canned-policy?name="+name, policy)
		return err == nil || !strings.Contains(err.Error(), "503")
	}) || err != nil {
		t.Fatalf("loading the policy into MinIO: %v", err)
	}
	return m
}

// adminPut sends a root-signed PUT to MinIO's admin API.
func (m *minioServer) adminPut(path string, body []byte) error {
	req, err := http.NewRequest(http.MethodPut, m.endpoint+path, bytes.NewReader(body))
	if err != nil {
		return err
	}
	sum := hex.EncodeToString(sha256Sum(body))
	req.Header.Set("X-Amz-Content-Sha256", sum)
	if err := v4.NewSigner().SignHTTP(context.Background(), m.root, req, sum, "s3", "us-east-1", time.Now()); err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		var b bytes.Buffer
		b.ReadFrom(resp.Body)
		return fmt.Errorf("MinIO admin PUT %s: %s %s", path, resp.Status, b.String())
	}
	return nil
}

func sha256Sum(b []byte) []byte { s := sha256.Sum256(b); return s[:] }

// claimInQuery is an S3 client with creds that adds preferred_username=wallet
// to every request's query before signing it.
func (m *minioServer) claimInQuery(creds aws.Credentials, wallet string) *s3.Client {
	return s3.New(s3.Options{Region: "us-east-1", BaseEndpoint: aws.String(m.endpoint), UsePathStyle: true,
		Credentials: aws.CredentialsProviderFunc(func(context.Context) (aws.Credentials, error) { return creds, nil }),
		APIOptions: []func(*middleware.Stack) error{func(st *middleware.Stack) error {
			return st.Build.Add(middleware.BuildMiddlewareFunc("claim-in-query", func(ctx context.Context, in middleware.BuildInput, next middleware.BuildHandler) (middleware.BuildOutput, middleware.Metadata, error) {
				if req, ok := in.Request.(*smithyhttp.Request); ok {
					q := req.URL.Query()
					q.Set("preferred_username", wallet)
					req.URL.RawQuery = q.Encode()
				}
				return next.HandleBuild(ctx, in)
			}), middleware.After)
		}}})
}

// TestMinIOFederation is MinIO's own STS and S3 trusting our issuer with the
// settings `agentkeys oidc register minio` wrote, unedited: each agent gets
// credentials through its daemon's AWS path (the printed command, and the MCP
// tool) and reads and writes only its own prefix; a forged HS256 token, a
// wrong audience, an expired token and another issuer's token get nothing;
// credentials never outlive MINIO_STS_DURATION. The same MinIO without the
// client secret and the cap shows why the setup carries both.
func TestMinIOFederation(t *testing.T) {
	h := newHarness(t)
	const aud = federation.MinIOAudience
	s := h.start(serverOpts{home: t.TempDir(), args: []string{"--oidc-audience", aud, "--oidc-audience", weedAudience}})
	o := h.akNewOwner(s)
	A := h.oidcAgent(s, o, "alice", "oidc:"+aud)
	B := h.oidcAgent(s, o, "bob", "oidc:*")
	ctx := context.Background()

	// the setup, written by the command the guide runs
	port := porttest.Free(t)
	setup := filepath.Join(t.TempDir(), "minio-setup")
	out := h.akOK(o.home, "oidc", "register", "minio", "--issuer", s.url, "--endpoint", fmt.Sprintf("http://127.0.0.1:%d", port), "--out", setup)
	envFile, policyFile := filepath.Join(setup, federation.MinIOEnvFile), filepath.Join(setup, federation.MinIOPolicyFile)
	if fileMode(t, envFile) != 0o600 {
		t.Fatalf("%s is %o, want 0600 (it holds the client secret)", envFile, fileMode(t, envFile))
	}
	env := string(fileBytes(t, envFile))
	for _, v := range []string{federation.MinIOEnvConfigURL, federation.MinIOEnvClientID, federation.MinIOEnvClientSecret,
		federation.MinIOEnvRolePolicy, federation.MinIOEnvSTSDuration} {
		if !regexp.MustCompile(`(?m)^export ` + v + `='[^']+'$`).MatchString(env) {
			t.Fatalf("%s sets no %s:\n%s", envFile, v, env)
		}
	}
	agentLine := regexp.MustCompile(`(?m)^agentkeys daemon aws-credentials .*$`).FindString(out)
	roleARN := regexp.MustCompile(`--role-arn (\S+)`).FindStringSubmatch(agentLine)
	if agentLine == "" || roleARN == nil {
		t.Fatalf("oidc register minio printed no agent command:\n%s", out)
	}
	m := h.startMinIO(port, envFile, federation.MinIOBucket, federation.MinIOPolicyName, policyFile)
	for _, k := range []string{A.wallet + "/seed.txt", B.wallet + "/seed.txt", "root.txt", federation.MinIOWalletVar + "/seed.txt"} {
		if err := m.put(t, m.admin, k, "seed of "+strings.TrimSuffix(k, "/seed.txt")); err != nil {
			t.Fatalf("root seeding %s: %v", k, err)
		}
	}

	// A runs the printed command as it is; B asks through the MCP tool
	argv := strings.Fields(agentLine)[1:]
	var ca daemon.AWSCredentials
	before := time.Now()
	if err := json.Unmarshal([]byte(h.akOK(A.home, argv...)), &ca); err != nil || ca.AccessKeyID == "" {
		t.Fatalf("the printed agent command: %v %+v", err, ca)
	}
	stsCap := federation.MinIOSTSDuration
	if ca.Expiration.After(time.Now().Add(stsCap)) || ca.Expiration.Before(before) {
		t.Fatalf("A's credentials expire at %s, outside [now, now+%s]", ca.Expiration, stsCap)
	}
	wantIsolated(t, m.weed, m.s3(aws.Credentials{AccessKeyID: ca.AccessKeyID, SecretAccessKey: ca.SecretAccessKey, SessionToken: ca.SessionToken}),
		"alice", A.wallet, B.wallet)
	// MinIO fills a policy variable from a request parameter of the same name
	// when the credential's claims lack it; A's carry it, so naming B's wallet
	// in the query changes nothing
	credsA := aws.Credentials{AccessKeyID: ca.AccessKeyID, SecretAccessKey: ca.SecretAccessKey, SessionToken: ca.SessionToken}
	if _, err := m.get(t, m.claimInQuery(credsA, B.wallet), B.wallet+"/seed.txt"); errCode(err) != "AccessDenied" {
		t.Fatalf("A naming B's wallet in the query read B's object: %v", err)
	}
	cs, _ := h.mcpSession(B.home, "--sts-endpoint", m.endpoint, "--aws-audience", aud)
	text, isErr := mcpCall(t, cs, "cloud_credentials", map[string]any{"provider": "aws", "role_arn": roleARN[1], "duration": 43200})
	if isErr {
		t.Fatalf("cloud_credentials: %s", text)
	}
	var cb daemon.AWSCredentials
	if err := json.Unmarshal([]byte(text), &cb); err != nil {
		t.Fatalf("cloud_credentials result %q: %v", text, err)
	}
	if cb.Expiration.After(time.Now().Add(stsCap)) {
		t.Fatalf("B asked 12 h and got credentials until %s, past the %s cap", cb.Expiration, stsCap)
	}
	wantIsolated(t, m.weed, m.s3(aws.Credentials{AccessKeyID: cb.AccessKeyID, SecretAccessKey: cb.SecretAccessKey, SessionToken: cb.SessionToken}),
		"bob", B.wallet, A.wallet)

	// tokens MinIO must refuse, each one change from a control it accepts
	enc, err := enclave.Open(enclave.Config{Dir: s.opts.effectiveDataDir(), PlatformKeyFile: s.opts.platformKeyFile()})
	if err != nil {
		t.Fatal(err)
	}
	defer enc.Close()
	v1, _ := enc.PublicKey("oidc/issuer/v1")
	meas := enc.Measurements()
	now := time.Now().Unix()
	claims := func() map[string]any {
		return map[string]any{"iss": s.url, "sub": apiv1.Subject(enclaveHex(meas.MrEnclave[:]), enclaveHex(meas.MrSigner[:]), "agent", A.wallet),
			"aud": aud, "iat": now, "nbf": now, "exp": now + 60, "jti": randomHex(8), "preferred_username": A.wallet}
	}
	es256 := func(in []byte) []byte {
		sig, err := enc.SignES256("oidc/issuer/v1", in)
		if err != nil {
			t.Fatal(err)
		}
		return sig
	}
	hdr := map[string]any{"alg": "ES256", "kid": v1.Kid, "typ": "JWT"}
	req := daemon.AWSRequest{RoleARN: roleARN[1], SessionName: "e2e", STSEndpoint: m.endpoint, Region: "us-east-1"}
	if _, err := daemon.AssumeRole(ctx, req, jws(t, hdr, claims(), es256)); err != nil {
		t.Fatalf("control token refused: %v", err)
	}
	// A token of our issuer without preferred_username (as an older broker
	// signed them, or an owner's): MinIO may issue credentials, but they reach
	// nothing: neither the literal "${jwt:preferred_username}/" prefix, nor B's
	// objects by naming B's wallet in the query (the policy also requires sub
	// to end with the substituted wallet, and sub is always the token's own).
	noName := claims()
	delete(noName, "preferred_username")
	if c, err := daemon.AssumeRole(ctx, req, jws(t, hdr, noName, es256)); err == nil {
		cr := aws.Credentials{AccessKeyID: c.AccessKeyID, SecretAccessKey: c.SecretAccessKey, SessionToken: c.SessionToken}
		for what, err := range map[string]error{
			"get the literal prefix":        func() error { _, err := m.get(t, m.s3(cr), federation.MinIOWalletVar+"/seed.txt"); return err }(),
			"put under the literal prefix":  m.put(t, m.s3(cr), federation.MinIOWalletVar+"/x.txt", "x"),
			"get B's object, B in query":    func() error { _, err := m.get(t, m.claimInQuery(cr, B.wallet), B.wallet+"/seed.txt"); return err }(),
			"put under B's prefix, B in q.": m.put(t, m.claimInQuery(cr, B.wallet), B.wallet+"/x.txt", "x"),
			"list B's prefix, B in query":   func() error { _, err := m.list(t, m.claimInQuery(cr, B.wallet), B.wallet+"/"); return err }(),
		} {
			if errCode(err) != "AccessDenied" {
				t.Errorf("a token without preferred_username: %s: want AccessDenied, got %v", what, err)
			}
		}
	}
	// forged: HS256 under the client id as kid, keyed with the empty secret
	// MinIO uses when none is set, claiming B's wallet
	forged := claims()
	forged["preferred_username"] = B.wallet
	forged["sub"] = apiv1.Subject(enclaveHex(meas.MrEnclave[:]), enclaveHex(meas.MrSigner[:]), "agent", B.wallet)
	hs256 := func(key []byte) func([]byte) []byte {
		return func(in []byte) []byte { mac := hmac.New(sha256.New, key); mac.Write(in); return mac.Sum(nil) }
	}
	forgedTok := jws(t, map[string]any{"alg": "HS256", "kid": aud, "typ": "JWT"}, forged, hs256(nil))
	expired := claims()
	expired["exp"], expired["iat"], expired["nbf"] = now-5, now-65, now-65
	wrongAud := claims()
	wrongAud["aud"] = weedAudience
	refuse := map[string]string{
		"forged HS256 (empty key)":         forgedTok,
		"wrong audience (signed by us)":    jws(t, hdr, wrongAud, es256),
		"wrong audience (minted by us)":    strings.TrimSpace(h.akOK(B.home, "daemon", "oidc-token", "--audience", weedAudience)),
		"expired":                          jws(t, hdr, expired, es256),
		"another issuer (a second broker)": h.otherIssuerToken(aud),
	}
	for name, tok := range refuse {
		if c, err := daemon.AssumeRole(ctx, req, tok); err == nil {
			t.Errorf("MinIO's STS accepted a token: %s (credentials until %s)", name, c.Expiration)
		}
	}

	// The same settings without the client secret and the cap: the forged
	// token reads B's objects, and a 60-second token buys a year.
	unsafe := filepath.Join(t.TempDir(), "unsafe.env")
	var kept []string
	for _, l := range strings.Split(env, "\n") {
		if !strings.Contains(l, federation.MinIOEnvClientSecret+"=") && !strings.Contains(l, federation.MinIOEnvSTSDuration+"=") {
			kept = append(kept, l)
		}
	}
	os.WriteFile(unsafe, []byte(strings.Join(kept, "\n")), 0o600)
	port2 := porttest.Free(t)
	u := h.startMinIO(port2, unsafe, federation.MinIOBucket, federation.MinIOPolicyName, policyFile)
	if err := u.put(t, u.admin, B.wallet+"/seed.txt", "seed of "+B.wallet); err != nil {
		t.Fatal(err)
	}
	ureq := req
	ureq.STSEndpoint = u.endpoint
	c, err := daemon.AssumeRole(ctx, ureq, forgedTok)
	if err != nil {
		t.Fatalf("without a client secret MinIO refused the forged token (%v): the setup's explanation is wrong", err)
	}
	if v, err := u.get(t, u.s3(aws.Credentials{AccessKeyID: c.AccessKeyID, SecretAccessKey: c.SecretAccessKey, SessionToken: c.SessionToken}), B.wallet+"/seed.txt"); err != nil {
		t.Fatalf("without a client secret the forged token got credentials that cannot read B's object: %q %v", v, err)
	}
	ureq.Duration = 31536000
	if c, err := daemon.AssumeRole(ctx, ureq, jws(t, hdr, claims(), es256)); err != nil || c.Expiration.Before(time.Now().Add(364*24*time.Hour)) {
		t.Fatalf("without MINIO_STS_DURATION a 60-second token asking a year: %+v %v, want a year", c, err)
	}
	// the safe server ignores the same ask
	req.Duration = 31536000
	if c, err := daemon.AssumeRole(ctx, req, jws(t, hdr, claims(), es256)); err != nil || c.Expiration.After(time.Now().Add(stsCap)) {
		t.Fatalf("with the printed cap, a token asking a year: %+v %v, want at most %s", c, err, stsCap)
	}
}

// otherIssuerToken is a token for aud from a second, unrelated broker (its
// own issuer URL and keys), through its agent's daemon.
func (h *harness) otherIssuerToken(aud string) string {
	s := h.start(serverOpts{home: h.t.TempDir(), args: []string{"--oidc-audience", aud}})
	a := h.oidcAgent(s, h.akNewOwner(s), "mallory", "oidc:"+aud)
	return strings.TrimSpace(h.akOK(a.home, "daemon", "oidc-token", "--audience", aud))
}
