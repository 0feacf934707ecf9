package cli

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"strings"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/agentkeys/agentkeys/internal/api"
	"github.com/agentkeys/agentkeys/internal/daemon"
	"github.com/agentkeys/agentkeys/internal/problem"
	"github.com/agentkeys/agentkeys/internal/vault"
)

// exitError ends the CLI with code: a child's exit code, printing nothing, or
// problem's text with a code of its own (126 and 127 for run).
type exitError struct {
	code    int
	problem *problem.Error
}

func (e exitError) Error() string { return fmt.Sprintf("exit status %d", e.code) }

// EnvName is the variable a service's credential is exported as: upper-case,
// '-' and '.' become '_', then _API_KEY.
func EnvName(service string) string {
	return strings.NewReplacer("-", "_", ".", "_").Replace(strings.ToUpper(service)) + "_API_KEY"
}

func runCmd(e *env) *cobra.Command {
	var alias, socket, envFile string
	var envs []string
	cmd := &cobra.Command{
		Use:   "run [--agent A] [--env NAME=SERVICE]... [--env-file FILE] -- COMMAND [ARG]...",
		Short: "Run a command with credentials in its environment (only the child sees them)",
		Long: `Fetch credentials and run COMMAND with each exported as <SERVICE>_API_KEY
(upper-case, '-' → '_'), or as NAME with --env NAME=SERVICE. Without --env every
credential you may read is exported. --env-file FILE reads a .env file where a
line NAME=agentkeys://SERVICE exports SERVICE's credential as NAME (fetched as
--env does; --env wins for the same NAME) and NAME=value passes through as it
is; then only the file's and --env's names are exported. Every credential is
fetched before COMMAND starts: one that cannot be read stops run. With --socket
PATH it asks the daemon serving that socket (a daemon running as another user); inside a paired sandbox it uses
the daemon's session (the agent's scope applies either way); otherwise the owner's
session, where --agent A prefers the credentials stored for agent A. Values are
never printed; the exit code is the command's. COMMAND gets no AGENTKEYS_
variable (AGENTKEYS_HOME would point it at the keys).`,
		Example: "  agentkeys run -- python agent.py\n  agentkeys run --env OPENAI_API_KEY=openai -- ./script.sh\n  agentkeys run --env-file .env.agentkeys -- npm start\n  agentkeys run --agent ci-bot -- make deploy\n" +
			"  agentkeys run --socket /run/agentkeys/agentkeys.sock -- python agent.py",
		Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			want := map[string]string{} // env name → service
			var order []string
			var plain []string // NAME=value lines of --env-file
			if envFile != "" {
				refs, p, err := e.envFileRefs(envFile)
				if err != nil {
					return err
				}
				plain = p
				for _, r := range refs {
					want[r[0]] = r[1]
					order = append(order, r[0])
				}
			}
			for _, kv := range envs {
				name, svc, ok := strings.Cut(kv, "=")
				if !ok || name == "" || !vault.ValidName(svc) || strings.ContainsAny(name, "= ") {
					return problem.Newf(problem.BadRequest, "use --env NAME=SERVICE, e.g. --env OPENAI_API_KEY=openai", "--env %q is not NAME=SERVICE", kv)
				}
				if _, dup := want[name]; !dup {
					order = append(order, name)
				}
				want[name] = svc
			}
			// Before any credential is fetched: a command that cannot run gets none.
			if _, err := exec.LookPath(args[0]); err != nil {
				return cannotRun(args[0], err)
			}
			var fetch func(string) ([]byte, error)
			var list func() ([]string, error)
			if socket != "" {
				if alias != "" {
					return problem.New(problem.BadRequest, "--agent is for the owner's side, not with --socket", "omit --agent")
				}
				src := daemon.NewSocketClient(socket)
				fetch = func(s string) ([]byte, error) { return src.Get(ctx, s) }
				list = func() ([]string, error) { return src.List(ctx) }
			} else if d := e.daemonDir(); d.Paired() {
				src := daemon.Source{Dir: d}
				if alias != "" {
					if s, err := d.LoadSession(); err == nil && s.Alias != alias {
						return problem.Newf(problem.Denied, "omit --agent inside the sandbox", "this daemon is paired as %q, not %q", s.Alias, alias)
					}
				}
				fetch = func(s string) ([]byte, error) { return src.Get(ctx, s) }
				list = func() ([]string, error) { return src.List(ctx) }
			} else {
				_, c, err := e.ownerSession()
				if err != nil {
					return problem.New(problem.Unauthenticated, "no daemon session and no owner session on this machine",
						"pair the sandbox (agentkeys daemon pair) or log in as the owner (agentkeys init)")
				}
				fetch = func(s string) ([]byte, error) {
					k, err := newHPKEKey()
					if err != nil {
						return nil, err
					}
					res, err := c.Read(ctx, s, api.ReadBody{Agent: alias, Recipient: k.PublicKey().Bytes()})
					if err != nil && alias != "" && problem.As(err).Code == problem.NotFound {
						res, err = c.Read(ctx, s, api.ReadBody{Recipient: k.PublicKey().Bytes()})
					}
					if err != nil {
						return nil, err
					}
					return openFor(k, res.Info, res.Sealed)
				}
				list = func() ([]string, error) {
					all, err := c.List(ctx)
					if err != nil {
						return nil, err
					}
					seen := map[string]bool{}
					var out []string
					for _, cr := range all {
						if (cr.Agent == vault.OwnerWide || cr.Agent == alias) && !seen[cr.Service] {
							seen[cr.Service] = true
							out = append(out, cr.Service)
						}
					}
					return out, nil
				}
			}
			if len(want) == 0 && envFile == "" {
				services, err := list()
				if err != nil {
					return err
				}
				for _, s := range services {
					want[EnvName(s)] = s
					order = append(order, EnvName(s))
				}
			}
			child := append(childEnv(os.Environ()), plain...)
			for _, name := range order {
				v, err := fetch(want[name])
				if err != nil {
					if p := problem.As(err); p.Code != problem.Internal { // name the variable it was for
						q := *p
						q.Message = fmt.Sprintf("%s (%s%s): %s", name, RefScheme, want[name], p.Message)
						return &q
					}
					return err
				}
				child = append(child, name+"="+string(v))
				clear(v)
			}
			c := exec.CommandContext(ctx, args[0], args[1:]...)
			c.Env = child
			c.Stdin, c.Stdout, c.Stderr = e.stdin, e.stdout, e.stderr
			if err := c.Run(); err != nil {
				var ee *exec.ExitError
				if errors.As(err, &ee) {
					if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
						return exitError{code: 128 + int(ws.Signal())} // as a shell reports it
					}
					return exitError{code: max(ee.ExitCode(), 1)}
				}
				return cannotRun(args[0], err)
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&alias, "agent", "", "owner side: prefer the credentials stored for this agent")
	cmd.Flags().StringVar(&socket, "socket", "", "ask the daemon serving this socket (daemon serve --socket-group)")
	cmd.Flags().StringArrayVar(&envs, "env", nil, "export SERVICE's credential as NAME (NAME=SERVICE), repeatable")
	cmd.Flags().StringVar(&envFile, "env-file", "", "a .env file: NAME=agentkeys://SERVICE lines export SERVICE's credential as NAME, NAME=value lines pass through")
	return cmd
}

// cannotRun is run's answer when name cannot be started: 127 when it does not
// exist, 126 when it exists but cannot be executed, as shells and op run exit.
func cannotRun(name string, err error) error {
	if errors.Is(err, exec.ErrNotFound) || errors.Is(err, fs.ErrNotExist) {
		return exitError{code: exitNotFound, problem: problem.Newf(problem.NotFound,
			"check the command's name, or give its path (./script.sh); agentkeys help exit-codes lists the codes",
			"command %q not found: %v", name, err)}
	}
	fix := "make it executable (chmod +x " + name + ") or run it through its interpreter (sh " + name + ")"
	if errors.Is(err, syscall.EISDIR) {
		fix = "give the path of a program, not of a directory"
	} else if errors.Is(err, syscall.ENOEXEC) {
		fix = "check that it is a program for this machine, or add a #! line naming its interpreter"
	}
	return exitError{code: exitCannotExecute, problem: problem.Newf(problem.Denied, fix, "cannot execute %s: %v", name, err)}
}

// childEnv is env without AGENTKEYS_ variables: they point at this machine's
// AgentKeys state (AGENTKEYS_HOME: the daemon's keys or the owner's session), and
// a child that needs a credential gets it from run, not from the keys.
func childEnv(env []string) []string {
	var out []string
	for _, kv := range env {
		if !strings.HasPrefix(kv, "AGENTKEYS_") {
			out = append(out, kv)
		}
	}
	return out
}
