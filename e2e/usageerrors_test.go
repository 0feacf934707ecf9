package e2e

import (
	"os"
	"strings"
	"testing"
)

// TestUsageErrorsExit2: the real binary answers a command line cobra refuses (a bad
// flag, an unknown command, a wrong argument count, a missing required flag) with
// BAD_REQUEST, the fix pointing at --help, exit 2, and nothing written to the home.
func TestUsageErrorsExit2(t *testing.T) {
	h := newHarness(t)
	for _, c := range []struct {
		args []string
		msg  string
	}{
		{[]string{"store", "openai", "--no-such-flag"}, "unknown flag: --no-such-flag"},
		{[]string{"usage", "--limit", "many"}, `invalid argument "many" for "--limit" flag`},
		{[]string{"server", "--listen"}, "flag needs an argument: --listen"},
		{[]string{"stroe", "openai"}, `unknown command "stroe" for "agentkeys"`},
		{[]string{"whoami", "extra"}, `unknown command "extra" for "agentkeys whoami"`},
		{[]string{"approve", "a", "b"}, "accepts at most 1 arg(s), received 2"},
		{[]string{"daemon", "aws-credentials"}, `required flag(s) "role-arn" not set`},
	} {
		home := t.TempDir()
		r := h.cli(home, c.args...)
		wantProblem(t, r, 2, "BAD_REQUEST", c.msg)
		if !strings.HasSuffix(r.stderr, "\n  Fix: run the command with --help for usage and an example\n") || r.stdout != "" {
			t.Errorf("agentkeys %s: stdout %q stderr %q", strings.Join(c.args, " "), r.stdout, r.stderr)
		}
		if left, _ := os.ReadDir(home); len(left) != 0 {
			t.Errorf("agentkeys %s wrote %d entries to the home", strings.Join(c.args, " "), len(left))
		}
	}
}
