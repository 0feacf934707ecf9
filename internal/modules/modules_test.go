package modules

import (
	"go/ast"
	"go/parser"
	"go/token"
	"io/fs"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/agentkeys/agentkeys/internal/ledger"
)

// decl is something the source declares: a Kind… constant, a Module variable or
// a schema built outside this package.
type decl struct {
	pos   string // file:line
	value string // the kind, or the module's Name
}

// scan parses the non-test Go files of the repository's internal packages.
func scan(t *testing.T) (kinds, mods, schemas []decl) {
	t.Helper()
	fset := token.NewFileSet()
	err := filepath.WalkDir("..", func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
			return err
		}
		f, err := parser.ParseFile(fset, path, nil, 0)
		if err != nil {
			return err
		}
		inLedger := filepath.Dir(path) == filepath.Join("..", "ledger")
		inModules := filepath.Dir(path) == filepath.Join("..", "modules")
		ast.Inspect(f, func(n ast.Node) bool {
			at := func() string { return fset.Position(n.Pos()).String() }
			switch n := n.(type) {
			case *ast.GenDecl:
				for _, s := range n.Specs {
					vs, ok := s.(*ast.ValueSpec)
					if !ok {
						continue
					}
					for i, name := range vs.Names {
						if n.Tok == token.CONST && strings.HasPrefix(name.Name, "Kind") && i < len(vs.Values) {
							if v := stringLit(vs.Values[i]); v != "" {
								kinds = append(kinds, decl{fset.Position(name.Pos()).String(), v})
							}
						}
					}
				}
			case *ast.CompositeLit:
				switch typeName(n.Type) {
				case "ledger.Module":
					mods = append(mods, decl{at(), moduleName(n)})
				case "ledger.Schema":
					if !inLedger && !inModules {
						schemas = append(schemas, decl{at(), "a ledger.Schema literal"})
					}
				}
			case *ast.CallExpr:
				if typeName(n.Fun) == "ledger.NewSchema" && !inModules {
					schemas = append(schemas, decl{at(), "a ledger.NewSchema call"})
				}
			}
			return true
		})
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(kinds) < 20 || len(mods) < len(All) {
		t.Fatalf("the scan found %d kind constants and %d modules: it no longer sees the source", len(kinds), len(mods))
	}
	return kinds, mods, schemas
}

func stringLit(e ast.Expr) string {
	if b, ok := e.(*ast.BasicLit); ok && b.Kind == token.STRING {
		s, _ := strconv.Unquote(b.Value)
		return s
	}
	return ""
}

func typeName(e ast.Expr) string {
	switch e := e.(type) {
	case *ast.Ident:
		return e.Name
	case *ast.SelectorExpr:
		if x, ok := e.X.(*ast.Ident); ok {
			return x.Name + "." + e.Sel.Name
		}
	}
	return ""
}

func moduleName(lit *ast.CompositeLit) string {
	for _, el := range lit.Elts {
		if kv, ok := el.(*ast.KeyValueExpr); ok && typeName(kv.Key) == "Name" {
			return stringLit(kv.Value)
		}
	}
	return ""
}

// TestOneList: every kind the source declares reaches the schema through All;
// every module declared anywhere is in All; and nothing outside this package
// (and package ledger) builds a schema of its own, so the broker, the usage
// index and audit verify all see every kind.
func TestOneList(t *testing.T) {
	kinds, mods, schemas := scan(t)
	s := Schema()
	for _, k := range kinds {
		if _, ok := s.Kinds[k.value]; !ok && !ledger.CoreKind(k.value) {
			t.Errorf("%s: kind %q is in no module of modules.All: add it to its package's Module.Kinds (and a new module to All)", k.pos, k.value)
		}
	}
	var names []string
	for _, m := range All {
		names = append(names, m.Name)
	}
	for _, m := range mods {
		if !slices.Contains(names, m.value) {
			t.Errorf("%s: module %q is not in modules.All", m.pos, m.value)
		}
	}
	for _, d := range schemas {
		t.Errorf("%s: %s outside package modules: take modules.Schema() instead, so every kind is in it", d.pos, d.value)
	}
}

// TestEveryKindDeclaredWhole: each kind of each module says who may submit it
// and how it folds; a private kind says whose it is (else its owner could not
// read it, nor see its usage row); a row is shown only for a private kind.
func TestEveryKindDeclaredWhole(t *testing.T) {
	n, names := 0, map[string]bool{}
	for _, m := range All {
		if m.Name == "" || len(m.Kinds) == 0 || names[m.Name] {
			t.Errorf("module %q has no name, no kinds, or the name of another", m.Name)
		}
		names[m.Name] = true
		for name, k := range m.Kinds {
			n++
			switch {
			case k.Origins == 0 || k.Fold == nil:
				t.Errorf("%s (module %s): no origins or no fold", name, m.Name)
			case !k.Public && k.Owner == nil:
				t.Errorf("%s (module %s) is private but has no Owner: its owner could not read it", name, m.Name)
			case k.Public && (k.Owner != nil || k.Usage != nil):
				t.Errorf("%s (module %s) is public: everyone reads it, it is no one's and shows in no trail", name, m.Name)
			}
		}
	}
	if s := Schema(); len(s.Kinds) != n || s.Wallet == nil {
		t.Fatalf("the schema has %d kinds (wallet %v), the modules declare %d", len(s.Kinds), s.Wallet != nil, n)
	}
}
