package e2e

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/agentkeys/agentkeys/internal/federation"
	"github.com/agentkeys/agentkeys/internal/ledger"
	"github.com/agentkeys/agentkeys/internal/porttest"
)

const retentionDoc = "../docs/retention.md"

// checkpointAfter waits (the enclave writes a checkpoint within its 10 s
// interval while entries arrive) for a checkpoint entry after seq and returns
// its seq.
func (s *server) checkpointAfter(seq uint64) uint64 {
	s.h.t.Helper()
	var at uint64
	if !waitFor(40*time.Second, func() bool {
		for _, e := range s.allEntries() {
			if e.Kind == ledger.KindCheckpoint && e.Seq > seq {
				at = e.Seq
				return true
			}
		}
		return false
	}) {
		s.h.t.Fatalf("no checkpoint after seq %d within 40 s", seq)
	}
	return at
}

// retentionLedger starts a broker (AGENTKEYS_HOME under dir, data in data,
// listening on addr) with an owner who stored credentials before a checkpoint
// and one after it; it returns the broker, the owner and the checkpoint's seq.
func retentionLedger(h *harness, dir, data, addr string) (*server, akOwner, uint64) {
	s := h.start(serverOpts{home: filepath.Join(dir, ".agentkeys"), dataDir: data, args: []string{"--listen", addr}})
	o := h.akNewOwner(s)
	for i := range 3 {
		h.akStore(o, fmt.Sprintf("old-%d", i), "sk-old-"+randomHex(12))
	}
	cp := s.checkpointAfter(s.head().Seq)
	h.akStore(o, "after-checkpoint", "sk-after-"+randomHex(12))
	return s, o, cp
}

// wantOldUsage checks that the owner's usage still shows the rows of the
// credentials stored before the cut.
func (h *harness) wantOldUsage(o akOwner, cut uint64) {
	h.t.Helper()
	old := 0
	for _, u := range h.usage(o.home, "--limit", "1000").Usage {
		if u.Seq < cut && u.Action == "store" {
			old++
		}
	}
	if old != 3 {
		h.t.Errorf("usage shows %d store rows from before the cut at %d, want 3", old, cut)
	}
}

// TestGuideRetention runs docs/retention.md's blocks as written on a SQLite
// broker: export while it runs, verify the archive offline with the ledger key,
// prune with it stopped, start it with --archive, verify the full chain. The
// broker then serves, appends, and shows the owner's usage rows from before
// the cut (read from the archive). Only paths and the broker's address change.
func TestGuideRetention(t *testing.T) {
	h := newHarness(t)
	dir := t.TempDir()
	data, backup := filepath.Join(dir, "server"), filepath.Join(t.TempDir(), "backup")
	addr := fmt.Sprintf("127.0.0.1:%d", porttest.Free(t))
	s, o, cp := retentionLedger(h, dir, data, addr)

	sub := [][2]string{{"/var/lib/agentkeys/server", data}, {"/backup/agentkeys-ledger", backup}}
	export := docBlocks(t, retentionDoc, "## Export (while the server runs)", "sh")
	verify := docBlocks(t, retentionDoc, "## Verify the archive offline", "sh")
	prune := docBlocks(t, retentionDoc, "## Prune", "sh")
	check := docBlocks(t, retentionDoc, "## Check", "sh")
	if len(export) != 1 || len(verify) != 1 || len(prune) != 2 || len(check) != 1 {
		t.Fatalf("retention.md's blocks changed (%d, %d, %d, %d): update the test", len(export), len(verify), len(prune), len(check))
	}
	path := "PATH=" + binDir + string(os.PathListSeparator) + os.Getenv("PATH")
	op := h.newTerminal("operator", dir, nil, path, "HOME="+dir)
	out := op.run(substitute(t, "retention export", export[0], append(sub, [2]string{"http://127.0.0.1:8090", s.url})), nil)
	wantIn(t, "export", out, fmt.Sprintf("holds every entry before seq %d", cp+1), "segments written")
	wantIn(t, "verify offline", op.run(substitute(t, "retention verify", verify[0], sub[1:]), nil), "ledger valid: ", fmt.Sprintf("archive segments hold the entries before seq %d", cp+1))
	if fi, err := os.Stat(backup); err != nil || fi.Mode().Perm() != 0o700 {
		t.Fatalf("archive directory: %v %v", fi, err)
	}

	// Bad input: a clear error, nothing created or dropped.
	empty := filepath.Join(t.TempDir(), "empty")
	os.Mkdir(empty, 0o700)
	otherKey := strings.Repeat("ab", 32)
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"audit", "verify", "--archive", backup}, "BAD_REQUEST"},
		{[]string{"audit", "verify", "--archive", backup, "--ledger-key", otherKey}, "LEDGER_INVALID"},
		{[]string{"audit", "verify", "--archive", filepath.Join(dir, "missing"), "--ledger-key", otherKey}, "no archive directory"},
		{[]string{"audit", "export", "--to", backup, "--before", "5"}, "BAD_REQUEST"},
		{[]string{"audit", "prune", "--data-dir", data, "--before", "5"}, "BAD_REQUEST"},
	} {
		r := h.cli(dir, c.args...)
		if r.code == 0 || !strings.Contains(r.stderr, c.want) {
			t.Errorf("agentkeys %v: exit %d, stderr %q; want an error naming %q", c.args, r.code, r.stderr, c.want)
		}
	}
	if _, err := os.Stat(filepath.Join(dir, "missing")); err == nil {
		t.Error("verifying a missing archive directory created it")
	}

	// Prune refuses while the server holds the SQLite ledger, changing nothing.
	refused := h.cli(dir, "audit", "prune", "--data-dir", data, "--archive", backup, "--before", fmt.Sprint(cp+1))
	if refused.code == 0 || !regexp.MustCompile(`CONFLICT[\s\S]*Fix: stop the server`).MatchString(refused.stderr) {
		t.Fatalf("prune beside a running SQLite server: exit %d, %s", refused.code, refused.stderr)
	}
	s.stop(os.Interrupt)
	if r := h.cli(dir, "audit", "prune", "--data-dir", data, "--archive", empty, "--before", fmt.Sprint(cp+1)); r.code == 0 ||
		!strings.Contains(r.stderr, "CONFLICT") || !strings.Contains(r.stderr, "export the entries first") {
		t.Fatalf("prune with an empty archive: exit %d, %s", r.code, r.stderr)
	}
	wantIn(t, "prune", op.run(substitute(t, "retention prune", prune[0], sub), nil), fmt.Sprintf("dropped the entries 1-%d", cp))
	srv := op.start(substitute(t, "retention server", prune[1], append(sub, [2]string{"agentkeys server ", "agentkeys server --listen " + addr + " "})))
	srv.waitFor(regexp.MustCompile(`msg=ready`))
	out = op.run(substitute(t, "retention check", check[0], append(sub, [2]string{"http://127.0.0.1:8090", s.url})), nil)
	wantIn(t, "check", out, "state re-folded", "archive segments hold the entries before seq", "private entries checked by commitment")

	h.wantOldUsage(o, cp+1)
	h.akStore(o, "after-prune", "sk-new-"+randomHex(12)) // appends after the cut
	h.auditOK(dir, "--server", s.url)
}

// TestRetentionS3 runs retention.md's S3 block against SeaweedFS (the
// database named there replaced by a SQLite data dir, pruned with its broker
// stopped), then serves the old entries from the bucket.
func TestRetentionS3(t *testing.T) {
	h := newHarness(t)
	w := h.startWeed(&federation.AWS{RoleARN: "arn:aws:iam::111122223333:role/none"}, "https://keys.example.com")
	dir := t.TempDir()
	data := filepath.Join(dir, "server")
	addr := fmt.Sprintf("127.0.0.1:%d", porttest.Free(t))
	s, o, cp := retentionLedger(h, dir, data, addr)
	s.stop(os.Interrupt)

	block := docBlocks(t, retentionDoc, "## To S3, on PostgreSQL", "sh")[0]
	s3flags := "s3://" + w.bucket + "/ledger --s3-endpoint " + w.endpoint + " --s3-path-style"
	path := "PATH=" + binDir + string(os.PathListSeparator) + os.Getenv("PATH")
	op := h.newTerminal("operator", dir, nil, path, "HOME="+dir)
	out := op.run(substitute(t, "retention S3", block, [][2]string{
		{"export AWS_PROFILE=agentkeys-backup", "export AWS_ACCESS_KEY_ID=" + w.creds.AccessKeyID + " AWS_SECRET_ACCESS_KEY=" + w.creds.SecretAccessKey},
		{"--ledger postgres://agentkeys@db.example:5432/agentkeys", "--data-dir " + data},
		{"s3://agentkeys-backups/ledger", s3flags},
		{"--before 2000000", fmt.Sprintf("--before %d", cp+1)},
	}), nil)
	wantIn(t, "S3 export and prune", out, fmt.Sprintf("holds every entry before seq %d", cp+1), fmt.Sprintf("dropped the entries 1-%d", cp))

	srv := op.start("agentkeys server --listen " + addr + " --data-dir " + data + " --archive " + s3flags + "\n")
	srv.waitFor(regexp.MustCompile(`msg=ready`))
	h.wantOldUsage(o, cp+1)
	h.auditOK(dir, "--server", s.url)
	// A tampered segment in the bucket fails the full verification.
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	list, err := w.admin.ListObjectsV2(ctx, &s3.ListObjectsV2Input{Bucket: aws.String(w.bucket), Prefix: aws.String("ledger/")})
	if err != nil || len(list.Contents) == 0 {
		t.Fatalf("listing the bucket: %v", err)
	}
	key := aws.ToString(list.Contents[0].Key)
	body, err := w.get(t, w.admin, key)
	if err != nil {
		t.Fatal(err)
	}
	i := strings.LastIndex(body, `"payload":{`) + len(`"payload":{`)
	if err := w.put(t, w.admin, key, body[:i]+`"x":1,`+body[i:]); err != nil {
		t.Fatal(err)
	}
	out = op.run("! agentkeys audit verify --data-dir "+data+" --archive "+s3flags+"\n", nil)
	wantIn(t, "verify a tampered S3 archive", out, "LEDGER_INVALID")
}
