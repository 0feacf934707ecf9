package s3store

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
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
	"github.com/agentkeys/agentkeys/internal/porttest"
	"github.com/agentkeys/agentkeys/internal/seaweedtest"
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

// output collects a process's output, safe for concurrent writes.
type output struct {
	mu sync.Mutex
	b  strings.Builder
}

func (o *output) Write(p []byte) (int, error) { o.mu.Lock(); defer o.mu.Unlock(); return o.b.Write(p) }
func (o *output) String() string              { o.mu.Lock(); defer o.mu.Unlock(); return o.b.String() }

// weedServer is a running `weed mini`.
type weedServer struct {
	endpoint string // S3, http://127.0.0.1:PORT
	creds    aws.CredentialsProvider
	pid      int
}

// startWeed runs `weed mini` on loopback with one static admin identity, in
// the configuration docs/give-your-agent-an-inbox.md gives operators: a
// storage rule that makes every write under /buckets/ durable before its
// answer (fs.configure -fsync, see fsyncBuckets).
func startWeed(t testing.TB) weedServer {
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
	creds := credentials.StaticCredentialsProvider{Value: aws.Credentials{AccessKeyID: ak, SecretAccessKey: sk}}
	for attempt := 1; ; attempt++ {
		port := porttest.Free(t)
		data := filepath.Join(dir, fmt.Sprint("data", attempt))
		os.MkdirAll(data, 0o700)
		ports := seaweedtest.Choose(t)
		args := append([]string{"mini", "-ip", "127.0.0.1", "-ip.bind", "127.0.0.1", "-dir", data, "-s3.port", fmt.Sprint(port),
			"-s3.config", filepath.Join(dir, "s3.json"), "-webdav=false", "-admin.ui=false", "-s3.port.iceberg=0", "-s3.port.lance=0"}, ports.Args...)
		if p := os.Getenv("AGENTKEYS_WEED_CPUPROFILE"); p != "" { // where SeaweedFS's time goes: go tool pprof $AGENTKEYS_WEED FILE
			args = append(args, "-cpuprofile", p)
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
		endpoint := fmt.Sprintf("http://127.0.0.1:%d", port)
		c := s3.New(s3.Options{Region: "us-east-1", BaseEndpoint: aws.String(endpoint), UsePathStyle: true, Credentials: creds})
		deadline := time.Now().Add(90 * time.Second)
		ready := false
	wait:
		for {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			_, err := c.ListBuckets(ctx, &s3.ListBucketsInput{})
			cancel()
			if ready = err == nil; ready {
				break
			}
			select {
			case <-done:
				break wait
			case <-time.After(200 * time.Millisecond):
				if time.Now().After(deadline) {
					stop()
					t.Fatalf("SeaweedFS did not answer within 90s: %v\n%s", err, out.String())
				}
			}
		}
		// A port taken: it exited, or runs with a gRPC port moved, where its shell would dial another process.
		if seaweedtest.Moved(out.String()) {
			stop()
			if attempt == 3 {
				t.Fatalf("SeaweedFS found a port it was given taken, 3 starts in a row:\n%s", out.String())
			}
			continue
		}
		if !ready {
			t.Fatalf("SeaweedFS exited during start:\n%s", out.String())
		}
		t.Cleanup(stop)
		if err := fsyncBuckets(bin, ports.Master, ports.Filer); err != nil {
			t.Fatalf("%v\n%s", err, out.String())
		}
		return weedServer{endpoint: endpoint, creds: creds, pid: cmd.Process.Pid}
	}
}

// fsyncBuckets sets the storage rule docs/give-your-agent-an-inbox.md gives
// operators ("Mail in an S3 bucket"), here for every bucket: SeaweedFS
// answers a write under /buckets/ only once it is on disk (the volume server
// fsyncs the object's bytes and the filer syncs its metadata entry before the
// S3 answer). Without it an answer means the bytes reached the operating
// system, and a power loss can lose them.
// master and filer are HOST:PORT.GRPCPORT, SeaweedFS's form for a gRPC port
// other than PORT+10000.
func fsyncBuckets(bin, master, filer string) error {
	cmd := exec.Command(bin, "shell", "-master", master, "-filer", filer)
	cmd.Stdin = strings.NewReader("fs.configure -locationPrefix=/buckets/ -fsync -apply\nexit\n")
	out, err := cmd.CombinedOutput()
	if err != nil || !strings.Contains(string(out), `"fsync": true`) {
		return fmt.Errorf("weed shell fs.configure -fsync: %v\n%s", err, out)
	}
	return nil
}

// TestConformance runs the suite against SeaweedFS, a fresh bucket per subtest.
func TestConformance(t *testing.T) {
	w := startWeed(t)
	n := 0
	blobstoretest.Run(t, func(t *testing.T) blobstore.Store {
		n++
		bucket := fmt.Sprintf("conformance-%d", n)
		s, err := New(Config{Bucket: bucket, Endpoint: w.endpoint, PathStyle: true, Credentials: w.creds})
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
// (put-if-absent, as the mail edge stores a message), 16 writers at once,
// every write fsynced before its answer (startWeed's storage rule): the
// store's side of the edge's inbound rate. It also reports the CPU time per
// object of SeaweedFS and of this client (Linux /proc), the figures least
// moved by other load on a shared machine.
func BenchmarkPut10KiB(b *testing.B) {
	w := startWeed(b)
	s, err := New(Config{Bucket: "bench", Endpoint: w.endpoint, PathStyle: true, Credentials: w.creds})
	if err != nil {
		b.Fatal(err)
	}
	if _, err := s.c.CreateBucket(context.Background(), &s3.CreateBucketInput{Bucket: aws.String("bench")}); err != nil {
		b.Fatal(err)
	}
	data := make([]byte, 10<<10)
	var n atomic.Int64
	b.SetParallelism(8)
	weed0, self0 := procCPU(w.pid), procCPU(os.Getpid())
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
	elapsed := time.Since(start)
	b.ReportMetric(float64(n.Load())/elapsed.Seconds(), "objects/s")
	if weed0 >= 0 {
		b.ReportMetric(float64((procCPU(w.pid)-weed0).Microseconds())/float64(n.Load()), "weed-cpu-µs/op")
		b.ReportMetric(float64((procCPU(os.Getpid())-self0).Microseconds())/float64(n.Load()), "client-cpu-µs/op")
	}
}

// procCPU is the user+system CPU time process pid has used (Linux), or -1.
func procCPU(pid int) time.Duration {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return -1
	}
	// fields after the command name, which is in parentheses: utime and stime are the 12th and 13th
	f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+1:]))
	if len(f) < 13 {
		return -1
	}
	u, err1 := strconv.ParseInt(f[11], 10, 64)
	st, err2 := strconv.ParseInt(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return -1
	}
	return time.Duration(u+st) * time.Second / 100 // USER_HZ is 100 on Linux
}
