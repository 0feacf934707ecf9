package cli

import (
	"fmt"
	"slices"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/agentkeys/agentkeys/internal/apiv1"
	"github.com/agentkeys/agentkeys/internal/maildns"
	"github.com/agentkeys/agentkeys/internal/problem"
)

// The owner's mail commands (§9): agentkeys domain … and agentkeys inbox ….

func domainCmd(e *env) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "domain",
		Short: "Mail domains for your agents' inboxes: add, list, remove",
		Long: `A mail domain is yours once added: your agents' inboxes live on it, and the
enclave's DKIM keys sign their mail: Ed25519 dkim/<domain>/v1 (selector ak1) and
an RSA-2048 key the enclave makes when the domain is first added (selector
ak1rsa). Every change is a ledger entry your account signs.`,
		Example: "  agentkeys domain add agents.example.com\n  agentkeys domain list",
	}
	cmd.AddCommand(domainAddCmd(e), domainListCmd(e), domainRemoveCmd(e))
	return cmd
}

// domainJSON is a domain as --json prints it.
func domainJSON(d *apiv1.Domain) map[string]any {
	return map[string]any{"name": d.Name, "dkim_selector": d.DKIMSelector, "status": d.Status, "added": nanoTime(d.Added)}
}

func domainAddCmd(e *env) *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "add DOMAIN",
		Short: "Add a mail domain for your agents' inboxes",
		Long: `Add DOMAIN as yours: inboxes can then be created on it. A domain is one
account's while it is active; use a domain or subdomain you control, whose MX
points at your mail edge.`,
		Example: "  agentkeys domain add agents.example.com\n  agentkeys domain add agents.example.com --json",
		Args:    exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			_, c, err := e.ownerSession()
			if err != nil {
				return err
			}
			d, err := c.AddDomain(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			if asJSON {
				return e.jsonOut(domainJSON(d))
			}
			fmt.Fprintf(e.stdout, "Added mail domain %s (DKIM selector %s). Create an inbox: agentkeys inbox create --agent ALIAS --domain %s\n", d.Name, d.DKIMSelector, d.Name)
			return nil
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the domain as JSON")
	return cmd
}

func domainListCmd(e *env) *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:     "list",
		Short:   "List your mail domains",
		Example: "  agentkeys domain list\n  agentkeys domain list --json",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			_, c, err := e.ownerSession()
			if err != nil {
				return err
			}
			list, err := c.Domains(cmd.Context())
			if err != nil {
				return err
			}
			if asJSON {
				out := make([]map[string]any, len(list))
				for i := range list {
					out[i] = domainJSON(&list[i])
				}
				return e.jsonOut(map[string]any{"domains": out})
			}
			if len(list) == 0 {
				fmt.Fprintln(e.stdout, "No mail domains yet. Add one: agentkeys domain add agents.example.com")
				return nil
			}
			tw := tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "DOMAIN\tSTATUS\tDKIM SELECTOR\tADDED")
			for _, d := range list {
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", d.Name, d.Status, d.DKIMSelector, nanoTime(d.Added))
			}
			return tw.Flush()
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print as JSON")
	return cmd
}

func domainRemoveCmd(e *env) *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "remove DOMAIN",
		Short: "Give up one of your mail domains (it must have no inbox left)",
		Long: `Remove DOMAIN: no inbox can be created on it, and another account may add it.
Delete its inboxes first (agentkeys inbox delete); their stored mail stays in the
object store.`,
		Example: "  agentkeys domain remove agents.example.com\n  agentkeys domain remove agents.example.com --json",
		Args:    exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			_, c, err := e.ownerSession()
			if err != nil {
				return err
			}
			d, err := c.RemoveDomain(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			if asJSON {
				return e.jsonOut(domainJSON(d))
			}
			fmt.Fprintf(e.stdout, "Removed mail domain %s.\n", d.Name)
			return nil
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the domain as JSON")
	return cmd
}

func inboxCmd(e *env) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "inbox",
		Short: "Your agents' inboxes: create, list, delete, grant, revoke",
		Long: `Each agent gets its own inbox on one of your domains, at an address derived from
its wallet (a<12 hex>@DOMAIN). Its agent holds read, send and admin on it; you can
grant read or send to another of your agents. Every change is a ledger entry
your account signs, and shows in agentkeys usage.`,
		Example: "  agentkeys inbox create --agent ci-bot\n  agentkeys inbox list\n  agentkeys inbox grant a1b2c3d4e5f6@agents.example.com --agent helper read",
	}
	cmd.AddCommand(inboxCreateCmd(e), inboxListCmd(e), inboxDeleteCmd(e), inboxGrantCmd(e, false), inboxGrantCmd(e, true))
	return cmd
}

// inboxJSON is an inbox as --json prints it.
func inboxJSON(in *apiv1.Inbox, grants []apiv1.Grant) map[string]any {
	out := map[string]any{"address": in.Address, "agent": in.Agent, "domain": in.Domain, "wallet": in.Wallet,
		"created_at": nanoTime(in.CreatedAt), "live": in.DeletedAt == 0}
	if in.DeletedAt != 0 {
		out["deleted_at"] = nanoTime(in.DeletedAt)
	}
	if grants != nil {
		gs := make([]map[string]any, len(grants))
		for i, g := range grants {
			gs[i] = map[string]any{"agent": g.Agent, "rights": g.Rights}
		}
		out["grants"] = gs
	}
	return out
}

func inboxCreateCmd(e *env) *cobra.Command {
	var alias, domain string
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "create --agent ALIAS [--domain DOMAIN]",
		Short: "Create an agent's inbox (instant: its address comes from the agent's wallet)",
		Long: `Create the inbox of agent ALIAS on DOMAIN (default: your one mail domain). Its
address is a<first 12 hex digits of the agent's wallet>@DOMAIN, so it is known at
once and needs no DNS change. The agent holds read, send and admin on it.`,
		Example: "  agentkeys inbox create --agent ci-bot\n  agentkeys inbox create --agent ci-bot --domain agents.example.com --json",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			_, c, err := e.ownerSession()
			if err != nil {
				return err
			}
			in, err := c.CreateInbox(cmd.Context(), alias, domain)
			if err != nil {
				return err
			}
			if asJSON {
				return e.jsonOut(inboxJSON(in, nil))
			}
			fmt.Fprintf(e.stdout, "Inbox %s is agent %s's (read, send, admin).\n", in.Address, in.Agent)
			return nil
		},
	}
	cmd.Flags().StringVar(&alias, "agent", "", "the agent's alias (required)")
	cmd.Flags().StringVar(&domain, "domain", "", "one of your mail domains (default: your only one)")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the inbox as JSON")
	cmd.MarkFlagRequired("agent")
	return cmd
}

func inboxListCmd(e *env) *cobra.Command {
	var all, asJSON bool
	cmd := &cobra.Command{
		Use:     "list",
		Short:   "List your agents' inboxes and who holds what on them",
		Example: "  agentkeys inbox list\n  agentkeys inbox list --all --json",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			_, c, err := e.ownerSession()
			if err != nil {
				return err
			}
			list, err := c.Inboxes(cmd.Context())
			if err != nil {
				return err
			}
			if !all {
				list = slices.DeleteFunc(list, func(l apiv1.InboxListing) bool { return l.DeletedAt != 0 })
			}
			if asJSON {
				out := make([]map[string]any, len(list))
				for i := range list {
					out[i] = inboxJSON(&list[i].Inbox, list[i].Grants)
				}
				return e.jsonOut(map[string]any{"inboxes": out})
			}
			if len(list) == 0 {
				fmt.Fprintln(e.stdout, "No inboxes. Create one: agentkeys inbox create --agent ALIAS")
				return nil
			}
			tw := tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "ADDRESS\tAGENT\tGRANTS\tCREATED\tDELETED")
			for _, l := range list {
				var gs []string
				for _, g := range l.Grants {
					gs = append(gs, g.Agent+":"+strings.Join(g.Rights, "+"))
				}
				deleted := "-"
				if l.DeletedAt != 0 {
					deleted = nanoTime(l.DeletedAt)
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", l.Address, l.Agent, cmpOrDash(strings.Join(gs, " ")), nanoTime(l.CreatedAt), deleted)
			}
			return tw.Flush()
		},
	}
	cmd.Flags().BoolVar(&all, "all", false, "list deleted inboxes too")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print as JSON")
	return cmd
}

func cmpOrDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func inboxDeleteCmd(e *env) *cobra.Command {
	var yes, asJSON bool
	cmd := &cobra.Command{
		Use:   "delete ADDRESS",
		Short: "Delete an inbox: its mail is refused from then on",
		Long: `Delete the inbox at ADDRESS and every grant on it: the mail edge refuses mail to
it from then on. Mail already stored stays in the object store; creating the
agent's inbox again brings the same address back. On a terminal it asks first;
--yes skips the question, and is needed when stdin is not a terminal.`,
		Example: "  agentkeys inbox delete a1b2c3d4e5f6@agents.example.com\n  agentkeys inbox delete a1b2c3d4e5f6@agents.example.com --yes --json",
		Args:    exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			_, c, err := e.ownerSession()
			if err != nil {
				return err
			}
			if !yes {
				ok, err := e.confirm(fmt.Sprintf("Delete inbox %s? Mail to it is refused from then on.", args[0]))
				if err != nil {
					return err
				}
				if !ok {
					if asJSON {
						return e.jsonOut(map[string]any{"address": args[0], "deleted": false})
					}
					fmt.Fprintln(e.stdout, "Not deleted.")
					return nil
				}
			}
			in, err := c.DeleteInbox(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			if asJSON {
				out := inboxJSON(in, nil)
				out["deleted"] = true
				return e.jsonOut(out)
			}
			fmt.Fprintf(e.stdout, "Deleted inbox %s (agent %s).\n", in.Address, in.Agent)
			return nil
		},
	}
	cmd.Flags().BoolVar(&yes, "yes", false, "do not ask for confirmation")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the result as JSON")
	return cmd
}

func inboxGrantCmd(e *env, revoke bool) *cobra.Command {
	var alias string
	var asJSON bool
	use, short, verb := "grant", "Let another of your agents read or send with an inbox", "Granted"
	if revoke {
		use, short, verb = "revoke", "Take an agent's read or send right on an inbox away", "Revoked"
	}
	cmd := &cobra.Command{
		Use:   use + " ADDRESS --agent ALIAS read|send [read|send]",
		Short: short,
		Long: short + `. Rights: read (list and fetch its mail), send (send
mail from it). Admin stays with the inbox's own agent. The change acts on the
agent's next request.`,
		Example: "  agentkeys inbox " + use + " a1b2c3d4e5f6@agents.example.com --agent helper read\n" +
			"  agentkeys inbox " + use + " a1b2c3d4e5f6@agents.example.com --agent helper read send --json",
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) < 2 || len(args) > 3 {
				return problem.Newf(problem.BadRequest, "usage: agentkeys inbox "+cmd.Use, "%s takes an address and one or two rights, got %d argument(s)", use, len(args))
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			_, c, err := e.ownerSession()
			if err != nil {
				return err
			}
			g, err := c.GrantInbox(cmd.Context(), args[0], alias, args[1:], revoke)
			if err != nil {
				return err
			}
			if asJSON {
				return e.jsonOut(map[string]any{"address": g.Address, "agent": g.Agent, "rights": g.Rights})
			}
			fmt.Fprintf(e.stdout, "%s %s on %s: agent %s now holds %s.\n", verb, strings.Join(args[1:], " and "), g.Address, g.Agent, cmpOrDash(strings.Join(g.Rights, ", ")))
			return nil
		},
	}
	cmd.Flags().StringVar(&alias, "agent", "", "the agent's alias (required)")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the result as JSON")
	cmd.MarkFlagRequired("agent")
	return cmd
}

func mailCmd(e *env) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "mail",
		Short: "Agent mail setup: the DNS records of a mail domain, the AWS (SES) setup",
		Example: "  agentkeys mail dns --domain agents.example.com\n" +
			"  agentkeys mail aws-setup --domain agents.example.com --bucket agent-mail --account 123456789012",
	}
	cmd.AddCommand(mailDNSCmd(e), mailAWSSetupCmd(e))
	return cmd
}

func mailDNSCmd(e *env) *cobra.Command {
	var domain, mx, dmarc string
	var ttl int
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "dns --domain DOMAIN",
		Short: "Print the DNS records of one of your mail domains as a BIND zone",
		Long: `Print what DOMAIN publishes for its agents' mail, as a BIND zone fragment: MX
(--mx, default mail.DOMAIN: point it at your mail edge), SPF (the MX may send),
both DKIM keys of the domain — the enclave's Ed25519 key dkim/DOMAIN/v1 (RFC
8463, selector ak1) and its RSA-2048 key (selector ak1rsa, for the many receivers
that verify only RSA) — and DMARC (--dmarc, default quarantine). Mail your agents
send carries a signature by each.`,
		Example: "  agentkeys mail dns --domain agents.example.com > agents.example.com.zone\n" +
			"  agentkeys mail dns --domain agents.example.com --mx mx.example.com --dmarc reject --json",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if !slices.Contains(maildns.DMARCPolicies, dmarc) {
				return problem.Newf(problem.BadRequest, "use --dmarc none, quarantine or reject", "%q is not a DMARC policy", dmarc)
			}
			if ttl < 60 || ttl > 604800 {
				return problem.New(problem.BadRequest, "--ttl is seconds between 60 and 604800", "use e.g. --ttl 3600")
			}
			d := maildns.Normalize(domain)
			if mx == "" {
				mx = "mail." + d
			}
			if mx = maildns.Normalize(mx); !maildns.Valid(mx) {
				return problem.Newf(problem.BadRequest, "pass the mail edge's host name, e.g. --mx mail.example.com", "%q is not a host name", mx)
			}
			_, c, err := e.ownerSession()
			if err != nil {
				return err
			}
			keys, err := c.DKIMKeys(cmd.Context(), d)
			if err != nil {
				return err
			}
			z := maildns.Zone{Domain: d, MX: mx, TTL: ttl, DKIM: keys, DMARC: dmarc}
			if asJSON {
				return e.jsonOut(map[string]any{"domain": d, "mx": mx, "ttl": ttl, "dkim": keys, "dmarc": dmarc, "zone": z.BIND()})
			}
			_, err = fmt.Fprint(e.stdout, z.BIND())
			return err
		},
	}
	cmd.Flags().StringVar(&domain, "domain", "", "one of your mail domains (required)")
	cmd.Flags().StringVar(&mx, "mx", "", "the host receiving the domain's mail (default mail.DOMAIN)")
	cmd.Flags().IntVar(&ttl, "ttl", 3600, "record TTL in seconds")
	cmd.Flags().StringVar(&dmarc, "dmarc", "quarantine", "DMARC policy: none, quarantine or reject")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the records and the zone as JSON")
	cmd.MarkFlagRequired("domain")
	return cmd
}
