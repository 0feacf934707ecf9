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
	root := newRoot(e)
	root.SetArgs(args)
	root.SetIn(stdin)
	root.SetOut(stdout)
	root.SetErr(stderr)
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	err := root.ExecuteContext(ctx)
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
		if isUsage(err) {
			p = usageProblem(err)
		} else {
			p = problem.New(problem.Internal, err.Error(), "retry; if it persists, report it with the command you ran")
		}
	}
	printProblem(stderr, p)
	return p.ExitCode()
}

// usageProblem reports a command used wrongly (flags, arguments).
func usageProblem(err error) *problem.Error {
	return problem.New(problem.BadRequest, err.Error(), "run the command with --help for usage and an example")
}

func isUsage(err error) bool {
	s := err.Error()
	for _, prefix := range []string{"unknown command", "unknown flag", "unknown shorthand", "invalid argument", "flag needs", "accepts ", "requires ", "required flag"} {
		if strings.HasPrefix(s, prefix) {
			return true
		}
	}
	return false
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
		agentCmd(e), daemonCmd(e), runCmd(e), importCmd(e), oidcCmd(e), releaseCmd(e), benchCmd(e), versionCmd(e), exitCodesTopic())
	completionCmd(root)
	return root
}
