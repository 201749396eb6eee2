package middleware

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"net/textproto"
	"net/url"
	"strings"
	"time"

	"github.com/sluiceproxy/sluice"
)

// ForwardAuthOptions configure a ForwardAuth.
type ForwardAuthOptions struct {
	// URL is the auth service's absolute http or https URL. Required.
	URL string

	// RequestHeaders are the client's headers copied onto the auth
	// sub-request. Nil means Authorization and Cookie; an empty non-nil
	// slice means none.
	RequestHeaders []string

	// ResponseHeaders are the auth service's response headers copied onto the
	// upstream request when it answers 2xx (for example X-User). Whatever the
	// client sent under these names is removed first, so a client cannot
	// forge them.
	ResponseHeaders []string

	// Timeout bounds the sub-request, response body included. Zero means 5s.
	Timeout time.Duration

	// MaxBodyBytes bounds the body of a refusal relayed to the client; a
	// longer one is answered with 502 instead. Zero means 64 KiB.
	MaxBodyBytes int64

	// TrustedProxies are the proxies whose X-Forwarded-* fields are believed
	// when telling the auth service who the client is. Nil trusts nobody.
	TrustedProxies *sluice.TrustedProxies

	// Transport sends the sub-requests. Nil means a transport that ignores
	// the environment's proxy settings. Redirects are never followed: a 3xx
	// from the auth service (to a login page, say) goes to the client.
	Transport http.RoundTripper
}

// ForwardAuth asks an auth service whether each request may pass, in the
// manner of NGINX's auth_request and Traefik's forwardAuth.
//
// The sub-request is a GET without a body to URL, carrying the chosen client
// headers and X-Forwarded-Method, X-Forwarded-Uri, X-Forwarded-Host,
// X-Forwarded-Proto and X-Forwarded-For describing the original request. A 2xx
// answer lets the request through with the chosen response headers; any other
// answer is sent to the client as it is (status, headers and a bounded body).
// When the auth service cannot be reached the client gets 503, and when it
// does not answer within Timeout, 504; the request is refused either way.
type ForwardAuth struct {
	url     *url.URL
	opts    ForwardAuthOptions
	client  *http.Client
	reqHdr  []string
	respHdr []string
}

// NewForwardAuth validates opts and returns a ForwardAuth. The error names
// the offending field.
func NewForwardAuth(opts ForwardAuthOptions) (*ForwardAuth, error) {
	u, err := url.Parse(opts.URL)
	if err != nil {
		return nil, fmt.Errorf("middleware: ForwardAuth URL: %w", err)
	}
	if (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("middleware: ForwardAuth URL %q must be an absolute http or https URL", opts.URL)
	}
	if opts.Timeout < 0 {
		return nil, fmt.Errorf("middleware: ForwardAuth Timeout must be ≥ 0, got %v", opts.Timeout)
	}
	if opts.Timeout == 0 {
		opts.Timeout = 5 * time.Second
	}
	if opts.MaxBodyBytes < 0 {
		return nil, fmt.Errorf("middleware: ForwardAuth MaxBodyBytes must be ≥ 0, got %d", opts.MaxBodyBytes)
	}
	if opts.MaxBodyBytes == 0 {
		opts.MaxBodyBytes = 64 << 10
	}
	a := &ForwardAuth{url: u, opts: opts}
	reqHdr := opts.RequestHeaders
	if reqHdr == nil {
		reqHdr = []string{"Authorization", "Cookie"}
	}
	if a.reqHdr, err = canonicalNames("RequestHeaders", reqHdr); err != nil {
		return nil, err
	}
	if a.respHdr, err = canonicalNames("ResponseHeaders", opts.ResponseHeaders); err != nil {
		return nil, err
	}
	rt := opts.Transport
	if rt == nil {
		t := http.DefaultTransport.(*http.Transport).Clone()
		t.Proxy = nil
		t.MaxIdleConnsPerHost = 64
		rt = t
	}
	a.client = &http.Client{
		Transport: rt,
		CheckRedirect: func(*http.Request, []*http.Request) error {
			return http.ErrUseLastResponse
		},
	}
	return a, nil
}

func canonicalNames(field string, names []string) ([]string, error) {
	out := make([]string, 0, len(names))
	for i, n := range names {
		if !validToken(n) {
			return nil, fmt.Errorf("middleware: ForwardAuth %s[%d] %q is not a header name", field, i, n)
		}
		out = append(out, textproto.CanonicalMIMEHeaderKey(n))
	}
	return out, nil
}

// Handler checks each request with the auth service before passing it to
// next.
func (a *ForwardAuth) Handler(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ctx, cancel := context.WithTimeout(r.Context(), a.opts.Timeout)
		defer cancel()
		resp, err := a.client.Do(a.subRequest(ctx, r))
		if err != nil {
			a.fail(w, r, err)
			return
		}
		defer resp.Body.Close()
		if resp.StatusCode >= 200 && resp.StatusCode < 300 {
			// Drain a little and close now, so the connection goes back to
			// the pool instead of waiting for the upstream's response.
			io.CopyN(io.Discard, resp.Body, 4<<10)
			resp.Body.Close()
			r = r.Clone(r.Context())
			for _, k := range a.respHdr {
				r.Header.Del(k)
				if vs := resp.Header.Values(k); len(vs) > 0 {
					r.Header[k] = append([]string(nil), vs...)
				}
			}
			next.ServeHTTP(w, r)
			return
		}
		body, err := io.ReadAll(io.LimitReader(resp.Body, a.opts.MaxBodyBytes+1))
		if err != nil {
			a.fail(w, r, err)
			return
		}
		if int64(len(body)) > a.opts.MaxBodyBytes {
			http.Error(w, "middleware: forward auth: the auth service's refusal is larger than MaxBodyBytes", http.StatusBadGateway)
			return
		}
		h := w.Header()
		for k, vs := range resp.Header {
			if !hopByHop(k) && !listedIn(resp.Header["Connection"], k) {
				h[k] = vs
			}
		}
		h.Set("Content-Length", fmt.Sprint(len(body)))
		w.WriteHeader(resp.StatusCode)
		w.Write(body)
	})
}

// subRequest builds the question for the auth service.
func (a *ForwardAuth) subRequest(ctx context.Context, r *http.Request) *http.Request {
	u := *a.url
	sub := (&http.Request{
		Method:     http.MethodGet,
		URL:        &u,
		Proto:      "HTTP/1.1",
		ProtoMajor: 1,
		ProtoMinor: 1,
		Header:     make(http.Header, len(a.reqHdr)+5),
		Host:       u.Host,
	}).WithContext(ctx)
	for _, k := range a.reqHdr {
		if vs := r.Header[k]; len(vs) > 0 {
			sub.Header[k] = vs
		}
	}
	peer := peerAddr(r)
	trusted := peer.IsValid() && a.opts.TrustedProxies.Contains(peer)
	forwarded := func(name, own string) {
		if v := r.Header.Get(name); trusted && v != "" {
			own = v
		}
		sub.Header.Set(name, own)
	}
	proto := "http"
	if r.TLS != nil {
		proto = "https"
	}
	sub.Header.Set("X-Forwarded-Method", r.Method)
	sub.Header.Set("X-Forwarded-Uri", r.URL.RequestURI())
	forwarded("X-Forwarded-Host", r.Host)
	forwarded("X-Forwarded-Proto", proto)
	if ip := sluice.ClientIP(r, a.opts.TrustedProxies); ip.IsValid() {
		sub.Header.Set("X-Forwarded-For", ip.String())
	}
	return sub
}

func peerAddr(r *http.Request) netip.Addr {
	ap, err := netip.ParseAddrPort(r.RemoteAddr)
	if err != nil {
		return netip.Addr{}
	}
	return ap.Addr().Unmap()
}

// fail answers a sub-request that produced no usable response.
func (a *ForwardAuth) fail(w http.ResponseWriter, r *http.Request, err error) {
	if r.Context().Err() != nil {
		return // the client went away; nobody is listening
	}
	var ne net.Error
	if errors.Is(err, context.DeadlineExceeded) || (errors.As(err, &ne) && ne.Timeout()) {
		http.Error(w, "middleware: forward auth: the auth service did not answer in time", http.StatusGatewayTimeout)
		return
	}
	http.Error(w, "middleware: forward auth: the auth service is unavailable", http.StatusServiceUnavailable)
}

// hopByHop reports whether a response field belongs to one connection and
// must not be relayed.
func hopByHop(k string) bool {
	switch k {
	case "Connection", "Keep-Alive", "Proxy-Authenticate", "Proxy-Connection",
		"Te", "Trailer", "Transfer-Encoding", "Upgrade", "Content-Length":
		return true
	}
	return false
}

// listedIn reports whether the Connection field values name k.
func listedIn(connection []string, k string) bool {
	for _, v := range connection {
		for f := range strings.SplitSeq(v, ",") {
			if textproto.CanonicalMIMEHeaderKey(strings.TrimSpace(f)) == k {
				return true
			}
		}
	}
	return false
}

// validToken reports whether s is an HTTP token (RFC 9110 §5.6.2), the
// syntax of a header name.
func validToken(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c <= ' ' || c >= 0x7f || isSeparator(c) {
			return false
		}
	}
	return true
}

func isSeparator(c byte) bool {
	switch c {
	case '(', ')', '<', '>', '@', ',', ';', ':', '\\', '"', '/', '[', ']', '?', '=', '{', '}':
		return true
	}
	return false
}
