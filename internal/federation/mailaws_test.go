package federation

import (
	"encoding/json"
	"reflect"
	"strings"
	"testing"
)

func TestMailAWSDocuments(t *testing.T) {
	const (
		wa = "0xAAAAAAAAAAAA000000000000000000000000000A"
		wb = "0xbbbbbbbbbbbb000000000000000000000000000b"
		a  = "aaaaaaaaaaaaa@agents.example.com"
		b  = "abbbbbbbbbbbb@agents.example.com"
	)
	out, err := GenerateMailAWS(MailAWSInput{Domain: "agents.example.com", Bucket: "agent-mail", Account: "123456789012", Region: "eu-west-1",
		Inboxes: []MailInbox{{Address: b, Wallet: wb, Senders: []string{wb, wa}}, {Address: a, Wallet: wa, Senders: []string{wa}}}})
	if err != nil {
		t.Fatal(err)
	}
	raw, err := json.Marshal(out)
	if err != nil {
		t.Fatal(err)
	}
	var back MailAWS
	if err := json.Unmarshal(raw, &back); err != nil {
		t.Fatalf("printed JSON does not parse: %v", err)
	}
	// One rule per inbox, writing under the inbox's prefix (wallet lowercase).
	if len(back.ReceiptRules) != 2 {
		t.Fatalf("%d receipt rules", len(back.ReceiptRules))
	}
	r := back.ReceiptRules[0]
	if r.Name != "agentkeys-aaaaaaaaaaaaa" || !r.Enabled || r.TLSPolicy != "Require" || len(r.Recipients) != 1 || r.Recipients[0] != a ||
		r.Actions[0].S3Action.BucketName != "agent-mail" || r.Actions[0].S3Action.ObjectKeyPrefix != strings.ToLower(wa)+"/"+a+"/" {
		t.Fatalf("receipt rule %+v", r)
	}
	// The rule's JSON has the API's field names.
	var rm map[string]any
	rb, _ := json.Marshal(r)
	json.Unmarshal(rb, &rm)
	for _, k := range []string{"Name", "Enabled", "TlsPolicy", "Recipients", "ScanEnabled", "Actions"} {
		if _, ok := rm[k]; !ok {
			t.Errorf("receipt rule JSON lacks %s: %s", k, rb)
		}
	}
	// The role policy is the credentials' per-agent-prefix policy, then one send
	// statement per inbox.
	st := back.RolePolicy.Statement
	got, _ := json.Marshal(st[:4])
	want, _ := json.Marshal(StorageStatements("agent-mail"))
	if string(got) != string(want) {
		t.Fatalf("role policy's storage statements differ from StorageStatements:\n%+v", st[:4])
	}
	if len(st) != 6 {
		t.Fatalf("%d role statements", len(st))
	}
	send := st[5] // b's, sorted after a's
	cond := send.Condition["StringEquals"]
	if send.Resource[0] != "arn:aws:ses:eu-west-1:123456789012:identity/agents.example.com" || cond["ses:FromAddress"] != b ||
		!reflect.DeepEqual(cond["aws:PrincipalTag/agentkeys_user_wallet"], []any{strings.ToLower(wa), wb}) {
		t.Fatalf("send statement %+v", send)
	}
	// SES may write only for this account's rules.
	ses := back.BucketPolicy.Statement[0]
	if ses.Principal["Service"] != "ses.amazonaws.com" || ses.Condition["StringEquals"]["AWS:SourceAccount"] != "123456789012" ||
		ses.Condition["ArnLike"]["AWS:SourceArn"] != "arn:aws:ses:eu-west-1:123456789012:receipt-rule-set/agentkeys:receipt-rule/agentkeys-*" {
		t.Fatalf("SES statement %+v", ses)
	}
	if len(back.BucketPolicy.Statement) != 5 || back.BucketPolicy.Statement[1].Principal["AWS"] != "arn:aws:iam::123456789012:role/agentkeys-agents" {
		t.Fatalf("bucket policy %+v", back.BucketPolicy.Statement)
	}
	if back.MX != "10 inbound-smtp.eu-west-1.amazonaws.com" || !strings.Contains(strings.Join(back.Commands, "\n"), "file://receipt-rule-agentkeys-abbbbbbbbbbbb.json") {
		t.Fatalf("mx %q commands %v", back.MX, back.Commands)
	}

	for name, in := range map[string]MailAWSInput{
		"no account":              {Domain: "d.example", Bucket: "b"},
		"bad bucket":              {Domain: "d.example", Bucket: "B/../x", Account: "123456789012"},
		"bad region":              {Domain: "d.example", Bucket: "b", Account: "123456789012", Region: "us east"},
		"inbox of another domain": {Domain: "d.example", Bucket: "b", Account: "123456789012", Inboxes: []MailInbox{{Address: "a1@e.example", Wallet: "0x1"}}},
	} {
		if _, err := GenerateMailAWS(in); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}
