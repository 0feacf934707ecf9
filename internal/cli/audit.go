package cli

import (
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/spf13/cobra"

	"github.com/agentkeys/agentkeys/internal/audit"
	"github.com/agentkeys/agentkeys/internal/broker"
	"github.com/agentkeys/agentkeys/internal/client"
	"github.com/agentkeys/agentkeys/internal/ledger"
	"github.com/agentkeys/agentkeys/internal/ledger/ledgerstore"
	"github.com/agentkeys/agentkeys/internal/problem"
)

func auditCmd(e *env) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "audit",
		Short: "Check the ledger",
		Example: "  agentkeys audit verify --server http://127.0.0.1:8090\n" +
			"  agentkeys audit verify --mine\n" +
			"  agentkeys audit verify --data-dir ~/.agentkeys/server",
	}
	cmd.AddCommand(auditVerifyCmd(e))
	return cmd
}

func auditVerifyCmd(e *env) *cobra.Command {
	var server, dataDir, ledgerURL, pin string
	var asJSON, mine bool
	cmd := &cobra.Command{
		Use:   "verify",
		Short: "Verify every ledger entry: links, hashes, origins, signatures",
		Long: `Verify the ledger from genesis to head.

--server URL checks what any client can: the enclave quote, then every entry's
hash link, origin and signature, with keys from /v1/enclave and genesis. Entries
that belong to an owner (sessions, credentials and reads, pairing, agents, mints)
are served to anyone as a salted commitment to their payload, which the hash and
signature cover; registries, governance and checkpoints are served and re-folded
in full.
--mine does the same with this machine's owner session (agentkeys init), which
also opens your own entries and checks each against its commitment.
--data-dir DIR (operator, offline) checks the stored chain with every payload and
also re-folds the state from the entries and compares it with the stored state.
--ledger URL does the same for a server started with --ledger URL (e.g. a
PostgreSQL database), read-only, while the server runs.

Exit 0 with a one-line summary when valid; otherwise exit 1 naming the first bad seq.`,
		Example: "  agentkeys audit verify --server http://127.0.0.1:8090\n" +
			"  agentkeys audit verify --mine\n" +
			"  agentkeys audit verify --data-dir ~/.agentkeys/server --json\n" +
			"  agentkeys audit verify --ledger postgres://agentkeys@db.example:5432/agentkeys",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			offline := dataDir != "" || ledgerURL != ""
			if !cmd.Flags().Changed("server") && (mine || offline) {
				server = "" // $AGENTKEYS_SERVER is a default, not a third source
			}
			if (server == "" && !mine) == !offline || mine && offline || dataDir != "" && ledgerURL != "" {
				return problem.New(problem.BadRequest, "pass exactly one of --server, --mine, --data-dir and --ledger",
					"agentkeys audit verify --server http://127.0.0.1:8090")
			}
			var sum audit.Summary
			var err error
			if dataDir != "" {
				sum, err = verifyDataDir(cmd, dataDir)
			} else if ledgerURL != "" {
				src, perr := ledgerstore.Parse(ledgerURL)
				if perr != nil {
					return problem.New(problem.BadRequest, "--ledger: "+perr.Error(), "pass the server's --ledger URL")
				}
				if src.HasPassword() {
					return passwordInArgv(src)
				}
				sum, err = verifyStore(cmd, src)
			} else {
				var pinKey []byte
				if pin != "" {
					if pinKey, err = hex.DecodeString(pin); err != nil || len(pinKey) != 32 {
						return problem.New(problem.BadRequest, "--platform-key must be 64 hex characters", "pass the platform attestation public key you trust")
					}
				}
				var src audit.Server
				if mine {
					_, s, err := e.ownerSession()
					if err != nil {
						return err
					}
					if server != "" && strings.TrimRight(server, "/") != s.Server() {
						return problem.Newf(problem.BadRequest, "drop --server, or log in to that broker with agentkeys init --server URL",
							"this machine's session is with %s, not %s", s.Server(), server)
					}
					src = s
				} else if src, err = client.New(server); err != nil {
					return err
				}
				sum, err = audit.VerifyServer(cmd.Context(), src, pinKey)
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
	e.serverFlag(cmd, &server, "", "broker URL to verify through its public API")
	cmd.Flags().StringVar(&dataDir, "data-dir", "", "server data dir to verify offline (re-folds state)")
	cmd.Flags().StringVar(&ledgerURL, "ledger", "", "the server's ledger store URL to verify offline, e.g. postgres://… (re-folds state)")
	cmd.Flags().StringVar(&pin, "platform-key", "", "pin the platform attestation public key (hex) instead of trusting the one the quote names")
	cmd.Flags().BoolVar(&mine, "mine", false, "verify through the broker of this machine's owner session, opening your own entries")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the summary as JSON")
	return cmd
}

// verifyDataDir opens the ledger store of a server's data dir read-only and
// verifies it.
func verifyDataDir(cmd *cobra.Command, dir string) (audit.Summary, error) {
	path := broker.LedgerPath(dir)
	if _, err := os.Stat(path); err != nil {
		return audit.Summary{}, problem.Newf(problem.NotFound, "pass the server's --data-dir (default ~/.agentkeys/server)",
			"no ledger at %s", path)
	}
	src, err := ledgerstore.Parse(ledgerstore.SQLite(path))
	if err != nil {
		return audit.Summary{}, err
	}
	return verifyStore(cmd, src)
}

// verifyStore opens a ledger store read-only and verifies it; a store that cannot
// be reached exits 5.
func verifyStore(cmd *cobra.Command, src ledgerstore.Source) (audit.Summary, error) {
	d, err := src.OpenReadOnly()
	if errors.Is(err, ledger.ErrUnreachable) {
		return audit.Summary{}, problem.Wrap(err, problem.Unreachable, "start the database, or correct --ledger", "%v", err)
	}
	if err != nil {
		return audit.Summary{}, err
	}
	defer d.Close()
	return audit.VerifyStore(cmd.Context(), d)
}
