package e2e

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/emersion/go-smtp"

	"github.com/agentkeys/agentkeys/internal/federation"
)

// Inbound rate runs: how many messages, over how many SMTP connections at once.
const (
	rateMessages = 2000
	rateConns    = 16
)

// inboundRate sends rateMessages messages of 10 KiB to the MX at mx for
// address, rateConns connections at once, each sending message after message,
// then checks that SeaweedFS holds every one of them whole under prefix. It
// logs the messages accepted per second and the CPU time per message of each
// process in procs (name → pid) and of this test process, the SMTP client:
// the figure a shared machine moves least.
// The messages name no domain to look up in DNS (null sender, HELO an
// address literal, no From), so the figure is the edge and the store, not this
// machine's resolver.
func inboundRate(t *testing.T, w *weed, mx, address, prefix string, procs map[string]int) {
	t.Helper()
	big := []byte("Subject: bulk\r\n\r\n" + strings.Repeat(strings.Repeat("0123456789abcdef", 4)+"\r\n", 155)) // 10,247 bytes
	procs["smtp client"] = os.Getpid()
	before := map[string]time.Duration{}
	for name, pid := range procs {
		before[name] = procCPU(t, pid)
	}
	var next atomic.Int64
	var wg sync.WaitGroup
	start := time.Now()
	for range rateConns {
		wg.Go(func() {
			c, err := smtp.Dial(mx)
			if err != nil {
				t.Error(err)
				return
			}
			defer c.Close()
			if err := c.Hello("[127.0.0.1]"); err != nil {
				t.Error(err)
				return
			}
			for next.Add(1) <= rateMessages {
				if err := c.SendMail("", []string{address}, bytes.NewReader(big)); err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	elapsed := time.Since(start)
	line := fmt.Sprintf("inbound to SeaweedFS: %d messages of %d bytes over %d connections in %s: %.0f msg/s; CPU per message:",
		rateMessages, len(big), rateConns, elapsed.Round(time.Millisecond), rateMessages/elapsed.Seconds())
	for _, name := range []string{"edge", "broker", "seaweedfs", "smtp client"} {
		if pid, ok := procs[name]; ok {
			line += fmt.Sprintf(" %s %d µs", name, (procCPU(t, pid)-before[name]).Microseconds()/rateMessages)
		}
	}
	t.Log(line)
	if t.Failed() {
		return
	}
	// Every message is there, whole: the same size (the same header
	// prepended to the same bytes), larger than what was sent.
	sizes := map[int64]int{}
	after := ""
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		in := &s3.ListObjectsV2Input{Bucket: aws.String(w.bucket), Prefix: aws.String(prefix)}
		if after != "" {
			in.StartAfter = aws.String(after)
		}
		out, err := w.admin.ListObjectsV2(ctx, in)
		cancel()
		if err != nil {
			t.Fatal(err)
		}
		for _, o := range out.Contents {
			sizes[aws.ToInt64(o.Size)]++
			after = aws.ToString(o.Key)
		}
		if !aws.ToBool(out.IsTruncated) {
			break
		}
	}
	n := 0
	for size, count := range sizes {
		if size > int64(len(big)) {
			n += count
		}
	}
	if n < rateMessages || len(sizes) > 2 { // 2: the test's first, smaller message may be there too
		t.Fatalf("SeaweedFS holds %d whole messages under %s, want %d (object sizes: %v)", n, prefix, rateMessages, sizes)
	}
}

// procCPU is the user+system CPU time process pid has used so far (Linux).
func procCPU(t *testing.T, pid int) time.Duration {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		t.Fatalf("reading the CPU time of process %d: %v", pid, err)
	}
	// after the command name in parentheses, utime and stime are the 12th and 13th fields
	f := strings.Fields(string(b[bytes.LastIndexByte(b, ')')+1:]))
	u, err1 := strconv.ParseInt(f[11], 10, 64)
	s, err2 := strconv.ParseInt(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		t.Fatalf("/proc/%d/stat: %q", pid, b)
	}
	return time.Duration(u+s) * time.Second / 100 // USER_HZ
}

// TestMailServerSeaweedFS: the edge in the broker's process (server
// --mail-domain) stores inbound mail in SeaweedFS (--mail-store s3://…), run
// as docs/give-your-agent-an-inbox.md says (every write fsynced before its
// answer), and logs the inbound rate.
func TestMailServerSeaweedFS(t *testing.T) {
	h := newHarness(t)
	w := h.startWeed(&federation.AWS{RoleARN: "arn:aws:iam::111122223333:role/none"}, "https://keys.example.com")
	store := "s3://" + weedBucket + "?endpoint=" + w.endpoint + "&path-style=true"
	s := h.start(serverOpts{home: t.TempDir(), args: []string{"--mail-domain", edgeDomain, "--smtp-listen", "127.0.0.1:0",
		"--submission-listen", "127.0.0.1:0", "--imap-listen", "127.0.0.1:0", "--mail-store", store,
		"--mail-ip-rate", "100000/1m", "--mail-rcpt-rate", "100000/1m"},
		env: []string{"AWS_ACCESS_KEY_ID=" + w.creds.AccessKeyID, "AWS_SECRET_ACCESS_KEY=" + w.creds.SecretAccessKey,
			"AWS_CONFIG_FILE=/dev/null", "AWS_SHARED_CREDENTIALS_FILE=/dev/null"}})
	mx, _ := s.edgeAddrs()
	o := h.akNewOwner(s)
	h.pairAgent(s, o, "bot", "openai")
	h.akOK(o.home, "domain", "add", edgeDomain)
	in := h.inboxOf(o, "bot")
	inboundRate(t, w, mx, in.Address, strings.ToLower(in.Wallet)+"/"+in.Address+"/", map[string]int{"broker": s.cmd.Process.Pid, "seaweedfs": w.pid})
}
