package cli

import (
	"io"
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/spf13/cobra"
)

// docSections maps each command path a "### " heading of docs/cli.md names in
// backquotes (`agentkeys agent approve`) to the text under that heading, up to
// the next heading. Lines inside code fences are never headings.
func docSections(doc string) map[string]string {
	out := map[string]string{}
	var paths []string
	var body strings.Builder
	flush := func() {
		for _, p := range paths {
			out[p] = body.String()
		}
		paths, body = nil, strings.Builder{}
	}
	fenced := false
	for line := range strings.Lines(doc) {
		if strings.HasPrefix(line, "```") {
			fenced = !fenced
		}
		if !fenced && strings.HasPrefix(line, "#") {
			flush()
			if strings.HasPrefix(line, "### ") {
				for _, m := range headingPath.FindAllStringSubmatch(line, -1) {
					paths = append(paths, m[1])
				}
			}
			continue
		}
		body.WriteString(line)
	}
	flush()
	return out
}

var (
	headingPath = regexp.MustCompile("`(agentkeys(?: [a-z0-9-]+)*)`")
	// jsonShape is a ```json fence holding at least one "key": of an object.
	jsonShape = regexp.MustCompile("(?s)```json\n[^`]*\"[a-zA-Z0-9_]+\\??\":")
)

const noJSON = "No `--json`"

// checkCLIDoc lists what doc (docs/cli.md) misses about root's command tree:
// each runnable command has a "### `agentkeys …`" section; one with a --json
// flag shows its shape in a ```json fence, one without says "No `--json`" and
// why; a group (subcommands only) is named somewhere; a help topic has a
// section as `agentkeys help TOPIC`. A section naming no command is reported
// too, so the page cannot keep a command that is gone.
func checkCLIDoc(root *cobra.Command, doc string) []string {
	sections := docSections(doc)
	known := map[string]bool{}
	var problems []string
	var walk func(c *cobra.Command)
	walk = func(c *cobra.Command) {
		for _, sub := range c.Commands() {
			if sub.Hidden || sub.Name() == "help" {
				continue
			}
			path := sub.CommandPath()
			switch {
			case !sub.Runnable() && sub.HasSubCommands(): // a group: its subcommands say what it does
				known[path] = true
				if !strings.Contains(doc, "`"+path) {
					problems = append(problems, path+": not mentioned")
				}
			case !sub.Runnable(): // a help topic: agentkeys help TOPIC
				path = root.Name() + " help " + sub.Name()
				known[path] = true
				if _, ok := sections[path]; !ok {
					problems = append(problems, path+": no ### section")
				}
			default:
				known[path] = true
				body, ok := sections[path]
				hasJSON := sub.Flags().Lookup("json") != nil || sub.InheritedFlags().Lookup("json") != nil
				switch {
				case !ok:
					problems = append(problems, path+": no ### section")
				case hasJSON && !jsonShape.MatchString(body):
					problems = append(problems, path+": has --json but its section shows no JSON shape (a ```json fence with its keys)")
				case hasJSON && strings.Contains(body, noJSON):
					problems = append(problems, path+": has --json but its section says "+noJSON)
				case !hasJSON && !strings.Contains(body, noJSON):
					problems = append(problems, path+": has no --json flag but its section does not say "+noJSON+" and why")
				}
			}
			walk(sub)
		}
	}
	walk(root)
	for p := range sections {
		if !known[p] {
			problems = append(problems, p+": a section names a command that does not exist")
		}
	}
	slices.Sort(problems)
	return problems
}

func readCLIDoc(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile("../../docs/cli.md")
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func docRoot() *cobra.Command {
	return newRoot(&env{stdin: strings.NewReader(""), stdout: io.Discard, stderr: io.Discard, getenv: func(string) string { return "" }})
}

// TestCLIDocCoversEveryCommand keeps docs/cli.md in step with the command tree.
func TestCLIDocCoversEveryCommand(t *testing.T) {
	root := docRoot()
	for _, p := range checkCLIDoc(root, readCLIDoc(t)) {
		t.Errorf("docs/cli.md: %s", p)
	}
	// The walk reaches the commands it is meant to check.
	sections := docSections(readCLIDoc(t))
	for _, p := range []string{"agentkeys agent approve", "agentkeys oidc register seaweedfs", "agentkeys help exit-codes", "agentkeys server invite"} {
		if _, ok := sections[p]; !ok {
			t.Errorf("no section for %s", p)
		}
	}
}

// TestCLIDocCheckFails shows each rule of checkCLIDoc catching a page that
// falls behind: a command with no section, a --json command with no shape, a
// command without --json that does not say so, a section for a command that
// is gone.
func TestCLIDocCheckFails(t *testing.T) {
	doc := readCLIDoc(t)
	cut := func(from, to string) string {
		i := strings.Index(doc, from)
		j := strings.Index(doc[i:], to)
		if i < 0 || j < 0 {
			t.Fatalf("docs/cli.md has no %q … %q", from, to)
		}
		return doc[:i] + doc[i+j:]
	}
	cases := []struct {
		name, doc, want string
	}{
		{"section removed", cut("### `agentkeys agent deny`", "### `agentkeys agent list`"), "agentkeys agent deny: no ### section"},
		{"shape removed", cut("```json\n{\"service\": string, \"agent\": string, \"version\": int, \"approval\"", "### `agentkeys read`"),
			"agentkeys store: has --json but its section shows no JSON shape"},
		{"reason removed", strings.Replace(doc, "No `--json`: stdout and the exit code are COMMAND's own", "Stdout and the exit code are COMMAND's own", 1),
			"agentkeys run: has no --json flag but its section does not say"},
		{"gone command", doc + "\n### `agentkeys frobnicate`\n\nNo `--json`: gone.\n", "agentkeys frobnicate: a section names a command that does not exist"},
		{"topic removed", cut("### `agentkeys help exit-codes`", "## Exit codes"), "agentkeys help exit-codes: no ### section"},
	}
	root := docRoot()
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got := checkCLIDoc(root, c.doc)
			if !slices.ContainsFunc(got, func(p string) bool { return strings.HasPrefix(p, c.want) }) {
				t.Errorf("want a problem %q, got %q", c.want, got)
			}
		})
	}
}
