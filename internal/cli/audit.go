package cli

import (
	"encoding/hex"
	"encoding/json"
	"fmt"

	"github.com/spf13/cobra"

	"github.com/agentkeys/agentkeys/internal/audit"
	"github.com/agentkeys/agentkeys/internal/client"
	"github.com/agentkeys/agentkeys/internal/problem"
)

func auditCmd(e *env) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "audit",
		Short: "Check the ledger",
		Example: "  agentkeys audit verify --server http://127.0.0.1:8090\n" +
			"  agentkeys audit verify --data-dir ~/.agentkeys/server",
	}
	cmd.AddCommand(auditVerifyCmd(e))
	return cmd
}

func auditVerifyCmd(e *env) *cobra.Command {
	var server, dataDir, pin string
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "verify",
		Short: "Verify every ledger entry: links, hashes, origins, signatures",
		Long: `Verify the ledger from genesis to head.

--server URL checks what any client can: the enclave quote, then every public
entry's hash link, origin and signature, with keys from /v1/enclave and genesis.
--data-dir DIR (operator, offline) checks the stored chain and also re-folds the
state from the entries and compares it with the stored state.

Exit 0 with a one-line summary when valid; otherwise exit 1 naming the first bad seq.`,
		Example: "  agentkeys audit verify --server http://127.0.0.1:8090\n" +
			"  agentkeys audit verify --data-dir ~/.agentkeys/server --json",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if (server == "") == (dataDir == "") {
				return problem.New(problem.BadRequest, "pass exactly one of --server and --data-dir",
					"agentkeys audit verify --server http://127.0.0.1:8090")
			}
			var sum audit.Summary
			var err error
			if dataDir != "" {
				sum, err = audit.VerifyDataDir(cmd.Context(), dataDir)
			} else {
				c, cerr := client.New(server)
				if cerr != nil {
					return cerr
				}
				var pinKey []byte
				if pin != "" {
					if pinKey, err = hex.DecodeString(pin); err != nil || len(pinKey) != 32 {
						return problem.New(problem.BadRequest, "--platform-key must be 64 hex characters", "pass the platform attestation public key you trust")
					}
				}
				sum, err = audit.VerifyServer(cmd.Context(), c, pinKey)
			}
			if err != nil {
				return err
			}
			if asJSON {
				return json.NewEncoder(e.stdout).Encode(sum)
			}
			fmt.Fprintln(e.stdout, sum.Line())
			return nil
		},
	}
	cmd.Flags().StringVar(&server, "server", "", "broker URL to verify through its public API")
	cmd.Flags().StringVar(&dataDir, "data-dir", "", "server data dir to verify offline (re-folds state)")
	cmd.Flags().StringVar(&pin, "platform-key", "", "pin the platform attestation public key (hex) instead of trusting the one the quote names")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the summary as JSON")
	return cmd
}
