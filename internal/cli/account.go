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

	"github.com/agentkeys/agentkeys/internal/apiv1"
	"github.com/agentkeys/agentkeys/internal/client"
	"github.com/agentkeys/agentkeys/internal/home"
	"github.com/agentkeys/agentkeys/internal/problem"
)

func initCmd(e *env) *cobra.Command {
	var server, inviteFile string
	var force, asJSON bool
	cmd := &cobra.Command{
		Use:   "init",
		Short: "Create your owner account on a broker, or log in to it again",
		Long: `Create the owner identity key on this machine ($AGENTKEYS_HOME/owner/identity.json,
0600), register the account with the broker (omni, enclave-held wallet, an
account.created ledger entry) and store a 30-day session the same way.

Running it again asks the broker whether this machine's session is still valid:
if it is, nothing changes; if it is not (after logout, or once it expired or was
revoked), init logs in again with the same identity — a new session from a
signed statement, on the same account — or signs up if the broker has no
account for the identity (e.g. an earlier sign-up was refused). --force opens a
new session even when the current one is valid, and pins the broker's platform
key again after an operator change. The identity key is never replaced.

A broker started with --signup invite needs the invite its operator gave you for
the sign-up: --invite-file FILE (- for stdin); logging in needs none.`,
		Example: "  agentkeys init --server http://127.0.0.1:8090\n  agentkeys init            # after logout: log in again\n" +
			"  agentkeys init --force\n  agentkeys init --server https://keys.example.com --invite-file invite.txt",
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
			old, serr := d.Session() // after logout: the broker and its pinned key, no token
			if serr != nil {
				old = &home.Session{}
			}
			if !e.serverGiven(cmd) && old.Server != "" {
				server = old.Server
			}
			c, err := client.New(server)
			if err != nil {
				return err
			}
			report := func(action string, omni, wallet string, expires int64) error {
				if asJSON {
					return json.NewEncoder(e.stdout).Encode(map[string]any{"action": action, "created": action == "created",
						"omni": omni, "wallet": wallet, "server": c.Server(), "expires_at": expiry(expires)})
				}
				head := map[string]string{"created": "Account created.", "logged_in": "Logged in.",
					"none": "The account already exists and this machine is logged in; nothing changed (--force opens a new session)."}[action]
				fmt.Fprintf(e.stdout, "%s\n  omni:    %s\n  wallet:  %s\n  server:  %s\n  session: expires %s\n",
					head, omni, wallet, c.Server(), expiry(expires))
				return nil
			}
			if !fresh && !force && old.Token != "" && old.Server == c.Server() {
				w, err := c.WithToken(old.Token).Whoami(ctx)
				if err == nil {
					return report("none", w.Omni, w.Wallet, w.ExpiresAt)
				}
				if p := problem.As(err); p.Code != problem.Unauthenticated && p.Code != problem.Revoked {
					return err // unreachable, refusing for another reason: change nothing
				}
				fmt.Fprintf(e.stderr, "This machine's session is no longer valid (%s); logging in again.\n", problem.As(err).Message)
			}
			pinned := ""
			if old.Server == c.Server() && !force { // --force re-pins after an operator change
				pinned = old.PlatformKey
			}
			if _, pinned, err = attestedShielding(ctx, c, pinned); err != nil {
				return err
			}
			invite, err := e.readInvite(inviteFile)
			if err != nil {
				return err
			}
			if fresh {
				if id, err = d.NewIdentity(); err != nil {
					return err
				}
			}
			statement := func(invite string) apiv1.Login {
				l := apiv1.Login{PublicKey: hex.EncodeToString(id.Public().(ed25519.PublicKey)), Server: c.Server(),
					Time: time.Now().Unix(), Nonce: nonce(), Invite: invite}
				apiv1.SignLogin(&l, id)
				return l
			}
			// An existing identity logs in; one the broker has no account for (a
			// new one, or one whose sign-up was refused) signs up.
			action := "logged_in"
			var g *apiv1.SessionGrant
			if !fresh {
				g, err = c.OpenSession(ctx, statement(""))
			}
			if fresh || (err != nil && problem.As(err).Code == problem.NotFound) {
				action = "created"
				g, err = c.CreateAccount(ctx, statement(invite))
			}
			if err != nil {
				return err
			}
			s := &home.Session{Server: c.Server(), Omni: g.Omni, Wallet: g.Wallet, SID: g.SID, Token: g.Token,
				ExpiresAt: g.ExpiresAt, PlatformKey: pinned}
			if err := d.SaveSession(s); err != nil {
				return err
			}
			return report(action, g.Omni, g.Wallet, g.ExpiresAt)
		},
	}
	e.serverFlag(cmd, &server, DefaultServer, "broker URL")
	cmd.Flags().BoolVar(&force, "force", false, "open a new session with the existing identity even if the current one is valid, and pin the broker's platform key again")
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
		return "", problem.Wrap(err, problem.BadRequest, "pass the file the operator's invite is in", "cannot read the invite: %v", err)
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
		Short:   "Revoke this machine's session on the ledger and delete its token locally",
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
			// Keep the broker and its pinned platform key (not the token): a plain
			// `agentkeys init` logs back in to the same broker under the same pin.
			d, _ := e.dir()
			if err := d.SaveSession(&home.Session{Server: s.Server, Omni: s.Omni, Wallet: s.Wallet, PlatformKey: s.PlatformKey}); err != nil {
				return err
			}
			if asJSON {
				return e.jsonOut(map[string]any{"revoked": true, "server": s.Server, "omni": s.Omni, "sid": s.SID})
			}
			fmt.Fprintln(e.stdout, "Logged out: the session is revoked and its token deleted from this machine; agentkeys init logs in again.")
			return nil
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the result as JSON")
	return cmd
}
