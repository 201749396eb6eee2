// Package middleware holds small gateway middlewares, each a
// func(http.Handler) http.Handler or a (*X).Handler(next) method, configured
// by a struct whose zero value does nothing surprising. Types with state or
// configuration worth checking are built by a NewXxx that validates once and
// names the offending field in its error.
//
//   - transformation: [Headers], [StripPrefix], [Rewrite] (regular
//     expressions), [Host];
//   - redirects: [Redirect] (scheme, host, path; the status follows the
//     method) and [RedirectHTTPS];
//   - access control: [IPFilter] (CIDRs over the trusted-proxy-aware client
//     IP), [BasicAuth] (htpasswd bcrypt), [ForwardAuth] (ask an auth
//     service), [CORS] preflights;
//   - limits: [Limits] (431/413). Timeouts against slow clients belong to the
//     server: see proxy.NewServer.
//
// Put them in front of a route's backend or of the whole router:
//
//	h := middleware.RedirectHTTPS(ipf.Handler(auth.Handler(router)))
package middleware

import (
	"fmt"
	"net/http"
	"net/netip"
	"strings"

	"github.com/sluiceproxy/sluice"
)

// HeaderRules set, add and remove headers. Set replaces, Add appends,
// Remove deletes; they are applied in the order Remove, Set, Add.
type HeaderRules struct {
	Set    map[string]string
	Add    map[string]string
	Remove []string
}

func (h HeaderRules) apply(hdr http.Header) {
	for _, k := range h.Remove {
		hdr.Del(k)
	}
	for k, v := range h.Set {
		hdr.Set(k, v)
	}
	for k, v := range h.Add {
		hdr.Add(k, v)
	}
}

// Headers returns a middleware rewriting request headers before next and
// response headers before the response is written.
func Headers(req, resp HeaderRules) func(http.Handler) http.Handler {
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			r = r.Clone(r.Context())
			req.apply(r.Header)
			next.ServeHTTP(&headerWriter{ResponseWriter: w, rules: resp}, r)
		})
	}
}

type headerWriter struct {
	http.ResponseWriter
	rules HeaderRules
	done  bool
}

func (w *headerWriter) WriteHeader(code int) {
	if !w.done {
		w.done = true
		w.rules.apply(w.Header())
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *headerWriter) Write(p []byte) (int, error) {
	if !w.done {
		w.WriteHeader(http.StatusOK)
	}
	return w.ResponseWriter.Write(p)
}

// Unwrap lets http.ResponseController reach Flush and Hijack.
func (w *headerWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// StripPrefix removes prefix from the path, by path element, and puts
// replace in its place ("" strips). Requests not under prefix pass unchanged.
func StripPrefix(prefix, replace string) func(http.Handler) http.Handler {
	prefix = strings.TrimSuffix(prefix, "/")
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			rest, ok := strings.CutPrefix(r.URL.Path, prefix)
			if !ok || (rest != "" && rest[0] != '/') {
				next.ServeHTTP(w, r)
				return
			}
			r2 := new(http.Request)
			*r2 = *r
			u := *r.URL
			u.Path = replace + rest
			if !strings.HasPrefix(u.Path, "/") {
				u.Path = "/" + u.Path
			}
			u.RawPath = ""
			r2.URL = &u
			next.ServeHTTP(w, r2)
		})
	}
}

// Host returns a middleware that sets the request's Host to host.
func Host(host string) func(http.Handler) http.Handler {
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			r2 := new(http.Request)
			*r2 = *r
			r2.Host = host
			next.ServeHTTP(w, r2)
		})
	}
}

// RedirectHTTPS redirects plain-HTTP requests to https on the same host and
// URI: 301 for GET and HEAD, 308 for other methods so that clients repeat
// the method and body. TLS requests go to next.
func RedirectHTTPS(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.TLS != nil {
			next.ServeHTTP(w, r)
			return
		}
		code := http.StatusPermanentRedirect
		if r.Method == http.MethodGet || r.Method == http.MethodHead {
			code = http.StatusMovedPermanently
		}
		host := r.Host
		if h, _, ok := strings.Cut(host, ":"); ok && !strings.HasPrefix(host, "[") {
			host = h
		}
		http.Redirect(w, r, "https://"+host+r.URL.RequestURI(), code)
	})
}

// IPFilterOptions configure an IPFilter.
type IPFilterOptions struct {
	// Allow, if not empty, lists the only client networks let through.
	Allow []string
	// Deny lists client networks refused even if allowed.
	Deny []string
	// Trusted are the proxies whose X-Forwarded-For/Forwarded are believed;
	// nil means the client is the TCP peer.
	Trusted *sluice.TrustedProxies
}

// IPFilter refuses clients by CIDR with 403.
type IPFilter struct {
	allow, deny []netip.Prefix
	trusted     *sluice.TrustedProxies
}

// NewIPFilter parses the CIDRs (a bare address is a /32 or /128).
func NewIPFilter(opts IPFilterOptions) (*IPFilter, error) {
	f := &IPFilter{trusted: opts.Trusted}
	var err error
	if f.allow, err = parseCIDRs("Allow", opts.Allow); err != nil {
		return nil, err
	}
	if f.deny, err = parseCIDRs("Deny", opts.Deny); err != nil {
		return nil, err
	}
	return f, nil
}

func parseCIDRs(field string, ss []string) ([]netip.Prefix, error) {
	var ps []netip.Prefix
	for i, s := range ss {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			a, aerr := netip.ParseAddr(s)
			if aerr != nil {
				return nil, fmt.Errorf("middleware: %s[%d] %q is not a CIDR or address", field, i, s)
			}
			p = netip.PrefixFrom(a, a.BitLen())
		}
		ps = append(ps, p.Masked())
	}
	return ps, nil
}

// Allowed reports whether a client address passes the filter. An invalid
// address passes only if there is no Allow list and no Deny list.
func (f *IPFilter) Allowed(a netip.Addr) bool {
	a = a.Unmap()
	if !a.IsValid() {
		return len(f.allow) == 0 && len(f.deny) == 0
	}
	for _, p := range f.deny {
		if p.Contains(a) {
			return false
		}
	}
	if len(f.allow) == 0 {
		return true
	}
	for _, p := range f.allow {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// Handler refuses filtered clients with 403 and passes others to next.
func (f *IPFilter) Handler(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !f.Allowed(sluice.ClientIP(r, f.trusted)) {
			http.Error(w, "middleware: client address not allowed", http.StatusForbidden)
			return
		}
		next.ServeHTTP(w, r)
	})
}

// LimitsOptions bound request sizes. Zero fields mean no limit.
type LimitsOptions struct {
	// MaxHeaderBytes bounds the total size of header names and values;
	// larger requests get 431.
	MaxHeaderBytes int
	// MaxBodyBytes bounds the body; a declared Content-Length over it gets
	// 413 at once, and a longer streamed body fails the read (the server
	// then replies 413 if nothing was written yet).
	MaxBodyBytes int64
}

// Limits returns a middleware enforcing opts without buffering the body.
func Limits(opts LimitsOptions) func(http.Handler) http.Handler {
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if opts.MaxHeaderBytes > 0 {
				n := 0
				for k, vs := range r.Header {
					for _, v := range vs {
						n += len(k) + len(v) + 4
					}
				}
				if n > opts.MaxHeaderBytes {
					http.Error(w, "middleware: request headers too large", http.StatusRequestHeaderFieldsTooLarge)
					return
				}
			}
			if opts.MaxBodyBytes > 0 && r.Body != nil {
				if r.ContentLength > opts.MaxBodyBytes {
					http.Error(w, "middleware: request body too large", http.StatusRequestEntityTooLarge)
					return
				}
				r2 := new(http.Request)
				*r2 = *r
				r2.Body = http.MaxBytesReader(w, r.Body, opts.MaxBodyBytes)
				r = r2
			}
			next.ServeHTTP(w, r)
		})
	}
}
