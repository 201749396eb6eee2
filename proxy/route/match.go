package route

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"net/url"
	"path"
	"strings"
	"sync/atomic"

	"github.com/sluiceproxy/sluice"
	"github.com/sluiceproxy/sluice/proxy"
)

// CleanPath returns p with "//", "." and ".." elements resolved as
// path.Clean does, a leading "/" added and a trailing "/" kept. changed
// reports whether the result differs from p. A path that is already clean is
// returned as is, without allocating.
func CleanPath(p string) (clean string, changed bool) {
	if isClean(p) {
		return p, false
	}
	c := path.Clean("/" + p)
	if strings.HasSuffix(p, "/") && c != "/" {
		c += "/"
	}
	return c, c != p
}

func isClean(p string) bool {
	if p == "" || p[0] != '/' {
		return false
	}
	for i := 0; i < len(p); i++ {
		if p[i] != '/' {
			continue
		}
		// p[i] is a slash: the element after it must not be "", "." or "..",
		// except for a single trailing slash.
		rest := p[i+1:]
		if rest == "" {
			return true
		}
		if rest[0] == '/' {
			return false
		}
		if rest[0] == '.' && (len(rest) == 1 || rest[1] == '/' ||
			(rest[1] == '.' && (len(rest) == 2 || rest[2] == '/'))) {
			return false
		}
	}
	return true
}

// hostOf returns the host without its port and trailing dot.
func hostOf(h string) string {
	if i := strings.LastIndexByte(h, ':'); i >= 0 && !strings.Contains(h[i:], "]") {
		h = h[:i]
	}
	h = strings.TrimSuffix(h, ".")
	return h
}

// lower returns s in lower case, allocating only if s has upper-case letters.
func lower(s string) string {
	for i := 0; i < len(s); i++ {
		if 'A' <= s[i] && s[i] <= 'Z' {
			return strings.ToLower(s)
		}
	}
	return s
}

// Match returns the route serving r, whose path must already be clean (see
// CleanPath), or nil. It allocates nothing unless the Host has upper-case
// letters.
func (t *Table) Match(r *http.Request) *Route {
	if e := t.match(r, r.URL.Path); e != nil {
		return e.r
	}
	return nil
}

func (t *Table) match(r *http.Request, p string) *entry {
	host := lower(hostOf(r.Host))
	if g := t.exact[host]; g != nil {
		if e := g.match(r, p); e != nil {
			return e
		}
	}
	if i := strings.IndexByte(host, '.'); i > 0 {
		if g := t.wildcard[host[i+1:]]; g != nil {
			if e := g.match(r, p); e != nil {
				return e
			}
		}
	}
	if t.def != nil {
		return t.def.match(r, p)
	}
	return nil
}

func (g *group) match(r *http.Request, p string) *entry {
	if e := first(g.exact[p], r); e != nil {
		return e
	}
	for _, e := range g.regex {
		if e.re.MatchString(p) && e.conds(r) {
			return e
		}
	}
	k := p
	if len(k) > 1 {
		k = strings.TrimSuffix(k, "/")
	}
	for {
		if e := first(g.prefix[k], r); e != nil {
			return e
		}
		if k == "/" {
			return nil
		}
		i := strings.LastIndexByte(k, '/')
		if i <= 0 {
			k = "/"
		} else {
			k = k[:i]
		}
	}
}

func first(es []*entry, r *http.Request) *entry {
	for _, e := range es {
		if e.conds(r) {
			return e
		}
	}
	return nil
}

func (e *entry) conds(r *http.Request) bool {
	if e.r.Method != "" && r.Method != e.r.Method {
		return false
	}
	for i := range e.headers {
		c := &e.headers[i]
		vs, ok := r.Header[c.name]
		if !ok {
			return false
		}
		if !valueOK(c.typ, c.value, c.re, vs[0]) {
			return false
		}
	}
	for i := range e.query {
		c := &e.query[i]
		v, ok := queryValue(r.URL.RawQuery, c.name)
		if !ok || !valueOK(c.typ, c.value, c.re, v) {
			return false
		}
	}
	return true
}

func valueOK(t MatchType, want string, re interface{ MatchString(string) bool }, v string) bool {
	switch t {
	case MatchPresent:
		return true
	case MatchRegex:
		return re.MatchString(v)
	}
	return v == want
}

// queryValue returns the first value of the parameter name in the raw query,
// decoding only when the query is escaped (the uncommon case allocates).
func queryValue(q, name string) (string, bool) {
	for q != "" {
		var kv string
		kv, q, _ = strings.Cut(q, "&")
		k, v, _ := strings.Cut(kv, "=")
		if strings.ContainsAny(k, "%+") {
			dk, err := url.QueryUnescape(k)
			if err != nil {
				continue
			}
			k = dk
		}
		if k != name {
			continue
		}
		if strings.ContainsAny(v, "%+") {
			dv, err := url.QueryUnescape(v)
			if err != nil {
				continue
			}
			v = dv
		}
		return v, true
	}
	return "", false
}

func (e *entry) pick(r *http.Request) http.Handler {
	for _, p := range e.pins {
		if p.header != "" {
			if vs := r.Header[p.header]; len(vs) > 0 && vs[0] == p.value {
				return e.backends[p.backend].Handler
			}
		} else if c, err := r.Cookie(p.cookie); err == nil && c.Value == p.value {
			return e.backends[p.backend].Handler
		}
	}
	if len(e.backends) == 1 {
		return e.backends[0].Handler
	}
	total := uint64(e.total)
	n := int((e.next.Add(1) - 1) % total * e.stride % total)
	for i, c := range e.cum {
		if n < c {
			return e.backends[i].Handler
		}
	}
	return e.backends[len(e.backends)-1].Handler
}

// RouterOptions configure a Router. The zero value is usable.
type RouterOptions struct {
	// MirrorQueue is how many mirrored requests may wait for a worker;
	// more are dropped. Zero means 64.
	MirrorQueue int
	// MirrorWorkers is how many goroutines Run starts to send mirrored
	// requests. Zero means 4.
	MirrorWorkers int
	// OnMatch, if set, is called with the matched route's name and the
	// request's context, which already carries the name (proxy.WithRoute),
	// and returns the context to serve with: a place to add tracing or
	// metrics labels. It runs on every matched request and should be cheap.
	OnMatch func(ctx context.Context, name string) context.Context
}

// Router is an http.Handler serving through the current Table.
type Router struct {
	table   atomic.Pointer[Table]
	mirrors chan mirrorJob
	opts    RouterOptions
	dropped atomic.Int64
}

// NewRouter returns a router serving t, which must not be nil.
func NewRouter(t *Table, opts RouterOptions) *Router {
	if opts.MirrorQueue <= 0 {
		opts.MirrorQueue = 64
	}
	if opts.MirrorWorkers <= 0 {
		opts.MirrorWorkers = 4
	}
	rt := &Router{mirrors: make(chan mirrorJob, opts.MirrorQueue), opts: opts}
	rt.table.Store(t)
	return rt
}

// Store replaces the table. Requests that already loaded the old table finish
// on it; the next request uses t.
func (rt *Router) Store(t *Table) { rt.table.Store(t) }

// Load returns the current table.
func (rt *Router) Load() *Table { return rt.table.Load() }

// MirrorsDropped reports how many mirror copies were dropped because the
// queue was full or the body was too large.
func (rt *Router) MirrorsDropped() int64 { return rt.dropped.Load() }

// Run sends mirrored requests until ctx is done, then returns ctx.Err().
// Without Run, mirror copies are queued and then dropped.
func (rt *Router) Run(ctx context.Context) error {
	done := make(chan struct{})
	for range rt.opts.MirrorWorkers {
		go func() {
			defer func() { done <- struct{}{} }()
			for {
				select {
				case <-ctx.Done():
					return
				case j := <-rt.mirrors:
					j.h.ServeHTTP(discard{h: http.Header{}}, j.r)
				}
			}
		}()
	}
	for range rt.opts.MirrorWorkers {
		<-done
	}
	return ctx.Err()
}

type mirrorJob struct {
	h http.Handler
	r *http.Request
}

// discard is the ResponseWriter of a mirrored request.
type discard struct{ h http.Header }

func (d discard) Header() http.Header         { return d.h }
func (d discard) Write(p []byte) (int, error) { return len(p), nil }
func (d discard) WriteHeader(int)             {}

// ServeHTTP normalises the path, matches a route and serves the request with
// one of its backends. A changed path is forwarded in its clean form. The
// request reaches the backend tagged with proxy.WithRoute, so a *proxy.Proxy
// logs and reports the route's name (RequestEvent.Route), and the route is
// recorded with sluice.RecordRoute, so an edge access log wrapping the router
// (package accesslog) names it too.
func (rt *Router) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	t := rt.table.Load()
	p, changed := CleanPath(r.URL.Path)
	if changed {
		r2 := new(http.Request)
		*r2 = *r
		u := *r.URL
		u.Path, u.RawPath = p, ""
		r2.URL = &u
		r2.RequestURI = u.RequestURI()
		r = r2
	}
	e := t.match(r, p)
	if e == nil {
		t.notFound.ServeHTTP(w, r)
		return
	}
	// The proxy below learns the route from the context; an edge access log above, from w.
	sluice.RecordRoute(w, e.r.Name)
	ctx := proxy.WithRoute(r.Context(), e.r.Name)
	if rt.opts.OnMatch != nil {
		ctx = rt.opts.OnMatch(ctx, e.r.Name)
	}
	r = r.WithContext(ctx)
	if e.r.Mirror != nil {
		r = rt.mirror(t, e.r.Mirror, r)
	}
	e.pick(r).ServeHTTP(w, r)
}

// mirror queues a copy of r for h and returns the request to serve: r with
// its body reassembled when part of it had to be read for the copy.
func (rt *Router) mirror(t *Table, h http.Handler, r *http.Request) *http.Request {
	if len(rt.mirrors) == cap(rt.mirrors) {
		rt.dropped.Add(1)
		return r
	}
	var body []byte
	if r.Body != nil && r.Body != http.NoBody {
		buf, err := io.ReadAll(io.LimitReader(r.Body, t.mirrorMax+1))
		r2 := new(http.Request)
		*r2 = *r
		r2.Body = struct {
			io.Reader
			io.Closer
		}{io.MultiReader(bytes.NewReader(buf), r.Body), r.Body}
		if err != nil || int64(len(buf)) > t.mirrorMax {
			rt.dropped.Add(1)
			return r2
		}
		body, r = buf, r2
	}
	c := r.Clone(context.WithoutCancel(r.Context()))
	c.RequestURI = ""
	c.Body = io.NopCloser(bytes.NewReader(body))
	if body == nil {
		c.Body = http.NoBody
	}
	c.ContentLength = int64(len(body))
	select {
	case rt.mirrors <- mirrorJob{h, c}:
	default:
		rt.dropped.Add(1)
	}
	return r
}
