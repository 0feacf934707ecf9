package s3store

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/agentkeys/agentkeys/internal/blobstore"
	"github.com/agentkeys/agentkeys/internal/blobstore/blobstoretest"
)

// weedBinary is $AGENTKEYS_WEED, the pinned SeaweedFS the e2e tests build
// (scripts/seaweedfs). Without it the test fails under CI=true and skips
// elsewhere.
func weedBinary(t testing.TB) string {
	p := os.Getenv("AGENTKEYS_WEED")
	if p == "" {
		if os.Getenv("CI") == "true" {
			t.Fatal("AGENTKEYS_WEED is not set: the S3 driver's conformance run needs SeaweedFS (scripts/seaweedfs prints its path)")
		}
		t.Skip("AGENTKEYS_WEED is not set (scripts/seaweedfs builds SeaweedFS and prints its path)")
	}
	if _, err := os.Stat(p); err != nil {
		t.Fatalf("AGENTKEYS_WEED=%s: %v", p, err)
	}
	return p
}

func freePort(t testing.TB) int {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// output collects a process's output, safe for concurrent writes.
type output struct {
	mu sync.Mutex
	b  strings.Builder
}

func (o *output) Write(p []byte) (int, error) { o.mu.Lock(); defer o.mu.Unlock(); return o.b.Write(p) }
func (o *output) String() string              { o.mu.Lock(); defer o.mu.Unlock(); return o.b.String() }

// startWeed runs `weed mini` on loopback with one static admin identity and
// returns its S3 endpoint and credentials.
func startWeed(t testing.TB) (endpoint string, creds aws.CredentialsProvider) {
	bin := weedBinary(t)
	dir := t.TempDir()
	key := make([]byte, 20)
	rand.Read(key)
	ak, sk := "AKIDBLOBSTORE"+hex.EncodeToString(key[:4]), hex.EncodeToString(key)
	cfg, _ := json.Marshal(map[string]any{"identities": []any{map[string]any{"name": "admin",
		"credentials": []any{map[string]any{"accessKey": ak, "secretKey": sk}},
		"actions":     []string{"Admin", "Read", "Write", "List", "Tagging"}}}})
	if err := os.WriteFile(filepath.Join(dir, "s3.json"), cfg, 0o600); err != nil {
		t.Fatal(err)
	}
	creds = credentials.StaticCredentialsProvider{Value: aws.Credentials{AccessKeyID: ak, SecretAccessKey: sk}}
	for attempt := 1; ; attempt++ {
		port := freePort(t)
		data := filepath.Join(dir, fmt.Sprint("data", attempt))
		os.MkdirAll(data, 0o700)
		args := []string{"mini", "-ip", "127.0.0.1", "-ip.bind", "127.0.0.1", "-dir", data, "-s3.port", fmt.Sprint(port),
			"-s3.config", filepath.Join(dir, "s3.json"), "-webdav=false", "-admin.ui=false", "-s3.port.iceberg=0", "-s3.port.lance=0"}
		for _, f := range []string{"master.port", "master.port.grpc", "filer.port", "filer.port.grpc", "volume.port", "volume.port.grpc", "s3.port.grpc", "debug.port"} {
			args = append(args, "-"+f, fmt.Sprint(freePort(t)))
		}
		out := &output{}
		cmd := exec.Command(bin, args...)
		cmd.Dir, cmd.Stdout, cmd.Stderr = dir, out, out
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
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
		endpoint = fmt.Sprintf("http://127.0.0.1:%d", port)
		c := s3.New(s3.Options{Region: "us-east-1", BaseEndpoint: aws.String(endpoint), UsePathStyle: true, Credentials: creds})
		deadline := time.Now().Add(90 * time.Second)
		for {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			_, err := c.ListBuckets(ctx, &s3.ListBucketsInput{})
			cancel()
			if err == nil {
				t.Cleanup(stop)
				return endpoint, creds
			}
			select {
			case <-done:
			case <-time.After(200 * time.Millisecond):
				if time.Now().Before(deadline) {
					continue
				}
				stop()
				t.Fatalf("SeaweedFS did not answer within 90s: %v\n%s", err, out.String())
			}
			if attempt == 3 || !strings.Contains(out.String(), "already in use") && !strings.Contains(out.String(), "is not available") {
				t.Fatalf("SeaweedFS exited during start:\n%s", out.String())
			}
			break
		}
	}
}

// TestConformance runs the suite against SeaweedFS, a fresh bucket per subtest.
func TestConformance(t *testing.T) {
	endpoint, creds := startWeed(t)
	n := 0
	blobstoretest.Run(t, func(t *testing.T) blobstore.Store {
		n++
		bucket := fmt.Sprintf("conformance-%d", n)
		s, err := New(Config{Bucket: bucket, Endpoint: endpoint, PathStyle: true, Credentials: creds})
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		if _, err := s.c.CreateBucket(ctx, &s3.CreateBucketInput{Bucket: aws.String(bucket)}); err != nil {
			t.Fatal(err)
		}
		return s
	})
}

func TestNewNeedsBucket(t *testing.T) {
	if _, err := New(Config{}); err == nil {
		t.Fatal("a store without a bucket")
	}
}

// BenchmarkPut10KiB measures 10 KiB objects stored per second on SeaweedFS
// (put-if-absent, as the mail edge stores a message), 16 writers at once:
// the store's side of the edge's inbound rate (mailedge's BenchmarkInbound
// measures the edge on the local store).
func BenchmarkPut10KiB(b *testing.B) {
	endpoint, creds := startWeed(b)
	s, err := New(Config{Bucket: "bench", Endpoint: endpoint, PathStyle: true, Credentials: creds})
	if err != nil {
		b.Fatal(err)
	}
	if _, err := s.c.CreateBucket(context.Background(), &s3.CreateBucketInput{Bucket: aws.String("bench")}); err != nil {
		b.Fatal(err)
	}
	data := make([]byte, 10<<10)
	var n atomic.Int64
	b.SetParallelism(8)
	b.ResetTimer()
	start := time.Now()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			i := n.Add(1)
			if err := s.PutIfAbsent(context.Background(), fmt.Sprintf("0xbench/a0123456789ab@agents.example.com/%019d-00000000.eml", i), data); err != nil {
				b.Error(err)
				return
			}
		}
	})
	b.ReportMetric(float64(n.Load())/time.Since(start).Seconds(), "objects/s")
}
