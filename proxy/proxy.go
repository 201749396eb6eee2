package proxy

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/bits"
	"net"
	"net/http"
	"net/http/httptrace"
	"net/textproto"
	"net/url"
	"os"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sluiceproxy/sluice"
)

// Protocol is the protocol a Proxy speaks to its upstreams.
type Protocol uint8

const (
	// HTTP1 is HTTP/1.1 over cleartext TCP with keep-alive connection pooling. It is the zero
	// value.
	HTTP1 Protocol = iota
	// HTTPS is TLS, with HTTP/2 when the upstream offers "h2" in ALPN and HTTP/1.1 otherwise.
	HTTPS
	// HTTP2 is HTTP/2 over TLS only (ALPN "h2"), as gRPC backends want.
	HTTP2
	// H2C is HTTP/2 over cleartext TCP with prior knowledge (RFC 9113 §3.3), the usual way to
	// reach gRPC services inside a cluster.
	H2C
)

// String returns the protocol's name: "http/1.1", "https", "h2" or "h2c".
func (p Protocol) String() string {
	switch p {
	case HTTP1:
		return "http/1.1"
	case HTTPS:
		return "https"
	case HTTP2:
		return "h2"
	case H2C:
		return "h2c"
	}
	return "unknown"
}

func (p Protocol) scheme() string {
	if p == HTTPS || p == HTTP2 {
		return "https"
	}
	return "http"
}

// Proxy is an http.Handler that forwards each request to an endpoint chosen by Picker.
//
// Only Picker is required; every other nil or zero field means the documented default. A Proxy
// must not be copied or have its fields changed after its first request; it is safe for
// concurrent use.
type Proxy struct {
	// Picker chooses the endpoint of every try. Required.
	Picker sluice.Picker

	// Observer, when not nil, is told the outcome of every try, in addition to the pick's Done.
	// Passive health checking plugs in here.
	Observer sluice.Observer

	// Protocol is the protocol spoken to upstreams; the zero value is HTTP1. With a custom
	// Transport it only selects the URL scheme ("https" for HTTPS and HTTP2).
	Protocol Protocol

	// Transport sends the requests. Nil means transports built from Protocol,
	// TLSClientConfig, DialContext and MaxIdleConnsPerEndpoint: connection pools tuned for a
	// proxy (no environment proxy, no transparent compression, large idle pools). For
	// HTTP1, requests without a body, or with a body of known length up to 64 KiB (and
	// Retry.MaxBodyBytes) that is not awaiting 100 Continue, then take a leaner HTTP/1.1
	// client that writes and reads on the handler's goroutine. Such a body is read whole
	// before an endpoint is picked, and sent with the request's head in one write: an
	// endpoint never gets part of it, and a client that sends too little, or too slowly,
	// fails without one being tried.
	Transport http.RoundTripper

	// TLSClientConfig configures TLS to upstreams for HTTPS and HTTP2. Nil means a default
	// config that verifies the upstream against the system roots and the endpoint's address.
	// NextProtos is set by the proxy.
	TLSClientConfig *tls.Config

	// DialContext opens connections for the default transports. Nil means a net.Dialer with
	// a 5s connect timeout and TCP keep-alives. Tests use it to map endpoint addresses to
	// local servers.
	DialContext func(ctx context.Context, network, addr string) (net.Conn, error)

	// MaxIdleConnsPerEndpoint bounds the idle keep-alive connections the default transports
	// keep to each endpoint. Zero means 256.
	MaxIdleConnsPerEndpoint int

	// ProxyProtocol, when 1 or 2, makes the default transports send a PROXY protocol header
	// of that version (see package proxyproto) first on every upstream connection they open,
	// so that an endpoint that accepts the protocol sees the client: its source address is
	// the request's RemoteAddr, its destination the server's http.LocalAddrContextKey. Zero
	// sends none. An endpoint that does not expect the header will fail every request.
	//
	// A connection that carries a header speaks for one client connection, so it only ever
	// carries requests from that one (the same source and destination address pair), as
	// HAProxy keeps such connections private: idle connections are kept per client
	// connection, MaxIdleConnsPerEndpoint each, until IdleConnTimeout. That holds for the
	// requests the lean HTTP/1.1 client sends; the others of Protocol HTTP1 (bodies of
	// unknown length or over 64 KiB, Expect: 100-continue, upgrades) go through net/http's
	// Transport, whose pool cannot tell clients apart: each opens a connection of its own,
	// closed after its response. Protocols HTTPS, HTTP2 and H2C, whose HTTP/2 connections
	// net/http shares among requests, and a custom Transport, which the proxy cannot make
	// send a header, are refused: every request fails with 500 and an error naming this
	// field.
	ProxyProtocol int

	// IdleConnTimeout is how long an idle keep-alive connection to an upstream is kept by the
	// default transports before it is closed. Zero means 60s, NGINX's upstream
	// keepalive_timeout, which sits below the idle timeouts of most upstream servers and
	// cloud load balancers; negative means connections are not kept idle at all: each is
	// closed after its response.
	IdleConnTimeout time.Duration

	// TrustedProxies lists the peers whose X-Forwarded-* and Forwarded fields are believed and
	// appended to. Nil trusts nobody: those fields are replaced with what this proxy saw.
	TrustedProxies *sluice.TrustedProxies

	// ClientIPHeaders names further request fields that carry a client's address, to be
	// treated as True-Client-IP is: kept from a peer in TrustedProxies, replaced with the
	// peer's address when anyone else sends them, and their spellings with '_' for '-'
	// dropped. X-Forwarded-For, Forwarded, X-Real-IP, True-Client-IP, X-Client-IP,
	// CF-Connecting-IP and Fastly-Client-IP are always handled.
	ClientIPHeaders []string

	// Retry configures retries and timeouts. The zero value is documented on Retry.
	Retry Retry

	// UpgradeIdleTimeout closes an upgraded (WebSocket) connection after this long without a
	// byte in either direction. Zero means 10 minutes; negative means never.
	UpgradeIdleTimeout time.Duration

	// ResponseBodyTimeout is the longest the proxy waits between two reads of an upstream's
	// response body, as NGINX's proxy_read_timeout. When it passes, the upstream is charged
	// with a Timeout, the client's connection is aborted (its response already started) and
	// the access log says 504. Zero means 60 seconds; negative means no limit. Streams that
	// stay quiet for longer (long polling, sparse server-sent events, idle gRPC streams)
	// need a larger value or heartbeats.
	ResponseBodyTimeout time.Duration

	// ModifyResponse, when not nil, may change the upstream's response before it is written.
	// An error makes the proxy answer through ErrorHandler with 502 instead. It is not called
	// for 1xx responses.
	ModifyResponse func(*http.Response) error

	// ErrorHandler writes the response when no upstream response can be forwarded. The error
	// is an *Error, whose Status says what the default handler would send. Nil means the
	// default: the status with its text, and Retry-After on 503. It is not called when the
	// client has gone away.
	ErrorHandler func(http.ResponseWriter, *http.Request, error)

	// Logger, when not nil, receives one access-log line per request at level Info. Nil
	// means no access log. It sees only the requests that reach the proxy: the edge-level
	// log of package accesslog, wrapping the whole handler chain, also logs what middlewares
	// answered themselves (cache hits, 429s, redirects, 404s of a router).
	Logger *slog.Logger

	// Hooks are told of every request and every try: see Hooks.
	Hooks Hooks

	once     sync.Once
	cfg      retryConfig       // Retry with defaults applied
	bodyIdle time.Duration     // ResponseBodyTimeout with its default; 0 for none
	ipFields []string          // client-IP fields replaced for untrusted peers
	aliases  []string          // fields whose '_' spellings are dropped
	rt       http.RoundTripper // Transport or the default one
	upRT     http.RoundTripper // for Upgrade requests: always HTTP/1.1
	fast     *h1Client         // lean HTTP/1.1 path; nil unless default HTTP1 transports
	setupErr error             // a configuration that cannot work, answered with 500
	idle     time.Duration     // UpgradeIdleTimeout with its default
	scheme   string
	inflight atomic.Int64 // requests being served, for the retry budget
	retrying atomic.Int64 // retries in flight, for the retry budget
	tunnels  tunnels      // upgraded connections, for Shutdown
}

type routeKey struct{}

// WithRoute returns a copy of ctx that carries the name of the route a request matched. The
// proxy puts it in the access log and in RequestEvent.Route. Routers call it before handing the
// request to the Proxy, and [sluice.RecordRoute] too, so that an edge access log wrapping the
// router (package accesslog), which never sees the contexts made inside it, names the route.
func WithRoute(ctx context.Context, name string) context.Context {
	return context.WithValue(ctx, routeKey{}, name)
}

// RouteFromContext returns the route name stored by WithRoute, or "".
func RouteFromContext(ctx context.Context) string {
	s, _ := ctx.Value(routeKey{}).(string)
	return s
}

// Error is what ErrorHandler receives when the proxy has no upstream response to forward.
type Error struct {
	// Status is the status the default error handler sends: 503 when no endpoint was
	// available, 502 for connection failures, 504 for timeouts.
	Status int
	// Failure classifies the last try's failure; NoFailure when no try was made.
	Failure sluice.Failure
	// Endpoint is the address of the last endpoint tried, or "".
	Endpoint string
	// Tries is the number of tries made.
	Tries int
	// Err is the underlying error.
	Err error
}

// Error returns "proxy: ", the endpoint when one was tried, and the cause. It is for logs:
// the default error handler never shows it to clients.
func (e *Error) Error() string {
	if e.Endpoint == "" {
		return "proxy: " + e.Err.Error()
	}
	return "proxy: " + e.Endpoint + ": " + e.Err.Error()
}

// Unwrap returns e.Err.
func (e *Error) Unwrap() error { return e.Err }

// DefaultErrorHandler is the handler used when Proxy.ErrorHandler is nil. It answers with the
// Status of an *Error (502 for any other error) and its status text; a 503 for want of an
// endpoint carries Retry-After: 1. A gRPC request (Content-Type application/grpc...) is
// answered the way gRPC clients expect, as Envoy does: HTTP 200 with no body and grpc-status
// and grpc-message fields (14 UNAVAILABLE for 502 and 503, 4 DEADLINE_EXCEEDED for 504 and 408,
// and so on). It never reveals upstream addresses to the client.
func DefaultErrorHandler(rw http.ResponseWriter, r *http.Request, err error) {
	status := http.StatusBadGateway
	var pe *Error
	if errors.As(err, &pe) && pe.Status != 0 {
		status = pe.Status
	}
	if r != nil && isGRPC(r) {
		writeGRPCError(rw, status)
		return
	}
	if status == http.StatusServiceUnavailable && errors.Is(err, sluice.ErrNoEndpoint) {
		rw.Header().Set("Retry-After", "1")
	}
	http.Error(rw, http.StatusText(status), status)
}

// errTryTimeout is the cancellation cause of a try that ran out of time, waiting for the
// response head or between two reads of its body.
var errTryTimeout = errors.New("proxy: upstream timed out")

// defaultReadTimeout is the default wait for an upstream's response head and between two reads
// of its body: NGINX's proxy_read_timeout.
const defaultReadTimeout = 60 * time.Second

// statusClientClosed is the status logged when the client went away (NGINX's 499). It is
// never sent.
const statusClientClosed = 499

func (p *Proxy) setup() {
	p.cfg = p.Retry.resolve()
	p.ipFields, p.aliases = clientIPSetup(p.ClientIPHeaders)
	switch {
	case p.ResponseBodyTimeout == 0:
		p.bodyIdle = defaultReadTimeout
	case p.ResponseBodyTimeout > 0:
		p.bodyIdle = p.ResponseBodyTimeout
	}
	p.scheme = p.Protocol.scheme()
	p.idle = p.UpgradeIdleTimeout
	if p.idle == 0 {
		p.idle = 10 * time.Minute
	}
	if p.setupErr = p.checkProxyProtocol(); p.setupErr != nil {
		return
	}
	if p.Transport != nil {
		p.rt, p.upRT = p.Transport, p.Transport
		return
	}
	t := newTransports(p)
	p.rt, p.upRT, p.fast = t.main, t.upgrade, t.fast
}

// CloseIdleConnections closes the idle upstream connections of the proxy's transports.
func (p *Proxy) CloseIdleConnections() {
	p.once.Do(p.setup)
	if p.fast != nil {
		p.fast.closeIdle()
	}
	type closeIdler interface{ CloseIdleConnections() }
	if c, ok := p.rt.(closeIdler); ok {
		c.CloseIdleConnections()
	}
	if c, ok := p.upRT.(closeIdler); ok && p.upRT != p.rt {
		c.CloseIdleConnections()
	}
}

// exchange is the state of one request. It is taken from exchanges and put back when the
// request ends, unless something the request handed out may still reach it (see pooled).
type exchange struct {
	p   *Proxy
	rw  http.ResponseWriter
	in  *http.Request
	out http.Request // template for every try: header, host, body set; URL per try
	url url.URL

	// pooled says that x goes back to exchanges when the request ends: nothing outside the
	// proxy holds a pointer into it. It is cleared as soon as something may: ModifyResponse
	// gets the response, which points at x.res, x.h1body, x.out and x.url; a RoundTripper
	// gets a request sharing x.out's header and x.url, and may read them after it returned;
	// a Picker given a Tried that is not empty may keep it, and it lies in x.triedBuf; and a
	// panic may have left anything behind. The client's response header gets only values of
	// their own (see h1Client.do), never x.hvals.
	pooled bool
	// The maps of the outgoing header and of the lean client's response header, kept
	// cleared while x is pooled, so that a request does not allocate them.
	outHdr http.Header
	resHdr textproto.MIMEHeader

	upgrade string // the Upgrade protocol requested, or ""
	fastOK  bool   // the request may take the lean HTTP/1.1 client
	body    *replayBody
	reqBody []byte  // with fastOK, the client's whole body, read before the first try
	bodyBuf *[]byte // the pooled buffer reqBody lies in, returned when the request ends
	probe   [1]byte // for the Read that looks for the end of a read-ahead body

	start    time.Time
	deadline time.Time // overall deadline, zero when none
	tried    []string
	triedBuf [3]string
	retrying bool // holds one unit of the retry budget

	// The forwarding fields, kept here so that building them allocates nothing more.
	xff, xfh, fwd [1]string

	traceCtx context.Context // in.Context() with trace, built on the first transport try
	trace    httptrace.ClientTrace
	mu       sync.Mutex // mu orders 1xx writes from the transport against the try's end
	tryOpen  bool       // guarded by mu: 1xx responses may be written

	res    http.Response // the response of the lean client
	h1body h1Body
	// The values of the lean client's response header, cut up into one slice per field
	// (readHeader), when x is not pooled: most responses need no slice of their own.
	hvals [8]string

	// The try in progress, kept so that a panic can still end it.
	pick     sluice.PickResult
	picked   bool      // pick is not yet reported
	openBody io.Closer // the upstream body being forwarded, until closed

	clientCtx   context.Context    // the client's own context, when in carries a gRPC deadline
	cancel      context.CancelFunc // releases the gRPC deadline's context
	closeClient bool               // the client's connection must close after the response
	sent1xx     bool               // an informational response reached the client
	wrote       bool               // the final response head was (or is being) written

	stats RequestEvent
	abort bool // the response was cut short: abort the client connection

	// The try in progress, for Hooks.TryStart: its end func, start and the retry it leads to.
	tryEnd   func(TryEvent)
	tryStart time.Time
	why      RetryReason
}

// exchanges holds the exchanges of ended requests, for new ones: an exchange is over a
// kilobyte, which the garbage collector would otherwise sweep up after every request.
var exchanges = sync.Pool{New: func() any { return new(exchange) }}

// maxPooledFields bounds the fields of a header map kept with a pooled exchange: clearing a
// map costs as much as its largest size.
const maxPooledFields = 32

// free puts x back in exchanges, cleared, if it is pooled.
func (x *exchange) free() {
	if !x.pooled {
		return
	}
	oh, rh := x.outHdr, x.resHdr
	if len(oh) > maxPooledFields {
		oh = nil
	}
	if len(rh) > maxPooledFields {
		rh = nil
	}
	clear(oh)
	clear(rh)
	*x = exchange{outHdr: oh, resHdr: rh}
	exchanges.Put(x)
}

// ServeHTTP forwards in to an upstream and copies the response to rw.
func (p *Proxy) ServeHTTP(rw http.ResponseWriter, in *http.Request) {
	p.once.Do(p.setup)
	x := exchanges.Get().(*exchange)
	x.p, x.rw, x.in, x.start = p, rw, in, time.Now()
	x.tried = x.triedBuf[:0]
	x.pooled = p.ModifyResponse == nil
	p.inflight.Add(1)
	x.serveGuarded()
	if x.bodyBuf != nil {
		// The lean client wrote the body on this goroutine: nothing holds it any more.
		x.reqBody = nil
		putBodyBuf(x.bodyBuf)
	}
	p.inflight.Add(-1)
	if x.retrying {
		p.retrying.Add(-1)
	}
	if x.cancel != nil {
		x.cancel()
	}
	x.finish()
	abort := x.abort
	x.free()
	if abort {
		// The upstream broke off mid-body: the client must not take a truncated body for a
		// whole one. This is how net/http aborts a response.
		panic(http.ErrAbortHandler)
	}
}

// serveGuarded serves the exchange and turns a panic in a hook or a ResponseWriter wrapper
// into a clean end: the try is released, the upstream connection closed, the client answered
// 500 (or its connection aborted), and the panic logged.
func (x *exchange) serveGuarded() {
	defer func() {
		if v := recover(); v != nil {
			x.recovered(v)
		}
	}()
	x.serve()
}

func (x *exchange) recovered(v any) {
	x.pooled = false
	if x.openBody != nil {
		x.openBody.Close() // unread, so the connection is closed rather than pooled
		x.openBody = nil
	}
	if x.picked {
		x.report(x.pick, sluice.Outcome{Failure: sluice.InternalFailure})
	}
	x.stats.Failure = sluice.InternalFailure
	if v != http.ErrAbortHandler {
		log := x.p.Logger
		if log == nil {
			log = slog.Default()
		}
		log.LogAttrs(x.in.Context(), slog.LevelError, "proxy: panic",
			slog.String("panic", fmt.Sprint(v)), slog.String("stack", string(debug.Stack())))
	}
	if x.wrote {
		x.abort = true
		return
	}
	x.stats.Status = http.StatusInternalServerError
	x.wrote = true
	func() {
		defer func() {
			if recover() != nil {
				x.abort = true // the writer itself is what panics
			}
		}()
		http.Error(x.rw, http.StatusText(http.StatusInternalServerError), http.StatusInternalServerError)
	}()
}

func (x *exchange) serve() {
	p, in := x.p, x.in
	if p.Picker == nil {
		x.fail(&Error{Status: http.StatusInternalServerError, Err: errors.New("Proxy.Picker is nil")})
		return
	}
	if p.setupErr != nil {
		x.fail(&Error{Status: http.StatusInternalServerError, Err: p.setupErr})
		return
	}
	if in.ProtoAtLeast(1, 1) {
		// An HTTP/1.0 request's Upgrade is ignored (RFC 9110 §7.8): its client must not be
		// sent a 101, nor any 1xx (§15.2). Upgrade is hop-by-hop, so the upstream sees none.
		x.upgrade = upgradeType(in.Header)
	}
	if in.ProtoMajor == 1 && (in.ProtoMinor == 0 || len(in.TransferEncoding) > 0) {
		// RFC 9112 §6.1: after a request with both Transfer-Encoding and Content-Length, or an
		// HTTP/1.0 request with Transfer-Encoding, the connection must be closed, or bytes a
		// front hop counted into the body could be read here as a request of their own.
		// net/http's server deletes Content-Length from a chunked request, and both fields
		// from an HTTP/1.0 one, before any handler runs, so neither case can be told apart
		// from its innocent neighbour: every chunked HTTP/1.1 request and every HTTP/1.0
		// request closes its connection. The cost is a reconnect for chunked uploads.
		x.closeClient = true
	}
	if e := x.refuse(); e != nil {
		x.fail(e)
		return
	}
	x.prepare()
	if x.fastOK && x.out.ContentLength > 0 {
		if err := x.readBody(); err != nil {
			// Nothing was picked: no endpoint is charged with the client's fault.
			x.fail(&Error{Status: clientStatus(err), Failure: sluice.ClientFailure, Err: err})
			return
		}
	}
	if p.cfg.timeout > 0 {
		x.deadline = x.start.Add(p.cfg.timeout)
	}
	if isGRPC(in) {
		x.grpcDeadline()
	}
	var last *Error
	for try := 1; ; try++ {
		if x.clientGone() {
			// A stream the client reset at once (HTTP/2 rapid reset), or a client that left
			// during the backoff: no endpoint is bothered with it.
			x.canceled(nil)
			return
		}
		if len(x.tried) > 0 {
			x.pooled = false // the Picker may keep Tried, which lies in x
		}
		pr, err := p.Picker.Pick(sluice.PickInfo{Request: in, Tried: x.tried})
		if err != nil {
			if last == nil {
				last = &Error{Status: http.StatusServiceUnavailable, Err: err}
			}
			x.fail(last)
			return
		}
		x.pick, x.picked = pr, true
		x.tried = append(x.tried, pr.Endpoint.Addr)
		x.stats.Tries = try
		x.stats.Endpoint = pr.Endpoint.Addr

		res, o, err := x.roundTrip(pr.Endpoint.Addr)
		x.stats.UpstreamLatency = o.Latency
		// Failure is the last try's: a retry that gets a response clears an earlier
		// try's failure, so that a 200 after a refused connect is not counted as one.
		x.stats.Failure = o.Failure
		if err != nil {
			switch o.Failure {
			case sluice.Canceled:
				x.report(pr, o)
				x.canceled(err)
				return
			case sluice.ClientFailure:
				x.report(pr, o)
				x.fail(&Error{Status: clientStatus(x.body.clientErr()), Failure: o.Failure,
					Endpoint: pr.Endpoint.Addr, Tries: try, Err: err})
				return
			}
			last = &Error{Status: failureStatus(o.Failure), Failure: o.Failure,
				Endpoint: pr.Endpoint.Addr, Tries: try, Err: err}
			wait, ok := x.mayRetry(try, o)
			if !ok {
				x.report(pr, o)
				x.fail(last)
				return
			}
			// The try is reported before the backoff: the balancer learns at once, and a
			// tracer's span of the try does not include the wait.
			x.why = retryReason(o)
			x.report(pr, o)
			if x.backoff(wait) {
				continue
			}
			x.fail(last)
			return
		}
		if p.cfg.retryOn(res.StatusCode) {
			if wait, ok := x.mayRetry(try, o); ok {
				discard(res)
				x.why = RetryStatus
				x.report(pr, o)
				last = &Error{Status: res.StatusCode, Endpoint: pr.Endpoint.Addr, Tries: try,
					Err: errors.New("upstream answered " + res.Status)}
				if x.backoff(wait) {
					continue
				}
				// The client's context ended during the backoff: it left, or its gRPC
				// deadline passed.
				x.fail(last)
				return
			}
		}
		x.respond(res, pr, o)
		return
	}
}

// prepare builds the outgoing request template: everything but the URL, which names the
// endpoint of each try.
func (x *exchange) prepare() {
	in := x.in
	x.out = *in
	x.out.Header = x.outHeader()
	x.out.RequestURI = ""
	x.out.Close = false
	x.out.URL = nil
	// Framing follows the body actually sent, never the client's fields: a middleware may
	// have emptied or replaced the body. The transports write Content-Length or chunked
	// from ContentLength and Body.
	delete(x.out.Header, "Content-Length")
	x.out.TransferEncoding = nil
	// A server request without a body has http.NoBody. Over HTTP/2 a body that is already
	// over has ContentLength 0 and may be read as empty; over HTTP/1.1 a body with
	// ContentLength 0 was put there by a handler, and is sent for what it holds.
	switch {
	case in.Body == nil || in.Body == http.NoBody || (in.ContentLength == 0 && in.ProtoMajor != 1):
		x.out.Body, x.out.GetBody, x.out.ContentLength = nil, nil, 0
		x.fastOK = x.p.fast != nil && x.upgrade == ""
	case x.readAhead():
		// serve reads the body whole before the first try; the lean client writes it.
		x.out.Body, x.out.GetBody = nil, nil
		x.fastOK = true
	default:
		x.body = newReplayBody(in.Body, x.p.cfg.bodyLimit)
		x.out.GetBody = x.body.getBody
		if len(in.Trailer) > 0 {
			x.forwardTrailers()
		}
	}
	if x.out.Body == nil {
		x.out.Trailer = nil
	}
	x.url = *in.URL
	x.url.Scheme = x.p.scheme
	x.url.User = nil
}

// maxReadAhead is the largest request body the proxy reads whole before the first try, so
// that the lean client sends it with its head in one write. 64 KiB is Retry.MaxBodyBytes's
// default, the memory a request may hold for retries anyway; it fits in a loopback or LAN
// socket's send buffer, so the write does not wait on the endpoint; and a 64 KiB upload takes
// well under a millisecond on any link a proxy serves, so reading it first delays the
// endpoint by little. NGINX reads every body first (proxy_request_buffering on), to disk
// past client_body_buffer_size (16 KiB).
const maxReadAhead = 64 << 10

// readAhead reports whether the request's body is read whole before the first try and sent
// by the lean client: a body of known length up to maxReadAhead, and Retry.MaxBodyBytes, which
// bounds what the proxy holds of a body. Not a body the client sends only once told to
// (Expect: 100-continue: the upstream decides, through net/http's Transport), nor one with
// trailers, nor an upgrade's.
func (x *exchange) readAhead() bool {
	in := x.in
	return x.p.fast != nil && x.upgrade == "" && in.ContentLength > 0 &&
		in.ContentLength <= min(maxReadAhead, x.p.cfg.bodyLimit) &&
		len(in.TransferEncoding) == 0 && len(in.Trailer) == 0 && len(in.Header["Expect"]) == 0
}

// errBodyTooLong is the error of a request body longer than its ContentLength: one a handler
// before the proxy replaced without fixing the length.
var errBodyTooLong = errors.New("proxy: request body is longer than its Content-Length")

// readBody reads the client's body into x.reqBody: exactly ContentLength bytes, through
// in.Body, so that the server's limits (ServerOptions.BodyReadTimeout between two reads, a
// MaxBytesReader) apply as they do to any body. A body cut short fails here, before an
// endpoint is picked: the upstream gets the whole body or nothing of the request.
func (x *exchange) readBody() error {
	n := int(x.in.ContentLength)
	x.bodyBuf = getBodyBuf(n)
	buf := (*x.bodyBuf)[:n]
	got := 0
	var err error
	for got < n && err == nil {
		var m int
		m, err = x.in.Body.Read(buf[got:])
		got += m
	}
	// The end must follow. net/http's body reports it with the last bytes; another reader
	// may need one more Read, which must find nothing.
	for err == nil {
		var m int
		m, err = x.in.Body.Read(x.probe[:])
		if m > 0 {
			return errBodyTooLong
		}
	}
	switch {
	case err != io.EOF:
		return err
	case got < n:
		return io.ErrUnexpectedEOF
	}
	x.reqBody = buf
	x.stats.RequestBytes = int64(n)
	return nil
}

// bodyBufs pool the buffers read-ahead bodies are read into, by size: bodyBufs[i] holds
// buffers of 1 KiB << i bytes, up to maxReadAhead. Allocated afresh for every request, a
// 64 KiB body would have the garbage collector run every few thousand POSTs.
var bodyBufs [7]sync.Pool

// bodyClass returns the index in bodyBufs of the buffers that hold n bytes, 0 < n ≤ 64 KiB.
func bodyClass(n int) int { return max(0, bits.Len(uint(n-1))-10) }

func getBodyBuf(n int) *[]byte {
	i := bodyClass(n)
	if b, _ := bodyBufs[i].Get().(*[]byte); b != nil {
		return b
	}
	b := make([]byte, 1<<10<<i)
	return &b
}

func putBodyBuf(b *[]byte) { bodyBufs[bodyClass(cap(*b))].Put(b) }

// refuse returns the error for a request the proxy will not forward, or nil.
func (x *exchange) refuse() *Error {
	in := x.in
	var status int
	var why string
	switch {
	case in.Method == http.MethodConnect:
		// A reverse proxy is no tunnel to anywhere the client names.
		status, why = http.StatusNotImplemented, "CONNECT is not forwarded"
	case in.URL.Opaque != "" || (in.URL.Scheme != "" && in.URL.Scheme != "http" && in.URL.Scheme != "https"):
		// "GET host:80 HTTP/1.1" parses as scheme "host" and opaque "80": no target an
		// upstream could be sent.
		status, why = http.StatusBadRequest, "request target is neither a path nor an http URL"
	case in.ProtoMajor == 1 && in.ProtoMinor == 0 && len(in.Header["Content-Length"]) == 0 &&
		(in.Method == http.MethodPost || in.Method == http.MethodPut || in.Method == http.MethodPatch):
		// HTTP/1.0 frames a body with Content-Length only (RFC 1945 §7.2.2). Without one,
		// the client may have sent a Transfer-Encoding, which net/http's server drops
		// unseen: its body would be taken for nothing. RFC 9112 §6.1 calls that faulty
		// framing; 411 asks for the one framing HTTP/1.0 has.
		status, why = http.StatusLengthRequired, "an HTTP/1.0 request body needs Content-Length"
	default:
		return nil
	}
	return &Error{Status: status, Failure: sluice.ClientFailure, Err: errors.New("proxy: " + why)}
}

// forwardTrailers makes the outgoing request announce the client's trailers, less those
// that must not be trailers (forbiddenTrailer), and fills in their values once the client's
// body ends: the server sets them in in.Trailer only then, and the transport writes them
// after the body.
func (x *exchange) forwardTrailers() {
	in := x.in
	out := make(http.Header, len(in.Trailer))
	for k := range in.Trailer {
		if !forbiddenTrailer(k) {
			out[k] = nil
		}
	}
	x.out.Trailer = out
	x.body.atEOF = func() {
		for k := range out {
			out[k] = in.Trailer[k]
		}
	}
}

// roundTrip makes one try against addr. It returns the response (headers read, body
// pending) or the try's failure.
func (x *exchange) roundTrip(addr string) (*http.Response, sluice.Outcome, error) {
	p := x.p
	start := time.Now()
	deadline := x.deadline
	if p.cfg.perTry > 0 {
		if d := start.Add(p.cfg.perTry); deadline.IsZero() || d.Before(deadline) {
			deadline = d
		}
	}
	if !deadline.IsZero() && !deadline.After(start) {
		if p.Hooks.TryStart != nil {
			// A try all the same, though it never left: its span shows why.
			x.url.Host = addr
			out := x.out
			out.URL = &x.url
			x.startTry(&out, start)
		}
		return nil, sluice.Outcome{Failure: sluice.Timeout}, errTryTimeout
	}

	var res *http.Response
	var err error
	if x.fastOK {
		if p.Hooks.TryStart != nil {
			x.url.Host = addr
			x.out.URL = &x.url
			x.startTry(&x.out, start)
		}
		x.res = http.Response{}
		err = p.fast.roundTrip(x, addr, deadline)
		if err == nil {
			res = &x.res
		}
	} else {
		res, err = x.transportTrip(addr, deadline, start)
	}
	lat := time.Since(start)
	if err != nil {
		return nil, sluice.Outcome{Failure: x.classify(err), Latency: lat}, err
	}
	return res, sluice.Outcome{Status: res.StatusCode, Latency: lat}, nil
}

// transportTrip makes a try through an http.RoundTripper.
func (x *exchange) transportTrip(addr string, deadline, start time.Time) (*http.Response, error) {
	p := x.p
	x.pooled = false // the transport may read the request after the try
	if x.traceCtx == nil {
		x.trace.Got1xxResponse = x.got1xx
		x.traceCtx = httptrace.WithClientTrace(x.in.Context(), &x.trace)
	}
	u := &x.url
	if len(x.tried) > 1 {
		// An earlier try's transport may still read its URL while it winds down.
		u = new(url.URL)
		*u = x.url
	}
	u.Host = addr
	ctx, cancel := context.WithCancelCause(x.traceCtx)
	// One timer serves the try: it bounds the wait for the head, then the gaps between reads
	// of the body.
	var timer *time.Timer
	if !deadline.IsZero() {
		timer = time.AfterFunc(time.Until(deadline), func() { cancel(errTryTimeout) })
	}
	octx := ctx
	if p.ProxyProtocol != 0 {
		// The dialer writes it first on the connection it opens for this request alone.
		octx = context.WithValue(ctx, proxyHeaderKey{}, x.proxyHeader())
	}
	out := x.out.WithContext(octx)
	out.URL = u
	if x.body != nil {
		out.Body = x.body.next()
	}
	if p.Hooks.TryStart != nil {
		if len(x.tried) > 1 {
			// The hook may change the header, which an earlier try's transport may still
			// read while it winds down.
			out.Header = out.Header.Clone()
		}
		x.startTry(out, start)
	}
	rt := p.rt
	if x.upgrade != "" {
		rt = p.upRT
	}
	x.mu.Lock()
	x.tryOpen = true
	x.mu.Unlock()
	res, err := rt.RoundTrip(out)
	x.mu.Lock()
	x.tryOpen = false
	x.mu.Unlock()
	if timer != nil && !timer.Stop() && err == nil {
		// The timer fired as the headers arrived: the body is being torn down. Count the
		// try as timed out rather than forward a body that will break.
		res.Body.Close()
		res, err = nil, errTryTimeout
	}
	if err != nil {
		if context.Cause(ctx) == errTryTimeout {
			err = errTryTimeout
		}
		cancel(nil)
		return nil, err
	}
	tb := &tripBody{ReadCloser: res.Body, ctx: ctx, cancel: cancel}
	if res.StatusCode == http.StatusSwitchingProtocols {
		// An upgraded connection has its own idle timeout, and its body is written to too.
		if rwc, ok := res.Body.(io.ReadWriteCloser); ok {
			res.Body = &tunnelBody{tripBody: tb, w: rwc}
			return res, nil
		}
	} else if p.bodyIdle > 0 {
		if timer == nil {
			timer = time.AfterFunc(p.bodyIdle, func() { cancel(errTryTimeout) })
		}
		tb.timer, tb.idle = timer, p.bodyIdle
	}
	res.Body = tb
	return res, nil
}

// tripBody is the response body of a try through a RoundTripper. It fails the try when the
// upstream stays silent for longer than idle between two reads, and releases the try's
// context when closed.
type tripBody struct {
	io.ReadCloser
	ctx    context.Context
	cancel context.CancelCauseFunc
	timer  *time.Timer // nil when there is no body timeout
	idle   time.Duration
}

func (b *tripBody) Read(p []byte) (int, error) {
	if b.timer != nil {
		b.timer.Reset(b.idle)
	}
	n, err := b.ReadCloser.Read(p)
	if err != nil && err != io.EOF && context.Cause(b.ctx) == errTryTimeout {
		err = errTryTimeout
	}
	return n, err
}

func (b *tripBody) Close() error {
	if b.timer != nil {
		b.timer.Stop()
	}
	err := b.ReadCloser.Close()
	b.cancel(nil)
	return err
}

// tunnelBody is the body of a 101 response: the upstream end of the tunnel.
type tunnelBody struct {
	*tripBody
	w io.Writer
}

func (b *tunnelBody) Write(p []byte) (int, error) { return b.w.Write(p) }

// got1xx passes an informational response to the client while a try is open.
func (x *exchange) got1xx(code int, header textproto.MIMEHeader) error {
	if code == http.StatusSwitchingProtocols {
		return nil
	}
	x.mu.Lock()
	defer x.mu.Unlock()
	if !x.tryOpen {
		return errors.New("proxy: 1xx response after the try ended")
	}
	x.write1xx(code, http.Header(header))
	return nil
}

// write1xx sends an informational response to the client. The fields are set only for this
// response: fields the handler chain set for the final response are left as they were.
//
// Two are never relayed. An HTTP/1.0 client has no 1xx responses: RFC 9110 §15.2 forbids
// sending it one, so it gets the final response only. And 100 Continue is the client-side
// server's to send: net/http sends it when the request body is first read, which the transport
// does once the upstream's 100 arrives (or its wait for one ends). Relaying the upstream's too
// would send the client two, since the transport starts the body before it reports the 100.
func (x *exchange) write1xx(code int, header http.Header) {
	if code == http.StatusContinue || !x.in.ProtoAtLeast(1, 1) {
		return
	}
	rw := x.rw
	h := rw.Header()
	var saved map[string][]string
	for k, vv := range header {
		if isHopByHop(k) {
			continue
		}
		if old, ok := h[k]; ok {
			if saved == nil {
				saved = make(map[string][]string)
			}
			saved[k] = old
		}
		h[k] = vv
	}
	x.sent1xx = true
	rw.WriteHeader(code)
	for k := range header {
		if old, ok := saved[k]; ok {
			h[k] = old
		} else {
			delete(h, k)
		}
	}
}

// classify says why a try failed.
func (x *exchange) classify(err error) sluice.Failure {
	if x.body != nil && x.body.clientErr() != nil {
		// The client's body broke (the server then cancels the request's context too): the
		// endpoint did nothing wrong.
		return sluice.ClientFailure
	}
	switch {
	case x.in.Context().Err() != nil:
		if x.clientGone() {
			return sluice.Canceled
		}
		return sluice.Timeout // the gRPC deadline passed
	case notSent(err):
		return sluice.ConnectFailure
	case errors.Is(err, errTryTimeout):
		return sluice.Timeout
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return sluice.Timeout
	}
	return sluice.ConnectionFailure
}

// notSent reports whether err proves the request never left for the upstream: the
// connection could not be opened.
func notSent(err error) bool {
	var de *dialError
	if errors.As(err, &de) {
		return true
	}
	var oe *net.OpError
	return errors.As(err, &oe) && oe.Op == "dial"
}

// clientGone reports whether the client's request context ended: the client went away, or
// its server gave up on it.
func (x *exchange) clientGone() bool {
	ctx := x.clientCtx
	if ctx == nil {
		ctx = x.in.Context()
	}
	return ctx.Err() != nil
}

// clientStatus is the status for a request whose body failed with err: 413 over a size
// limit, 408 too slow, 400 malformed or cut short.
func clientStatus(err error) int {
	var mbe *http.MaxBytesError
	var ne net.Error
	switch {
	case errors.As(err, &mbe):
		return http.StatusRequestEntityTooLarge
	case errors.Is(err, os.ErrDeadlineExceeded), errors.As(err, &ne) && ne.Timeout():
		return http.StatusRequestTimeout
	}
	return http.StatusBadRequest
}

func failureStatus(f sluice.Failure) int {
	if f == sluice.Timeout {
		return http.StatusGatewayTimeout
	}
	return http.StatusBadGateway
}

// mayRetry decides whether the failed try may be retried and, if so, takes a unit of the
// retry budget and returns the backoff to wait first.
func (x *exchange) mayRetry(try int, o sluice.Outcome) (time.Duration, bool) {
	p := x.p
	cfg := &p.cfg
	if try >= cfg.maxTries || x.sent1xx {
		// Once a 1xx reached the client, another try would show it a second set, and the
		// first try may have acted on the request.
		return 0, false
	}
	now := time.Now()
	if !x.deadline.IsZero() && !now.Before(x.deadline) {
		return 0, false
	}
	if x.body != nil && !x.body.replayable() {
		return 0, false
	}
	switch o.Failure {
	case sluice.ConnectFailure:
		// Never reached the upstream: safe for any method.
	case sluice.ConnectionFailure, sluice.Timeout:
		if !idempotent(x.in) {
			return 0, false
		}
	case sluice.NoFailure:
		if !idempotent(x.in) {
			return 0, false
		}
	default:
		return 0, false
	}
	if x.upgrade != "" && o.Failure != sluice.ConnectFailure {
		return 0, false
	}
	d := cfg.backoff(try, randUint64())
	if d > 0 && !x.deadline.IsZero() && now.Add(d).After(x.deadline) {
		return 0, false
	}
	if !x.retrying {
		if !p.takeRetry() {
			return 0, false
		}
		x.retrying = true
	}
	return d, true
}

// takeRetry takes one unit of the retry budget: retries in flight stay below the budget's
// fraction of requests in flight, or its minimum.
func (p *Proxy) takeRetry() bool {
	limit := int64(p.cfg.budgetRatio * float64(p.inflight.Load()))
	if limit < p.cfg.budgetMin {
		limit = p.cfg.budgetMin
	}
	// Compare-and-swap rather than add-then-undo: a refused taker's passing increment would
	// make a concurrent taker that fits the budget see it full.
	for {
		n := p.retrying.Load()
		if n >= limit {
			return false
		}
		if p.retrying.CompareAndSwap(n, n+1) {
			return true
		}
	}
}

// backoff sleeps for d before a retry, or returns false when the request ends first.
func (x *exchange) backoff(d time.Duration) bool {
	if d <= 0 {
		return true
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-x.in.Context().Done():
		return false
	}
}

// idempotent reports whether r may be sent twice (RFC 9110 §9.2.2), or declares itself safe
// to resend with an Idempotency-Key as net/http's Transport accepts.
func idempotent(r *http.Request) bool {
	return r.Method == http.MethodPut || r.Method == http.MethodDelete || resendable(r)
}

// resendable reports whether r may be sent again without being asked, on a new connection to
// the same endpoint after its reused one closed unanswered: a safe method, or one carrying an
// Idempotency-Key. It is net/http's rule for its own retries (Request.isReplayable), narrower
// than idempotent: a PUT or DELETE is left to the proxy's retries, which MaxTries and the
// budget bound.
func resendable(r *http.Request) bool {
	switch r.Method {
	case http.MethodGet, http.MethodHead, http.MethodOptions, http.MethodTrace:
		return true
	}
	if _, ok := r.Header["Idempotency-Key"]; ok {
		return true
	}
	_, ok := r.Header["X-Idempotency-Key"]
	return ok
}

// report tells the balancer, the observer and the try's end hook how a try went; x.why says
// whether another try follows.
func (x *exchange) report(pr sluice.PickResult, o sluice.Outcome) {
	x.picked = false
	if pr.Done != nil {
		pr.Done(o)
	}
	if x.p.Observer != nil {
		x.p.Observer.Observe(pr.Endpoint, o)
	}
	if end := x.tryEnd; end != nil {
		x.tryEnd = nil
		if !x.tryStart.IsZero() {
			o.Duration = time.Since(x.tryStart)
		}
		end(TryEvent{Endpoint: pr.Endpoint, Attempt: x.stats.Tries, Outcome: o, Retry: x.why})
	}
	x.why = NoRetry
}

// startTry calls Hooks.TryStart, when set, with the request of the try about to start.
func (x *exchange) startTry(out *http.Request, start time.Time) {
	if f := x.p.Hooks.TryStart; f != nil {
		x.tryStart = start
		x.tryEnd = f(out, TryStartEvent{Endpoint: x.pick.Endpoint, Attempt: x.stats.Tries})
	}
}

// discard closes the body of a response that will not be forwarded.
func discard(res *http.Response) {
	// Reading a little lets a keep-alive connection be reused for small error bodies.
	io.CopyN(io.Discard, res.Body, 4<<10)
	res.Body.Close()
}

// fail answers the client through the error handler.
func (x *exchange) fail(e *Error) {
	x.stats.Status = e.Status
	if e.Failure != sluice.NoFailure {
		x.stats.Failure = e.Failure
	}
	h := x.p.ErrorHandler
	if h == nil {
		h = DefaultErrorHandler
	}
	if e.Failure == sluice.ClientFailure {
		x.closeClient = true // what is left of its body cannot be framed
	}
	if x.closeClient {
		x.rw.Header().Set("Connection", "close")
	}
	x.wrote = true
	h(x.rw, x.in, e)
}

// canceled records a client that went away. Nothing is written, and the connection is
// aborted: returning without a word would make the server send 200 OK for a request that
// was never completed, should the connection still be open.
func (x *exchange) canceled(err error) {
	x.stats.Status = statusClientClosed
	x.stats.Failure = sluice.Canceled
	x.abort = true
}

// writeHeader sends the final response head.
func (x *exchange) writeHeader(code int) {
	if x.closeClient {
		x.rw.Header().Set("Connection", "close")
	}
	x.wrote = true
	x.rw.WriteHeader(code)
}

// respond forwards the upstream's response, then reports the try.
func (x *exchange) respond(res *http.Response, pr sluice.PickResult, o sluice.Outcome) {
	if res.StatusCode == http.StatusSwitchingProtocols {
		x.switchProtocols(res, pr, o)
		return
	}
	if x.body != nil {
		if err := x.body.clientErr(); err != nil {
			// The upstream answered early, but the client's body has broken since: what
			// the upstream saw was not the client's request.
			res.Body.Close()
			x.report(pr, sluice.Outcome{Failure: sluice.ClientFailure, Latency: o.Latency})
			x.stats.Failure = sluice.ClientFailure
			x.fail(&Error{Status: clientStatus(err), Failure: sluice.ClientFailure,
				Endpoint: pr.Endpoint.Addr, Tries: x.stats.Tries, Err: err})
			return
		}
	}
	x.openBody = res.Body
	if x.p.ModifyResponse != nil {
		if err := x.p.ModifyResponse(res); err != nil {
			x.openBody = nil
			discard(res)
			x.report(pr, o)
			x.fail(&Error{Status: http.StatusBadGateway, Endpoint: pr.Endpoint.Addr,
				Tries: x.stats.Tries, Err: err})
			return
		}
	}
	h := x.rw.Header()
	removeHopByHop(res.Header)
	for k, vv := range res.Header {
		if old, ok := h[k]; ok {
			h[k] = append(old[:len(old):len(old)], vv...)
		} else {
			h[k] = vv
		}
	}
	if pr.Cookie != nil {
		h.Add("Set-Cookie", pr.Cookie.String())
	}
	announced := 0
	if len(res.Trailer) > 0 {
		names := make([]string, 0, len(res.Trailer))
		for k := range res.Trailer {
			if !forbiddenTrailer(k) {
				names = append(names, k)
			}
		}
		if announced = len(names); announced > 0 {
			h["Trailer"] = names
		}
	}
	x.stats.Status = res.StatusCode
	x.writeHeader(res.StatusCode)

	flush := streaming(res)
	var rerr, werr error
	if flush {
		x.flush()
	}
	x.stats.Bytes, rerr, werr = x.copyBody(res.Body, flush)
	x.openBody = nil
	res.Body.Close()

	switch {
	case rerr != nil && x.clientGone(), werr != nil:
		// The client left mid-body; the endpoint did nothing wrong.
		x.stats.Failure = sluice.Canceled
	case rerr != nil:
		// The upstream broke off or stalled: the client must not take the part it got for
		// the whole, and the log says what the request amounted to.
		f, status := sluice.ConnectionFailure, http.StatusBadGateway
		if errors.Is(rerr, errTryTimeout) || errors.Is(rerr, os.ErrDeadlineExceeded) ||
			x.in.Context().Err() != nil {
			f, status = sluice.Timeout, http.StatusGatewayTimeout
		}
		o = sluice.Outcome{Failure: f, Latency: o.Latency}
		x.stats.Failure, x.stats.Status = f, status
		x.abort = true
	case res.StatusCode < 300 && x.body != nil && x.body.clientErr() != nil:
		// The client's body broke while an early success was being relayed: abort, so that
		// the client never takes a success for a request it did not finish.
		x.stats.Failure, x.stats.Status = sluice.ClientFailure, clientStatus(x.body.clientErr())
		x.abort = true
	default:
		for k, vv := range res.Trailer {
			if forbiddenTrailer(k) {
				continue
			}
			if _, ok := h[k]; ok || announced == 0 {
				// An unannounced trailer, or one whose name a header already uses.
				k = http.TrailerPrefix + k
			}
			h[k] = vv
		}
	}
	x.report(pr, o)
}

// streaming reports whether res should reach the client chunk by chunk rather than through
// the server's buffer: events, gRPC, and bodies of unknown length.
func streaming(res *http.Response) bool {
	if res.ContentLength < 0 {
		return true
	}
	ct := res.Header.Get("Content-Type")
	return hasPrefixFold(ct, "text/event-stream") || hasPrefixFold(ct, "application/grpc")
}

func hasPrefixFold(s, prefix string) bool {
	if len(s) < len(prefix) {
		return false
	}
	for i := 0; i < len(prefix); i++ {
		c := s[i]
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		if c != prefix[i] {
			return false
		}
	}
	return true
}

func (x *exchange) flush() {
	if f, ok := x.rw.(http.Flusher); ok {
		f.Flush()
		return
	}
	_ = http.NewResponseController(x.rw).Flush()
}

// bufPool holds copyBody's buffers. 32 KiB measured best for 1 MiB responses (issue 17,
// scripts/bench-process.sh get1m against NGINX in the same runs): 64 and 128 KiB cost about a
// fifth more CPU per request, and 16 KiB was no better.
var bufPool = sync.Pool{New: func() any { b := make([]byte, 32<<10); return &b }}

// copyBody copies the upstream body to the client through a pooled buffer. It returns the
// bytes written and the read or write error that stopped it (io.EOF is not an error).
func (x *exchange) copyBody(body io.Reader, flush bool) (n int64, rerr, werr error) {
	if b, ok := body.(*h1Body); ok && !flush && b.spliceable() {
		if rf := spliceTarget(x.rw); rf != nil {
			return x.spliceBody(b, rf)
		}
	}
	bp := bufPool.Get().(*[]byte)
	buf := *bp
	for {
		nr, err := body.Read(buf)
		if nr > 0 {
			nw, err := x.rw.Write(buf[:nr])
			n += int64(nw)
			if err != nil {
				werr = err
				break
			}
			if flush {
				x.flush()
			}
		}
		if err != nil {
			if err != io.EOF {
				rerr = err
			}
			break
		}
	}
	bufPool.Put(bp)
	return n, rerr, werr
}

// finish writes the access log line and calls Hooks.RequestDone.
func (x *exchange) finish() {
	p := x.p
	if p.Logger == nil && p.Hooks.RequestDone == nil {
		return
	}
	x.stats.Start = x.start
	x.stats.Duration = time.Since(x.start)
	x.stats.Route = RouteFromContext(x.in.Context())
	if x.body != nil {
		x.stats.RequestBytes = x.body.read.Load()
	}
	if f := p.Hooks.RequestDone; f != nil {
		f(x.in, x.stats)
	}
	if p.Logger != nil {
		s := &x.stats
		attrs := []slog.Attr{
			slog.String("method", x.in.Method),
			slog.String("host", x.in.Host),
			slog.String("path", x.in.URL.Path),
			slog.String("route", s.Route),
			slog.String("endpoint", s.Endpoint),
			slog.Int("status", s.Status),
			slog.Int64("bytes", s.Bytes),
			slog.Duration("duration", s.Duration),
			slog.Int("tries", s.Tries),
			slog.String("client", sluice.ClientIP(x.in, p.TrustedProxies).String()),
		}
		if s.Failure != sluice.NoFailure {
			attrs = append(attrs, slog.String("failure", s.Failure.String()))
		}
		if s.Upgraded {
			attrs = append(attrs, slog.Bool("upgraded", true))
		}
		p.Logger.LogAttrs(x.in.Context(), slog.LevelInfo, "proxy", attrs...)
	}
}

// forbiddenTrailer reports whether the canonical field name k must not be taken from a
// trailer section (RFC 9110 §6.5.1): fields that frame or route the message, modify the
// request, authenticate, control caching or say how to process the content would act on a
// message whose head was already handled without them. Hop-by-hop fields are dropped too.
func forbiddenTrailer(k string) bool {
	switch k {
	case "Content-Length", "Transfer-Encoding", "Trailer", "Host", "Connection", "Keep-Alive",
		"Proxy-Connection", "Te", "Upgrade",
		"Cache-Control", "Expect", "Max-Forwards", "Pragma", "Range", "If-Match", "If-None-Match",
		"If-Modified-Since", "If-Unmodified-Since", "If-Range",
		"Authorization", "Proxy-Authorization", "Www-Authenticate", "Proxy-Authenticate",
		"Authentication-Info", "Proxy-Authentication-Info", "Cookie", "Set-Cookie",
		"Age", "Expires", "Date", "Location", "Retry-After", "Vary", "Warning",
		"Content-Encoding", "Content-Type", "Content-Range", "Content-Location":
		return true
	}
	return false
}
