package cli

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/agentkeys/agentkeys/internal/problem"
)

// The conventions of the command line that every command shares (§11): version,
// the exit codes, the AGENTKEYS_SERVER default and the server's log format.

// buildInfo is what the binary knows about its own build.
type buildInfo struct {
	Version      string `json:"version"`                 // module version: a tag, a pseudo-version, or (devel)
	Revision     string `json:"revision,omitempty"`      // VCS commit, when the build was stamped
	RevisionTime string `json:"revision_time,omitempty"` // its commit time (RFC 3339)
	Modified     *bool  `json:"modified,omitempty"`      // the tree had uncommitted changes
	Go           string `json:"go"`                      // the Go toolchain
	Platform     string `json:"platform"`                // GOOS/GOARCH
}

func readBuildInfo() buildInfo {
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		bi = nil
	}
	return fromBuildInfo(bi)
}

// fromBuildInfo reads the module version and the vcs.* settings Go stamps.
func fromBuildInfo(bi *debug.BuildInfo) buildInfo {
	b := buildInfo{Version: "(devel)", Go: runtime.Version(), Platform: runtime.GOOS + "/" + runtime.GOARCH}
	if bi == nil {
		return b
	}
	if bi.Main.Version != "" {
		b.Version = bi.Main.Version
	}
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			b.Revision = s.Value
		case "vcs.time":
			b.RevisionTime = s.Value
		case "vcs.modified":
			m := s.Value == "true"
			b.Modified = &m
		}
	}
	return b
}

// line is the one-line text form: `agentkeys VERSION (revision R[, modified]) GO OS/ARCH`.
func (b buildInfo) line() string {
	rev := "revision unknown: built without VCS information"
	if b.Revision != "" {
		rev = "revision " + b.Revision
		if b.Modified != nil && *b.Modified {
			rev += ", modified"
		}
	}
	return fmt.Sprintf("agentkeys %s (%s) %s %s\n", b.Version, rev, b.Go, b.Platform)
}

func versionCmd(e *env) *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "version",
		Short: "Print the version, VCS revision and Go toolchain of this binary",
		Long: `Print the module version, the VCS revision the binary was built from (with
"modified" when the tree had uncommitted changes) and the Go toolchain, from the
build information Go stamps into the binary. agentkeys --version prints the same.`,
		Example: "  agentkeys version\n  agentkeys --version\n  agentkeys version --json",
		Args:    cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error {
			b := readBuildInfo()
			if asJSON {
				return e.printJSON(b)
			}
			_, err := io.WriteString(e.stdout, b.line())
			return err
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print as JSON")
	return cmd
}

// completionCmd adds cobra's `completion bash|zsh|fish|powershell`, refusing an
// unknown shell (cobra's own prints its help and exits 0).
func completionCmd(root *cobra.Command) {
	root.InitDefaultCompletionCmd()
	c, _, err := root.Find([]string{"completion"})
	if err != nil || c == root {
		return
	}
	c.Example = "  agentkeys completion bash > /etc/bash_completion.d/agentkeys\n" +
		"  agentkeys completion zsh > \"${fpath[1]}/_agentkeys\"\n  agentkeys completion fish > ~/.config/fish/completions/agentkeys.fish"
	c.RunE = func(cmd *cobra.Command, _ []string) error { return cmd.Help() } // no args: NoArgs refuses a shell it does not know
}

// Exit codes of run when its command cannot run, as in shells and op run.
const (
	exitCannotExecute = 126
	exitNotFound      = 127
)

// exitCodesTopic is `agentkeys help exit-codes`; docs/cli.md says the same.
func exitCodesTopic() *cobra.Command {
	return &cobra.Command{
		Use:   "exit-codes",
		Short: "The exit codes of every command",
		Long: fmt.Sprintf(`Every command exits with one of these codes; a refusal also prints
Error: CODE, what happened and Fix: on stderr (the stable codes in brackets).

  %d    success
  %d    error: anything not below (INTERNAL, CONFLICT, RATE_LIMITED, LEDGER_INVALID, a refusal to start)
  %d    usage: a bad command, flag, argument or input (BAD_REQUEST, TOO_LARGE)
  %d    denied: no session, a revoked one, a refused action or one waiting for approval
       (UNAUTHENTICATED, REVOKED, DENIED, APPROVAL_REQUIRED)
  %d    not found (NOT_FOUND)
  %d    unreachable: the broker or the daemon cannot be reached or is not ready (UNREACHABLE, NOT_READY)

agentkeys run -- COMMAND exits with COMMAND's own code once it ran, and as shells
and op run do when it could not (then it fetches no credential):

  %d  COMMAND was found but cannot be executed (not executable, a directory, not a program for this machine)
  %d  COMMAND was not found (not on PATH, or no such file)
  128+N  COMMAND was killed by signal N (143 for SIGTERM)`,
			problem.ExitOK, problem.ExitError, problem.ExitUsage, problem.ExitDenied, problem.ExitNotFound,
			problem.ExitUnreachable, exitCannotExecute, exitNotFound),
	}
}

// serverEnv names the broker URL every --server flag defaults to.
const serverEnv = "AGENTKEYS_SERVER"

// serverFlag adds --server to cmd: the broker URL, defaulting to $AGENTKEYS_SERVER
// and then to def. The flag wins over the variable.
func (e *env) serverFlag(cmd *cobra.Command, p *string, def, usage string) {
	if v := e.getenv(serverEnv); v != "" {
		def = v
	}
	cmd.Flags().StringVar(p, "server", def, usage+"; default $"+serverEnv+" when set (the flag wins)")
}

// serverGiven reports whether the user named a broker, by --server or $AGENTKEYS_SERVER.
func (e *env) serverGiven(cmd *cobra.Command) bool {
	return cmd.Flags().Changed("server") || e.getenv(serverEnv) != ""
}

// logHandler is the server's log handler for --log-format: text on a terminal and
// JSON otherwise (auto), or as chosen.
func logHandler(w io.Writer, format string, level slog.Level) (slog.Handler, error) {
	opts := &slog.HandlerOptions{Level: level}
	switch format {
	case "auto", "":
		if f, ok := w.(*os.File); ok && isTerminal(f) {
			return slog.NewTextHandler(w, opts), nil
		}
		return slog.NewJSONHandler(w, opts), nil
	case "text":
		return slog.NewTextHandler(w, opts), nil
	case "json":
		return slog.NewJSONHandler(w, opts), nil
	}
	return nil, problem.Newf(problem.BadRequest, "use --log-format text, json or auto (text on a terminal, JSON otherwise)",
		"--log-format %q is not a log format", format)
}

// checkInstalled refuses a binary that will not stay where it is: one in Go's build
// cache (go run) or in a temp dir. An MCP client's configuration names it and would
// break when the cache is trimmed or the temp dir cleaned.
func checkInstalled(ctx context.Context, self string, getenv func(string) string) error {
	where := ""
	if strings.Contains(filepath.ToSlash(self), "/go-build") {
		where = "Go's build cache (go run)"
	} else if within(self, goCache(ctx, getenv)) {
		where = "Go's build cache (go run)"
	} else if within(self, os.TempDir()) {
		where = "a temp dir"
	}
	if where == "" {
		return nil
	}
	return problem.Newf(problem.BadRequest,
		"install the binary and run mcp-config with it: go install ./cmd/agentkeys in a checkout (then $(go env GOPATH)/bin/agentkeys daemon mcp-config), or copy it to a directory on your PATH such as /usr/local/bin",
		"this agentkeys binary is %s, in %s: an MCP client configured with it would break when that is cleaned", self, where)
}

// goCache is $GOCACHE, else what `go env GOCACHE` says ("" when go is not installed).
func goCache(ctx context.Context, getenv func(string) string) string {
	if c := getenv("GOCACHE"); c != "" {
		return c
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, "go", "env", "GOCACHE").Output()
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(out))
}

// within reports whether path is inside dir (both resolved through symlinks).
func within(path, dir string) bool {
	if dir == "" || !filepath.IsAbs(dir) {
		return false
	}
	if r, err := filepath.EvalSymlinks(dir); err == nil {
		dir = r
	}
	rel, err := filepath.Rel(dir, path)
	return err == nil && rel != ".." && !strings.HasPrefix(rel, ".."+string(filepath.Separator)) && !filepath.IsAbs(rel)
}
