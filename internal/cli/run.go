package cli

import (
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"os"
	"os/exec"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/agentkeys/agentkeys/internal/apiv1"
	"github.com/agentkeys/agentkeys/internal/client"
	"github.com/agentkeys/agentkeys/internal/daemon"
	"github.com/agentkeys/agentkeys/internal/problem"
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
	var timeout time.Duration
	cmd := &cobra.Command{
		Use:   "run [--agent A] [--env NAME=SERVICE]... [--env-file FILE] -- COMMAND [ARG]...",
		Short: "Run a command with credentials in its environment (only the child sees them)",
		Long: `Fetch credentials and run COMMAND with each exported as <SERVICE>_API_KEY
(upper-case, '-' → '_'), or as NAME with --env NAME=SERVICE. Without --env every
credential you may read is exported, except those whose reads need the owner's
approval (stored with --approval required): run names them on stderr and asks
for none; name one with --env to wait for its approval (up to --timeout).
--env-file FILE reads a .env file where a line NAME=agentkeys://SERVICE exports
SERVICE's credential as NAME (fetched as --env does; --env wins for the same
NAME) and NAME=value passes through as it is; then only the file's and --env's
names are exported. Every credential is fetched before COMMAND starts: one that
cannot be read stops run. With --socket PATH it asks the daemon serving that
socket (a daemon running as another user); inside a paired sandbox it uses the
daemon's session (the agent's scope applies either way); otherwise the owner's
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
				if !ok || name == "" || !apiv1.ValidName(svc) || strings.ContainsAny(name, "= ") {
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
			if err := checkTimeout(timeout); err != nil {
				return err
			}
			var fetch func(string, daemon.Wait) ([]byte, error)
			var list func() (*daemon.ServiceList, error)
			if socket != "" {
				if alias != "" {
					return problem.New(problem.BadRequest, "--agent is for the owner's side, not with --socket", "omit --agent")
				}
				src := daemon.NewSocketClient(socket)
				fetch = func(s string, w daemon.Wait) ([]byte, error) { return src.Get(ctx, s, w) }
				list = func() (*daemon.ServiceList, error) { return src.List(ctx) }
			} else if d := e.daemonDir(); d.Paired() {
				src := daemon.Source{Dir: d}
				if alias != "" {
					if s, err := d.LoadSession(); err == nil && s.Alias != alias {
						return problem.Newf(problem.Denied, "omit --agent inside the sandbox", "this daemon is paired as %q, not %q", s.Alias, alias)
					}
				}
				fetch = func(s string, w daemon.Wait) ([]byte, error) { return src.Get(ctx, s, w) }
				list = func() (*daemon.ServiceList, error) { return src.List(ctx) }
			} else {
				_, c, err := e.ownerSession()
				if err != nil {
					return problem.New(problem.Unauthenticated, "no daemon session and no owner session on this machine",
						"pair the sandbox (agentkeys daemon pair) or log in as the owner (agentkeys init)")
				}
				fetch = func(s string, w daemon.Wait) ([]byte, error) {
					k, err := newHPKEKey()
					if err != nil {
						return nil, err
					}
					read := func(agent string) (*apiv1.ReadResult, error) {
						return client.AwaitApproval(ctx, w.For, func() (*apiv1.ReadResult, error) {
							return c.Read(ctx, s, apiv1.ReadBody{Agent: agent, Recipient: k.PublicKey().Bytes()})
						}, w.Progress)
					}
					res, err := read(alias)
					if err != nil && alias != "" && problem.As(err).Code == problem.NotFound {
						res, err = read("")
					}
					if err != nil {
						return nil, err
					}
					return openFor(k, res.Info, res.Sealed)
				}
				list = func() (*daemon.ServiceList, error) {
					all, err := c.List(ctx)
					if err != nil {
						return nil, err
					}
					return readable(all, alias), nil
				}
			}
			if len(want) == 0 && envFile == "" {
				l, err := list()
				if err != nil {
					return err
				}
				var left []string
				for _, s := range l.Services {
					if slices.Contains(l.ApprovalRequired, s) {
						left = append(left, s) // run would wait for the owner, once per credential
						continue
					}
					want[EnvName(s)] = s
					order = append(order, EnvName(s))
				}
				if len(left) > 0 {
					fmt.Fprintf(e.stderr, "agentkeys run: left out %s: each read needs the owner's approval. To wait for one, name it, e.g. --env %s=%s\n",
						strings.Join(left, ", "), EnvName(left[0]), left[0])
				}
			}
			child := append(childEnv(os.Environ()), plain...)
			for _, name := range order {
				progress, done := e.approvalProgress(want[name], timeout)
				v, err := fetch(want[name], daemon.Wait{For: timeout, Progress: progress})
				done()
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
	cmd.Flags().DurationVar(&timeout, "timeout", client.DefaultApprovalWait, "with --env: how long to wait for the owner's approval of a credential that needs it (1s to 5m)")
	return cmd
}

// readable is what the owner's run exports without --env: per service, the
// credential a read would release (the one stored for agent alias, if any,
// else the owner-wide one), and which of them need approval.
func readable(all []apiv1.Credential, alias string) *daemon.ServiceList {
	pick := map[string]apiv1.Credential{}
	for _, cr := range all {
		if cr.Agent == apiv1.OwnerWide && pick[cr.Service].Service == "" || alias != "" && cr.Agent == alias {
			pick[cr.Service] = cr
		}
	}
	out := &daemon.ServiceList{Services: []string{}}
	for _, s := range slices.Sorted(maps.Keys(pick)) {
		out.Services = append(out.Services, s)
		if pick[s].Approval == apiv1.ApprovalRequired {
			out.ApprovalRequired = append(out.ApprovalRequired, s)
		}
	}
	return out
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
	return exitError{code: exitCannotExecute, problem: problem.Wrap(err, problem.Denied, fix, "cannot execute %s: %v", name, err)}
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
