package e2e

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/smithy-go"

	"github.com/agentkeys/agentkeys/internal/federation"
	"github.com/agentkeys/agentkeys/internal/porttest"
	"github.com/agentkeys/agentkeys/internal/seaweedtest"
)

// weedTimeout bounds SeaweedFS's start.
const weedTimeout = 90 * time.Second

// weedBinary returns the pinned SeaweedFS binary: $AGENTKEYS_WEED, or what
// scripts/seaweedfs builds (once) and prints. No binary is a failure, not a skip.
func weedBinary(t *testing.T) string {
	return pinnedBinary(t, "AGENTKEYS_WEED", "seaweedfs", "the SeaweedFS binary (the S3+STS relying party these tests need)")
}

// pinnedBinary returns a test-only server binary: the path in $env, or the last
// line scripts/<script> prints after building the pinned version once into the
// test cache. No binary is a failure, not a skip.
func pinnedBinary(t *testing.T, env, script, what string) string {
	t.Helper()
	if p := os.Getenv(env); p != "" {
		if _, err := os.Stat(p); err != nil {
			t.Fatalf("%s=%s: %v", env, p, err)
		}
		return p
	}
	cmd := exec.Command("../scripts/" + script)
	cmd.Stderr = os.Stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("scripts/%s could not provide %s: %v", script, what, err)
	}
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	return lines[len(lines)-1]
}

// weed is a running `weed mini` with STS and S3 on one loopback port.
type weed struct {
	endpoint string // http://127.0.0.1:PORT (S3 and STS)
	admin    *s3.Client
	creds    aws.Credentials // the admin identity's
	roleARN  string
	bucket   string
	out      *output
	pid      int
}

const (
	weedAudience = "sts.amazonaws.com"
	weedAccount  = "111122223333"
	weedBucket   = "agentkeys"
)

// seaweedIAM turns the documents `agentkeys oidc register aws --json` printed
// into SeaweedFS's iam.json, through the translation `oidc register seaweedfs`
// uses (federation.SeaweedIAMFromAWS).
func seaweedIAM(t *testing.T, doc *federation.AWS, issuer string) []byte {
	t.Helper()
	key := make([]byte, 32)
	rand.Read(key)
	iam, err := federation.SeaweedIAMFromAWS(doc, issuer, key)
	if err != nil {
		t.Fatal(err)
	}
	b, err := json.MarshalIndent(iam, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// registerAWS runs `oidc register aws --json` for the test SeaweedFS account
// and bucket as the owner in home, and returns what it printed.
func (h *harness) registerAWS(home, issuer string) federation.AWS {
	h.t.Helper()
	var doc federation.AWS
	if err := json.Unmarshal([]byte(h.akOK(home, "oidc", "register", "aws", "--issuer", issuer, "--account", weedAccount,
		"--bucket", weedBucket, "--json")), &doc); err != nil {
		h.t.Fatal(err)
	}
	return doc
}

// startWeed starts SeaweedFS trusting issuer with the generated policies and
// creates the bucket with the static admin identity. If a port it was given is
// taken before it binds it, it starts again on other ports (up to three times).
func (h *harness) startWeed(doc *federation.AWS, issuer string) *weed {
	t := h.t
	t.Helper()
	bin := weedBinary(t)
	dir := t.TempDir()
	ak, sk := "AKIDAGENTKEYSADMIN"+randomHex(4), randomHex(20)
	s3cfg := map[string]any{"identities": []any{map[string]any{"name": "admin",
		"credentials": []any{map[string]any{"accessKey": ak, "secretKey": sk}},
		"actions":     []string{"Admin", "Read", "Write", "List", "Tagging"}}}}
	b, _ := json.Marshal(s3cfg)
	os.WriteFile(filepath.Join(dir, "s3.json"), b, 0o600)
	os.WriteFile(filepath.Join(dir, "iam.json"), seaweedIAM(t, doc, issuer), 0o600)
	for attempt := 1; ; attempt++ {
		w, err := h.launchWeed(bin, filepath.Join(dir, fmt.Sprint("data", attempt)), dir, doc, aws.Credentials{AccessKeyID: ak, SecretAccessKey: sk})
		if err == nil {
			return w
		}
		if !errors.Is(err, errPortTaken) || attempt == 3 {
			t.Fatal(err)
		}
		t.Logf("SeaweedFS start, attempt %d: %v; again on other ports", attempt, err)
	}
}

// errPortTaken means a port chosen for SeaweedFS was taken before it bound it.
var errPortTaken = errors.New("a port was taken by another process before SeaweedFS bound it")

// launchWeed starts SeaweedFS once, with its data in data and its configuration
// files in dir, and waits until it creates the bucket for admin.
func (h *harness) launchWeed(bin, data, dir string, doc *federation.AWS, admin aws.Credentials) (*weed, error) {
	t := h.t
	os.MkdirAll(data, 0o700)
	port := porttest.Free(t)
	// every other port free too, so that nothing collides with a parallel run
	ports := seaweedtest.Choose(t)
	args := append([]string{"mini", "-ip", "127.0.0.1", "-ip.bind", "127.0.0.1", "-dir", data, "-s3.port", fmt.Sprint(port),
		"-s3.config", filepath.Join(dir, "s3.json"), "-s3.iam.config", filepath.Join(dir, "iam.json"),
		"-webdav=false", "-admin.ui=false", "-s3.port.iceberg=0", "-s3.port.lance=0"}, ports.Args...)
	w := &weed{endpoint: fmt.Sprintf("http://127.0.0.1:%d", port), roleARN: doc.RoleARN, bucket: weedBucket, out: h.newOutput()}
	cmd := exec.Command(bin, args...)
	cmd.Dir = dir
	cmd.Stdout, cmd.Stderr = w.out, w.out
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("starting SeaweedFS: %w", err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	stop := func() {
		cmd.Process.Signal(os.Interrupt)
		select {
		case <-done:
		case <-time.After(15 * time.Second):
			cmd.Process.Kill()
			<-done
		}
	}
	w.admin, w.creds = w.s3(admin), admin
	var err error
	exited := false
	if !waitFor(weedTimeout, func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		_, err = w.admin.CreateBucket(ctx, &s3.CreateBucketInput{Bucket: aws.String(w.bucket)})
		cancel()
		select {
		case <-done:
			exited = err != nil
		default:
		}
		return err == nil || exited
	}) {
		stop()
		return nil, fmt.Errorf("SeaweedFS did not accept CreateBucket within %s: %v\n%s", weedTimeout, err, tail(w.out.String(), 60))
	}
	// A port taken: it exited, or runs with a gRPC port moved, where its shell would dial another process.
	if seaweedtest.Moved(w.out.String()) {
		stop()
		return nil, errPortTaken
	}
	if exited {
		return nil, fmt.Errorf("SeaweedFS exited during start:\n%s", tail(w.out.String(), 60))
	}
	w.pid = cmd.Process.Pid
	if err := fsyncBucket(t, bin, ports.Master, ports.Filer, w.bucket); err != nil {
		stop()
		return nil, err
	}
	t.Cleanup(func() {
		stop()
		if t.Failed() {
			t.Logf("SeaweedFS output (tail):\n%s", tail(w.out.String(), 60))
		}
	})
	return w, nil
}

// fsyncBucket applies the storage rule docs/give-your-agent-an-inbox.md
// gives operators ("Mail in an S3 bucket", its weed shell command as written,
// for this bucket), so that SeaweedFS answers a write only once it is on disk
// (the volume server fsyncs the bytes, the filer syncs the metadata entry).
// master and filer are HOST:PORT.GRPCPORT.
func fsyncBucket(t *testing.T, bin, master, filer, bucket string) error {
	block := strings.TrimSpace(docBlocks(t, inboxDoc, "### Mail in an S3 bucket", "sh")[0])
	const guideBucket = "/buckets/agent-mail/"
	script, ok := strings.CutSuffix(block, "' | weed shell -master 127.0.0.1:9333")
	script, ok2 := strings.CutPrefix(script, "echo '")
	if !ok || !ok2 || !strings.Contains(script, "-locationPrefix="+guideBucket) {
		t.Fatalf("the guide's SeaweedFS rule is not echo 'fs.configure -locationPrefix=%s …' | weed shell -master 127.0.0.1:9333: update the test\n%s", guideBucket, block)
	}
	cmd := exec.Command(bin, "shell", "-master", master, "-filer", filer)
	cmd.Stdin = strings.NewReader(strings.Replace(script, guideBucket, "/buckets/"+bucket+"/", 1) + "\nexit\n")
	out, err := cmd.CombinedOutput()
	if err != nil || !strings.Contains(string(out), `"fsync": true`) {
		return fmt.Errorf("weed shell %s: %v\n%s", script, err, out)
	}
	return nil
}

func tail(s string, n int) string {
	l := strings.Split(s, "\n")
	if len(l) > n {
		l = l[len(l)-n:]
	}
	return strings.Join(l, "\n")
}

// s3 returns an S3 client of SeaweedFS with static credentials.
func (w *weed) s3(c aws.Credentials) *s3.Client {
	return s3.New(s3.Options{Region: "us-east-1", BaseEndpoint: aws.String(w.endpoint), UsePathStyle: true,
		Credentials: credentials.StaticCredentialsProvider{Value: c}})
}

func (w *weed) put(t *testing.T, c *s3.Client, key, body string) error {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	_, err := c.PutObject(ctx, &s3.PutObjectInput{Bucket: aws.String(w.bucket), Key: aws.String(key), Body: strings.NewReader(body)})
	return err
}

func (w *weed) get(t *testing.T, c *s3.Client, key string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	out, err := c.GetObject(ctx, &s3.GetObjectInput{Bucket: aws.String(w.bucket), Key: aws.String(key)})
	if err != nil {
		return "", err
	}
	defer out.Body.Close()
	var sb strings.Builder
	buf := make([]byte, 4096)
	for {
		n, err := out.Body.Read(buf)
		sb.Write(buf[:n])
		if err != nil {
			break
		}
	}
	return sb.String(), nil
}

func (w *weed) list(t *testing.T, c *s3.Client, prefix string) ([]string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	in := &s3.ListObjectsV2Input{Bucket: aws.String(w.bucket)}
	if prefix != "" {
		in.Prefix = aws.String(prefix)
	}
	out, err := c.ListObjectsV2(ctx, in)
	if err != nil {
		return nil, err
	}
	var keys []string
	for _, o := range out.Contents {
		keys = append(keys, aws.ToString(o.Key))
	}
	return keys, nil
}

// errCode is the S3/STS error code of err ("" when err is nil).
func errCode(err error) string {
	if err == nil {
		return ""
	}
	var ae smithy.APIError
	if errors.As(err, &ae) {
		return ae.ErrorCode()
	}
	return err.Error()
}
