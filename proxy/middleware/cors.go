package middleware

import (
	"fmt"
	"net/http"
	"net/textproto"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"
)

// CORSOptions configure a CORS.
type CORSOptions struct {
	// AllowOrigins lists the origins ("https://app.example.com") allowed to
	// call, or "*" for any. Required.
	AllowOrigins []string
	// AllowMethods lists the methods a preflight may ask for. Nil means GET,
	// HEAD and POST.
	AllowMethods []string
	// AllowHeaders lists the request headers a preflight may ask for.
	AllowHeaders []string
	// ExposeHeaders lists the response headers scripts may read.
	ExposeHeaders []string
	// AllowCredentials lets browsers send cookies; it cannot be combined
	// with the origin "*".
	AllowCredentials bool
	// MaxAge is how long browsers may cache a preflight answer. Zero sends
	// no Access-Control-Max-Age.
	MaxAge time.Duration
}

// CORS answers preflight requests and marks responses to allowed origins,
// following the Fetch standard's CORS protocol. Requests without an Origin
// header pass untouched; a preflight that asks for a disallowed origin,
// method or header gets 403 with the reason.
type CORS struct {
	any                     bool
	origins                 []string
	methods, headers        []string // canonical
	allowMethods, allowHdrs string
	expose, maxAge          string
	credentials             bool
}

// NewCORS validates opts. The error names the offending field.
func NewCORS(opts CORSOptions) (*CORS, error) {
	if len(opts.AllowOrigins) == 0 {
		return nil, fmt.Errorf("middleware: CORS AllowOrigins is required")
	}
	c := &CORS{credentials: opts.AllowCredentials}
	for i, o := range opts.AllowOrigins {
		if o == "*" {
			c.any = true
			continue
		}
		u, err := url.Parse(o)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.Path != "" || u.RawQuery != "" {
			return nil, fmt.Errorf("middleware: CORS AllowOrigins[%d] %q must be scheme://host[:port] or \"*\"", i, o)
		}
		c.origins = append(c.origins, strings.ToLower(o))
	}
	if c.any && c.credentials {
		return nil, fmt.Errorf("middleware: CORS AllowCredentials cannot be combined with AllowOrigins \"*\"")
	}
	methods := opts.AllowMethods
	if methods == nil {
		methods = []string{http.MethodGet, http.MethodHead, http.MethodPost}
	}
	for i, m := range methods {
		if !validToken(m) {
			return nil, fmt.Errorf("middleware: CORS AllowMethods[%d] %q is not a method", i, m)
		}
	}
	for i, h := range slices.Concat(opts.AllowHeaders, opts.ExposeHeaders) {
		if !validToken(h) {
			field, j := "AllowHeaders", i
			if i >= len(opts.AllowHeaders) {
				field, j = "ExposeHeaders", i-len(opts.AllowHeaders)
			}
			return nil, fmt.Errorf("middleware: CORS %s[%d] %q is not a header name", field, j, h)
		}
	}
	if opts.MaxAge < 0 {
		return nil, fmt.Errorf("middleware: CORS MaxAge must be ≥ 0, got %v", opts.MaxAge)
	}
	c.methods = methods
	for _, h := range opts.AllowHeaders {
		c.headers = append(c.headers, textproto.CanonicalMIMEHeaderKey(h))
	}
	c.allowMethods = strings.Join(methods, ", ")
	c.allowHdrs = strings.Join(opts.AllowHeaders, ", ")
	c.expose = strings.Join(opts.ExposeHeaders, ", ")
	if opts.MaxAge > 0 {
		c.maxAge = strconv.Itoa(int(opts.MaxAge / time.Second))
	}
	return c, nil
}

// Handler answers preflights itself and passes other requests to next.
func (c *CORS) Handler(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		origin := r.Header.Get("Origin")
		if origin == "" {
			next.ServeHTTP(w, r)
			return
		}
		allowed := c.any || slices.Contains(c.origins, strings.ToLower(origin))
		if !c.any {
			// The answer depends on Origin: caches must key on it.
			w.Header().Add("Vary", "Origin")
		}
		wantMethod := r.Header.Get("Access-Control-Request-Method")
		if r.Method == http.MethodOptions && wantMethod != "" {
			c.preflight(w, r, origin, allowed, wantMethod)
			return
		}
		if allowed {
			c.allowOrigin(w.Header(), origin)
			if c.expose != "" {
				w.Header().Set("Access-Control-Expose-Headers", c.expose)
			}
		}
		next.ServeHTTP(w, r)
	})
}

func (c *CORS) allowOrigin(h http.Header, origin string) {
	if c.any {
		h.Set("Access-Control-Allow-Origin", "*")
		return
	}
	h.Set("Access-Control-Allow-Origin", origin)
	if c.credentials {
		h.Set("Access-Control-Allow-Credentials", "true")
	}
}

func (c *CORS) preflight(w http.ResponseWriter, r *http.Request, origin string, allowed bool, method string) {
	if !allowed {
		http.Error(w, "middleware: CORS origin not allowed", http.StatusForbidden)
		return
	}
	if !slices.Contains(c.methods, method) {
		http.Error(w, "middleware: CORS method not allowed: "+method, http.StatusForbidden)
		return
	}
	for _, v := range r.Header.Values("Access-Control-Request-Headers") {
		for f := range strings.SplitSeq(v, ",") {
			f = strings.TrimSpace(f)
			if f != "" && !slices.Contains(c.headers, textproto.CanonicalMIMEHeaderKey(f)) {
				http.Error(w, "middleware: CORS header not allowed: "+f, http.StatusForbidden)
				return
			}
		}
	}
	h := w.Header()
	c.allowOrigin(h, origin)
	h.Set("Access-Control-Allow-Methods", c.allowMethods)
	if c.allowHdrs != "" {
		h.Set("Access-Control-Allow-Headers", c.allowHdrs)
	}
	if c.maxAge != "" {
		h.Set("Access-Control-Max-Age", c.maxAge)
	}
	w.WriteHeader(http.StatusNoContent)
}
