package cli

import (
	"github.com/spf13/cobra"

	"github.com/agentkeys/agentkeys/internal/daemon"
)

// mailSendFlags adds where email_send submits to cmd.
func mailSendFlags(cmd *cobra.Command, src *daemon.Source) {
	cmd.Flags().StringVar(&src.Mail.Submission, "mail-submission", daemon.DefaultSubmission, "the mail edge's submission port (host:port) for email_send; STARTTLS required off loopback")
	cmd.Flags().StringVar(&src.Mail.Audience, "mail-audience", "", "identity-token audience of the mail edge (SASL OAUTHBEARER); default: the From address's domain, as the edge expects")
	cmd.Flags().StringVar(&src.Mail.Domain, "mail-domain", "", "email_send's default From: this agent's inbox on DOMAIN")
}
