package cli

import (
	"fmt"
	"slices"

	"github.com/agentkeys/agentkeys/internal/apiv1"
	"github.com/agentkeys/agentkeys/internal/federation"
	"github.com/agentkeys/agentkeys/internal/maildns"
	"github.com/agentkeys/agentkeys/internal/problem"
	"github.com/spf13/cobra"
)

func mailAWSSetupCmd(e *env) *cobra.Command {
	var in federation.MailAWSInput
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "aws-setup --domain DOMAIN --bucket BUCKET --account ACCOUNT [--region REGION]",
		Short: "Print the SES receipt rules, bucket policy and role policy that deliver a domain's mail into each inbox's prefix",
		Long: `Print what makes AWS receive DOMAIN's mail (SES → S3) and lets each agent read and
send its own inboxes with its own STS credentials; nothing is sent anywhere.

- One SES receipt rule per live inbox on DOMAIN, storing its raw messages in BUCKET
  under <agent wallet>/<address>/ (SES names each object by its message id). SES
  refuses mail for any other recipient during the SMTP conversation. Run the
  command again after inbox create or delete, and apply the new rules.
- The bucket policy: SES (only for this account's agentkeys-* rules) may put objects;
  the role's per-agent-prefix statements as 'oidc register aws' prints them.
- The role policy (put on the role 'oidc register aws' made): each agent reaches only
  the prefix of its own wallet session tag, exactly as for credentials, and may send
  with SES only as an inbox it may send as (From matched per inbox, wallet tag per
  sender).

The MX record of DOMAIN points at SES: 10 inbound-smtp.REGION.amazonaws.com.`,
		Example: "  agentkeys mail aws-setup --domain agents.example.com --bucket agent-mail --account 123456789012\n" +
			"  agentkeys mail aws-setup --domain agents.example.com --bucket agent-mail --account 123456789012 --region eu-west-1 --json",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			in.Domain = maildns.Normalize(in.Domain)
			if !maildns.Valid(in.Domain) {
				return problem.Newf(problem.BadRequest, "pass one of your mail domains (agentkeys domain list)", "%q is not a domain name", in.Domain)
			}
			if _, err := federation.GenerateMailAWS(in); err != nil { // flags first, before any call
				return usageProblem(err)
			}
			_, c, err := e.ownerSession()
			if err != nil {
				return err
			}
			inboxes, err := c.Inboxes(cmd.Context())
			if err != nil {
				return err
			}
			agents, err := c.Agents(cmd.Context())
			if err != nil {
				return err
			}
			wallet := map[string]string{}
			for _, a := range agents {
				if a.Status == apiv1.AgentActive {
					wallet[a.Alias] = a.Wallet
				}
			}
			in.Inboxes = nil
			for _, l := range inboxes {
				if l.DeletedAt != 0 || l.Domain != in.Domain {
					continue
				}
				ib := federation.MailInbox{Address: l.Address, Wallet: l.Wallet, Senders: []string{l.Wallet}}
				for _, g := range l.Grants {
					if w, ok := wallet[g.Agent]; ok && slices.Contains(g.Rights, "send") {
						ib.Senders = append(ib.Senders, w)
					}
				}
				in.Inboxes = append(in.Inboxes, ib)
			}
			out, err := federation.GenerateMailAWS(in)
			if err != nil {
				return usageProblem(err)
			}
			if asJSON {
				return e.printJSON(out)
			}
			st := e.steps()
			if len(out.ReceiptRules) == 0 {
				fmt.Fprintf(e.stdout, "# No live inboxes on %s yet: create one (agentkeys inbox create --agent ALIAS --domain %s)\n"+
					"# and run this again for its receipt rule.\n\n", in.Domain, in.Domain)
			}
			st.next(false, "Publish the MX record of %s:\n%s.\tMX\t%s.\n", in.Domain, in.Domain, out.MX)
			st.next(true, "Save these files.\n")
			docs := []docFile{{federation.MailBucketFile, 0o644, out.BucketPolicy}, {federation.MailRoleFile, 0o644, out.RolePolicy}}
			for _, r := range out.ReceiptRules {
				docs = append(docs, docFile{federation.MailRuleFile(r.Recipients[0]), 0o644, r})
			}
			e.printDocs(docs)
			st.next(true, "Run (create-email-identity prints the DNS records that verify the domain; skip\n"+
				"#    create-receipt-rule-set when the rule set exists, and rules that exist):\n")
			e.printLines(out.Commands)
			return nil
		},
	}
	cmd.Flags().StringVar(&in.Domain, "domain", "", "one of your mail domains (required)")
	cmd.Flags().StringVar(&in.Bucket, "bucket", "", "the S3 bucket SES writes to, one prefix per agent wallet (required)")
	cmd.Flags().StringVar(&in.Account, "account", "", "12-digit AWS account id (required)")
	cmd.Flags().StringVar(&in.Region, "region", "us-east-1", "the SES region receiving the mail")
	cmd.Flags().StringVar(&in.RoleName, "role-name", "agentkeys-agents", "the role agents assume (oidc register aws --role-name)")
	cmd.Flags().StringVar(&in.RuleSet, "rule-set", "agentkeys", "the SES receipt rule set")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print one JSON object")
	for _, f := range []string{"domain", "bucket", "account"} {
		cmd.MarkFlagRequired(f)
	}
	return cmd
}
