// Package accesslog is the edge access log: a middleware that wraps a whole handler chain, so
// that every response gets one log line and one event, whoever answered it.
//
// The proxy's own log (proxy.Proxy.Logger) and hooks see only what reaches the proxy. A cache
// hit, a 429 from the rate limiter, a redirect, an authentication failure or a router's 404
// never does. Put the Log outermost and it sees them all:
//
//	l, err := accesslog.New(accesslog.Options{Logger: slog.New(slog.NewJSONHandler(os.Stdout, nil))})
//	...
//	h := l.Handler(limiter.Handler(c.Handler(router)))
//
// # Formats
//
// Format JSON (the zero value) logs one record per response through a *slog.Logger, with the
// fields an operator filters on: start, client, method, host, path, proto, status, bytes,
// duration, user_agent, referer and route. Formats Common and Combined write the Common and
// Combined Log Format that web servers have written for thirty years to an io.Writer, with
// what clients choose escaped so that none can forge a line. Hooks.RequestDone gets the same
// facts as an Event, for metrics, whether or not lines are written.
//
// The client is the peer's address, or, from a peer listed in TrustedProxies, the address its
// X-Forwarded-For or Forwarded field names (sluice.ClientIP), failing closed.
//
// # Routes
//
// A router inside the Log matches requests after the Log has passed them on; the contexts it
// makes never come back out. It tells the Log the route through the ResponseWriter instead,
// with sluice.RecordRoute, which finds the Log's writer through the Unwrap methods of any
// middleware in between. package proxy/route's Router does it; so should other routers.
//
// # What the handler still gets
//
// The Log's ResponseWriter hides nothing of the server's. It implements http.Flusher,
// http.Hijacker, io.ReaderFrom and io.StringWriter by delegating, and Unwrap, so that
// http.ResponseController reaches the rest (deadlines, full duplex). Server-sent events and
// gRPC streams flush as they did, a WebSocket upgrade hijacks the connection (its line says
// 101 and Hijacked, and counts the bytes written to the connection), HTTP/2 works
// on net/http's server and on package h2's (where Hijack returns an error wrapping
// http.ErrNotSupported, as the server's own writer does), and large bodies keep the server's
// splice or sendfile. The connection Hijack returns counts what is written to it: it keeps
// ReadFrom, WriteTo, CloseWrite, CloseRead and SyscallConn, and NetConn returns the server's
// connection itself.
//
// A handler that writes nothing is logged with the 200 net/http sends for it. One that panics
// is logged as 500 (or with the status it had already sent, and Aborted set) and its panic
// goes on to the server, which aborts the connection; http.ErrAbortHandler with nothing sent,
// how a handler says its client left, is logged as 499, as NGINX logs it.
//
// # Cost
//
// With a hook and no lines, the Log allocates nothing per request; a Combined line allocates
// nothing either, and a JSON record through slog.NewJSONHandler two (TestAllocs).
package accesslog
