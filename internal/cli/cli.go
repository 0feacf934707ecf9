// Package cli is the agentkeys command line: one cobra tree for the server, the
// owner's management commands and the sandbox daemon. Commands parse flags, call
// packages client/broker/audit, and print; errors follow §11 (code, what happened,
// fix) with its exit codes. No command takes a secret in argv.
package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/agentkeys/agentkeys/internal/problem"
)

// env is what commands see of the process: streams and environment.
type env struct {
	stdin          io.Reader
	stdout, stderr io.Writer
	getenv         func(string) string
}

// home is $AGENTKEYS_HOME, or ~/.agentkeys: all local state of every command.
func (e *env) home() string {
	if h := e.getenv("AGENTKEYS_HOME"); h != "" {
		return h
	}
	if h, err := os.UserHomeDir(); err == nil {
		return filepath.Join(h, ".agentkeys")
	}
	return ".agentkeys"
}

// Main runs the CLI and returns the process exit code.
func Main(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	e := &env{stdin: stdin, stdout: stdout, stderr: stderr, getenv: os.Getenv}
	return execute(newRoot(e), args, stdin, stdout, stderr)
}

// execute runs root on args, prints a failure as §11's lines and returns the exit code.
func execute(root *cobra.Command, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	root.SetArgs(args)
	root.SetIn(stdin)
	root.SetOut(stdout)
	root.SetErr(stderr)
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	cmd, err := root.ExecuteContextC(ctx)
	if err == nil {
		return problem.ExitOK
	}
	var ee exitError
	if errors.As(err, &ee) {
		if ee.problem != nil {
			printProblem(stderr, ee.problem)
		}
		return ee.code
	}
	var p *problem.Error
	if !errors.As(err, &p) {
		if cmd.RunE == nil {
			// No command of ours ran: cobra found none for the arguments (an
			// unknown command), or it is one of cobra's own (__complete).
			p = usageProblem(err)
		} else {
			p = problem.Wrap(err, problem.Internal, "retry; if it persists, report it with the command you ran", "%v", err)
		}
	}
	printProblem(stderr, p)
	return p.ExitCode()
}

// usageProblem reports a command used wrongly (flags, arguments).
func usageProblem(err error) *problem.Error {
	return problem.Wrap(err, problem.BadRequest, "run the command with --help for usage and an example", "%v", err)
}

// usageErrors makes every error cobra finds in a command line before a command
// runs a usage problem (BAD_REQUEST, exit 2), by where it comes from rather than by
// its text: flag parsing through the root's flag error function (every command
// inherits it), argument counts through each command's Args, and required flags
// through a PreRunE that checks them before cobra's own check would. An Args that
// already returns a problem (exactArgs) keeps it.
func usageErrors(root *cobra.Command) {
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return usageProblem(err) })
	var walk func(c *cobra.Command)
	walk = func(c *cobra.Command) {
		if args := c.Args; args != nil {
			c.Args = func(cmd *cobra.Command, a []string) error { return asUsage(args(cmd, a)) }
		}
		if c.RunE != nil && c.PreRunE == nil && c.PreRun == nil {
			c.PreRunE = func(cmd *cobra.Command, _ []string) error {
				if err := cmd.ValidateRequiredFlags(); err != nil {
					return usageProblem(err)
				}
				return asUsage(cmd.ValidateFlagGroups())
			}
		}
		for _, sub := range c.Commands() {
			walk(sub)
		}
	}
	walk(root)
}

// asUsage is err as a usage problem, unless it is nil or a problem already.
func asUsage(err error) error {
	var p *problem.Error
	if err == nil || errors.As(err, &p) {
		return err
	}
	return usageProblem(err)
}

// printProblem prints §11's three lines; a problem without a fix is one line (its
// message already says what to do, as a refusal to start does).
func printProblem(w io.Writer, p *problem.Error) {
	if p.Fix == "" {
		fmt.Fprintf(w, "Error: %s: %s\n", p.Code, p.Message)
		return
	}
	fmt.Fprintf(w, "Error: %s\n  %s\n", p.Code, p.Message)
	if p.Fix != "" {
		fmt.Fprintf(w, "  Fix: %s\n", p.Fix)
	}
}

func newRoot(e *env) *cobra.Command {
	root := &cobra.Command{
		Use:   "agentkeys",
		Short: "Credential broker for AI agents",
		Long: `AgentKeys keeps API keys and cloud access in one place and gives each AI agent
scoped, revocable, audited access to them. Every action lands on a signed,
hash-chained ledger; every key comes from one sealed seed.`,
		Example: "  agentkeys server\n  agentkeys init --server http://127.0.0.1:8090\n" +
			"  agentkeys store openai < openai.key\n  agentkeys read openai",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.Version = strings.TrimSuffix(readBuildInfo().line(), "\n")
	root.SetVersionTemplate("{{.Version}}\n")
	root.AddCommand(serverCmd(e), auditCmd(e), initCmd(e), whoamiCmd(e), logoutCmd(e),
		storeCmd(e), readCmd(e), listCmd(e), rmCmd(e), approveCmd(e), usageCmd(e),
		agentCmd(e), daemonCmd(e), runCmd(e), importCmd(e), oidcCmd(e), governanceCmd(e), domainCmd(e), inboxCmd(e), mailCmd(e), mailEdgeCmd(e), releaseCmd(e), benchCmd(e), consoleCmd(e), watchdogCmd(e), versionCmd(e), exitCodesTopic())
	completionCmd(root)
	usageErrors(root)
	return root
}
