// Package fence holds TestDeps, the dependency fence of the client side: the
// Go client, the agent daemon and the owner's CLI commands talk to a broker
// over HTTP and must not link the broker, the enclave, the ledger or a SQL
// driver (issue 10 item 2; in the spirit of tailscale's depaware). The wire
// types they share with the server live in leaf packages (apiv1, entry,
// attest, seal), which the test holds to importing only each other.
package fence

import (
	"bytes"
	"encoding/json"
	"errors"
	"go/ast"
	"go/parser"
	"go/token"
	"io"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

const mod = "github.com/agentkeys/agentkeys"

// forbidden reports why the package path may not be linked by a client.
func forbidden(path string) string {
	for _, p := range []string{"internal/broker", "internal/enclave", "internal/ledger", "internal/api"} {
		if full := mod + "/" + p; path == full || strings.HasPrefix(path, full+"/") {
			return "server side (" + p + ")"
		}
	}
	// database/sql/driver alone is interfaces (Valuer, Scanner) that libraries
	// such as google/uuid implement; it runs no SQL and opens nothing.
	if path == "database/sql/driver" {
		return ""
	}
	for _, p := range []string{"database/sql", "modernc.org/sqlite", "github.com/mattn/go-sqlite3", "github.com/jackc/pgx", "github.com/lib/pq"} {
		if path == p || strings.HasPrefix(path, p+"/") {
			return "a SQL driver (" + p + ")"
		}
	}
	return ""
}

// ownerExempt are the files of package cli whose commands run the server side
// or read its files (agentkeys server, audit verify --data-dir, release
// sign/verify, oidc rotate with the operator key, and governance: the members'
// commands, which write the genesis set into a data dir and sign with the
// operator or member keys; the operator's watchdog, which verifies the chain
// and signs revocations with the incident key; the mail edge, agentkeys
// server's in-process edge and agentkeys mail-edge, an operator's server
// beside the broker). Every other file of package
// cli holds owner or daemon commands and is fenced: by what its imports link,
// and by the names it uses, so that an owner command cannot reach the server
// side through a helper in an exempt file either (registering an exempt
// file's command, a name ending in Cmd, is allowed).
var ownerExempt = []string{"server.go", "audit.go", "release.go", "operator.go", "governance.go", "watchdog.go", "mailedge.go"}

type pkg struct {
	ImportPath string
	Imports    []string
	Standard   bool
}

// deps returns the packages that roots link (go list -deps), by import path.
func deps(t *testing.T, roots ...string) map[string]pkg {
	t.Helper()
	goTool, err := exec.LookPath("go")
	if err != nil {
		t.Fatalf("the go tool is needed to list dependencies: %v", err)
	}
	var out, stderr bytes.Buffer
	cmd := exec.Command(goTool, append([]string{"list", "-deps", "-json=ImportPath,Imports,Standard"}, roots...)...)
	cmd.Stdout, cmd.Stderr = &out, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("go list -deps %v: %v\n%s", roots, err, stderr.String())
	}
	m := map[string]pkg{}
	dec := json.NewDecoder(&out)
	for {
		var p pkg
		if err := dec.Decode(&p); errors.Is(err, io.EOF) {
			break
		} else if err != nil {
			t.Fatal(err)
		}
		m[p.ImportPath] = p
	}
	return m
}

// chain returns, for every package root links, an import path from root to
// it (for the failure message).
func chain(m map[string]pkg, root string) map[string][]string {
	paths := map[string][]string{root: {strings.TrimPrefix(root, mod+"/")}}
	queue := []string{root}
	for len(queue) > 0 {
		p := queue[0]
		queue = queue[1:]
		if p == verifier && p != root {
			continue // fenced on its own, see auditFence
		}
		for _, q := range m[p].Imports {
			if _, seen := paths[q]; !seen {
				paths[q] = append(slices.Clone(paths[p]), strings.TrimPrefix(q, mod+"/"))
				queue = append(queue, q)
			}
		}
	}
	return paths
}

// fence fails for every forbidden package that a root links; roots maps
// what is fenced (a package, a file of package cli) to its import paths.
func fence(t *testing.T, roots map[string][]string) {
	t.Helper()
	var all []string
	for _, r := range roots {
		all = append(all, r...)
	}
	slices.Sort(all)
	m := deps(t, slices.Compact(all)...)
	if len(m) == 0 {
		t.Fatal("go list found no packages")
	}
	for name, rs := range roots {
		seen := map[string]bool{}
		for _, root := range rs {
			reach := chain(m, root)
			for path, via := range reach {
				why := forbidden(path)
				// Name the first forbidden package on a path, not all it links.
				if why == "" || seen[path] || slices.ContainsFunc(via[:len(via)-1], func(p string) bool { return forbidden(mod+"/"+p) != "" || forbidden(p) != "" }) {
					continue
				}
				seen[path] = true
				t.Errorf("%s links %s, which is %s: %s", name, strings.TrimPrefix(path, mod+"/"), why, strings.Join(via, " -> "))
			}
		}
	}
}

// verifier is the owner's check of a broker's chain (audit verify --server,
// the console's health page): it verifies entries with the ledger's verifier
// and the module list, so it alone may link package ledger itself — never its
// stores, the broker, the enclave or a SQL driver (auditFence).
const verifier = mod + "/internal/audit"

// auditFence reports why the verifier may not link path.
func auditFence(path string) string {
	if path == mod+"/internal/ledger" {
		return ""
	}
	return forbidden(path)
}

func TestDeps(t *testing.T) {
	roots := map[string][]string{}
	for _, p := range []string{"internal/client", "internal/daemon"} {
		roots[p] = []string{mod + "/" + p}
	}

	// The owner's commands: the imports of package cli's files but the
	// server side's, each fenced with what it links.
	files, err := filepath.Glob("../cli/*.go")
	if err != nil || len(files) == 0 {
		t.Fatalf("no files of package cli: %v", err)
	}
	parsed := map[string]*ast.File{}
	exemptNames := map[string]string{} // top-level name -> exempt file declaring it
	for _, f := range files {
		base := filepath.Base(f)
		if strings.HasSuffix(base, "_test.go") {
			continue
		}
		af, err := parser.ParseFile(token.NewFileSet(), f, nil, parser.SkipObjectResolution)
		if err != nil {
			t.Fatal(err)
		}
		if slices.Contains(ownerExempt, base) {
			for _, n := range topLevel(af) {
				exemptNames[n] = base
			}
			continue
		}
		parsed[base] = af
	}
	for base, af := range parsed {
		name := "internal/cli/" + base
		roots[name] = []string{}
		for _, im := range af.Imports {
			roots[name] = append(roots[name], strings.Trim(im.Path.Value, `"`))
		}
		used := map[string]bool{}
		ast.Inspect(af, func(n ast.Node) bool {
			if id, ok := n.(*ast.Ident); ok && exemptNames[id.Name] != "" && !strings.HasSuffix(id.Name, "Cmd") && !used[id.Name] {
				used[id.Name] = true
				t.Errorf("%s uses %s, declared in internal/cli/%s, which is server side: move the command there or the helper out of it",
					name, id.Name, exemptNames[id.Name])
			}
			return true
		})
	}
	if len(roots) < 12 {
		t.Errorf("only %d owner-command files of package cli were fenced; the exempt list is %v", len(roots)-2, ownerExempt)
	}
	fence(t, roots)

	m := deps(t, verifier)
	reach := chain(m, verifier)
	for path, via := range reach {
		if why := auditFence(path); why != "" {
			t.Errorf("internal/audit (the owner's chain check) links %s, which is %s: %s", strings.TrimPrefix(path, mod+"/"), why, strings.Join(via, " -> "))
		}
	}
}

// topLevel returns the names a file declares at top level, methods included.
func topLevel(f *ast.File) []string {
	var out []string
	for _, d := range f.Decls {
		switch d := d.(type) {
		case *ast.FuncDecl:
			out = append(out, d.Name.Name)
		case *ast.GenDecl:
			for _, sp := range d.Specs {
				switch sp := sp.(type) {
				case *ast.TypeSpec:
					out = append(out, sp.Name.Name)
				case *ast.ValueSpec:
					for _, n := range sp.Names {
						out = append(out, n.Name)
					}
				}
			}
		}
	}
	return out
}

// TestLeaves: the packages client and server share import nothing of
// AgentKeys but each other, so the fence above cannot be bypassed through them.
func TestLeaves(t *testing.T) {
	allowed := map[string][]string{
		"internal/apiv1":   {"internal/apiv1", "internal/attest", "internal/dpop", "internal/entry"},
		"internal/attest":  {"internal/attest"},
		"internal/entry":   {"internal/entry"},
		"internal/seal":    {"internal/seal"},
		"internal/maildns": {"internal/maildns", "internal/apiv1", "internal/attest", "internal/dpop", "internal/entry"},

		// The client side's kept connections (bench, the daemon's socket client): the standard library only.
		"internal/httpconn": {"internal/httpconn"},
		// Batching of concurrent calls (the PostgreSQL driver, the daemon's reads): the standard library only.
		"internal/coalesce": {"internal/coalesce"},
	}
	for leaf, ok := range allowed {
		for path, p := range deps(t, mod+"/"+leaf) {
			if p.Standard || !strings.HasPrefix(path, mod+"/") {
				if why := forbidden(path); why != "" {
					t.Errorf("%s links %s, which is %s", leaf, path, why)
				}
				continue
			}
			if rel := strings.TrimPrefix(path, mod+"/"); !slices.Contains(ok, rel) {
				t.Errorf("%s links %s; a leaf links only %v", leaf, rel, ok)
			}
		}
	}
}
