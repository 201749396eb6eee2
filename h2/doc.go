// Package h2 is an HTTP/2 server for any http.Handler: sluice's own, in place of net/http's
// where the cost of each request matters. It serves the HTTP/2 connections that package h1
// accepts (h2c with prior knowledge, and h2 negotiated by ALPN over TLS), or a listener of its
// own.
//
//	srv := proxy.NewServer(handler, proxy.ServerOptions{}) // or any *http.Server
//	front := h1.New(srv)     // HTTP/1.1
//	front.HTTP2 = h2.New(srv) // HTTP/2, with srv's settings too
//	go front.Serve(ln)
//
// # What it costs
//
// Measured against net/http's HTTP/2 server in the same binary (scripts/bench-process.sh,
// proxies sluice and sluice-nethttp, scenarios h2c and h2tls; BenchmarkServe in this package),
// a request costs about half the CPU, and 22 allocations instead of 40. Where that comes from:
//
//   - One goroutine reads each connection's frames; handlers run on goroutines that wait for
//     the next stream when theirs ends, with the stacks they grew. net/http passes every
//     frame and every write between a reader, a serving goroutine and the handler's over
//     channels.
//   - A handler's goroutine writes its own frames, through a queue: the goroutine that finds
//     nobody writing writes out everything queued, so a small response's HEADERS and DATA,
//     and the WINDOW_UPDATE or SETTINGS acknowledgement queued meanwhile, leave in one write.
//     net/http flushes the HEADERS and the DATA of a response separately.
//   - A response that ends within 4 KiB is sent with its Content-Length, head and body
//     together; the Date field is formatted once a second.
//   - Header blocks are decoded into a field slice the connection reuses, and common field
//     names are turned between HTTP/2's lower case and net/http's canonical form without
//     allocating.
//   - The read and write deadlines that handlers move on every read and write (as the
//     guard of proxy.NewServer does) keep one timer each, which re-arms itself when it
//     fires early: moving a deadline later costs no timer operation.
//
// # Conformance
//
// Every case of h2spec, the public HTTP/2 conformance suite, passes in strict mode over h2c
// and over TLS (TestH2Spec; net/http's server fails three). A differential suite runs each
// scenario on net/http's HTTP/2 server and on h2 and compares what the handler sees (the
// Request's fields, body, trailers and context) and what the client gets (status, fields,
// body, trailers, RST_STREAM and GOAWAY codes), including flow control with small windows,
// deadlines, Shutdown, Close and the idle timeout; FuzzConn feeds arbitrary frames to a
// connection. The handler sees what net/http's server would give it, with these differences,
// each where RFC 9113 is stricter than net/http:
//
//   - A request whose HEADERS frame ended the stream has http.NoBody as its Body, as with
//     net/http's HTTP/1 server.
//   - A field value with white space at either end, a Content-Length that is not a number,
//     two that differ, or one the DATA frames do not add up to makes the request malformed:
//     its stream is reset with PROTOCOL_ERROR (RFC 9113 §8.1.1, §8.2.1).
//   - The response fields Keep-Alive, Proxy-Connection, Transfer-Encoding and Upgrade are
//     never sent, as well as Connection (§8.2.2); "Connection: close" from a handler asks, as
//     with net/http, for a graceful GOAWAY.
//   - DATA the client sent on a stream the server had just reset is ignored (§5.1), not
//     answered with RST_STREAM.
//
// Not supported: server push, the extended CONNECT of RFC 8441 (:protocol), the deprecated
// "Upgrade: h2c", stream priorities (read and ignored, as RFC 9113 allows), Hijack (HTTP/2
// has no connection to hand over) and http.CloseNotifier (the request's context says the
// same).
//
// # Limits
//
// A connection carries at most srv.HTTP2.MaxConcurrentStreams running handlers (250 by
// default); a stream the client resets still counts until its handler returns, so resetting
// streams buys a client no more concurrency (the "rapid reset" attack). A header block far
// over the header list limit (MaxHeaderBytes) ends the connection before it is decoded;
// control frames queued for a client that reads nothing end it past 1 MiB; with
// srv.HTTP2.WriteByteTimeout a connection nothing can be written to is closed.
package h2
