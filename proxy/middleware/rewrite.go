package middleware

import (
	"fmt"
	"net/http"
	"net/url"
	"path"
	"regexp"
	"strings"
)

// RewriteOptions configure a Rewrite.
type RewriteOptions struct {
	// Pattern is the regular expression (regexp syntax) matched against the cleaned path.
	// Required.
	Pattern string
	// Replacement is the template every match is replaced by: $1, ${1} and ${name} stand
	// for Pattern's submatches, $$ for a dollar. Every submatch it names must exist.
	Replacement string
}

// Rewrite replaces the request path using a regular expression, as
// regexp.Regexp.ReplaceAllString does: every match of Pattern in the path is
// replaced by Replacement, in which $1, ${1} and ${name} stand for the
// submatches. The path is cleaned (no "//", "." or ".." elements; a leading
// "/" added) before it is matched, so a "/static/../../etc" cannot smuggle a
// ".." into a submatch and climb out of the replacement's prefix, and the
// result is cleaned too. Only the path changes; the query is kept. Requests
// whose cleaned path does not match pass unchanged.
type Rewrite struct {
	re   *regexp.Regexp
	repl string
}

// NewRewrite compiles opts.Pattern and checks that every submatch opts.Replacement
// refers to exists, since regexp would silently expand an unknown one to "".
// The error names the field: Pattern or Replacement.
func NewRewrite(opts RewriteOptions) (*Rewrite, error) {
	pattern, replacement := opts.Pattern, opts.Replacement
	if pattern == "" {
		return nil, fmt.Errorf("middleware: Rewrite Pattern is required")
	}
	re, err := regexp.Compile(pattern)
	if err != nil {
		return nil, fmt.Errorf("middleware: Rewrite Pattern: %w", err)
	}
	refs, err := templateRefs(replacement)
	if err != nil {
		return nil, fmt.Errorf("middleware: Rewrite Replacement %q: %w", replacement, err)
	}
	for _, ref := range refs {
		if n, ok := groupNumber(ref); ok {
			if n > re.NumSubexp() {
				return nil, fmt.Errorf("middleware: Rewrite Replacement %q: $%s, but Pattern has %d groups", replacement, ref, re.NumSubexp())
			}
			continue
		}
		if re.SubexpIndex(ref) < 0 {
			return nil, fmt.Errorf("middleware: Rewrite Replacement %q: Pattern has no group named %q", replacement, ref)
		}
	}
	return &Rewrite{re: re, repl: replacement}, nil
}

// templateRefs returns the names and numbers a regexp template refers to,
// with the syntax of regexp.Regexp.Expand: "$$" is a dollar, "${x}" and "$x"
// a reference where x is the longest run of letters, digits and '_'. Unlike
// Expand, which ignores a malformed "$", it reports it.
func templateRefs(t string) ([]string, error) {
	var refs []string
	for {
		i := strings.IndexByte(t, '$')
		if i < 0 {
			return refs, nil
		}
		t = t[i+1:]
		switch {
		case strings.HasPrefix(t, "$"):
			t = t[1:]
		case strings.HasPrefix(t, "{"):
			end := strings.IndexByte(t, '}')
			if end < 0 {
				return nil, fmt.Errorf("unclosed \"${\"")
			}
			name := t[1:end]
			if name == "" || !isName(name) {
				return nil, fmt.Errorf("\"${%s}\" is not a group name or number", name)
			}
			refs = append(refs, name)
			t = t[end+1:]
		default:
			n := 0
			for n < len(t) && isNameByte(t[n]) {
				n++
			}
			if n == 0 {
				return nil, fmt.Errorf("\"$\" must be followed by a group, \"{\" or \"$\"")
			}
			refs = append(refs, t[:n])
			t = t[n:]
		}
	}
}

func isName(s string) bool {
	for i := 0; i < len(s); i++ {
		if !isNameByte(s[i]) {
			return false
		}
	}
	return true
}

func isNameByte(c byte) bool {
	return c == '_' || '0' <= c && c <= '9' || 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z'
}

// groupNumber parses a numeric reference as Expand does.
func groupNumber(ref string) (int, bool) {
	n := 0
	for i := 0; i < len(ref); i++ {
		c := ref[i]
		if c < '0' || c > '9' || n >= 1e8 {
			return 0, false
		}
		n = n*10 + int(c-'0')
	}
	return n, true
}

// Path returns the rewritten, cleaned form of p and whether p matched.
func (rw *Rewrite) Path(p string) (string, bool) {
	in := cleanPath(p)
	if !rw.re.MatchString(in) {
		return p, false
	}
	return cleanPath(rw.re.ReplaceAllString(in, rw.repl)), true
}

// cleanPath resolves "//", "." and ".." as path.Clean does, adds a leading
// "/" and keeps a trailing one.
func cleanPath(p string) string {
	c := path.Clean("/" + p)
	if strings.HasSuffix(p, "/") && c != "/" {
		c += "/"
	}
	return c
}

// Handler rewrites the path of matching requests before passing them to
// next. The caller's request is not modified.
func (rw *Rewrite) Handler(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p, ok := rw.Path(r.URL.Path)
		if !ok {
			next.ServeHTTP(w, r)
			return
		}
		r2 := new(http.Request)
		*r2 = *r
		u := *r.URL
		u.Path, u.RawPath = p, ""
		r2.URL = &u
		next.ServeHTTP(w, r2)
	})
}

// RedirectOptions say where a Redirect sends clients. Empty fields keep the
// request's part; the query string is always kept.
type RedirectOptions struct {
	// Scheme is "http" or "https".
	Scheme string
	// Host is a host name or host:port. When Scheme is set and Host is not,
	// the request's host is kept without its port, since the old port
	// belongs to the old scheme.
	Host string
	// Path replaces the path; it must start with "/".
	Path string
	// Permanent asks for a permanent redirect (301 or 308) rather than a
	// temporary one (302 or 307). The status then depends on the method:
	// GET and HEAD get 301 or 302, which every client understands; other
	// methods get 308 or 307, which oblige the client to repeat the method
	// and body (after 301 and 302 many clients switch to GET).
	Permanent bool
	// Status, when not zero, is sent whatever the method: 301, 302, 303,
	// 307 or 308.
	Status int
}

// Redirect is an http.Handler that answers every request with a redirect;
// use it as a route's backend. It is not a middleware, since it never passes a
// request on; RedirectHTTPS is the middleware for the common special case, and
// passes TLS requests through.
type Redirect struct {
	opts RedirectOptions
}

// NewRedirect validates opts. The error names the offending field.
func NewRedirect(opts RedirectOptions) (*Redirect, error) {
	switch opts.Scheme {
	case "", "http", "https":
	default:
		return nil, fmt.Errorf("middleware: Redirect Scheme must be \"http\" or \"https\", got %q", opts.Scheme)
	}
	if opts.Host != "" {
		u, err := url.Parse("http://" + opts.Host)
		if err != nil || u.Host != opts.Host || u.User != nil {
			return nil, fmt.Errorf("middleware: Redirect Host %q must be a host or host:port", opts.Host)
		}
	}
	if opts.Path != "" && (!strings.HasPrefix(opts.Path, "/") || strings.ContainsAny(opts.Path, "?#")) {
		return nil, fmt.Errorf("middleware: Redirect Path %q must start with \"/\" and have no query or fragment", opts.Path)
	}
	switch opts.Status {
	case 0, http.StatusMovedPermanently, http.StatusFound, http.StatusSeeOther,
		http.StatusTemporaryRedirect, http.StatusPermanentRedirect:
	default:
		return nil, fmt.Errorf("middleware: Redirect Status must be 301, 302, 303, 307 or 308, got %d", opts.Status)
	}
	return &Redirect{opts: opts}, nil
}

// Status returns the status a request with method gets.
func (rd *Redirect) Status(method string) int {
	if rd.opts.Status != 0 {
		return rd.opts.Status
	}
	safe := method == http.MethodGet || method == http.MethodHead
	switch {
	case rd.opts.Permanent && safe:
		return http.StatusMovedPermanently
	case rd.opts.Permanent:
		return http.StatusPermanentRedirect
	case safe:
		return http.StatusFound
	}
	return http.StatusTemporaryRedirect
}

// Location returns the URL r is sent to.
func (rd *Redirect) Location(r *http.Request) string {
	scheme := rd.opts.Scheme
	host := rd.opts.Host
	if host == "" {
		host = r.Host
		if scheme != "" {
			host = stripPort(host)
		}
	}
	if scheme == "" {
		scheme = "http"
		if r.TLS != nil {
			scheme = "https"
		}
	}
	u := url.URL{Scheme: scheme, Host: host, Path: r.URL.Path, RawPath: r.URL.RawPath, RawQuery: r.URL.RawQuery}
	if rd.opts.Path != "" {
		u.Path, u.RawPath = rd.opts.Path, ""
	}
	return u.String()
}

// ServeHTTP answers with the redirect.
func (rd *Redirect) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	http.Redirect(w, r, rd.Location(r), rd.Status(r.Method))
}

func stripPort(host string) string {
	if strings.HasPrefix(host, "[") {
		if i := strings.LastIndexByte(host, ']'); i > 0 {
			return host[:i+1]
		}
		return host
	}
	if h, _, ok := strings.Cut(host, ":"); ok {
		return h
	}
	return host
}
