package middleware

import (
	"net/http"
	"net/http/httptest"
	"net/textproto"
	"strings"
	"testing"
)

// FuzzRewrite feeds arbitrary patterns, replacement templates and request
// paths: construction either fails with an error or yields a rewrite whose
// output is always a clean absolute path, and a malformed template is never
// accepted.
func FuzzRewrite(f *testing.F) {
	f.Add(`^/api/(.*)$`, "/$1", "/api/x")
	f.Add(`^/(?P<a>\w+)/(\w+)$`, "/${a}/$2/$$", "/p/q")
	f.Add(`^/s/(.*)$`, "/files/$1", "/s/../../etc/passwd")
	f.Add(`(.*)`, "$1x", "/a")
	f.Add(`/`, "//", "/a/b//c")
	f.Add(`a`, "${", "/a")
	f.Add(`^/(a)$`, "/${1}/%2e%2e/..", "/a")
	f.Fuzz(func(t *testing.T, pattern, repl, p string) {
		rw, err := NewRewrite(RewriteOptions{Pattern: pattern, Replacement: repl})
		if err != nil {
			if !strings.HasPrefix(err.Error(), "middleware: Rewrite ") {
				t.Fatalf("error does not name the Rewrite field: %v", err)
			}
			return
		}
		// Every "$" in an accepted template starts a well-formed reference.
		if _, err := templateRefs(repl); err != nil {
			t.Fatalf("accepted template %q: %v", repl, err)
		}
		out, matched := rw.Path(p)
		if !matched {
			if out != p {
				t.Fatalf("unmatched path %q changed to %q", p, out)
			}
			return
		}
		if !strings.HasPrefix(out, "/") || strings.Contains(out, "//") {
			t.Fatalf("%q -> %q is not a clean absolute path", p, out)
		}
		for _, el := range strings.Split(out, "/") {
			if el == "." || el == ".." {
				t.Fatalf("%q -> %q keeps a dot element", p, out)
			}
		}
	})
}

// FuzzHeaders applies header rules to requests carrying arbitrary client
// headers: removed names are gone, set names carry exactly the set value
// (plus what Add appends), other headers are untouched, and the caller's
// request is never modified.
func FuzzHeaders(f *testing.F) {
	f.Add("X-A", "1", "x-a", "X-B", "b")
	f.Add("Cookie", "a=b", "cookie", "Cookie", "c=d")
	f.Add("x-weird name", "v", "", "X-A", "")
	f.Add("", "", "X-Remove", "x-remove", "v\r\nInjected: 1")
	f.Fuzz(func(t *testing.T, clientName, clientValue, remove, set, setValue string) {
		rules := HeaderRules{Remove: []string{remove}, Set: map[string]string{set: setValue}, Add: map[string]string{"X-Added": "added"}}
		var got http.Header
		h := Headers{Request: rules}.Handler(http.HandlerFunc(func(_ http.ResponseWriter, r *http.Request) { got = r.Header }))
		r := httptest.NewRequest("GET", "/", nil)
		r.Header[clientName] = []string{clientValue}
		before := r.Header.Clone()
		h.ServeHTTP(httptest.NewRecorder(), r)
		if len(r.Header) != len(before) || r.Header.Get(clientName) != before.Get(clientName) {
			t.Fatalf("the caller's request was modified: %v -> %v", before, r.Header)
		}
		ck := func(s string) string { return textproto.CanonicalMIMEHeaderKey(s) }
		if vs := got.Values(set); ck(set) != "X-Added" && (len(vs) != 1 || vs[0] != setValue) {
			t.Fatalf("Set %q=%q gave %q", set, setValue, vs)
		}
		if ck(remove) != ck(set) && ck(remove) != "X-Added" && len(got.Values(remove)) != 0 {
			t.Fatalf("Remove %q left %q", remove, got.Values(remove))
		}
		if vs := got.Values("X-Added"); len(vs) == 0 || vs[len(vs)-1] != "added" {
			t.Fatalf("Add X-Added gave %q", vs)
		}
		if k := clientName; ck(k) != ck(remove) && ck(k) != ck(set) && ck(k) != "X-Added" && k == ck(k) {
			if vs := got[k]; len(vs) != 1 || vs[0] != clientValue {
				t.Fatalf("unrelated header %q=%q became %q", k, clientValue, vs)
			}
		}
	})
}
