package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/agentkeys/agentkeys/internal/daemon"
)

// This file runs docs/give-your-agent-an-inbox.md as written: the self-hosted
// path's blocks in order (the server started with the block's own flags, the
// listeners moved to free ports; the owner's and the agent's blocks in
// terminals, the example address replaced by the one inbox create printed),
// and the AWS path's aws-setup block, whose printed lines are checked (there
// is no SES here: TestMailAWSSetupSeaweedFS loads what it prints into an S3).

const inboxDoc = "../docs/give-your-agent-an-inbox.md"

func TestGuideGiveYourAgentAnInbox(t *testing.T) {
	h := newHarness(t)
	path := "PATH=" + binDir + string(os.PathListSeparator) + os.Getenv("PATH")
	const exampleAddr = "a1b2c3d4e5f6@agents.example.com"

	// 1. The server, with the block's flags.
	b1 := docBlocks(t, inboxDoc, "### 1. Run the mail edge with the broker", "sh")
	args := strings.Fields(b1[0])
	if len(b1) != 1 || len(args) < 3 || args[0] != "agentkeys" || args[1] != "server" {
		t.Fatalf("step 1 is not one agentkeys server command: %q", b1)
	}
	s := h.start(serverOpts{home: t.TempDir(), args: append(args[2:],
		"--smtp-listen", "127.0.0.1:0", "--submission-listen", "127.0.0.1:0", "--imap-listen", "127.0.0.1:0")})
	_, subAddr := s.edgeAddrs()
	imapAt := s.imapAddr()
	o := h.akNewOwner(s)
	dh := h.pairAgent(s, o, "bot", "openai")

	// 2. The owner's block.
	ownerDir := t.TempDir()
	owner := h.newTerminal("owner", ownerDir, nil, path, "AGENTKEYS_HOME="+o.home)
	b2 := docBlocks(t, inboxDoc, "### 2. Add the domain and the agent's inbox", "sh")
	shown := docBlocks(t, inboxDoc, "### 2. Add the domain and the agent's inbox", "text")
	out := strings.ReplaceAll(owner.run(b2[0], nil), "\r", "")
	addr := regexp.MustCompile(`Inbox (a[0-9a-f]{12}@agents\.example\.com) is agent bot's`).FindStringSubmatch(out)
	if addr == nil {
		t.Fatalf("inbox create printed no address:\n%s", out)
	}
	wantShown(t, "inbox create", strings.ReplaceAll(shown[0], exampleAddr, addr[1]), out)
	zone, err := os.ReadFile(filepath.Join(ownerDir, "agents.example.com.zone"))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"\tMX\t10 mail.agents.example.com.", "ak1._domainkey", "k=ed25519", "ak1rsa._domainkey", "k=rsa", "_dmarc", "v=spf1"} {
		if !strings.Contains(string(zone), want) {
			t.Errorf("the zone lacks %q:\n%s", want, zone)
		}
	}

	// 3. The agent's blocks, in its daemon's home, at the edge's real ports.
	run := t.TempDir()
	pidFile := filepath.Join(run, "daemon.pid")
	t.Cleanup(func() {
		if b, err := os.ReadFile(pidFile); err == nil {
			if pid, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil {
				syscall.Kill(pid, syscall.SIGTERM)
			}
		}
	})
	agent := h.newTerminal("agent", t.TempDir(), nil, path)
	b3 := docBlocks(t, inboxDoc, "### 3. The agent sends and reads", "sh")
	shown3 := docBlocks(t, inboxDoc, "### 3. The agent sends and reads", "text")
	if len(b3) != 2 {
		t.Fatalf("want the set-up and the send-and-read blocks in step 3, found %d", len(b3))
	}
	common := [][2]string{{exampleAddr, addr[1]}, {"/var/lib/agentkeys", dh}, {"/run/agentkeys", run}}
	agent.run(substitute(t, "the agent's set-up", b3[0], append(common,
		[2]string{"127.0.0.1:2143", imapAt},
		[2]string{"--mail-domain agents.example.com &", "--mail-domain agents.example.com --mail-submission " + subAddr + " & echo $! > " + pidFile})), nil)
	out = strings.ReplaceAll(agent.run(substitute(t, "the agent's send and read", b3[1], [][2]string{{exampleAddr, addr[1]}, {"/run/agentkeys", run}}), nil), "\r", "")
	wantShown(t, "send and read", strings.ReplaceAll(shown3[0], exampleAddr, addr[1]), out)

	// The AWS path: what aws-setup prints.
	b4 := docBlocks(t, inboxDoc, "## AWS: SES and S3", "sh")
	shown4 := docBlocks(t, inboxDoc, "## AWS: SES and S3", "text")
	out = strings.ReplaceAll(owner.run(b4[0], nil), "\r", "")
	for _, l := range strings.Split(strings.TrimSpace(shown4[0]), "\n") {
		if !strings.Contains(out, l) {
			t.Errorf("aws-setup: the guide shows %q, the output has no such line:\n%s", l, out)
		}
	}
	wantIn(t, "aws-setup", out, "# receipt-rule-", "aws sesv2 --region us-east-1 create-email-identity --email-identity agents.example.com",
		"aws s3api put-bucket-policy --bucket agent-mail", "aws iam put-role-policy --role-name agentkeys-agents", "create-receipt-rule --rule-set-name agentkeys",
		fmt.Sprintf("%q", "arn:aws:s3:::agent-mail/*"))
	// The guide's mail.json loads, and sends with SES under the "s3" role.
	cfg := docBlocks(t, inboxDoc, "## AWS: SES and S3", "json")
	d := daemon.Dir(t.TempDir())
	if err := os.WriteFile(d.MailConfigPath(), []byte(cfg[0]), 0o600); err != nil {
		t.Fatal(err)
	}
	if c, err := d.LoadMailConfig(); err != nil || c.S3 == nil || c.Send == nil || c.Send.SES.RoleARN != c.S3.RoleARN {
		t.Errorf("the guide's mail.json: %+v %v", c, err)
	}
}
