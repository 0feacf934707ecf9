package cli

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/agentkeys/agentkeys/internal/broker"
	"github.com/agentkeys/agentkeys/internal/client"
	"github.com/agentkeys/agentkeys/internal/home"
	"github.com/agentkeys/agentkeys/internal/problem"
)

func initCmd(e *env) *cobra.Command {
	var server, inviteFile string
	var force, asJSON bool
	cmd := &cobra.Command{
		Use:   "init",
		Short: "Create your owner account on a broker and log in",
		Long: `Create the owner identity key on this machine ($AGENTKEYS_HOME/owner/identity.json,
0600), register the account with the broker (omni, enclave-held wallet, an
account.created ledger entry) and store a 30-day session the same way.

Running it again changes nothing and says the account exists; --force logs in
again with the same identity (a new session). A broker started with --signup
invite needs the invite its operator gave you: --invite-file FILE (- for stdin).`,
		Example: "  agentkeys init --server http://127.0.0.1:8090\n  agentkeys init --force\n" +
			"  agentkeys init --server https://keys.example.com --invite-file invite.txt",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx := cmd.Context()
			d, err := e.dir()
			if err != nil {
				return err
			}
			id, err := d.Identity()
			fresh := errors.Is(err, home.ErrMissing)
			if err != nil && !fresh {
				return err
			}
			old, serr := d.Session()
			if !e.serverGiven(cmd) && serr == nil {
				server = old.Server
			}
			if !fresh && !force && serr == nil {
				fmt.Fprintf(e.stdout, "The account already exists on this machine (omni %s). Nothing changed; use --force to log in again.\n", old.Omni)
				return nil
			}
			// An identity without a session signs up again: its first sign-up may
			// have been refused (e.g. without an invite); if the account exists
			// after all, the broker says so and --force logs in.
			signup := fresh || !force
			c, err := client.New(server)
			if err != nil {
				return err
			}
			invite, err := e.readInvite(inviteFile)
			if err != nil {
				return err
			}
			pinned := ""
			if serr == nil && old.Server == c.Server() {
				pinned = old.PlatformKey
			}
			if force {
				pinned = "" // --force re-pins after an operator change
			}
			if _, pinned, err = attestedShielding(ctx, c, pinned); err != nil {
				return err
			}
			if fresh {
				if id, err = d.NewIdentity(); err != nil {
					return err
				}
			}
			l := broker.Login{PublicKey: hex.EncodeToString(id.Public().(ed25519.PublicKey)), Server: c.Server(),
				Time: time.Now().Unix(), Nonce: nonce()}
			broker.SignLogin(&l, id)
			if signup {
				l.Invite = invite
			}
			var g *broker.SessionGrant
			if signup {
				g, err = c.CreateAccount(ctx, l)
			} else {
				g, err = c.OpenSession(ctx, l)
			}
			if err != nil {
				return err
			}
			s := &home.Session{Server: c.Server(), Omni: g.Omni, Wallet: g.Wallet, SID: g.SID, Token: g.Token,
				ExpiresAt: g.ExpiresAt, PlatformKey: pinned}
			if err := d.SaveSession(s); err != nil {
				return err
			}
			if asJSON {
				return json.NewEncoder(e.stdout).Encode(map[string]any{"omni": g.Omni, "wallet": g.Wallet, "server": c.Server(),
					"expires_at": expiry(g.ExpiresAt), "created": signup})
			}
			verb := "Logged in"
			if signup {
				verb = "Account created"
			}
			fmt.Fprintf(e.stdout, "%s.\n  omni:    %s\n  wallet:  %s\n  server:  %s\n  session: expires %s\n",
				verb, g.Omni, g.Wallet, c.Server(), expiry(g.ExpiresAt))
			return nil
		},
	}
	e.serverFlag(cmd, &server, DefaultServer, "broker URL")
	cmd.Flags().BoolVar(&force, "force", false, "log in again with the existing identity")
	cmd.Flags().StringVar(&inviteFile, "invite-file", "", "a file holding the operator's invite (- for stdin), for a broker with --signup invite")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the result as JSON")
	return cmd
}

// readInvite reads an invite code from path ("-" = stdin); "" reads nothing.
func (e *env) readInvite(path string) (string, error) {
	if path == "" {
		return "", nil
	}
	var b []byte
	var err error
	if path == "-" {
		b, err = io.ReadAll(io.LimitReader(e.stdin, 4096))
	} else {
		b, err = os.ReadFile(path)
	}
	if err != nil {
		return "", problem.Newf(problem.BadRequest, "pass the file the operator's invite is in", "cannot read the invite: %v", err)
	}
	return strings.TrimSpace(string(b)), nil
}

func nonce() string {
	var b [16]byte
	rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

func whoamiCmd(e *env) *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:     "whoami",
		Short:   "Show the account and session of this machine (never the token)",
		Example: "  agentkeys whoami\n  agentkeys whoami --json",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			s, c, err := e.ownerSession()
			if err != nil {
				return err
			}
			w, err := c.Whoami(cmd.Context())
			if err != nil {
				return err
			}
			out := map[string]any{"omni": w.Omni, "wallet": w.Wallet, "role": w.Role, "server": s.Server, "session_expires": expiry(w.ExpiresAt)}
			if asJSON {
				return json.NewEncoder(e.stdout).Encode(out)
			}
			fmt.Fprintf(e.stdout, "omni:    %s\nwallet:  %s\nrole:    %s\nserver:  %s\nsession: expires %s\n",
				w.Omni, w.Wallet, w.Role, s.Server, expiry(w.ExpiresAt))
			return nil
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print as JSON")
	return cmd
}

func logoutCmd(e *env) *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:     "logout",
		Short:   "Revoke this machine's session on the ledger and delete it locally",
		Example: "  agentkeys logout\n  agentkeys logout --json",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			s, c, err := e.ownerSession()
			if err != nil {
				return err
			}
			var p *problem.Error
			if err := c.Logout(cmd.Context()); err != nil && !(errors.As(err, &p) && (p.Code == problem.Revoked || p.Code == problem.Unauthenticated)) {
				return err // keep the local session when the broker could not revoke it
			}
			d, _ := e.dir()
			if err := d.DeleteSession(); err != nil {
				return err
			}
			if asJSON {
				return e.jsonOut(map[string]any{"revoked": true, "server": s.Server, "omni": s.Omni, "sid": s.SID})
			}
			fmt.Fprintln(e.stdout, "Logged out: the session is revoked and deleted from this machine.")
			return nil
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the result as JSON")
	return cmd
}
