// Package h1 is an HTTP/1.1 server for any http.Handler: a front end that takes the place of
// net/http's HTTP/1 server where the cost of each request and each idle connection matters,
// and hands HTTP/2 connections (h2c with prior knowledge, and h2 negotiated over TLS) to
// Server.HTTP2 (package h2 is sluice's own HTTP/2 server) or, when it is nil, to the
// http.Server it was made from.
//
//	srv := proxy.NewServer(handler, proxy.ServerOptions{}) // or any *http.Server
//	front := h1.New(srv)
//	front.HTTP2 = h2.New(srv)
//	ln, _ := h1.ListenConfig().Listen(ctx, "tcp", ":8080")
//	go front.Serve(ln)
//	...
//	proxy.Drain(ctx, []proxy.Server{front}, p) // or front.Shutdown(ctx)
//
// # What it costs
//
// Measured against net/http's server in the same binary (scripts/bench-process.sh, proxies
// sluice and sluice-nethttp; BenchmarkServe in this package), a keep-alive request costs about a
// quarter less CPU and 12 allocations instead of 20, and an idle keep-alive connection 5.7 KB
// instead of 18 (TestIdleConnectionMemory). Where that comes from:
//
//   - A request head is read into one pooled buffer and parsed into one string whose
//     substrings are the method, target, names and values; common field names sent in lower
//     case are interned, not allocated.
//   - A response that fits in 4 KiB goes out with its head in one write, with the
//     Content-Length the server computes; the Date field is formatted once a second.
//   - net/http starts a goroutine per request that reads the connection in the background, to
//     cancel the request's context when the client goes away. h1 arms a timer instead, and
//     starts that read only once a handler has run for 20 ms with its request body read: a
//     client that goes away is still noticed, at most 20 ms later, and quick requests pay only
//     for the timer.
//   - A connection waiting for its next request holds no buffer: it waits in the poller and
//     takes a pooled buffer when bytes arrive.
//   - The goroutine of a connection that ended waits for the next connection, with the stack
//     it grew, instead of a new goroutine growing one again.
//   - Read and write deadlines move only when they must: a request head that arrives whole
//     costs one move of the read deadline (the idle timeout's).
//   - The ResponseWriter's ReadFrom splices a body with a Content-Length from another TCP
//     socket (an *io.LimitedReader of a *net.TCPConn) with splice(2): a proxy forwarding a
//     1 MiB body copies none of it through user space (package proxy does so). A connection
//     that wraps the socket keeps this when it has a ReadFrom that hands the copy on (as
//     proxyproto.Conn, behind a PROXY-protocol listener, does).
//
// # Conformance
//
// The handler sees what net/http's server would give it: a Request with the same fields (URL,
// RequestURI, Host, Header with canonical names, RemoteAddr, TLS, Trailer, a context with
// http.ServerContextKey and http.LocalAddrContextKey, canceled when the handler returns or the
// client goes away), and a ResponseWriter with the same behaviour: implicit 200, Content-Type
// sniffing, Content-Length for responses that end within the buffer and chunked encoding
// otherwise, 1xx responses, trailers (declared or with http.TrailerPrefix), http.Flusher,
// http.Hijacker, and the deadlines and full duplex of http.ResponseController. HEAD, 204 and
// 304 responses carry no body. Expect: 100-continue is answered when the handler first reads
// the body; a body the handler did not read is read and dropped after it, up to 256 KiB,
// or the connection is closed. Shutdown and Close behave as http.Server's; ConnState is
// called with the same states.
//
// Request framing is stricter than net/http's, as a proxy's must be (RFC 9112): a request with
// both Transfer-Encoding and Content-Length, Transfer-Encoding in HTTP/1.0, more than one
// Content-Length, a transfer coding other than chunked, obsolete line folding, a bare CR or a
// chunk line not ending in CRLF is refused with 400 (501 for an unknown coding) and the
// connection closed. Every case of internal/framing runs through both servers.
//
// Not supported: the deprecated "Upgrade: h2c" (prior knowledge only, as proxy.ServerProtocols
// says) and http.CloseNotifier (deprecated; the request's context says the same).
package h1
