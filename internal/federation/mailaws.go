package federation

import (
	"fmt"
	"path/filepath"
	"slices"
	"strings"

	"github.com/agentkeys/agentkeys/internal/apiv1"
)

// The files the mail AWS documents are saved as (receipt rules: one per inbox,
// MailRuleFile(address)).
const (
	MailRoleFile   = "mail-role-policy.json"
	MailBucketFile = "mail-bucket-policy.json"
)

// MailRuleFile is the file an inbox's receipt rule is saved as.
func MailRuleFile(address string) string { return "receipt-rule-" + MailRuleName(address) + ".json" }

// MailRuleName is the SES receipt rule of an inbox: "agentkeys-" and the
// address's local part (SES allows letters, digits, '_', '-' and '.').
func MailRuleName(address string) string {
	local, _, _ := strings.Cut(address, "@")
	return "agentkeys-" + local
}

// MailInbox is one inbox of the domain: its address, the wallet its mail is
// stored under, and the wallets of every agent that may send as it (its own
// agent and those granted send).
type MailInbox struct {
	Address string
	Wallet  string
	Senders []string
}

// MailAWSInput configures the documents of the AWS (SES → S3) mail path.
type MailAWSInput struct {
	Domain   string
	Bucket   string
	Region   string // default us-east-1
	Account  string
	RoleName string // default agentkeys-agents (the role of `oidc register aws`)
	RuleSet  string // default agentkeys
	Inboxes  []MailInbox
	FileDir  string
}

// MailAWS is what to paste into an AWS account so SES receives the domain's
// mail into each inbox's prefix of the bucket and agents read and send with
// their own STS credentials.
type MailAWS struct {
	Domain       string        `json:"domain"`
	Bucket       string        `json:"bucket"`
	Region       string        `json:"region"`
	RuleSet      string        `json:"rule_set"`
	MX           string        `json:"mx"`            // the MX record's value
	ReceiptRules []ReceiptRule `json:"receipt_rules"` // one per inbox, as `aws ses create-receipt-rule --rule` takes it
	BucketPolicy Policy        `json:"bucket_policy"` // SES may write; the role's per-agent-prefix statements
	RolePolicy   Policy        `json:"role_policy"`   // per-agent prefix (as for credentials) and sending as one's inboxes
	Commands     []string      `json:"commands"`      // aws CLI commands, in order
}

// ReceiptRule is an SES receipt rule (the ReceiptRule API shape).
type ReceiptRule struct {
	Name        string          `json:"Name"`
	Enabled     bool            `json:"Enabled"`
	TLSPolicy   string          `json:"TlsPolicy"`
	Recipients  []string        `json:"Recipients"`
	ScanEnabled bool            `json:"ScanEnabled"`
	Actions     []ReceiptAction `json:"Actions"`
}

// ReceiptAction is one action of a receipt rule; only S3 is used.
type ReceiptAction struct {
	S3Action *S3Action `json:"S3Action,omitempty"`
}

// S3Action stores the raw message at ObjectKeyPrefix + SES's message id.
type S3Action struct {
	BucketName      string `json:"BucketName"`
	ObjectKeyPrefix string `json:"ObjectKeyPrefix"`
}

// SESSendActions are the actions that send a raw message (SES v1 and v2).
var SESSendActions = []string{"ses:SendRawEmail", "ses:SendEmail"}

// GenerateMailAWS returns the receipt rules, bucket policy, role policy and
// commands of the SES → S3 mail path.
//
// SES stores a message under a fixed prefix per rule, so each inbox has its
// own rule writing into "<wallet>/<address>/": the prefix the role's
// tag-keyed statements (StorageStatements, the same as for credentials)
// already confine each agent to. A recipient no rule names is refused by SES
// during the SMTP conversation. Sending is confined per inbox: a statement per
// inbox allows ses:SendRawEmail only with that From address and only to the
// wallets that may send as it, matched on the session's wallet tag.
func GenerateMailAWS(in MailAWSInput) (*MailAWS, error) {
	if in.Domain == "" || strings.ContainsAny(in.Domain, "/*?\"' ") {
		return nil, fmt.Errorf("--domain must be one of your mail domains")
	}
	if len(in.Account) != 12 || strings.Trim(in.Account, "0123456789") != "" {
		return nil, fmt.Errorf("--account must be the 12-digit AWS account id")
	}
	if in.Bucket == "" || strings.Trim(strings.ToLower(in.Bucket), "abcdefghijklmnopqrstuvwxyz0123456789.-") != "" {
		return nil, fmt.Errorf("--bucket must be an S3 bucket name (lowercase letters, digits, '.' and '-')")
	}
	if in.Region == "" {
		in.Region = "us-east-1"
	}
	if strings.Trim(in.Region, "abcdefghijklmnopqrstuvwxyz0123456789-") != "" {
		return nil, fmt.Errorf("--region must be an AWS region, e.g. us-east-1")
	}
	if in.RoleName == "" {
		in.RoleName = "agentkeys-agents"
	}
	if in.RuleSet == "" {
		in.RuleSet = "agentkeys"
	}
	roleARN := "arn:aws:iam::" + in.Account + ":role/" + in.RoleName
	out := &MailAWS{Domain: in.Domain, Bucket: in.Bucket, Region: in.Region, RuleSet: in.RuleSet,
		MX: "10 inbound-smtp." + in.Region + ".amazonaws.com"}
	identity := "arn:aws:ses:" + in.Region + ":" + in.Account + ":identity/" + in.Domain
	role := StorageStatements(in.Bucket)
	inboxes := slices.Clone(in.Inboxes)
	slices.SortFunc(inboxes, func(a, b MailInbox) int { return strings.Compare(a.Address, b.Address) })
	for _, ib := range inboxes {
		if !strings.HasSuffix(ib.Address, "@"+in.Domain) || ib.Wallet == "" {
			return nil, fmt.Errorf("inbox %q is not on %s", ib.Address, in.Domain)
		}
		out.ReceiptRules = append(out.ReceiptRules, ReceiptRule{Name: MailRuleName(ib.Address), Enabled: true, TLSPolicy: "Require",
			Recipients: []string{ib.Address}, ScanEnabled: true,
			Actions: []ReceiptAction{{S3Action: &S3Action{BucketName: in.Bucket, ObjectKeyPrefix: strings.ToLower(ib.Wallet) + "/" + ib.Address + "/"}}}})
		senders := make([]string, 0, len(ib.Senders))
		for _, w := range ib.Senders {
			senders = append(senders, strings.ToLower(w))
		}
		slices.Sort(senders)
		if senders = slices.Compact(senders); len(senders) == 0 {
			continue
		}
		role = append(role, Statement{Sid: "AgentKeysSendAs" + sidPart(ib.Address), Effect: "Allow", Action: SESSendActions,
			Resource: []string{identity}, Condition: map[string]map[string]any{"StringEquals": {
				"ses:FromAddress": ib.Address, "aws:PrincipalTag/" + apiv1.TagUserWallet: senders}}})
	}
	out.RolePolicy = Policy{Version: "2012-10-17", Statement: role}
	out.BucketPolicy = Policy{Version: "2012-10-17", Statement: append([]Statement{{Sid: "AgentKeysSESPuts", Effect: "Allow",
		Principal: map[string]any{"Service": "ses.amazonaws.com"}, Action: []string{"s3:PutObject"},
		Resource: []string{"arn:aws:s3:::" + in.Bucket + "/*"},
		Condition: map[string]map[string]any{"StringEquals": {"AWS:SourceAccount": in.Account},
			"ArnLike": {"AWS:SourceArn": "arn:aws:ses:" + in.Region + ":" + in.Account + ":receipt-rule-set/" + in.RuleSet + ":receipt-rule/agentkeys-*"}}}},
		RoleBucketStatements(in.Bucket, roleARN)...)}
	ses := "aws ses --region " + in.Region + " "
	out.Commands = []string{
		fmt.Sprintf("aws sesv2 --region %s create-email-identity --email-identity %s", in.Region, in.Domain),
		fmt.Sprintf("aws s3api put-bucket-policy --bucket %s --policy file://%s", in.Bucket, filepath.Join(in.FileDir, MailBucketFile)),
		fmt.Sprintf("aws iam put-role-policy --role-name %s --policy-name agentkeys-mail --policy-document file://%s", in.RoleName, filepath.Join(in.FileDir, MailRoleFile)),
		ses + "create-receipt-rule-set --rule-set-name " + in.RuleSet,
	}
	for _, r := range out.ReceiptRules {
		out.Commands = append(out.Commands, ses+"create-receipt-rule --rule-set-name "+in.RuleSet+" --rule file://"+
			filepath.Join(in.FileDir, MailRuleFile(r.Recipients[0])))
	}
	out.Commands = append(out.Commands, ses+"set-active-receipt-rule-set --rule-set-name "+in.RuleSet)
	return out, nil
}

// sidPart keeps the letters and digits of s (a statement id allows no others).
func sidPart(s string) string {
	var b strings.Builder
	for _, c := range s {
		if c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' {
			b.WriteRune(c)
		}
	}
	return b.String()
}
