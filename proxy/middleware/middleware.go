// Package middleware holds small gateway middlewares, all of one shape: a value with the
// method
//
//	Handler(next http.Handler) http.Handler
//
// as cache.Cache and ratelimit.Limiter have too. One shape means one way to read a chain,
// and the method value x.Handler is a func(http.Handler) http.Handler, so every middleware
// drops into a chain library, or a plain nesting of calls, without an adapter.
//
// Middlewares with state, or with settings worth checking, are built by a NewX taking an
// XOptions, which validates once and names the offending field in its error: [IPFilter],
// [BasicAuth], [ForwardAuth], [CORS], [Rewrite]. Config-only ones are exported structs written as
// literals, whose zero values are documented: [Headers], [StripPrefix], [SetHost],
// [RedirectHTTPS], [Limits]. Their Handler copies the struct when it is called, so changing
// the struct afterwards does not change the handler (the maps inside [HeaderRules] are
// shared, and must not be modified).
//
//   - transformation: [Headers], [StripPrefix], [Rewrite] (regular expressions),
//     [SetHost];
//   - redirects: [RedirectHTTPS] sends plain HTTP to HTTPS and passes TLS requests on.
//     [Redirect] (scheme, host, path; the status follows the method) is not a middleware:
//     it answers every request itself and has no next, so it is an http.Handler, used as a
//     route's backend;
//   - access control: [IPFilter] (CIDRs over the trusted-proxy-aware client IP),
//     [BasicAuth] (htpasswd bcrypt), [ForwardAuth] (ask an auth service), [CORS]
//     preflights;
//   - limits: [Limits] (431/413). Timeouts against slow clients belong to the server: see
//     proxy.NewServer.
//
// Put them in front of a route's backend or of the whole router; the outermost runs first:
//
//	h := middleware.RedirectHTTPS{}.Handler(ipf.Handler(auth.Handler(router)))
package middleware

import (
	"fmt"
	"net/http"
	"net/netip"
	"strconv"
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

// Headers rewrites request headers before next sees them and response headers before the
// response is written. The zero value changes nothing.
type Headers struct {
	// Request is applied to a copy of the request; the caller's request is not modified.
	Request HeaderRules
	// Response is applied to the response header when next writes its status.
	Response HeaderRules
}

// Handler applies h's rules around next.
func (h Headers) Handler(next http.Handler) http.Handler {
	req, resp := h.Request, h.Response
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		r = r.Clone(r.Context())
		req.apply(r.Header)
		next.ServeHTTP(&headerWriter{ResponseWriter: w, rules: resp}, r)
	})
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

// StripPrefix removes Prefix from the request path, by path element, and puts Replace in its
// place: with Prefix "/api", "/api/items" and "/api" are under it, "/apiary" is not.
// Requests not under Prefix pass unchanged. The zero value passes every request unchanged.
type StripPrefix struct {
	// Prefix is the leading path to remove; a trailing "/" is ignored. Empty means every
	// path is under it, so that Replace alone adds a prefix.
	Prefix string
	// Replace is put in place of Prefix. Empty strips it; the path then keeps a leading "/".
	Replace string
}

// Handler rewrites the path of requests under s.Prefix before passing them to next. The
// caller's request is not modified.
func (s StripPrefix) Handler(next http.Handler) http.Handler {
	prefix, replace := strings.TrimSuffix(s.Prefix, "/"), s.Replace
	if prefix == "" && replace == "" {
		return next
	}
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

// SetHost sets the request's Host, the name the backend sees, as NGINX's
// "proxy_set_header Host" does. The zero value clears it, so that a proxy.Proxy sends the
// backend's own address instead.
type SetHost struct {
	// Host is the new Host: a host name or host:port.
	Host string
}

// Handler passes requests to next with their Host replaced. The caller's request is not
// modified.
func (s SetHost) Handler(next http.Handler) http.Handler {
	host := s.Host
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		r2 := new(http.Request)
		*r2 = *r
		r2.Host = host
		next.ServeHTTP(w, r2)
	})
}

// RedirectHTTPS redirects plain-HTTP requests to https on the same host and URI: 301 for
// GET and HEAD, 308 for other methods so that clients repeat the method and body. TLS
// requests go to next. The zero value redirects to the default port, 443.
type RedirectHTTPS struct {
	// Port is the HTTPS port written into the Location, in place of the request's port.
	// Zero means 443, which the URL leaves out.
	Port uint16
}

// Handler redirects plain-HTTP requests and passes TLS ones to next.
func (rh RedirectHTTPS) Handler(next http.Handler) http.Handler {
	port := ""
	if rh.Port != 0 && rh.Port != 443 {
		port = ":" + strconv.Itoa(int(rh.Port))
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.TLS != nil {
			next.ServeHTTP(w, r)
			return
		}
		code := http.StatusPermanentRedirect
		if r.Method == http.MethodGet || r.Method == http.MethodHead {
			code = http.StatusMovedPermanently
		}
		http.Redirect(w, r, "https://"+stripPort(r.Host)+port+r.URL.RequestURI(), code)
	})
}

// IPFilterOptions configure an IPFilter.
type IPFilterOptions struct {
	// Allow, if not empty, lists the only client networks let through.
	Allow []string
	// Deny lists client networks refused even if allowed.
	Deny []string
	// TrustedProxies are the proxies whose X-Forwarded-For and Forwarded headers are
	// believed when finding the client IP. Nil trusts nobody: the client is the TCP peer.
	TrustedProxies *sluice.TrustedProxies
}

// IPFilter refuses clients by CIDR with 403.
type IPFilter struct {
	allow, deny []netip.Prefix
	trusted     *sluice.TrustedProxies
}

// NewIPFilter parses the CIDRs (a bare address is a /32 or /128).
func NewIPFilter(opts IPFilterOptions) (*IPFilter, error) {
	f := &IPFilter{trusted: opts.TrustedProxies}
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

// Limits bounds request sizes without buffering the body. Zero or negative fields mean no
// limit, so the zero value passes every request.
type Limits struct {
	// MaxHeaderBytes bounds the total size of header names and values;
	// larger requests get 431.
	MaxHeaderBytes int
	// MaxBodyBytes bounds the body; a declared Content-Length over it gets
	// 413 at once, and a longer streamed body fails the read (the server
	// then replies 413 if nothing was written yet).
	MaxBodyBytes int64
}

// Handler refuses requests over l's limits and passes others to next.
func (l Limits) Handler(next http.Handler) http.Handler {
	maxHeader, maxBody := l.MaxHeaderBytes, l.MaxBodyBytes
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if maxHeader > 0 {
			n := 0
			for k, vs := range r.Header {
				for _, v := range vs {
					n += len(k) + len(v) + 4
				}
			}
			if n > maxHeader {
				http.Error(w, "middleware: request headers too large", http.StatusRequestHeaderFieldsTooLarge)
				return
			}
		}
		if maxBody > 0 && r.Body != nil {
			if r.ContentLength > maxBody {
				http.Error(w, "middleware: request body too large", http.StatusRequestEntityTooLarge)
				return
			}
			r2 := new(http.Request)
			*r2 = *r
			r2.Body = http.MaxBytesReader(w, r.Body, maxBody)
			r = r2
		}
		next.ServeHTTP(w, r)
	})
}
