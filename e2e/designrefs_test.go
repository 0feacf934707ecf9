package e2e

import (
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// TestDesignReferencesResolve: every § the code cites is a section heading of
// docs/design.md (citations of an RFC's sections, on a line that names the RFC,
// are the RFC's).
func TestDesignReferencesResolve(t *testing.T) {
	root := filepath.Join("..")
	design, err := os.ReadFile(filepath.Join(root, "docs", "design.md"))
	if err != nil {
		t.Fatal(err)
	}
	sections := map[string]bool{}
	for _, m := range regexp.MustCompile(`(?m)^#+ §([0-9.]+)`).FindAllStringSubmatch(string(design), -1) {
		sections[m[1]] = true
	}
	cite := regexp.MustCompile(`§([0-9]+(?:\.[0-9]+)*)`)
	checked := 0
	err = filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && (d.Name() == ".git" || d.Name() == "testdata") {
			return filepath.SkipDir
		}
		if d.IsDir() || !strings.HasSuffix(path, ".go") {
			return nil
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		for i, line := range strings.Split(string(b), "\n") {
			if strings.Contains(line, "RFC") || strings.Contains(line, "3986 §") {
				continue
			}
			for _, m := range cite.FindAllStringSubmatch(line, -1) {
				checked++
				if !sections[m[1]] {
					t.Errorf("%s:%d cites §%s, which is no section heading of docs/design.md", path, i+1, m[1])
				}
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if checked == 0 {
		t.Fatal("found no § citation in the code: is the walk looking at the repository?")
	}
}
