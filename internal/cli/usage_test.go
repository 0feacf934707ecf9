package cli

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"strings"
	"testing"

	"github.com/spf13/cobra"
)

const usageFix = "  Fix: run the command with --help for usage and an example\n"

// Every way of using a command wrongly that cobra itself detects — a bad flag, a
// wrong number of arguments, an unknown command, a missing required flag — is a
// BAD_REQUEST with exit 2, printed as §11's three lines, and runs nothing.
func TestUsageErrors(t *testing.T) {
	for _, c := range []struct {
		args []string
		msg  string
	}{
		{[]string{"whoami", "--no-such-flag"}, "unknown flag: --no-such-flag"},
		{[]string{"whoami", "-Z"}, "unknown shorthand flag: 'Z' in -Z"},
		{[]string{"usage", "--limit", "lots"}, `invalid argument "lots" for "--limit" flag: strconv.ParseInt: parsing "lots": invalid syntax`},
		{[]string{"usage", "--limit"}, "flag needs an argument: --limit"},
		{[]string{"no-such-command"}, `unknown command "no-such-command" for "agentkeys"`},
		{[]string{"whoami", "extra"}, `unknown command "extra" for "agentkeys whoami"`},
		{[]string{"run"}, "requires at least 1 arg(s), only received 0"},
		{[]string{"approve", "a", "b"}, "accepts at most 1 arg(s), received 2"},
		{[]string{"daemon", "aws-credentials"}, `required flag(s) "role-arn" not set`},
		{[]string{"release", "sign", "--key", "k"}, `required flag(s) "binary" not set`},
	} {
		var out, errb bytes.Buffer
		home := t.TempDir()
		t.Setenv("AGENTKEYS_HOME", home)
		code := Main(c.args, strings.NewReader(""), &out, &errb)
		want := "Error: BAD_REQUEST\n  " + c.msg + "\n" + usageFix
		if code != 2 || errb.String() != want || out.Len() != 0 {
			t.Errorf("agentkeys %s: exit %d\nstderr: %q\n  want: %q\nstdout: %q", strings.Join(c.args, " "), code, errb.String(), want, out.String())
		}
	}
}

// A command's own argument check (exactArgs) keeps its own message and fix.
func TestUsageErrorOwnProblem(t *testing.T) {
	var out, errb bytes.Buffer
	t.Setenv("AGENTKEYS_HOME", t.TempDir())
	code := Main([]string{"rm"}, strings.NewReader(""), &out, &errb)
	want := "Error: BAD_REQUEST\n  rm takes 1 argument(s), got 0\n  Fix: usage: agentkeys rm SERVICE\n"
	if code != 2 || errb.String() != want {
		t.Errorf("agentkeys rm: exit %d\nstderr: %q\n  want: %q", code, errb.String(), want)
	}
}

// A command's own failure is never taken for a usage error because its text looks
// like cobra's: it is INTERNAL (exit 1) with the error's text, and the problem
// wraps the error.
func TestRunErrorIsNotUsage(t *testing.T) {
	for _, text := range []string{"requires a running broker", "unknown flag in the config file", "invalid argument", "accepts only files"} {
		var out, errb bytes.Buffer
		home := t.TempDir()
		e := &env{stdin: strings.NewReader(""), stdout: &out, stderr: &errb, getenv: func(k string) string {
			if k == "AGENTKEYS_HOME" {
				return home
			}
			return ""
		}}
		root := newRoot(e)
		cause := fmt.Errorf("%s: %w", text, fs.ErrPermission)
		root.AddCommand(&cobra.Command{Use: "fails", RunE: func(*cobra.Command, []string) error { return cause }})
		code := execute(root, []string{"fails"}, e.stdin, &out, &errb)
		want := "Error: INTERNAL\n  " + cause.Error() + "\n  Fix: retry; if it persists, report it with the command you ran\n"
		if code != 1 || errb.String() != want {
			t.Errorf("%q: exit %d\nstderr: %q\n  want: %q", text, code, errb.String(), want)
		}
	}
}

// The flag error function hands cobra a problem that still wraps pflag's error.
func TestFlagErrorWrapsCause(t *testing.T) {
	root := newRoot(&env{stdin: strings.NewReader(""), stdout: &bytes.Buffer{}, stderr: &bytes.Buffer{}, getenv: func(string) string { return "" }})
	cause := errors.New("unknown flag: --x")
	err := root.FlagErrorFunc()(root, cause)
	if !errors.Is(err, cause) || err.Error() != "BAD_REQUEST: unknown flag: --x" {
		t.Errorf("flag error: %v", err)
	}
}
