package sluice_test

import (
	"bufio"
	"encoding/json"
	"fmt"
	"go/build"
	"io/fs"
	"maps"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
)

const module = "github.com/sluiceproxy/sluice"

// rule is one row of a dependency table in doc.go: what a package may import besides the
// standard library.
type rule struct {
	ours       []string // packages of this module, relative to its root; "" is the root
	thirdParty []string // module paths
}

// docTables reads the two dependency tables of doc.go: the one under "# The dependency rule"
// for library files, and the one after "Tests may import" for the extras tests may use.
func docTables(t *testing.T) (lib, tests map[string]rule) {
	t.Helper()
	f, err := os.Open("doc.go")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	row := regexp.MustCompile(`^//\t(\S+) {2,}(.+)$`)
	lib, tests = map[string]rule{}, map[string]rule{}
	var table map[string]rule
	inRule := false
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		switch {
		case line == "// # The dependency rule":
			inRule = true
			table = lib
			continue
		case inRule && strings.HasPrefix(line, "// Tests may import"):
			table = tests
			continue
		case !inRule:
			continue
		}
		m := row.FindStringSubmatch(line)
		if m == nil {
			continue
		}
		name := m[1]
		if name == "sluice" {
			name = ""
		}
		if _, dup := table[name]; dup {
			t.Errorf("doc.go: %q has two rows in one dependency table", m[1])
		}
		var r rule
		if m[2] != "(nothing)" {
			for item := range strings.SplitSeq(m[2], ",") {
				item = strings.TrimSpace(item)
				switch {
				case item == "sluice":
					r.ours = append(r.ours, "")
				case strings.Contains(strings.Split(item, "/")[0], "."):
					r.thirdParty = append(r.thirdParty, item)
				default:
					r.ours = append(r.ours, item)
				}
			}
		}
		table[name] = r
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	if len(lib) == 0 || len(tests) == 0 {
		t.Fatalf("doc.go: found %d library rows and %d test rows: the tables' layout changed", len(lib), len(tests))
	}
	return lib, tests
}

// imports lists what the package in dir imports from its library files and from its test
// files, across every build constraint (integration tests, per-OS files).
func imports(dir string) (lib, test []string, ok bool, err error) {
	ctx := build.Default
	ctx.UseAllFiles = true // the union over tags and platforms
	pkg, err := ctx.ImportDir(dir, 0)
	if err != nil {
		if _, noGo := err.(*build.NoGoError); noGo {
			return nil, nil, false, nil
		}
		return nil, nil, false, err
	}
	test = slices.Concat(pkg.TestImports, pkg.XTestImports)
	return pkg.Imports, test, true, nil
}

func TestDependencyRule(t *testing.T) {
	lib, tests := docTables(t)
	seen := map[string]bool{}
	err := filepath.WalkDir(".", func(p string, d fs.DirEntry, err error) error {
		if err != nil || !d.IsDir() {
			return err
		}
		rel := filepath.ToSlash(p)
		if rel == "." {
			rel = ""
		}
		if base := path.Base(rel); rel != "" && (strings.HasPrefix(base, ".") || base == "testdata" ||
			rel == "examples" || rel == "internal" || strings.HasPrefix(rel, "examples/") || strings.HasPrefix(rel, "internal/")) {
			return filepath.SkipDir
		}
		libImports, testImports, ok, err := imports(p)
		if err != nil {
			t.Errorf("%s: %v", p, err)
			return nil
		}
		if !ok {
			return nil
		}
		seen[rel] = true
		r, known := lib[rel]
		if !known {
			t.Errorf("package %q is not in doc.go's dependency table", rel)
			return nil
		}
		check(t, rel, "", libImports, r, nil)
		check(t, rel, "tests of ", testImports, r, &tests)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range slices.Sorted(maps.Keys(lib)) {
		if !seen[name] {
			t.Errorf("doc.go's dependency table lists %q, which is not a package", name)
		}
	}
	for _, name := range slices.Sorted(maps.Keys(tests)) {
		if _, ok := lib[name]; !ok {
			t.Errorf("doc.go's test table lists %q, which is not in the library table", name)
		}
	}
}

// check holds one package's library or test imports to its rule. For library files every
// entry of the rule must be used, so that the table says exactly what the package depends on;
// for tests (extras != nil) the rule is widened by the package itself, the root, testify, the
// internal harnesses and the package's row of the test table, and every entry of that row
// must be used.
func check(t *testing.T, pkg, what string, imps []string, r rule, extras *map[string]rule) {
	t.Helper()
	ours, third := slices.Clone(r.ours), slices.Clone(r.thirdParty)
	var extra rule
	if extras != nil {
		extra = (*extras)[pkg]
		ours = append(ours, pkg, "")
		ours = append(ours, extra.ours...)
		third = append(third, "github.com/stretchr/testify")
		third = append(third, extra.thirdParty...)
	}
	used := map[string]bool{}
	for _, imp := range imps {
		switch {
		case imp == module || strings.HasPrefix(imp, module+"/"):
			dep := strings.TrimPrefix(strings.TrimPrefix(imp, module), "/")
			if extras != nil && (dep == "internal" || strings.HasPrefix(dep, "internal/")) {
				continue
			}
			if !slices.Contains(ours, dep) {
				t.Errorf("%spackage %q import %q, which doc.go's dependency table does not list", what, pkg, dep)
			}
			used[dep] = true
		case isStdlib(imp):
		default:
			mod := slices.IndexFunc(third, func(m string) bool { return imp == m || strings.HasPrefix(imp, m+"/") })
			if mod < 0 {
				t.Errorf("%spackage %q import %q, which doc.go's dependency table does not list", what, pkg, imp)
				continue
			}
			used[third[mod]] = true
		}
	}
	unused := func(list []string, name func(string) string) {
		for _, e := range list {
			if !used[e] {
				t.Errorf("doc.go lets %spackage %q import %q, which none of them does: remove the entry", what, pkg, name(e))
			}
		}
	}
	root := func(e string) string {
		if e == "" {
			return "sluice"
		}
		return e
	}
	if extras == nil {
		unused(r.ours, root)
		unused(r.thirdParty, root)
	} else {
		unused(extra.ours, root)
		unused(extra.thirdParty, root)
	}
}

// isStdlib reports whether imp is a standard-library path: its first element has no dot.
func isStdlib(imp string) bool {
	first, _, _ := strings.Cut(imp, "/")
	return !strings.Contains(first, ".")
}

// TestGoDirective checks that go.mod asks for the lowest Go release the module can be built
// with: the highest go directive among the modules it requires, and never a patch release of
// its own choosing, which would force every consumer onto that patch.
func TestGoDirective(t *testing.T) {
	data, err := os.ReadFile("go.mod")
	if err != nil {
		t.Fatal(err)
	}
	directive := regexp.MustCompile(`(?m)^go (\S+)$`).FindSubmatch(data)
	if directive == nil {
		t.Fatal("go.mod has no go directive")
	}
	out, err := exec.Command("go", "list", "-mod=readonly", "-m", "-json", "all").Output()
	if err != nil {
		t.Fatalf("go list -m all: %v", err)
	}
	need, from := "1.0", ""
	dec := json.NewDecoder(strings.NewReader(string(out)))
	for dec.More() {
		var m struct {
			Path      string
			Main      bool
			GoVersion string
			Indirect  bool
		}
		if err := dec.Decode(&m); err != nil {
			t.Fatal(err)
		}
		if m.Main || m.Indirect || m.GoVersion == "" {
			continue
		}
		if compareGo(m.GoVersion, need) > 0 {
			need, from = m.GoVersion, m.Path
		}
	}
	if got := string(directive[1]); got != need {
		t.Errorf("go.mod says go %s; the lowest its direct requirements allow is %s (%s): say that", got, need, from)
	}
}

// compareGo compares two Go versions of the form 1.N or 1.N.P.
func compareGo(a, b string) int {
	var x, y [3]int
	fmt.Sscanf(a, "%d.%d.%d", &x[0], &x[1], &x[2])
	fmt.Sscanf(b, "%d.%d.%d", &y[0], &y[1], &y[2])
	return slices.Compare(x[:], y[:])
}
