package sluice_test

import (
	"go/build"
	"io/fs"
	"path"
	"path/filepath"
	"strings"
	"testing"
)

const module = "github.com/sluiceproxy/sluice"

// allowed lists, for each library package of this module, the packages of this module it may
// import (its non-test files). It is the table in doc.go, kept in code so it cannot rot.
// Packages under examples/ and internal/ may import anything and are not listed.
var allowed = map[string][]string{
	"":                         {},
	"balancer":                 {""},
	"discovery":                {""},
	"discovery/endpointslices": {"", "discovery"},
	"healthcheck":              {""},
	"proxy":                    {""},
	"proxy/route":              {"", "proxy"},
	"proxy/middleware":         {"", "proxy"},
	"cache":                    {""},
	"ratelimit":                {""},
	"pool":                     {"", "balancer", "discovery", "healthcheck", "proxy"},
	"tls/certs":                {""},
	"tls/secrets":              {"", "tls/certs"},
}

// thirdParty lists which modules outside the standard library each package may import.
// Every other library package may import only the standard library.
var thirdParty = map[string][]string{
	"discovery/endpointslices": {"k8s.io/"},
	"tls/secrets":              {"k8s.io/"},
	"proxy":                    {"golang.org/x/net/"},
	"proxy/route":              {"golang.org/x/net/"},
	"proxy/middleware":         {"golang.org/x/net/", "golang.org/x/crypto/"},
	"healthcheck":              {},
	"cache":                    {"github.com/hashicorp/golang-lru/v2", "golang.org/x/sync/"},
	"ratelimit":                {"github.com/hashicorp/golang-lru/v2", "golang.org/x/time/"},
	"tls/certs":                {"golang.org/x/crypto/"},
	"discovery":                {"golang.org/x/net/"},
	"balancer":                 {},
	"":                         {},
}

func TestDependencyRule(t *testing.T) {
	seen := 0
	err := filepath.WalkDir(".", func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if !d.IsDir() {
			return nil
		}
		rel := filepath.ToSlash(p)
		if rel == "." {
			rel = ""
		}
		base := path.Base(rel)
		if strings.HasPrefix(base, ".") || base == "testdata" || rel == "examples" ||
			strings.HasPrefix(rel, "examples/") || rel == "internal" || strings.HasPrefix(rel, "internal/") {
			if rel != "" {
				return filepath.SkipDir
			}
		}
		pkg, err := build.ImportDir(p, 0)
		if err != nil {
			if _, ok := err.(*build.NoGoError); ok {
				return nil
			}
			t.Errorf("%s: %v", p, err)
			return nil
		}
		ours, known := allowed[rel]
		if !known {
			t.Errorf("package %q is not in the dependency table: add it to deps_test.go and doc.go", rel)
			return nil
		}
		seen++
		for _, imp := range pkg.Imports {
			switch {
			case imp == module || strings.HasPrefix(imp, module+"/"):
				dep := strings.TrimPrefix(strings.TrimPrefix(imp, module), "/")
				if !contains(ours, dep) {
					t.Errorf("package %q imports %q, which the dependency rule forbids", rel, dep)
				}
			case isStdlib(imp):
			default:
				ok := false
				for _, prefix := range thirdParty[rel] {
					if strings.HasPrefix(imp, prefix) {
						ok = true
					}
				}
				if !ok {
					t.Errorf("package %q imports third-party %q, which the dependency rule forbids", rel, imp)
				}
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if seen == 0 {
		t.Fatal("no packages checked: the walk is broken")
	}
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// isStdlib reports whether imp is a standard-library path: its first element has no dot.
func isStdlib(imp string) bool {
	first, _, _ := strings.Cut(imp, "/")
	return !strings.Contains(first, ".")
}
