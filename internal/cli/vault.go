package cli

import (
	"cmp"
	"encoding/json"
	"fmt"
	"net/url"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/agentkeys/agentkeys/internal/apiv1"
	"github.com/agentkeys/agentkeys/internal/client"
	"github.com/agentkeys/agentkeys/internal/daemon"
	"github.com/agentkeys/agentkeys/internal/problem"
)

func storeCmd(e *env) *cobra.Command {
	var agent, fromFile, approval string
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "store SERVICE",
		Short: "Store a credential, encrypted to the broker's attested enclave",
		Long: `Store the secret for SERVICE. The secret is read from stdin (hidden prompt on a
terminal) or --from-file, never from the command line; one trailing newline is
removed. The CLI verifies the enclave's quote and encrypts the secret to its
shielding key (hybrid ML-KEM-768 + X25519 HPKE), bound to your account, the agent
and the service; the broker stores only ciphertext. Storing again replaces the
secret with a new version.`,
		Example: "  agentkeys store openai < ~/openai.key\n  agentkeys store openai --from-file openai.key --json\n  printf %s \"$KEY\" | agentkeys store github --agent ci-bot\n" +
			"  agentkeys store bank --from-file bank.txt --approval required",
		Args: exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			service := args[0]
			if err := client.CheckNames(service, agent); err != nil {
				return err
			}
			s, c, err := e.ownerSession()
			if err != nil {
				return err
			}
			secret, err := e.readSecret(fromFile)
			if err != nil {
				return err
			}
			defer clear(secret)
			cr, err := c.StoreSealed(cmd.Context(), s.PlatformKey, s.Omni, apiv1.StoreBody{Service: service, Agent: agent, Approval: approval}, secret)
			if err != nil {
				return err
			}
			if asJSON {
				return e.jsonOut(map[string]any{"service": cr.Service, "agent": cr.Agent, "version": cr.Version,
					"approval": cr.Approval, "stored": nanoTime(cr.Stored)})
			}
			fmt.Fprintf(e.stdout, "Stored %s%s (version %d).\n", service, forAgentText(cr.Agent), cr.Version)
			return nil
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the stored version as JSON")
	cmd.Flags().StringVar(&agent, "agent", "", "store for one agent (alias) instead of owner-wide")
	cmd.Flags().StringVar(&fromFile, "from-file", "", "read the secret from this file instead of stdin")
	cmd.Flags().StringVar(&approval, "approval", "none", "required: every read needs your approval (agentkeys approve)")
	return cmd
}

func forAgentText(agent string) string {
	if agent == "" || agent == apiv1.OwnerWide {
		return ""
	}
	return " for agent " + agent
}

func readCmd(e *env) *cobra.Command {
	var agent string
	var asJSON, noWait bool
	var timeout time.Duration
	cmd := &cobra.Command{
		Use:   "read SERVICE",
		Short: "Print a stored credential (the read is audited)",
		Long: `Print the secret of SERVICE on stdout. The broker re-encrypts it inside the
enclave to a one-time key of this command, after the read is durably audited.
A credential stored with --approval required is released only after the owner
approves the read (agentkeys approve ID, e.g. in another terminal): read waits
for it, up to --timeout, asking again every 2 s (a countdown on a terminal, one
line otherwise); retries reuse the same request. --no-wait fails at once with
APPROVAL_REQUIRED and the request's ID instead.`,
		Example: "  agentkeys read openai\n  agentkeys read github --agent ci-bot --json\n" +
			"  agentkeys read bank --timeout 5m\n  agentkeys read bank --no-wait",
		Args: exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := checkTimeout(timeout); err != nil {
				return err
			}
			if noWait {
				timeout = 0
			}
			_, c, err := e.ownerSession()
			if err != nil {
				return err
			}
			k, err := newHPKEKey()
			if err != nil {
				return err
			}
			progress, done := e.approvalProgress(args[0], timeout)
			res, err := client.AwaitApproval(cmd.Context(), timeout, func() (*apiv1.ReadResult, error) {
				return c.Read(cmd.Context(), args[0], apiv1.ReadBody{Agent: agent, Recipient: k.PublicKey().Bytes()})
			}, progress)
			done()
			if err != nil {
				return err
			}
			value, err := openFor(k, res.Info, res.Sealed)
			if err != nil {
				return problem.New(problem.Internal, "the answer does not open with this command's key", "retry")
			}
			defer clear(value)
			if asJSON {
				return json.NewEncoder(e.stdout).Encode(map[string]any{"service": res.Service, "agent": res.Agent, "version": res.Version, "value": string(value)})
			}
			e.stdout.Write(value)
			fmt.Fprintln(e.stdout)
			return nil
		},
	}
	cmd.Flags().StringVar(&agent, "agent", "", "read the credential stored for this agent")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print as JSON")
	cmd.Flags().BoolVar(&noWait, "no-wait", false, "do not wait for the owner's approval: fail with APPROVAL_REQUIRED")
	cmd.Flags().DurationVar(&timeout, "timeout", client.DefaultApprovalWait, "how long to wait for the owner's approval (1s to 5m)")
	return cmd
}

// maxApprovalWait bounds --timeout, as get_credential's wait_seconds is
// bounded: a pending request lapses after the broker's approval TTL (10
// minutes by default) anyway.
const maxApprovalWait = daemon.MaxWaitSeconds * time.Second

func checkTimeout(d time.Duration) error {
	if d < time.Second || d > maxApprovalWait {
		return problem.Newf(problem.BadRequest, "pass e.g. --timeout 5m, or --no-wait not to wait at all",
			"--timeout %s is not between 1s and %s", d, maxApprovalWait)
	}
	return nil
}

// approvalProgress shows a read waiting for the owner's approval of service on
// stderr: a countdown rewritten in place on a terminal, else one line per
// request (a log stays readable). done ends the countdown's line.
func (e *env) approvalProgress(service string, wait time.Duration) (progress func(problem.Approval, time.Duration), done func()) {
	tty := isTerminal(e.stderr)
	shown := ""
	progress = func(a problem.Approval, left time.Duration) {
		if tty {
			fmt.Fprintf(e.stderr, "\r\033[KWaiting for the owner's approval of %s: agentkeys approve %s (%s left)", service, a.ID, left.Round(time.Second))
		} else if shown != a.ID {
			fmt.Fprintf(e.stderr, "Waiting up to %s for the owner's approval of %s: agentkeys approve %s\n", wait, service, a.ID)
		}
		shown = a.ID
	}
	done = func() {
		if tty && shown != "" {
			fmt.Fprintln(e.stderr)
		}
	}
	return progress, done
}

func listCmd(e *env) *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:     "list",
		Short:   "List stored credentials (names only)",
		Example: "  agentkeys list\n  agentkeys list --json",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			_, c, err := e.ownerSession()
			if err != nil {
				return err
			}
			list, err := c.List(cmd.Context())
			if err != nil {
				return err
			}
			if asJSON {
				return json.NewEncoder(e.stdout).Encode(map[string]any{"credentials": list})
			}
			if len(list) == 0 {
				fmt.Fprintln(e.stdout, "No credentials stored yet. Add one with: agentkeys store SERVICE < secret.txt")
				return nil
			}
			tw := tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "SERVICE\tAGENT\tVERSION\tAPPROVAL\tSTORED")
			for _, cr := range list {
				fmt.Fprintf(tw, "%s\t%s\t%d\t%s\t%s\n", cr.Service, cr.Agent, cr.Version, cr.Approval, nanoTime(cr.Stored))
			}
			return tw.Flush()
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print as JSON")
	return cmd
}

func nanoTime(n int64) string { return time.Unix(0, n).UTC().Format(time.RFC3339) }

func rmCmd(e *env) *cobra.Command {
	var agent string
	var yes, asJSON bool
	cmd := &cobra.Command{
		Use:   "rm SERVICE",
		Short: "Delete a stored credential (recorded on the ledger)",
		Long: `Delete the credential of SERVICE (owner-wide, or --agent's). On a terminal it
asks first; --yes skips the question, and is needed when stdin is not a terminal.`,
		Example: "  agentkeys rm openai\n  agentkeys rm github --agent ci-bot --yes --json",
		Args:    exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			service := args[0]
			_, c, err := e.ownerSession()
			if err != nil {
				return err
			}
			want := cmp.Or(agent, apiv1.OwnerWide)
			cr, err := c.Credential(cmd.Context(), service, agent)
			if err != nil {
				return err
			}
			if !yes {
				ok, err := e.confirm(fmt.Sprintf("Delete %s%s (version %d)? Readers lose it at once.", service, forAgentText(agent), cr.Version))
				if err != nil {
					return err
				}
				if !ok {
					if asJSON {
						return e.jsonOut(map[string]any{"service": service, "agent": want, "version": cr.Version, "deleted": false})
					}
					fmt.Fprintln(e.stdout, "Not deleted.")
					return nil
				}
			}
			if err := c.Delete(cmd.Context(), service, agent); err != nil {
				return err
			}
			if asJSON {
				return e.jsonOut(map[string]any{"service": service, "agent": want, "version": cr.Version, "deleted": true})
			}
			fmt.Fprintf(e.stdout, "Deleted %s%s (version %d).\n", service, forAgentText(agent), cr.Version)
			return nil
		},
	}
	cmd.Flags().StringVar(&agent, "agent", "", "delete the credential stored for this agent")
	cmd.Flags().BoolVar(&yes, "yes", false, "do not ask for confirmation")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the result as JSON")
	return cmd
}

func approveCmd(e *env) *cobra.Command {
	var yes, list, asJSON bool
	cmd := &cobra.Command{
		Use:   "approve [ID]",
		Short: "Approve one read of a high-value credential",
		Long: `A read of a credential stored with --approval required files an approval
request (one per reader and credential: retries reuse it) and waits for it
(agentkeys read, get_credential with wait_seconds) or fails with
APPROVAL_REQUIRED and the request's ID. Approving it allows one read of that
credential by that reader within a short window.`,
		Example: "  agentkeys approve --list\n  agentkeys approve 3f9c2a1b7d4e\n  agentkeys approve 3f9c2a1b7d4e --yes",
		Args:    cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			_, c, err := e.ownerSession()
			if err != nil {
				return err
			}
			if list || len(args) == 0 {
				pending, err := c.PendingApprovals(cmd.Context(), time.Now())
				if err != nil {
					return err
				}
				if asJSON {
					return json.NewEncoder(e.stdout).Encode(map[string]any{"approvals": pending})
				}
				if len(pending) == 0 {
					fmt.Fprintln(e.stdout, "No pending approval requests.")
					return nil
				}
				tw := tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', 0)
				fmt.Fprintln(tw, "ID\tSERVICE\tAGENT\tREADER\tEXPIRES")
				for _, a := range pending {
					fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", a.ID, a.Service, a.Agent, reader(a), expiry(a.Expires))
				}
				return tw.Flush()
			}
			id := args[0]
			target, err := c.PendingApproval(cmd.Context(), id)
			if err != nil {
				return err
			}
			if !yes {
				ok, err := e.confirm(fmt.Sprintf("Allow one read of %s%s by %s?", target.Service, forAgentText(target.Agent), reader(*target)))
				if err != nil {
					return err
				}
				if !ok {
					fmt.Fprintln(e.stdout, "Not approved.")
					return nil
				}
			}
			a, err := c.Approve(cmd.Context(), id)
			if err != nil {
				return err
			}
			fmt.Fprintf(e.stdout, "Approved %s: one read of %s until %s.\n", a.ID, a.Service, expiry(a.Until))
			return nil
		},
	}
	cmd.Flags().BoolVar(&yes, "yes", false, "do not ask for confirmation")
	cmd.Flags().BoolVar(&list, "list", false, "list pending requests")
	cmd.Flags().BoolVar(&asJSON, "json", false, "with --list: print as JSON")
	return cmd
}

// reader names who asks for an approved read.
var reader = client.ApprovalReader

func usageCmd(e *env) *cobra.Command {
	var agent, service, since string
	var from uint64
	var limit int
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "usage",
		Short: "Show the audit trail of your credentials and agents",
		Long: `Show who did what with your credentials and agents: stores, reads, denied reads,
deletes, approvals, pairing and scope changes, identity-token mints; from the
ledger, oldest first. --since takes a duration (24h) or a date/time (2026-11-29
or RFC 3339). Without --limit it shows every row; --limit N shows one page of at
most N rows (1 to 1000), and when more may follow, the JSON's "next" (and a hint
on stderr) is the --from of the next page: the ledger seq to continue at, so
pages never shift as entries are added.`,
		Example: "  agentkeys usage\n  agentkeys usage --service openai --since 24h --json\n" +
			"  agentkeys usage --agent ci-bot --limit 50\n  agentkeys usage --agent ci-bot --limit 50 --from 1234",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			paged := cmd.Flags().Changed("limit")
			if paged && (limit < 1 || limit > 1000) {
				return problem.Newf(problem.BadRequest, "pass --limit 1 to 1000", "--limit %d is out of range", limit)
			}
			q := url.Values{"limit": {fmt.Sprint(limit)}}
			if agent != "" {
				q.Set("agent", agent)
			}
			if service != "" {
				q.Set("service", service)
			}
			if since != "" {
				t, err := parseSince(since, time.Now())
				if err != nil {
					return err
				}
				q.Set("since", t.UTC().Format(time.RFC3339Nano))
			}
			_, c, err := e.ownerSession()
			if err != nil {
				return err
			}
			// One page with --limit; without it every page, each of at most 1000 rows.
			page, err := c.UsageFrom(cmd.Context(), q, from, paged)
			if err != nil {
				return err
			}
			if asJSON {
				out := make([]map[string]any, len(page.Usage))
				for i, u := range page.Usage {
					out[i] = map[string]any{"time": nanoTime(u.Time), "actor": actorText(u), "action": u.Action,
						"service": u.Service, "agent": u.Agent, "result": u.Result, "detail": u.Detail, "seq": u.Seq}
				}
				return e.jsonOut(map[string]any{"usage": out, "next": page.Next})
			}
			tw := tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "TIME\tACTOR\tACTION\tSERVICE\tRESULT")
			for _, u := range page.Usage {
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", nanoTime(u.Time), actorText(u), u.Action, u.Service, strings.TrimSpace(u.Result+" "+u.Detail))
			}
			if err := tw.Flush(); err != nil {
				return err
			}
			if page.Next != nil {
				fmt.Fprintf(e.stderr, "More rows may follow: add --from %d\n", *page.Next)
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&agent, "agent", "", "only rows about this agent")
	cmd.Flags().StringVar(&service, "service", "", "only rows about this service")
	cmd.Flags().StringVar(&since, "since", "", "only rows after this duration ago or date")
	cmd.Flags().IntVar(&limit, "limit", 1000, "show one page of this many rows (1 to 1000); default: every row")
	cmd.Flags().Uint64Var(&from, "from", 0, "continue at this ledger seq (the \"next\" of the previous page)")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print as JSON")
	return cmd
}

func actorText(u apiv1.Usage) string {
	if u.Alias != "" {
		return "agent:" + u.Alias
	}
	return u.ActorRole
}

func parseSince(s string, now time.Time) (time.Time, error) {
	if d, err := time.ParseDuration(s); err == nil && d > 0 {
		return now.Add(-d), nil
	}
	for _, layout := range []string{time.RFC3339Nano, "2006-01-02T15:04", "2006-01-02"} {
		if t, err := time.Parse(layout, s); err == nil {
			return t, nil
		}
	}
	return time.Time{}, problem.Newf(problem.BadRequest, "use a duration like 24h or a date like 2026-11-29", "--since %q is neither a duration nor a date", s)
}

// exactArgs is cobra.ExactArgs with a §11 usage error.
func exactArgs(n int) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		if len(args) != n {
			return problem.Newf(problem.BadRequest, "usage: agentkeys "+cmd.Use, "%s takes %d argument(s), got %d", cmd.Name(), n, len(args))
		}
		return nil
	}
}
