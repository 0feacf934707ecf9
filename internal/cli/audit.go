package cli

import (
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/spf13/cobra"

	"github.com/agentkeys/agentkeys/internal/archive"
	"github.com/agentkeys/agentkeys/internal/audit"
	"github.com/agentkeys/agentkeys/internal/broker"
	"github.com/agentkeys/agentkeys/internal/client"
	"github.com/agentkeys/agentkeys/internal/ledger"
	"github.com/agentkeys/agentkeys/internal/ledger/ledgerstore"
	"github.com/agentkeys/agentkeys/internal/ledger/sqlite"
	"github.com/agentkeys/agentkeys/internal/modules"
	"github.com/agentkeys/agentkeys/internal/problem"
)

func auditCmd(e *env) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "audit",
		Short: "Check the ledger",
		Example: "  agentkeys audit verify --server http://127.0.0.1:8090\n" +
			"  agentkeys audit verify --mine\n" +
			"  agentkeys audit verify --data-dir ~/.agentkeys/server\n" +
			"  agentkeys audit export --data-dir ~/.agentkeys/server --to /backup/ledger --before 100000\n" +
			"  agentkeys audit prune --data-dir ~/.agentkeys/server --archive /backup/ledger --before 100000",
	}
	cmd.AddCommand(auditVerifyCmd(e), auditExportCmd(e), auditPruneCmd(e))
	return cmd
}

func auditVerifyCmd(e *env) *cobra.Command {
	var server, dataDir, ledgerURL, pin, ledgerKey string
	var asJSON, mine bool
	var arch archiveFlags
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
--archive DIR|s3://BUCKET/PREFIX verifies an archive written by audit export:
alone (with --ledger-key, the enclave's ledger/v1 public key from
GET /v1/enclave) offline with nothing else; with --data-dir or --ledger, the
full chain: the archive, then the store's entries after it, re-folded. A store
pruned to an archive (audit prune) and verified without it is checked from its
signed anchor on.

Exit 0 with a one-line summary when valid; otherwise exit 1 naming the first bad seq.`,
		Example: "  agentkeys audit verify --server http://127.0.0.1:8090\n" +
			"  agentkeys audit verify --mine\n" +
			"  agentkeys audit verify --data-dir ~/.agentkeys/server --json\n" +
			"  agentkeys audit verify --ledger postgres://agentkeys@db.example:5432/agentkeys\n" +
			"  agentkeys audit verify --archive /backup/ledger --ledger-key 3b6a27bc…\n" +
			"  agentkeys audit verify --data-dir ~/.agentkeys/server --archive s3://backups/agentkeys",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if arch.where != "" && (mine || cmd.Flags().Changed("server")) {
				return problem.New(problem.BadRequest, "--archive verifies offline: pair it with --data-dir, --ledger or --ledger-key, not --server or --mine",
					"agentkeys audit verify --data-dir ~/.agentkeys/server --archive DIR")
			}
			if arch.where != "" && ledgerKey != "" && dataDir == "" && ledgerURL == "" {
				if k, err := hex.DecodeString(ledgerKey); err != nil || len(k) != 32 {
					return problem.New(problem.BadRequest, "--ledger-key must be 64 hex characters", "pass the enclave's ledger/v1 public key: curl -fsS SERVER/v1/enclave | jq -r '.keys[] | select(.path == \"ledger/v1\") | .public'")
				}
				a, err := arch.openArchive(cmd, false)
				if err != nil {
					return err
				}
				sum, err := audit.VerifyArchive(cmd.Context(), a, ledgerKey)
				if err != nil {
					return err
				}
				return e.printSummary(sum, asJSON)
			}
			if arch.where != "" && dataDir == "" && ledgerURL == "" {
				return problem.New(problem.BadRequest, "--archive needs --ledger-key (the archive alone) or --data-dir/--ledger (the full chain)",
					"agentkeys audit verify --archive DIR --ledger-key HEX")
			}
			if ledgerKey != "" && arch.where == "" {
				return problem.New(problem.BadRequest, "--ledger-key goes with --archive", "agentkeys audit verify --archive DIR --ledger-key HEX")
			}
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
			if offline {
				src, serr := storeSource(dataDir, ledgerURL)
				if serr != nil {
					return serr
				}
				sum, err = verifyStore(cmd, src, arch)
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
			return e.printSummary(sum, asJSON)
		},
	}
	e.serverFlag(cmd, &server, "", "broker URL to verify through its public API")
	arch.flags(cmd, "archive", "an archive written by audit export (DIR or s3://BUCKET/PREFIX) to verify, alone or with the store")
	cmd.Flags().StringVar(&ledgerKey, "ledger-key", "", "the enclave's ledger/v1 public key (hex) to verify --archive with, offline")
	cmd.Flags().StringVar(&dataDir, "data-dir", "", "server data dir to verify offline (re-folds state)")
	cmd.Flags().StringVar(&ledgerURL, "ledger", "", "the server's ledger store URL to verify offline, e.g. postgres://… (re-folds state)")
	cmd.Flags().StringVar(&pin, "platform-key", "", "pin the platform attestation public key (hex) instead of trusting the one the quote names")
	cmd.Flags().BoolVar(&mine, "mine", false, "verify through the broker of this machine's owner session, opening your own entries")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the summary as JSON")
	return cmd
}

func (e *env) printSummary(sum audit.Summary, asJSON bool) error {
	if asJSON {
		return json.NewEncoder(e.stdout).Encode(sum)
	}
	fmt.Fprintln(e.stdout, sum.Line())
	return nil
}

// storeSource is the ledger store of a server's data dir (its SQLite file,
// which must exist) or of --ledger URL.
func storeSource(dataDir, ledgerURL string) (ledgerstore.Source, error) {
	if dataDir != "" && ledgerURL != "" {
		return ledgerstore.Source{}, problem.New(problem.BadRequest, "pass --data-dir or --ledger, not both", "--data-dir for the server's SQLite ledger, --ledger for the URL it was started with")
	}
	if dataDir != "" {
		path := broker.LedgerPath(dataDir)
		if _, err := os.Stat(path); err != nil {
			return ledgerstore.Source{}, problem.Newf(problem.NotFound, "pass the server's --data-dir (default ~/.agentkeys/server)",
				"no ledger at %s", path)
		}
		ledgerURL = ledgerstore.SQLite(path)
	}
	if ledgerURL == "" {
		return ledgerstore.Source{}, problem.New(problem.BadRequest, "name the ledger store: --data-dir DIR or --ledger URL", "pass the server's --data-dir, or the --ledger URL it was started with")
	}
	src, err := ledgerstore.Parse(ledgerURL)
	if err != nil {
		return src, problem.New(problem.BadRequest, "--ledger: "+err.Error(), "pass the server's --ledger URL")
	}
	if src.HasPassword() {
		return src, passwordInArgv(src)
	}
	return src, nil
}

// openStore opens a ledger store (read-only, or for writing); a store that
// cannot be reached exits 5, a SQLite ledger a running server holds is refused.
func openStore(src ledgerstore.Source, write bool) (ledger.Driver, error) {
	open := src.OpenReadOnly
	if write {
		open = src.Open
	}
	d, err := open()
	switch {
	case errors.Is(err, ledger.ErrUnreachable):
		return nil, problem.Wrap(err, problem.Unreachable, "start the database, or correct --ledger", "%v", err)
	case errors.Is(err, sqlite.ErrLocked):
		return nil, problem.Wrap(err, problem.Conflict, "stop the server first: a SQLite ledger has one writer, the server (on PostgreSQL, prune runs beside the brokers)",
			"the ledger at %s is open in a running server", src)
	}
	return d, err
}

// verifyStore opens a ledger store read-only and verifies it, with its
// archive when one is named.
func verifyStore(cmd *cobra.Command, src ledgerstore.Source, arch archiveFlags) (audit.Summary, error) {
	d, err := openStore(src, false)
	if err != nil {
		return audit.Summary{}, err
	}
	defer d.Close()
	if arch.where == "" {
		return audit.VerifyStore(cmd.Context(), d)
	}
	a, err := arch.openArchive(cmd, false)
	if err != nil {
		return audit.Summary{}, err
	}
	return audit.VerifyStoreArchive(cmd.Context(), d, a)
}

// archiveFlags name an archive (audit export, prune, verify; server): a
// directory or s3://BUCKET/PREFIX, and how to reach an S3 endpoint.
type archiveFlags struct {
	where string
	s3    archive.S3
}

func (f *archiveFlags) flags(cmd *cobra.Command, name, usage string) {
	cmd.Flags().StringVar(&f.where, name, "", usage)
	cmd.Flags().StringVar(&f.s3.Endpoint, "s3-endpoint", "", "S3 endpoint of an s3:// archive, e.g. http://127.0.0.1:8333 (default AWS); credentials from the AWS SDK's chain (AWS_ACCESS_KEY_ID …)")
	cmd.Flags().BoolVar(&f.s3.PathStyle, "s3-path-style", false, "address an s3:// archive's bucket in the path (most S3 servers that are not AWS)")
	cmd.Flags().StringVar(&f.s3.Region, "s3-region", "", "region of an s3:// archive's bucket (default us-east-1)")
}

// openArchive opens the archive; create (export) makes a missing directory.
func (f archiveFlags) openArchive(cmd *cobra.Command, create bool) (*archive.Archive, error) {
	a, err := archive.Open(cmd.Context(), f.where, f.s3, create)
	if err != nil {
		return nil, problem.New(problem.BadRequest, err.Error(), "name the archive as a directory or s3://BUCKET/PREFIX")
	}
	return a, nil
}

// archiveProblem turns what export and prune refuse into problems.
func archiveProblem(err error) error {
	var p *problem.Error
	switch {
	case err == nil || errors.As(err, &p):
		return err
	case errors.Is(err, archive.ErrNotCovered):
		return problem.Wrap(err, problem.Conflict, "export the entries first: agentkeys audit export --to ARCHIVE --before SEQ, then prune with the same --archive",
			"the archive holds no checkpoint below --before to cut at, so nothing is verified as exported")
	case errors.Is(err, archive.ErrInvalid), errors.Is(err, ledger.ErrPrune):
		return problem.Wrap(err, problem.LedgerInvalid, "nothing was dropped; check that --archive is this ledger's archive, and verify it: agentkeys audit verify --archive ARCHIVE --data-dir DIR", "%v", err)
	}
	return err
}

// archiveProgress prints how far a long run is, on a terminal (stderr) only.
func (e *env) archiveProgress(verb string) archive.Progress {
	if !isTerminal(e.stderr) {
		return nil
	}
	return func(done, total uint64) {
		pct := 100.0
		if total > 0 {
			pct = 100 * float64(done) / float64(total)
		}
		fmt.Fprintf(e.stderr, "\r%s: entries before seq %d of %d (%.0f%%)   ", verb, done, total, pct)
	}
}

func (e *env) endArchiveProgress() {
	if isTerminal(e.stderr) {
		fmt.Fprintln(e.stderr)
	}
}

func auditExportCmd(e *env) *cobra.Command {
	var dataDir, ledgerURL string
	var before uint64
	var size int
	var asJSON bool
	var arch archiveFlags
	cmd := &cobra.Command{
		Use:   "export",
		Short: "Write the ledger's entries before a seq to an archive, in signed segments",
		Long: `Write the entries of the ledger store before --before SEQ to an archive: a
directory (files 0600, each written whole or not at all) or s3://BUCKET/PREFIX.

The archive is a run of segments, each holding at least --segment entries as
stored and ending at a checkpoint the enclave signed, with a manifest (first and
last seq, the hash of the entry before it: the link to the previous segment).
Only entries up to the last checkpoint below SEQ are written. Anyone with the
enclave's ledger public key can verify the archive offline:
agentkeys audit verify --archive … --ledger-key HEX.

Export only reads the store, so it runs while the server does. Run again, it
checks the segments already there and writes only what follows them: an
interrupted export resumes. Progress is shown on a terminal.`,
		Example: "  agentkeys audit export --data-dir ~/.agentkeys/server --to /backup/ledger --before 100000\n" +
			"  AWS_PROFILE=backup agentkeys audit export --ledger postgres://agentkeys@db:5432/agentkeys --to s3://backups/agentkeys --before 2000000",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if arch.where == "" || !cmd.Flags().Changed("before") {
				return problem.New(problem.BadRequest, "export needs --to and --before", "agentkeys audit export --data-dir ~/.agentkeys/server --to DIR --before SEQ")
			}
			src, err := storeSource(dataDir, ledgerURL)
			if err != nil {
				return err
			}
			a, err := arch.openArchive(cmd, true)
			if err != nil {
				return err
			}
			d, err := openStore(src, false)
			if err != nil {
				return err
			}
			defer d.Close()
			out, err := archive.Export(cmd.Context(), a, d, before, size, e.archiveProgress("exported"))
			e.endArchiveProgress()
			if err != nil {
				return archiveProblem(err)
			}
			if asJSON {
				return json.NewEncoder(e.stdout).Encode(out)
			}
			fmt.Fprintf(e.stdout, "archive %s holds every entry before seq %d: %d segments written (%d entries), %d already there and checked\n",
				a, out.Before, out.Written, out.Entries, out.Present)
			if out.Before < before {
				fmt.Fprintf(e.stdout, "(entries %d-%d follow the last checkpoint below %d: the next export takes them)\n", out.Before, before-1, before)
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&dataDir, "data-dir", "", "the server's data dir (its SQLite ledger)")
	cmd.Flags().StringVar(&ledgerURL, "ledger", "", "the server's ledger store URL, e.g. postgres://…")
	cmd.Flags().Uint64Var(&before, "before", 0, "export the entries with a smaller seq")
	cmd.Flags().IntVar(&size, "segment", archive.DefaultSegment, "entries per segment, at least (each ends at the next checkpoint)")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the result as JSON")
	arch.flags(cmd, "to", "the archive: a directory or s3://BUCKET/PREFIX")
	return cmd
}

func auditPruneCmd(e *env) *cobra.Command {
	var dataDir, ledgerURL string
	var before uint64
	var asJSON bool
	var arch archiveFlags
	cmd := &cobra.Command{
		Use:   "prune",
		Short: "Drop the entries an archive holds from the ledger store",
		Long: `Drop the entries before --before SEQ from the ledger store, after verifying
the archive they were exported to (audit export) again from genesis: every
segment, every entry re-folded, and that the archive's checkpoint is the
store's entry at the cut. The cut is the last archived checkpoint below SEQ.

The store keeps genesis and an anchor: that checkpoint (signed by the enclave)
and the chain's position after it, so the chain continues, the server starts,
and audit verify checks everything after the anchor. Entries before it are read
from the archive on request: agentkeys server --archive, audit verify --archive.

A SQLite ledger is pruned with the server stopped (it has one writer). On
PostgreSQL prune runs beside the brokers: it deletes only rows below a
checkpoint, far behind the head where they append.`,
		Example: "  agentkeys audit prune --data-dir ~/.agentkeys/server --archive /backup/ledger --before 100000\n" +
			"  agentkeys audit prune --ledger postgres://agentkeys@db:5432/agentkeys --archive s3://backups/agentkeys --before 2000000",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if arch.where == "" || !cmd.Flags().Changed("before") {
				return problem.New(problem.BadRequest, "prune needs --archive and --before", "agentkeys audit prune --data-dir ~/.agentkeys/server --archive DIR --before SEQ")
			}
			src, err := storeSource(dataDir, ledgerURL)
			if err != nil {
				return err
			}
			a, err := arch.openArchive(cmd, false)
			if err != nil {
				return err
			}
			d, err := openStore(src, true)
			if err != nil {
				return err
			}
			defer d.Close()
			out, err := archive.Prune(cmd.Context(), a, d, before, ledger.NewVerifier(modules.Schema(), ledger.NewMemState()), e.archiveProgress("verified"))
			e.endArchiveProgress()
			if err != nil {
				return archiveProblem(err)
			}
			if asJSON {
				return json.NewEncoder(e.stdout).Encode(out)
			}
			if out.Already {
				fmt.Fprintf(e.stdout, "nothing to drop: the store holds no entry before seq %d but genesis already\n", out.Before)
			} else {
				fmt.Fprintf(e.stdout, "dropped the entries 1-%d (archive %s verified, %d segments); the store keeps genesis and the anchor at seq %d\n",
					out.Before-1, a, out.Segments, out.Before-1)
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&dataDir, "data-dir", "", "the server's data dir (its SQLite ledger; stop the server first)")
	cmd.Flags().StringVar(&ledgerURL, "ledger", "", "the server's ledger store URL, e.g. postgres://…")
	cmd.Flags().Uint64Var(&before, "before", 0, "drop the entries with a smaller seq (cut at the last archived checkpoint below it)")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the result as JSON")
	arch.flags(cmd, "archive", "the archive the entries were exported to: a directory or s3://BUCKET/PREFIX")
	return cmd
}
