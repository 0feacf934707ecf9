package cli

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/agentkeys/agentkeys/internal/apiv1"
	"github.com/agentkeys/agentkeys/internal/atomicfile"
	"github.com/agentkeys/agentkeys/internal/broker"
	"github.com/agentkeys/agentkeys/internal/client"
	"github.com/agentkeys/agentkeys/internal/ledger"
	"github.com/agentkeys/agentkeys/internal/problem"
	"github.com/agentkeys/agentkeys/internal/registry"
)

// proposalFix is the fix for a proposal file that cannot be read.
const proposalFix = "pass the file agentkeys governance propose wrote"

func governanceCmd(e *env) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "governance",
		Short: "M-of-N governance: members, proposals, signatures",
		Long: `Governance is the ledger origin that authorizes registry changes (successor
mrsigners, OIDC key revokes and rotations, the governance set itself): an M-of-N
set of Ed25519 member keys, named in genesis and changed only by the set in force.
The set may also hold incident keys (init --incident): each may revoke an OIDC
key alone (the watchdog's key) and can do nothing else.
A change travels as a proposal file: one member writes it (propose), each member
signs it offline with their own key (sign), anyone submits it (submit). Nothing
is stored on the broker until submit; the broker then checks the threshold.`,
		Example: "  agentkeys governance keygen --out alice.key\n" +
			"  agentkeys governance init --member HEX1 --member HEX2 --member HEX3 --threshold 2\n" +
			"  agentkeys governance propose successor.authorize --payload s.json --out p.json\n" +
			"  agentkeys governance sign p.json --key alice.key\n" +
			"  agentkeys governance submit p.json\n  agentkeys governance members",
	}
	cmd.AddCommand(governanceKeygenCmd(e), governanceInitCmd(e), governanceProposeCmd(e),
		governanceSignCmd(e), governanceSubmitCmd(e), governanceMembersCmd(e), governanceRotateSessionKeyCmd(e),
		governanceSessionKeysCmd(e))
	cmd.AddCommand(governanceSuccessorCmds(e)...)
	return cmd
}

// GovernanceKeyInfo is the --json output of governance keygen.
type GovernanceKeyInfo struct {
	KeyFile   string `json:"key_file"`
	PublicKey string `json:"public_key"` // hex: what governance init --member takes
}

func governanceKeygenCmd(e *env) *cobra.Command {
	var out string
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "keygen",
		Short: "Make a governance member key; print its public key for --member",
		Long: `Writes a new Ed25519 member key to --out (PKCS#8 PEM, mode 0600; an existing
file is never replaced) and prints its public key in hex, the value of governance
init --member. The private key is never printed. Each member makes and keeps their
own key, offline.`,
		Example: "  agentkeys governance keygen --out /secure/alice.key\n  agentkeys governance keygen --out bob.key --json",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			pub, err := writeReleaseKey(out)
			if err != nil {
				return err
			}
			info := GovernanceKeyInfo{KeyFile: out, PublicKey: hex.EncodeToString(pub)}
			if asJSON {
				return e.printJSON(info)
			}
			fmt.Fprintln(e.stdout, info.PublicKey)
			fmt.Fprintf(e.stderr, "Wrote the member key to %s (0600); keep it offline.\n", out)
			return nil
		},
	}
	cmd.Flags().StringVar(&out, "out", "", "file to write the new key to (0600; must not exist)")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print key_file and public_key as JSON")
	cmd.MarkFlagRequired("out")
	return cmd
}

// GovernanceInit is the --json output of governance init at genesis.
type GovernanceInit struct {
	File      string   `json:"file"`
	Threshold int      `json:"threshold"`
	Members   []string `json:"members"`
	Incident  []string `json:"incident"`
}

func governanceInitCmd(e *env) *cobra.Command {
	var dataDir, server, out string
	var members, incident []string
	var threshold int
	var ttl time.Duration
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "init",
		Short: "Choose the governance set: at genesis, or as a proposal to change it",
		Long: `Sets the M-of-N governance set (--member, once per member: a hex Ed25519 public
key from governance keygen; --threshold M), and its incident keys (--incident,
once per key, also from governance keygen): an incident key may revoke an OIDC
key (oidc.key.revoke) on its own signature, for the watchdog to cut off a
hijacked issuer within seconds; it signs nothing else and counts toward no
threshold, so the machine holding it cannot change anything else if it leaks.

Before the broker's first start, it writes <data-dir>/governance.json: the first
start puts that set in genesis instead of creating the 1-of-1 operator key. A
data dir whose ledger exists is refused: its genesis is fixed.

With --out, it writes a governance.set proposal against the running broker
(--server) instead: the current set's threshold of members must sign it
(governance sign) before it is submitted (governance submit).`,
		Example: "  agentkeys governance init --data-dir /srv/agentkeys --member HEX1 --member HEX2 --member HEX3 --threshold 2\n" +
			"  agentkeys governance init --server https://keys.example.com --member HEX1 --member HEX4 --threshold 2 --out change.json\n" +
			"  agentkeys governance init --server https://keys.example.com --member HEX1 --incident HEX5 --threshold 1 --out add-incident.json",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			gv := ledger.Governance{Threshold: threshold}
			for _, f := range []struct {
				flag string
				in   []string
				out  *[]string
			}{{"member", members, &gv.Keys}, {"incident", incident, &gv.Incident}} {
				for _, m := range f.in {
					m = strings.ToLower(strings.TrimSpace(m))
					if b, err := hex.DecodeString(m); err != nil || len(b) != ed25519.PublicKeySize {
						return problem.Newf(problem.BadRequest, "pass each key's public key as governance keygen printed it",
							"--%s %.20q is not a hex Ed25519 public key (64 hex characters)", f.flag, m)
					}
					*f.out = append(*f.out, m)
				}
			}
			if err := ledger.ValidateGovernance(gv); err != nil {
				return problem.Newf(problem.BadRequest, fmt.Sprintf("pass distinct --member keys, a --threshold between 1 and their number, and at most %d --incident keys that are not members", ledger.MaxIncidentKeys),
					"%v", err)
			}
			if out != "" {
				p, err := newProposal(cmd, server, ledger.KindGovernanceSet, gv, ttl)
				if err != nil {
					return err
				}
				return e.writeProposal(out, p, asJSON)
			}
			if cmd.Flags().Changed("server") {
				return problem.New(problem.BadRequest, "--server without --out", "to change a running broker's set pass --out FILE (a proposal); to set genesis pass --data-dir")
			}
			if dataDir == "" {
				dataDir = filepath.Join(e.home(), "server")
			}
			if _, err := os.Stat(filepath.Join(dataDir, "ledger.db")); err == nil {
				return problem.Newf(problem.Conflict, "change the set of a running broker with a proposal: agentkeys governance init --server URL --member … --threshold M --out change.json",
					"the broker in %s has started already: its genesis governance set is fixed", dataDir)
			}
			if err := os.MkdirAll(dataDir, 0o700); err != nil {
				return problem.Wrap(err, problem.BadRequest, "pass a writable --data-dir", "cannot create %s: %v", dataDir, err)
			}
			b, _ := json.MarshalIndent(gv, "", "  ")
			file := broker.GovernanceFile(dataDir)
			err := atomicfile.CreateNew(file, append(b, '\n'), 0o600)
			if errors.Is(err, fs.ErrExist) {
				return problem.Newf(problem.Conflict, "remove it first if you mean to choose another set (before the first start only)",
					"%s exists already", file)
			} else if err != nil {
				return problem.Wrap(err, problem.BadRequest, "pass a writable --data-dir", "cannot write %s: %v", file, err)
			}
			res := GovernanceInit{File: file, Threshold: gv.Threshold, Members: gv.Keys, Incident: append([]string{}, gv.Incident...)}
			if asJSON {
				return e.printJSON(res)
			}
			fmt.Fprintf(e.stdout, "Wrote %s: %d of %d members, %d incident key(s); the broker's first start puts it in genesis.\n", file, gv.Threshold, len(gv.Keys), len(gv.Incident))
			return nil
		},
	}
	cmd.Flags().StringArrayVar(&members, "member", nil, "a member's hex Ed25519 public key (repeat for each member)")
	cmd.Flags().StringArrayVar(&incident, "incident", nil, "an incident key's hex Ed25519 public key: it may only revoke OIDC keys, alone (repeat for each; at most 8)")
	cmd.Flags().IntVar(&threshold, "threshold", 0, "how many distinct members must sign each change")
	cmd.Flags().StringVar(&dataDir, "data-dir", "", "the broker's data dir, before its first start (default $AGENTKEYS_HOME/server)")
	cmd.Flags().StringVar(&out, "out", "", "write a governance.set proposal to this file instead (for a running broker)")
	e.serverFlag(cmd, &server, DefaultServer, "the broker URL (with --out)")
	cmd.Flags().DurationVar(&ttl, "ttl", 7*24*time.Hour, "how long the proposal may be submitted (with --out; at most 31 days)")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print as JSON")
	cmd.MarkFlagRequired("member")
	cmd.MarkFlagRequired("threshold")
	return cmd
}

// newProposal builds an unsigned proposal against the broker at server: the
// ledger identity comes from the broker, the nonce from crypto/rand.
func newProposal(cmd *cobra.Command, server, kind string, payload any, ttl time.Duration) (*ledger.Proposal, error) {
	if ttl <= 0 || ttl > ledger.MaxProposalLifetime {
		return nil, problem.Newf(problem.BadRequest, "pass a --ttl between 1m and 744h (31 days)", "--ttl %s is out of range", ttl)
	}
	p, err := ledger.MarshalPayload(payload)
	if err != nil {
		return nil, problem.Wrap(err, problem.BadRequest, "the payload must be one JSON object", "cannot encode the payload: %v", err)
	}
	c, err := client.New(server)
	if err != nil {
		return nil, err
	}
	g, err := c.Governance(cmd.Context())
	if err != nil {
		return nil, err
	}
	var nonce [16]byte
	rand.Read(nonce[:])
	return &ledger.Proposal{Ledger: g.Ledger, Server: server, Kind: kind, Payload: p,
		Nonce: hex.EncodeToString(nonce[:]), Expires: time.Now().Add(ttl).Unix(), Signatures: []ledger.ProposalSig{}}, nil
}

// ProposalInfo is the --json output of propose, init --out and sign.
type ProposalInfo struct {
	File       string          `json:"file"`
	Ledger     ledger.Hash     `json:"ledger"`
	Kind       string          `json:"kind"`
	Payload    json.RawMessage `json:"payload"`
	Expires    int64           `json:"expires"`
	Signatures []string        `json:"signatures"` // the members who signed (hex public keys)
}

func proposalInfo(file string, p *ledger.Proposal) ProposalInfo {
	i := ProposalInfo{File: file, Ledger: p.Ledger, Kind: p.Kind, Payload: p.Payload, Expires: p.Expires, Signatures: []string{}}
	for _, s := range p.Signatures {
		i.Signatures = append(i.Signatures, s.Key)
	}
	return i
}

// writeProposal writes p to file (0644: a proposal holds nothing secret) and
// reports it.
func (e *env) writeProposal(file string, p *ledger.Proposal, asJSON bool) error {
	b, err := json.MarshalIndent(p, "", "  ")
	if err != nil {
		return err
	}
	if err := atomicfile.WriteFile(file, append(b, '\n'), 0o644); err != nil {
		return problem.Wrap(err, problem.BadRequest, "pass a writable file", "cannot write %s: %v", file, err)
	}
	info := proposalInfo(file, p)
	if asJSON {
		return e.printJSON(info)
	}
	fmt.Fprintf(e.stdout, "%s: %s %s for ledger %.16s…, expires %s, %d signature(s).\n",
		file, p.Kind, p.Payload, p.Ledger, time.Unix(p.Expires, 0).UTC().Format(time.RFC3339), len(p.Signatures))
	return nil
}

// readProposal reads a proposal file.
func readProposal(file string) (*ledger.Proposal, error) {
	b, err := os.ReadFile(file)
	if err != nil {
		return nil, problem.Wrap(err, problem.BadRequest, proposalFix, "cannot read the proposal %s: %v", file, err)
	}
	var p ledger.Proposal
	if err := json.Unmarshal(b, &p); err != nil {
		return nil, problem.Wrap(err, problem.BadRequest, proposalFix, "%s is not a proposal: %v", file, err)
	}
	if err := p.Check(); err != nil {
		return nil, problem.Wrap(err, problem.BadRequest, proposalFix, "%s is not a valid proposal: %v", file, err)
	}
	return &p, nil
}

func governanceProposeCmd(e *env) *cobra.Command {
	var server, payloadFile, out string
	var ttl time.Duration
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "propose KIND",
		Short: "Write a proposal file for a governance change",
		Long: `Writes an unsigned proposal to --out: KIND (a governance kind: successor.authorize,
successor.deauthorize, oidc.key.revoke, oidc.rotate, governance.set), the JSON
payload from --payload (a file, or - for stdin), the broker's ledger identity (a
proposal is valid on that ledger only), a random nonce (it is carried out once)
and an expiry (--ttl). Nothing is sent to the broker but a read of its ledger
identity. Pass the file to the members: each runs governance sign.`,
		Example: "  echo '{\"kid\":\"KID\",\"reason\":\"leaked\"}' | agentkeys governance propose oidc.key.revoke --payload - --out revoke.json\n" +
			"  agentkeys governance propose successor.authorize --payload successor.json --out p.json --ttl 72h --json",
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			var raw []byte
			var err error
			if payloadFile == "-" {
				raw, err = io.ReadAll(io.LimitReader(e.stdin, 1<<20))
			} else {
				raw, err = os.ReadFile(payloadFile)
			}
			if err != nil {
				return problem.Wrap(err, problem.BadRequest, "pass a readable --payload FILE (or - for stdin)", "cannot read the payload: %v", err)
			}
			var obj map[string]json.RawMessage
			if dec := json.NewDecoder(bytes.NewReader(raw)); dec.Decode(&obj) != nil || dec.More() || obj == nil {
				return problem.New(problem.BadRequest, "the payload is not one JSON object", "write the kind's payload as a JSON object, e.g. {\"kid\":\"…\",\"reason\":\"…\"}")
			}
			var compact bytes.Buffer
			json.Compact(&compact, raw)
			p, err := newProposal(cmd, server, args[0], json.RawMessage(bytes.TrimSpace(compact.Bytes())), ttl)
			if err != nil {
				return err
			}
			return e.writeProposal(out, p, asJSON)
		},
	}
	cmd.Flags().StringVar(&payloadFile, "payload", "", "the kind's JSON payload: a file, or - for stdin")
	cmd.Flags().StringVar(&out, "out", "", "the proposal file to write")
	cmd.Flags().DurationVar(&ttl, "ttl", 7*24*time.Hour, "how long the proposal may be submitted (at most 31 days)")
	e.serverFlag(cmd, &server, DefaultServer, "the broker URL")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print as JSON")
	cmd.MarkFlagRequired("payload")
	cmd.MarkFlagRequired("out")
	return cmd
}

func governanceSignCmd(e *env) *cobra.Command {
	var keyFile string
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "sign PROPOSAL",
		Short: "Add your member signature to a proposal file (offline)",
		Long: `Signs the proposal with your member key and writes your signature into the file
(replacing an earlier one of yours). Nothing is sent anywhere. It prints what you
sign: kind, payload, ledger and expiry; read them before you pass the file on.`,
		Example: "  agentkeys governance sign p.json --key /secure/alice.key\n" +
			"  agentkeys governance sign p.json --key $AGENTKEYS_HOME/server/operator.key --json",
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			key, err := loadMemberKey(keyFile)
			if err != nil {
				return err
			}
			p, err := readProposal(args[0])
			if err != nil {
				return err
			}
			p.Sign(key)
			return e.writeProposal(args[0], p, asJSON)
		},
	}
	cmd.Flags().StringVar(&keyFile, "key", "", "your member key (governance keygen --out, or the operator key)")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print as JSON")
	cmd.MarkFlagRequired("key")
	return cmd
}

// loadMemberKey reads a member key file, refusing one other users can read.
func loadMemberKey(path string) (ed25519.PrivateKey, error) {
	if fi, err := os.Stat(path); err == nil && fi.Mode().Perm()&0o077 != 0 {
		return nil, problem.Newf(problem.Denied, "chmod 600 "+path+", and consider the key exposed if others could read it",
			"the member key %s is open to other users (mode %#o)", path, fi.Mode().Perm())
	}
	key, err := broker.LoadOperatorKey(path)
	if err != nil {
		return nil, problem.Wrap(err, problem.BadRequest, "pass the file governance keygen --out wrote (or the operator key)", "cannot read the member key: %v", err)
	}
	return key, nil
}

// SubmitResult is the --json output of governance submit.
type SubmitResult struct {
	Seq    uint64              `json:"seq"`
	Hash   ledger.Hash         `json:"hash"`
	Kind   string              `json:"kind"`
	Rotate *apiv1.RotateResult `json:"rotate,omitempty"`
}

func governanceSubmitCmd(e *env) *cobra.Command {
	var server string
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "submit PROPOSAL",
		Short: "Submit a signed proposal to the broker",
		Long: `Sends the proposal to the broker (--server, else the server named in the file).
The broker carries it out only with signatures of at least the threshold of
distinct members of the governance set in force, on its own ledger, before the
expiry, and once: a proposal submitted again is refused.`,
		Example: "  agentkeys governance submit p.json\n  agentkeys governance submit p.json --server https://keys.example.com --json",
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			p, err := readProposal(args[0])
			if err != nil {
				return err
			}
			if !e.serverGiven(cmd) && p.Server != "" {
				server = p.Server
			}
			c, err := client.New(server)
			if err != nil {
				return err
			}
			res, err := c.SubmitProposal(cmd.Context(), *p)
			if err != nil {
				return err
			}
			out := SubmitResult{Seq: res.Entry.Seq, Hash: res.Entry.Hash(), Kind: res.Entry.Kind, Rotate: res.Rotate}
			if asJSON {
				return e.printJSON(out)
			}
			fmt.Fprintf(e.stdout, "Carried out: %s at ledger seq %d (hash %s).\n", out.Kind, out.Seq, out.Hash)
			return nil
		},
	}
	e.serverFlag(cmd, &server, DefaultServer, "the broker URL (default: the proposal's server)")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print as JSON")
	return cmd
}

func governanceMembersCmd(e *env) *cobra.Command {
	var server string
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "members",
		Short: "Show the governance set in force",
		Long: `Prints the broker's governance set as its ledger has it: the threshold, each
key and its kind (member: counts toward the threshold; incident: may only
revoke OIDC keys, alone), and the ledger identity proposals are bound to.`,
		Example: "  agentkeys governance members\n  agentkeys governance members --server https://keys.example.com --json",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := client.New(server)
			if err != nil {
				return err
			}
			g, err := c.Governance(cmd.Context())
			if err != nil {
				return err
			}
			if asJSON {
				return e.printJSON(g)
			}
			fmt.Fprintf(e.stdout, "%d of %d members must sign (ledger %s):\n", g.Threshold, len(g.Members), g.Ledger)
			for _, m := range slices.Sorted(slices.Values(g.Members)) {
				fmt.Fprintf(e.stdout, "  %s  member\n", m)
			}
			for _, m := range slices.Sorted(slices.Values(g.Incident)) {
				fmt.Fprintf(e.stdout, "  %s  incident (may only revoke OIDC keys, alone)\n", m)
			}
			return nil
		},
	}
	e.serverFlag(cmd, &server, DefaultServer, "the broker URL")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print as JSON")
	return cmd
}

func governanceRotateSessionKeyCmd(e *env) *cobra.Command {
	var g govChange
	var window time.Duration
	cmd := &cobra.Command{
		Use:   "rotate-session-key",
		Short: "Rotate the session-token key (governance)",
		Long: `Rotates the key that signs session tokens: the next issuer/jwt/vN signs every
session from then on, and the old key keeps verifying the sessions it signed for
--window (at least the broker's session lifetime plus a minute; the broker
refuses less), then it is retired. No one is logged out.

With --key (default the operator key) it signs and submits the request at once:
enough for a 1-of-1 set. With --out it writes a proposal instead, for the
members to sign (governance sign) and submit (governance submit).`,
		Example: "  agentkeys governance rotate-session-key --server http://127.0.0.1:8090\n" +
			"  agentkeys governance rotate-session-key --server https://keys.example.com --window 721h --out rotate.json",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if window <= 0 {
				return problem.New(problem.BadRequest, "--window must be positive", "pass the session lifetime plus a minute or more, e.g. --window 721h")
			}
			payload := map[string]int64{"window_seconds": int64(window / time.Second)}
			res, err := g.run(e, cmd, registry.KindSessionKeyRotate, payload)
			if err != nil || res == nil {
				return err
			}
			fmt.Fprintf(e.stdout, "Rotated the session key at ledger seq %d: new sessions use the next key; the old one verifies its sessions for %s more.\n", res.Seq, window)
			return nil
		},
	}
	g.flags(e, cmd)
	cmd.Flags().DurationVar(&window, "window", 721*time.Hour, "how long the old key keeps verifying (at least the session lifetime + 1m)")
	return cmd
}

func governanceSessionKeysCmd(e *env) *cobra.Command {
	var server string
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "session-keys",
		Short: "List the session-token key versions and their states",
		Long: `Prints the session-token keys the broker's enclave info lists (GET /v1/enclave),
oldest first: each issuer/jwt/vN with the kid its tokens carry and its state:
current (signs new sessions), retiring (still verifies the sessions it signed,
until RETIRE AT) or retired. A rotation (rotate-session-key) shows here.`,
		Example: "  agentkeys governance session-keys --server http://127.0.0.1:8090\n  agentkeys governance session-keys --json",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := client.New(server)
			if err != nil {
				return err
			}
			info, err := c.Enclave(cmd.Context())
			if err != nil {
				return err
			}
			if asJSON {
				return e.printJSON(map[string]any{"session_keys": info.SessionKeys})
			}
			tw := tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "VERSION\tKID\tSTATE\tACTIVE FROM\tRETIRE AT")
			for _, k := range info.SessionKeys {
				fmt.Fprintf(tw, "v%d\t%s\t%s\t%s\t%s\n", k.Version, k.Kid, k.State, unixOrDash(k.ActiveFrom), unixOrDash(k.RetireAt))
			}
			return tw.Flush()
		},
	}
	e.serverFlag(cmd, &server, DefaultServer, "the broker URL")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print as JSON")
	return cmd
}

// governanceSuccessorCmds are authorize-successor and deauthorize-successor:
// the successor registry (§10.1) that a seed handoff (§10.3) checks.
func governanceSuccessorCmds(e *env) []*cobra.Command {
	var platformKey, rationale string
	auth := successorCmd(e, registry.KindSuccessorAuthorize, &cobra.Command{
		Use:   "authorize-successor MRSIGNER",
		Short: "Authorize a build signed by another key to receive the seed (governance)",
		Long: `Adds MRSIGNER (the SHA-256 of a release-signing key, as a build's quote and
its refused handoff print it) to the successor registry, with --platform-key, the
successor's platform attestation key: a build signed by that key, running on that
platform, may then receive the seed by handoff (agentkeys server --handoff-from).
At most 8 successors. The platform key is what the handoff's quote is verified
with: the first, refused, handoff attempt prints both values in its fix.

With --key (default the operator key) it signs and submits at once: enough for a
1-of-1 set. With --out it writes a proposal for the members to sign
(governance sign) and submit (governance submit).`,
		Example: "  agentkeys governance authorize-successor 5f1c…e2 --platform-key 9a0b…41 --server https://keys.example.com\n" +
			"  agentkeys governance authorize-successor 5f1c…e2 --platform-key 9a0b…41 --rationale-uri https://example.com/change/42 --out p.json",
	}, func(mrsigner string) (any, error) {
		if b, err := hex.DecodeString(platformKey); err != nil || len(b) != ed25519.PublicKeySize || platformKey != strings.ToLower(platformKey) {
			return nil, problem.New(problem.BadRequest, "--platform-key must be 64 lowercase hex characters",
				"pass the successor's platform key, as its refused handoff printed it (agentkeys server --handoff-from)")
		}
		return registry.Successor{MrSigner: mrsigner, EffectiveFrom: time.Now().Unix(), RationaleURI: rationale, PlatformKey: platformKey}, nil
	}, "Authorized successor %s at ledger seq %d: a build signed by its key, on the platform given, may now receive the seed.\n")
	auth.Flags().StringVar(&platformKey, "platform-key", "", "the successor's platform attestation public key (hex; required)")
	auth.Flags().StringVar(&rationale, "rationale-uri", "", "a link to why (change ticket, release notes), kept on the ledger")
	deauth := successorCmd(e, registry.KindSuccessorDeauthorize, &cobra.Command{
		Use:   "deauthorize-successor MRSIGNER",
		Short: "Withdraw a successor's authorization (governance)",
		Long: `Removes MRSIGNER from the successor registry: from then on a handoff to a
build signed by that key is refused (and the attempt recorded on the ledger).
Signs and submits with --key, or writes a proposal with --out.`,
		Example: "  agentkeys governance deauthorize-successor 5f1c…e2 --server https://keys.example.com",
	}, func(mrsigner string) (any, error) {
		return registry.Deauthorize{MrSigner: mrsigner}, nil
	}, "Deauthorized successor %s at ledger seq %d: it receives no seed.\n")
	return []*cobra.Command{auth, deauth}
}

// successorCmd completes cmd: one MRSIGNER argument, payload builds the entry's
// payload, and it is submitted signed with one key or written as a proposal.
func successorCmd(e *env, kind string, cmd *cobra.Command, payload func(mrsigner string) (any, error), done string) *cobra.Command {
	var g govChange
	cmd.Args = cobra.ExactArgs(1)
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		mrsigner := args[0]
		if b, err := hex.DecodeString(mrsigner); err != nil || len(b) != 32 || mrsigner != strings.ToLower(mrsigner) {
			return problem.Newf(problem.BadRequest, "pass the 64 lowercase hex characters of the build's mrsigner (its quote's, or its refused handoff's)",
				"MRSIGNER %q is not a mrsigner", mrsigner)
		}
		p, err := payload(mrsigner)
		if err != nil {
			return err
		}
		res, err := g.run(e, cmd, kind, p)
		if err != nil || res == nil {
			return err
		}
		fmt.Fprintf(e.stdout, done, mrsigner, res.Seq)
		return nil
	}
	g.flags(e, cmd)
	return cmd
}

// govChange is the shared end of the governance commands that change the
// ledger: with --out they write a proposal for the members to sign; otherwise
// they sign with one key (--key, default the operator key) and submit.
type govChange struct {
	server, keyPath, out string
	ttl                  time.Duration
	asJSON               bool
}

func (g *govChange) flags(e *env, cmd *cobra.Command) {
	e.serverFlag(cmd, &g.server, DefaultServer, "the broker URL")
	cmd.Flags().StringVar(&g.keyPath, "key", "", "a governance key to sign with (default $AGENTKEYS_HOME/server/operator.key)")
	cmd.Flags().StringVar(&g.out, "out", "", "write a proposal to this file instead of submitting")
	cmd.Flags().DurationVar(&g.ttl, "ttl", 7*24*time.Hour, "with --out: how long the proposal may be submitted (at most 31 days)")
	cmd.Flags().BoolVar(&g.asJSON, "json", false, "print as JSON")
}

// run writes the proposal or submits the change. It returns the submitted
// entry for the caller to report in words, or nil once it has written the
// proposal or printed the JSON.
func (g *govChange) run(e *env, cmd *cobra.Command, kind string, payload any) (*SubmitResult, error) {
	if g.out != "" {
		p, err := newProposal(cmd, g.server, kind, payload, g.ttl)
		if err != nil {
			return nil, err
		}
		return nil, e.writeProposal(g.out, p, g.asJSON)
	}
	var key ed25519.PrivateKey
	var err error
	if g.keyPath == "" {
		key, err = e.operatorKey("")
	} else {
		key, err = loadMemberKey(g.keyPath)
	}
	if err != nil {
		return nil, err
	}
	c, err := client.New(g.server)
	if err != nil {
		return nil, err
	}
	en, err := c.SubmitGovernance(cmd.Context(), kind, payload, key)
	if err != nil {
		return nil, err
	}
	res := &SubmitResult{Seq: en.Seq, Hash: en.Hash(), Kind: en.Kind}
	if g.asJSON {
		return nil, e.printJSON(res)
	}
	return res, nil
}
