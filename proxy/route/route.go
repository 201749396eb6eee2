//lint:file-ignore ST1005 a route's errors start with the field they name ("Path must ..."); New prefixes "route: routes[i]".

// Package route decides, per request, which backend handler serves it.
//
// A [Table] is an immutable, validated set of [Route]s built once by [New]. A
// [Router] is the http.Handler that serves through the current table; [Router.Store]
// swaps in a new table atomically: the next request sees it, requests already
// running finish on the old one, and none is dropped. A backend is any
// http.Handler, normally a *proxy.Proxy over one pool's balancer; the router
// hands it the request tagged with proxy.WithRoute, so the proxy's access log
// and Hooks.RequestDone name the route.
//
// # Matching
//
// The request path is normalised first (see [CleanPath]): "//", "." and ".."
// elements are resolved the way path.Clean does, keeping a trailing slash.
// net/http has already decoded percent-encoding in URL.Path, so "%2e%2e" is a
// ".." by then and is cleaned like one. When the path changes, the router
// forwards the cleaned path upstream (URL.Path replaced, URL.RawPath cleared),
// so a backend never sees a path that would have matched a different route.
//
// Hosts are compared case-insensitively without the port. A route's Hosts
// may be exact ("api.example.com") or a wildcard ("*.example.com"), which, as
// in Kubernetes Ingress, covers exactly one extra label: "a.example.com" but
// not "example.com" nor "a.b.example.com". Routes without Hosts are default
// routes. The router looks in the exact host's routes first, then in the
// wildcard's, then in the default routes; the first group with a match wins.
//
// Within a host group, precedence follows Kubernetes Ingress and Gateway API
// HTTPRoute:
//
//  1. an Exact path beats any other path type;
//  2. a RegularExpression path (opt-in) comes next, in table order;
//  3. a Prefix path is matched by path element ("/foo" matches "/foo",
//     "/foo/" and "/foo/bar", never "/foobar"), and the longest prefix wins.
//
// Among routes with the same path, a route with a Method beats one without,
// then the route with more header matches wins, then the one with more query
// parameter matches, then the earlier route in the table. A route is a
// candidate only if all of its method, header and query conditions hold; when
// no route for a path matches, shorter prefixes are tried.
//
// Matching reads a prebuilt index (maps keyed by host and by path) and
// allocates nothing, so its cost depends on the depth of the path rather than
// on the number of routes.
//
// # Traffic splitting
//
// A route has one or more weighted [Backend]s. The weights are turned into a
// schedule when the table is built: the route counts its requests, and request
// n goes to the backend owning slot (n·stride) mod total of the cumulative
// weights, where total is the sum of the weights and stride is coprime with it
// (near total/φ, so the slots of a small backend are spread out rather than
// consecutive). Over every run of total consecutive requests each backend gets
// exactly its weight — a 5% canary gets 5 of every 100 — whatever the
// concurrency, and tests need no seed or tolerance for chance. Choosing costs
// one atomic add. A weight of 0 takes no traffic, which makes a blue/green
// flip a change of two weights; a new table starts a new schedule. [Pin]s send
// requests carrying a given header or cookie value to a named backend, for
// A/B tests and for letting testers reach a canary. A route's Mirror receives
// a copy of each request (body up to Options.MirrorMaxBodyBytes) from workers
// started by [Router.Run]; its response is discarded, and when the mirror
// queue is full the copy is dropped, so mirroring never slows the primary.
package route

import (
	"errors"
	"fmt"
	"net/http"
	"net/textproto"
	"regexp"
	"slices"
	"strings"
	"sync/atomic"
)

// maxTotalWeight bounds the sum of a route's weights, so the schedule's
// arithmetic cannot overflow.
const maxTotalWeight = 1<<31 - 1

// PathType is how a route's Path is compared with the request path.
type PathType int

const (
	// PathPrefix matches the path element by element (the zero value).
	PathPrefix PathType = iota
	// PathExact matches the path exactly, case-sensitively.
	PathExact
	// PathRegex matches when the regular expression matches the whole path.
	PathRegex
)

// MatchType is how a header or query parameter is compared.
type MatchType int

const (
	// MatchExact requires a value equal to Value (the zero value).
	MatchExact MatchType = iota
	// MatchRegex requires a value matched, as a whole, by the expression Value.
	MatchRegex
	// MatchPresent requires the header or parameter to be present.
	MatchPresent
)

// HeaderMatch is a condition on a request header. Name is case-insensitive.
type HeaderMatch struct {
	Name  string    // the field name
	Value string    // what the field's value is compared with; unused with MatchPresent
	Type  MatchType // how it is compared
}

// QueryMatch is a condition on a query parameter. Name is case-sensitive.
type QueryMatch struct {
	Name  string    // the parameter name
	Value string    // what the parameter's value is compared with; unused with MatchPresent
	Type  MatchType // how it is compared
}

// Backend is one destination of a route, typically a *proxy.Proxy over one
// pool. Weight is its share of the route's traffic; a route with a single
// backend may leave it 0.
type Backend struct {
	Name    string       // names the backend for Pins and errors; may be empty if unpinned
	Handler http.Handler // serves the requests sent to this backend; required
	Weight  int          // share of the route's traffic, ≥ 0
}

// Pin sends requests whose Header (or, if Header is empty, Cookie) equals
// Value to the backend named Backend, bypassing the weights.
type Pin struct {
	Header  string // the request header compared with Value
	Cookie  string // the cookie compared with Value when Header is empty
	Value   string // the value that pins a request
	Backend string // the Name of the backend pinned requests go to
}

// Route is one routing rule. See the package doc for how routes are ranked.
type Route struct {
	Name     string        // required, unique; used in errors
	Hosts    []string      // exact or "*.suffix"; empty means any host
	Path     string        // "/" if empty
	PathType PathType      // how Path matches; the zero value is PathPrefix
	Method   string        // empty means any method
	Headers  []HeaderMatch // all must match
	Query    []QueryMatch  // all must match
	Backends []Backend     // at least one; total weight > 0 unless only one
	Pins     []Pin         // checked before the weights, in order
	Mirror   http.Handler  // optional shadow destination
}

// Options configure a table. The zero value is usable.
type Options struct {
	// NotFound serves requests no route matches. Nil means a 404 reply.
	NotFound http.Handler
	// MirrorMaxBodyBytes is the largest request body copied to a mirror; bigger
	// requests are not mirrored. Zero means 64 KiB.
	MirrorMaxBodyBytes int64
}

// Table is an immutable, validated route table. It is safe for concurrent use.
type Table struct {
	exact     map[string]*group
	wildcard  map[string]*group // key: suffix after "*."
	def       *group
	notFound  http.Handler
	mirrorMax int64
}

type group struct {
	exact  map[string][]*entry
	prefix map[string][]*entry // key: prefix without trailing slash; "/" for the root
	regex  []*entry
}

type entry struct {
	r        *Route
	order    int
	re       *regexp.Regexp
	headers  []headerCond
	query    []queryCond
	backends []Backend
	cum      []int // cumulative weights
	total    int
	stride   uint64 // coprime with total; see pick
	pins     []pinCond
	next     atomic.Uint64 // requests scheduled so far
}

type headerCond struct {
	name  string // canonical
	value string
	typ   MatchType
	re    *regexp.Regexp
}

type queryCond struct {
	name  string
	value string
	typ   MatchType
	re    *regexp.Regexp
}

type pinCond struct {
	header, cookie, value string
	backend               int
}

// New validates routes as a whole and builds a table. The error names the
// first offending route and field; no partial table is returned.
func New(routes []Route, opts Options) (*Table, error) {
	t := &Table{
		exact:     map[string]*group{},
		wildcard:  map[string]*group{},
		notFound:  opts.NotFound,
		mirrorMax: opts.MirrorMaxBodyBytes,
	}
	if opts.MirrorMaxBodyBytes < 0 {
		return nil, fmt.Errorf("route: MirrorMaxBodyBytes must be ≥ 0, got %d", opts.MirrorMaxBodyBytes)
	}
	if t.mirrorMax == 0 {
		t.mirrorMax = 64 << 10
	}
	if t.notFound == nil {
		t.notFound = http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
			http.Error(w, "route: no route matches the request", http.StatusNotFound)
		})
	}
	names := map[string]bool{}
	for i := range routes {
		rt := &routes[i]
		e, err := build(rt, i)
		if err != nil {
			return nil, fmt.Errorf("route: routes[%d] %q: %w", i, rt.Name, err)
		}
		if names[rt.Name] {
			return nil, fmt.Errorf("route: routes[%d] %q: Name is not unique", i, rt.Name)
		}
		names[rt.Name] = true
		if len(rt.Hosts) == 0 {
			if t.def == nil {
				t.def = newGroup()
			}
			t.def.add(e)
		}
		for j, h := range rt.Hosts {
			h = strings.ToLower(h)
			if suf, ok := strings.CutPrefix(h, "*."); ok {
				if err := checkHost(suf); err != nil {
					return nil, fmt.Errorf("route: routes[%d] %q: Hosts[%d]: %w", i, rt.Name, j, err)
				}
				g := t.wildcard[suf]
				if g == nil {
					g = newGroup()
					t.wildcard[suf] = g
				}
				g.add(e)
				continue
			}
			if err := checkHost(h); err != nil {
				return nil, fmt.Errorf("route: routes[%d] %q: Hosts[%d]: %w", i, rt.Name, j, err)
			}
			g := t.exact[h]
			if g == nil {
				g = newGroup()
				t.exact[h] = g
			}
			g.add(e)
		}
	}
	for _, g := range t.groups() {
		g.sort()
	}
	return t, nil
}

func (t *Table) groups() []*group {
	var gs []*group
	for _, g := range t.exact {
		gs = append(gs, g)
	}
	for _, g := range t.wildcard {
		gs = append(gs, g)
	}
	if t.def != nil {
		gs = append(gs, t.def)
	}
	return gs
}

func checkHost(h string) error {
	if h == "" || strings.ContainsAny(h, "*:/ ") {
		return fmt.Errorf("host %q must be a DNS name or *.name without a port", h)
	}
	return nil
}

func newGroup() *group {
	return &group{exact: map[string][]*entry{}, prefix: map[string][]*entry{}}
}

func (g *group) add(e *entry) {
	switch e.r.PathType {
	case PathExact:
		g.exact[e.r.Path] = append(g.exact[e.r.Path], e)
	case PathRegex:
		g.regex = append(g.regex, e)
	default:
		k := prefixKey(e.r.Path)
		g.prefix[k] = append(g.prefix[k], e)
	}
}

// rank orders routes with the same path: method, then more headers, then
// more query matches, then table order.
func rank(a, b *entry) int {
	am, bm := a.r.Method != "", b.r.Method != ""
	if am != bm {
		if am {
			return -1
		}
		return 1
	}
	if len(a.headers) != len(b.headers) {
		return len(b.headers) - len(a.headers)
	}
	if len(a.query) != len(b.query) {
		return len(b.query) - len(a.query)
	}
	return a.order - b.order
}

func (g *group) sort() {
	for _, es := range g.exact {
		slices.SortStableFunc(es, rank)
	}
	for _, es := range g.prefix {
		slices.SortStableFunc(es, rank)
	}
	slices.SortStableFunc(g.regex, func(a, b *entry) int { return a.order - b.order })
}

func prefixKey(p string) string {
	if p == "/" {
		return p
	}
	return strings.TrimSuffix(p, "/")
}

func build(rt *Route, order int) (*entry, error) {
	if rt.Name == "" {
		return nil, errors.New("Name is required")
	}
	r := *rt
	if r.Path == "" {
		r.Path = "/"
	}
	e := &entry{r: &r, order: order}
	switch r.PathType {
	case PathExact, PathPrefix:
		if !strings.HasPrefix(r.Path, "/") {
			return nil, fmt.Errorf("Path must start with \"/\", got %q", r.Path)
		}
		if c, _ := CleanPath(r.Path); c != r.Path {
			return nil, fmt.Errorf("Path %q is not clean (want %q)", r.Path, c)
		}
	case PathRegex:
		re, err := regexp.Compile("^(?:" + r.Path + ")$")
		if err != nil {
			return nil, fmt.Errorf("Path: %w", err)
		}
		e.re = re
	default:
		return nil, fmt.Errorf("PathType %d is unknown", r.PathType)
	}
	if r.Method != "" && !validToken(r.Method) {
		return nil, fmt.Errorf("Method %q is not a token", r.Method)
	}
	for i, h := range r.Headers {
		if !validToken(h.Name) {
			return nil, fmt.Errorf("Headers[%d].Name %q is not a header name", i, h.Name)
		}
		re, err := condRegex(h.Type, h.Value)
		if err != nil {
			return nil, fmt.Errorf("Headers[%d].Value: %w", i, err)
		}
		e.headers = append(e.headers, headerCond{textproto.CanonicalMIMEHeaderKey(h.Name), h.Value, h.Type, re})
	}
	for i, q := range r.Query {
		if q.Name == "" {
			return nil, fmt.Errorf("Query[%d].Name is required", i)
		}
		re, err := condRegex(q.Type, q.Value)
		if err != nil {
			return nil, fmt.Errorf("Query[%d].Value: %w", i, err)
		}
		e.query = append(e.query, queryCond{q.Name, q.Value, q.Type, re})
	}
	if len(r.Backends) == 0 {
		return nil, errors.New("Backends must not be empty")
	}
	e.backends = slices.Clone(r.Backends)
	for i, b := range e.backends {
		if b.Handler == nil {
			return nil, fmt.Errorf("Backends[%d].Handler is nil", i)
		}
		if b.Weight < 0 || b.Weight > maxTotalWeight-e.total {
			return nil, fmt.Errorf("Backends[%d].Weight must be ≥ 0 and the total ≤ %d, got %d", i, maxTotalWeight, b.Weight)
		}
		if len(e.backends) == 1 && b.Weight == 0 {
			e.backends[i].Weight = 1
		}
		e.total += e.backends[i].Weight
		e.cum = append(e.cum, e.total)
	}
	if e.total <= 0 {
		return nil, errors.New("Backends: total weight must be > 0")
	}
	e.stride = stride(uint64(e.total))
	for i, p := range r.Pins {
		if (p.Header == "") == (p.Cookie == "") {
			return nil, fmt.Errorf("Pins[%d]: exactly one of Header and Cookie must be set", i)
		}
		idx := slices.IndexFunc(e.backends, func(b Backend) bool { return b.Name == p.Backend })
		if idx < 0 {
			return nil, fmt.Errorf("Pins[%d].Backend %q names no backend", i, p.Backend)
		}
		e.pins = append(e.pins, pinCond{textproto.CanonicalMIMEHeaderKey(p.Header), p.Cookie, p.Value, idx})
	}
	return e, nil
}

// stride returns the number coprime with total nearest above total/φ (φ the
// golden ratio), so that stepping through the slots 0..total-1 by it visits
// each once per period and spreads neighbouring slots far apart.
func stride(total uint64) uint64 {
	s := total * 618034 / 1000000
	for s < total && gcd(s, total) != 1 {
		s++
	}
	if s == 0 || s >= total {
		return 1
	}
	return s
}

func gcd(a, b uint64) uint64 {
	for b != 0 {
		a, b = b, a%b
	}
	return a
}

func condRegex(t MatchType, v string) (*regexp.Regexp, error) {
	switch t {
	case MatchExact, MatchPresent:
		return nil, nil
	case MatchRegex:
		return regexp.Compile("^(?:" + v + ")$")
	}
	return nil, fmt.Errorf("Type %d is unknown", t)
}

func validToken(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c <= ' ' || c >= 0x7f || strings.IndexByte("()<>@,;:\\\"/[]?={}", c) >= 0 {
			return false
		}
	}
	return true
}
