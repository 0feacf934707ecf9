package cli

// Operator commands outside the server group: they sign with the operator
// (governance) key that the server writes into its data directory, so they
// link what reads it. Owner commands stay out of this file and the other
// server-side files (server.go, audit.go, release.go): package fence's TestDeps
// holds them to the client side.

import (
	"fmt"
	"time"

	"github.com/agentkeys/agentkeys/internal/client"
	"github.com/spf13/cobra"
)

func oidcRotateCmd(e *env) *cobra.Command {
	var server, keyPath string
	var window time.Duration
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "rotate",
		Short: "Rotate the issuer's signing key (operator; governance-signed)",
		Long: `Sends a request signed with the operator (governance) key. The broker derives the
next oidc/issuer/vN, registers it on the ledger, publishes it beside the current
key and signs new tokens with it; the old key stays in the JWKS for --window
(at least the longest token lifetime plus clock skew), so tokens it signed keep
verifying until they expire.`,
		Example: "  agentkeys oidc rotate --server http://127.0.0.1:8090 --window 24h\n" +
			"  agentkeys oidc rotate --server https://keys.example.com --operator-key /secure/operator.key --window 2h",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			key, err := e.operatorKey(keyPath)
			if err != nil {
				return err
			}
			c, err := client.New(server)
			if err != nil {
				return err
			}
			res, err := c.RotateOIDC(cmd.Context(), int64(window/time.Second), key)
			if err != nil {
				return err
			}
			if asJSON {
				return e.printJSON(res)
			}
			fmt.Fprintf(e.stdout, "Rotated: new key v%d (kid %s) signs new tokens; v%d (kid %s) stays published until %s.\n",
				res.Key.Version, res.Key.Kid, res.Previous.Version, res.Previous.Kid, unixOrDash(res.Previous.ActiveUntil))
			return nil
		},
	}
	e.serverFlag(cmd, &server, DefaultServer, "the broker URL")
	cmd.Flags().StringVar(&keyPath, "operator-key", "", "the operator key (default $AGENTKEYS_HOME/server/operator.key)")
	cmd.Flags().DurationVar(&window, "window", 24*time.Hour, "how long the old key stays published")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print as JSON")
	return cmd
}
