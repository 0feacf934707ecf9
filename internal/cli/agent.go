package cli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/agentkeys/agentkeys/internal/apiv1"
	"github.com/agentkeys/agentkeys/internal/client"
	"github.com/agentkeys/agentkeys/internal/home"
	"github.com/agentkeys/agentkeys/internal/problem"
)

func agentCmd(e *env) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "agent",
		Short: "Pair agents and manage them: pending, approve, deny, list, scope, revoke, teardown",
		Long: `An agent's daemon asks to pair (agentkeys daemon pair) and shows a 6-digit VVC and
its key's fingerprint. You see the request with agentkeys agent pending (with the
address it came from and when), check that the VVC and daemon key match, and
approve it. The agent then reads the credentials in its scope; every change here
is a ledger entry and shows in agentkeys usage --agent ALIAS.`,
		Example: "  agentkeys agent pending\n  agentkeys agent approve 1f0c9a7e2b4d6c8a\n  agentkeys agent scope ci-bot --add github\n  agentkeys agent revoke ci-bot",
	}
	cmd.AddCommand(agentPendingCmd(e), agentDecideCmd(e, "approve"), agentDecideCmd(e, "deny"), agentListCmd(e),
		agentScopeCmd(e), agentRevokeCmd(e), agentTeardownCmd(e))
	return cmd
}

// ago says how long before now unix was, e.g. "2m5s ago".
func ago(unix int64) string {
	return max(time.Since(time.Unix(unix, 0)).Round(time.Second), 0).String() + " ago"
}

func expiresIn(unix int64) string {
	d := time.Until(time.Unix(unix, 0)).Round(time.Second)
	if d <= 0 {
		return "expired"
	}
	return d.String()
}

func agentPendingCmd(e *env) *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "pending",
		Short: "List pair requests waiting for your approval",
		Long: `List the pair requests waiting for you: id, VVC, the daemon key's fingerprint,
alias, scope, the address the request came from, when it was made and when it
expires. Approve only the request whose VVC and key fingerprint the daemon shows.`,
		Example: "  agentkeys agent pending\n  agentkeys agent pending --json",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			_, c, err := e.ownerSession()
			if err != nil {
				return err
			}
			list, err := c.PendingPairs(cmd.Context())
			if err != nil {
				return err
			}
			if asJSON {
				out := make([]map[string]any, len(list))
				for i, p := range list {
					out[i] = map[string]any{"id": p.ID, "vvc": p.VVC, "fingerprint": p.Fingerprint, "alias": p.Alias, "scope": p.Scope,
						"source": p.Source, "requested_at": expiry(p.CreatedAt), "expires_at": expiry(p.ExpiresAt)}
				}
				return json.NewEncoder(e.stdout).Encode(map[string]any{"requests": out})
			}
			if len(list) == 0 {
				fmt.Fprintln(e.stdout, "No pending pair requests. A daemon asks with: agentkeys daemon pair --owner OWNER --alias NAME --scope SERVICES")
				return nil
			}
			tw := tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "ID\tVVC\tDAEMON KEY\tALIAS\tSCOPE\tFROM\tREQUESTED\tEXPIRES IN")
			for _, p := range list {
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", p.ID, p.VVC, p.Fingerprint, p.Alias, strings.Join(p.Scope, ","),
					p.Source, ago(p.CreatedAt), expiresIn(p.ExpiresAt))
			}
			return tw.Flush()
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print as JSON")
	return cmd
}

func agentDecideCmd(e *env, decision string) *cobra.Command {
	var yes, asJSON bool
	short := "Approve a pair request (after checking its VVC and daemon key)"
	example := "  agentkeys agent approve 1f0c9a7e2b4d6c8a\n  agentkeys agent approve 1f0c9a7e2b4d6c8a --yes --json"
	if decision == "deny" {
		short, example = "Deny a pair request", "  agentkeys agent deny 1f0c9a7e2b4d6c8a\n  agentkeys agent deny 1f0c9a7e2b4d6c8a --json"
	}
	cmd := &cobra.Command{
		Use:     decision + " ID",
		Short:   short,
		Example: example,
		Args:    exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			id := args[0]
			s, c, err := e.ownerSession()
			if err != nil {
				return err
			}
			d, err := e.dir()
			if err != nil {
				return err
			}
			key, err := d.Identity()
			if errors.Is(err, home.ErrMissing) {
				return problem.New(problem.Denied, "this machine has no owner identity key to sign the decision", "run agentkeys init on the owner's machine")
			} else if err != nil {
				return err
			}
			p, err := c.PendingPair(cmd.Context(), id)
			if err != nil {
				return err
			}
			info := e.stdout
			if asJSON {
				info = e.stderr // stdout holds the JSON only
			}
			fmt.Fprintf(info, "Pair request %s from %s at %s: agent %q asks for scope [%s]; daemon key %s, VVC %s.\n",
				p.ID, p.Source, expiry(p.CreatedAt), p.Alias, strings.Join(p.Scope, ","), p.Fingerprint, p.VVC)
			if decision == "approve" && !yes {
				ok, err := e.confirm(fmt.Sprintf("Does the daemon show VVC %s and daemon key %s?", p.VVC, p.Fingerprint))
				if err != nil {
					return err
				}
				if !ok {
					if asJSON {
						return e.jsonOut(map[string]any{"id": id, "alias": p.Alias, "approved": false})
					}
					fmt.Fprintln(e.stdout, "Not approved. Deny it with: agentkeys agent deny "+id)
					return nil
				}
			}
			a, err := c.DecidePair(cmd.Context(), key, s.Server, p, decision, time.Now())
			if err != nil {
				return err
			}
			if decision == "deny" {
				if asJSON {
					return e.jsonOut(map[string]any{"id": id, "alias": p.Alias, "denied": true})
				}
				fmt.Fprintf(e.stdout, "Denied pair request %s (%s).\n", id, p.Alias)
				return nil
			}
			if asJSON {
				return e.jsonOut(map[string]any{"id": id, "alias": a.Alias, "omni": a.Omni, "wallet": a.Wallet, "generation": a.Generation,
					"scope": a.Scope, "status": a.Status, "expires_at": expiry(a.Expires)})
			}
			fmt.Fprintf(e.stdout, "Approved: agent %s (generation %d, omni %s), scope [%s], session until %s.\n",
				a.Alias, a.Generation, a.Omni, strings.Join(a.Scope, ","), expiry(a.Expires))
			return nil
		},
	}
	if decision == "approve" {
		cmd.Flags().BoolVar(&yes, "yes", false, "do not ask whether the VVC and daemon key match")
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the result as JSON")
	return cmd
}

func agentListCmd(e *env) *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:     "list",
		Short:   "List your agents",
		Example: "  agentkeys agent list\n  agentkeys agent list --json",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			_, c, err := e.ownerSession()
			if err != nil {
				return err
			}
			list, err := c.Agents(cmd.Context())
			if err != nil {
				return err
			}
			if asJSON {
				out := make([]map[string]any, len(list))
				for i, a := range list {
					out[i] = map[string]any{"alias": a.Alias, "omni": a.Omni, "wallet": a.Wallet, "generation": a.Generation,
						"scope": a.Scope, "status": a.Status, "created": nanoTime(a.Created), "expires_at": expiry(a.Expires)}
				}
				return json.NewEncoder(e.stdout).Encode(map[string]any{"agents": out})
			}
			if len(list) == 0 {
				fmt.Fprintln(e.stdout, "No agents yet. Pair one: run agentkeys daemon pair in its sandbox, then agentkeys agent pending.")
				return nil
			}
			tw := tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "ALIAS\tSTATUS\tGEN\tSCOPE\tOMNI\tSESSION UNTIL")
			for _, a := range list {
				fmt.Fprintf(tw, "%s\t%s\t%d\t%s\t%.16s…\t%s\n", a.Alias, a.Status, a.Generation, strings.Join(a.Scope, ","), a.Omni, expiry(a.Expires))
			}
			return tw.Flush()
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print as JSON")
	return cmd
}

func agentScopeCmd(e *env) *cobra.Command {
	var add, remove, set []string
	var list, asJSON bool
	cmd := &cobra.Command{
		Use:   "scope AGENT",
		Short: "Show or change which services an agent may read",
		Long: `Scope entries are service names (and oidc:* or oidc:<audience> for cloud tokens).
A change acts on the agent's very next request.`,
		Example: "  agentkeys agent scope ci-bot --list\n  agentkeys agent scope ci-bot --add github\n  agentkeys agent scope ci-bot --remove openai\n  agentkeys agent scope ci-bot --set openai,github",
		Args:    exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			alias := args[0]
			_, c, err := e.ownerSession()
			if err != nil {
				return err
			}
			edit := apiv1.ScopeEdit{Add: add, Remove: remove}
			if cmd.Flags().Changed("set") {
				edit.Set = append([]string{}, set...)
			}
			changing := len(add)+len(remove) > 0 || edit.Set != nil
			var a *apiv1.Agent
			if !changing || list {
				all, err := c.Agents(cmd.Context())
				if err != nil {
					return err
				}
				for i := range all {
					if all[i].Alias == alias && all[i].Status != apiv1.AgentTornDown {
						a = &all[i]
					}
				}
				if a == nil {
					return problem.Newf(problem.NotFound, "list your agents with agentkeys agent list", "no agent %q", alias)
				}
			}
			if changing {
				if a, err = c.SetScope(cmd.Context(), alias, edit); err != nil {
					return err
				}
			}
			if asJSON {
				return e.jsonOut(map[string]any{"alias": a.Alias, "generation": a.Generation, "status": a.Status, "scope": a.Scope})
			}
			if changing {
				fmt.Fprintf(e.stdout, "Scope of %s is now: %s\n", a.Alias, scopeText(a.Scope))
				return nil
			}
			fmt.Fprintln(e.stdout, scopeText(a.Scope))
			return nil
		},
	}
	cmd.Flags().StringSliceVar(&add, "add", nil, "add services (comma-separated or repeated)")
	cmd.Flags().StringSliceVar(&remove, "remove", nil, "remove services")
	cmd.Flags().StringSliceVar(&set, "set", nil, "replace the scope with these services")
	cmd.Flags().BoolVar(&list, "list", false, "print the scope (the default without a change)")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print as JSON")
	return cmd
}

func scopeText(s []string) string {
	if len(s) == 0 {
		return "(empty)"
	}
	return strings.Join(s, ",")
}

// activeAgent opens the owner's session and finds its agent alias that is not
// torn down.
func (e *env) activeAgent(ctx context.Context, alias string) (*client.Session, *apiv1.Agent, error) {
	_, c, err := e.ownerSession()
	if err != nil {
		return nil, nil, err
	}
	a, err := c.ActiveAgent(ctx, alias)
	if err != nil {
		return nil, nil, err
	}
	return c, a, nil
}

func agentRevokeCmd(e *env) *cobra.Command {
	var yes, asJSON bool
	cmd := &cobra.Command{
		Use:   "revoke AGENT",
		Short: "Revoke all sessions of an agent (acts on its next request)",
		Long: `Revoke the agent's sessions: its daemon's next request fails with REVOKED, and
its cached cloud credentials are no longer served. Its credentials stay (agent
teardown deletes them); pairing the alias again makes a new generation. On a
terminal it asks first; --yes skips the question, and is needed when stdin is
not a terminal.`,
		Example: "  agentkeys agent revoke ci-bot\n  agentkeys agent revoke ci-bot --yes --json",
		Args:    exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, a, err := e.activeAgent(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			if !yes {
				ok, err := e.confirm(fmt.Sprintf("Revoke agent %s (generation %d, %s)? Its daemon's next request fails.", a.Alias, a.Generation, a.Status))
				if err != nil {
					return err
				}
				if !ok {
					if asJSON {
						return e.jsonOut(agentJSON(a))
					}
					fmt.Fprintln(e.stdout, "Not revoked.")
					return nil
				}
			}
			if a, err = c.RevokeAgent(cmd.Context(), args[0]); err != nil {
				return err
			}
			if asJSON {
				return e.jsonOut(agentJSON(a))
			}
			fmt.Fprintf(e.stdout, "Revoked agent %s (generation %d). Pair it again to give it a new session.\n", a.Alias, a.Generation)
			return nil
		},
	}
	cmd.Flags().BoolVar(&yes, "yes", false, "do not ask for confirmation")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the agent as JSON")
	return cmd
}

// agentJSON is an agent as --json prints it.
func agentJSON(a *apiv1.Agent) map[string]any {
	return map[string]any{"alias": a.Alias, "omni": a.Omni, "wallet": a.Wallet, "generation": a.Generation,
		"scope": a.Scope, "status": a.Status, "expires_at": expiry(a.Expires)}
}

func agentTeardownCmd(e *env) *cobra.Command {
	var yes, asJSON bool
	cmd := &cobra.Command{
		Use:   "teardown AGENT",
		Short: "Delete an agent's own credentials and revoke its sessions",
		Long: `Delete every credential stored for the agent (--agent AGENT) and revoke its
sessions. On a terminal it asks first, saying how many credentials go; --yes
skips the question, and is needed when stdin is not a terminal.`,
		Example: "  agentkeys agent teardown ci-bot\n  agentkeys agent teardown ci-bot --yes --json",
		Args:    exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, a, err := e.activeAgent(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			if !yes {
				creds, err := c.AgentCredentials(cmd.Context(), a.Alias)
				if err != nil {
					return err
				}
				n := len(creds)
				ok, err := e.confirm(fmt.Sprintf("Tear down agent %s (generation %d): delete its %d credential(s) and revoke its sessions?", a.Alias, a.Generation, n))
				if err != nil {
					return err
				}
				if !ok {
					if asJSON {
						return e.jsonOut(map[string]any{"alias": a.Alias, "generation": a.Generation, "deleted": 0, "torn_down": false})
					}
					fmt.Fprintln(e.stdout, "Nothing changed.")
					return nil
				}
			}
			r, err := c.Teardown(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			if asJSON {
				return e.jsonOut(map[string]any{"alias": r.Alias, "generation": a.Generation, "deleted": r.Deleted, "torn_down": true})
			}
			fmt.Fprintf(e.stdout, "Tore down agent %s: %d credential(s) deleted, sessions revoked.\n", r.Alias, r.Deleted)
			return nil
		},
	}
	cmd.Flags().BoolVar(&yes, "yes", false, "do not ask for confirmation")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the result as JSON")
	return cmd
}
