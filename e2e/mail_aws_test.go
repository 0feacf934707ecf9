package e2e

import (
	"encoding/json"
	"slices"
	"strings"
	"testing"

	"github.com/agentkeys/agentkeys/internal/federation"
)

// TestMailAWSSetupSeaweedFS: what `mail aws-setup --json` prints parses, names
// one receipt rule per inbox writing under <wallet>/<address>/, and its role
// policy, loaded into SeaweedFS (the S3 + STS server standing in for AWS; it
// has no SES, so the send statements stay out), lets each agent read the mail
// SES stored for its inbox and nothing of the other's.
func TestMailAWSSetupSeaweedFS(t *testing.T) {
	h := newHarness(t)
	v := h.awsMailAgents()
	s, o, A, B, addr := v.s, v.o, v.A, v.B, v.addr
	const domain = awsMailDomain
	h.akOK(o.home, "inbox", "grant", addr["bob"], "--agent", "alice", "send")

	wantProblem(t, h.cli(o.home, "mail", "aws-setup", "--domain", domain, "--bucket", weedBucket, "--account", "12345"), 2, "BAD_REQUEST", "12-digit")
	var mail federation.MailAWS
	if err := json.Unmarshal([]byte(h.akOK(o.home, "mail", "aws-setup", "--domain", domain, "--bucket", weedBucket,
		"--account", weedAccount, "--json")), &mail); err != nil {
		t.Fatalf("mail aws-setup --json does not parse: %v", err)
	}
	text := h.akOK(o.home, "mail", "aws-setup", "--domain", domain, "--bucket", weedBucket, "--account", weedAccount)
	for _, want := range []string{domain + ".\tMX\t10 inbound-smtp.us-east-1.amazonaws.com", "# " + federation.MailBucketFile,
		"# " + federation.MailRuleFile(addr["alice"]), "create-receipt-rule --rule-set-name agentkeys --rule file://" + federation.MailRuleFile(addr["bob"])} {
		if !strings.Contains(text, want) {
			t.Fatalf("mail aws-setup prints no %q:\n%s", want, text)
		}
	}
	prefix := map[string]string{"alice": A.wallet + "/" + addr["alice"] + "/", "bob": B.wallet + "/" + addr["bob"] + "/"}
	if len(mail.ReceiptRules) != 2 {
		t.Fatalf("%d receipt rules, want one per inbox", len(mail.ReceiptRules))
	}
	for _, r := range mail.ReceiptRules {
		who := "alice"
		if r.Recipients[0] == addr["bob"] {
			who = "bob"
		}
		if r.Recipients[0] != addr[who] || r.Actions[0].S3Action.ObjectKeyPrefix != prefix[who] || r.Actions[0].S3Action.BucketName != weedBucket {
			t.Fatalf("receipt rule %+v", r)
		}
	}
	senders := map[string][]any{}
	for _, st := range mail.RolePolicy.Statement {
		if slices.Contains(st.Action, "ses:SendRawEmail") {
			senders[st.Condition["StringEquals"]["ses:FromAddress"].(string)] = st.Condition["StringEquals"]["aws:PrincipalTag/agentkeys_user_wallet"].([]any)
		}
	}
	if !slices.Equal(senders[addr["alice"]], []any{A.wallet}) || len(senders[addr["bob"]]) != 2 || !slices.Contains(senders[addr["bob"]], any(A.wallet)) {
		t.Fatalf("send statements by From: %v", senders)
	}

	doc := h.registerAWS(o.home, s.url)
	doc.RolePolicy.Statement = slices.DeleteFunc(slices.Clone(mail.RolePolicy.Statement), func(st federation.Statement) bool {
		return slices.ContainsFunc(st.Action, func(a string) bool { return strings.HasPrefix(a, "ses:") })
	})
	w := h.startWeed(&doc, s.url)
	for who, p := range prefix { // what SES writes: <prefix><message id>
		if err := w.put(t, w.admin, p+"ses-message-"+who, "raw mail for "+who); err != nil {
			t.Fatal(err)
		}
	}
	for who, other := range map[string]string{"alice": "bob", "bob": "alice"} {
		ag := A
		if who == "bob" {
			ag = B
		}
		c := w.s3(h.awsCreds(ag, w))
		if keys, err := w.list(t, c, prefix[who]); err != nil || !slices.Equal(keys, []string{prefix[who] + "ses-message-" + who}) {
			t.Fatalf("%s lists its inbox: %v %v", who, keys, err)
		}
		if v, err := w.get(t, c, prefix[who]+"ses-message-"+who); err != nil || v != "raw mail for "+who {
			t.Fatalf("%s reads its mail: %q %v", who, v, err)
		}
		if _, err := w.get(t, c, prefix[other]+"ses-message-"+other); errCode(err) != "AccessDenied" {
			t.Fatalf("%s reads %s's mail: want AccessDenied, got %v", who, other, err)
		}
		if _, err := w.list(t, c, prefix[other]); errCode(err) != "AccessDenied" {
			t.Fatalf("%s lists %s's inbox: want AccessDenied, got %v", who, other, err)
		}
	}
}

// awsMailAgents is the setup the AWS-mode mail tests share: a broker that
// issues identity tokens for SeaweedFS's STS, an owner, agents alice and bob
// able to mint them, the domain awsMailDomain and one inbox each (addr by
// alias).
type awsMailAgents struct {
	s    *server
	o    akOwner
	A, B oidcAgent
	addr map[string]string
}

const awsMailDomain = "agents.example.com"

func (h *harness) awsMailAgents() awsMailAgents {
	h.t.Helper()
	v := awsMailAgents{s: h.start(serverOpts{home: h.t.TempDir(), args: []string{"--oidc-audience", weedAudience}}), addr: map[string]string{}}
	v.o = h.akNewOwner(v.s)
	v.A = h.oidcAgent(v.s, v.o, "alice", "oidc:"+weedAudience)
	v.B = h.oidcAgent(v.s, v.o, "bob", "oidc:"+weedAudience)
	h.akOK(v.o.home, "domain", "add", awsMailDomain)
	for _, who := range []string{"alice", "bob"} {
		var in struct{ Address string }
		if err := json.Unmarshal([]byte(h.akOK(v.o.home, "inbox", "create", "--agent", who, "--json")), &in); err != nil || in.Address == "" {
			h.t.Fatalf("inbox create --agent %s: %v", who, err)
		}
		v.addr[who] = in.Address
	}
	return v
}
