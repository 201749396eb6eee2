// Package proxy is sluice's forwarding core: an [net/http.Handler] that sends each request to
// an endpoint chosen by a [sluice.Picker] and streams the answer back.
//
// A [Proxy] is a configuration struct in the manner of [net/http/httputil.ReverseProxy]: every
// nil or zero field has a documented default, and only Picker is required.
//
//	bal, _ := balancer.New(balancer.RoundRobin{}, balancer.Options{})
//	bal.Update(endpoints)
//	p := &proxy.Proxy{Picker: bal}
//	srv := proxy.NewServer(p, proxy.ServerOptions{}) // timeouts and limits, HTTP/1.1 and h2c
//	srv.Addr = ":8080"
//
// # What a request goes through
//
// For each try the proxy asks the Picker for an endpoint (passing the endpoints already tried,
// so a retry lands elsewhere), rewrites the request for it and sends it with the upstream
// [Protocol] of the Proxy: HTTP/1.1, HTTPS (h2 when the upstream offers it), HTTP/2 over TLS,
// or h2c with prior knowledge. A Proxy speaks one protocol; pools that differ (a gRPC service
// behind h2c next to an HTTP/1.1 one) get one Proxy each, which is how proxy/route wires its
// backends. Every try reports one [sluice.Outcome] to the pick's Done and to the Observer;
// that feedback is how load-aware balancers and outlier detection learn.
//
// Clients may speak HTTP/1.1, HTTP/2 over TLS (ALPN) or h2c with prior knowledge: that is up
// to the http.Server in front, which accepts all three with Protocols set to
// [ServerProtocols]. [NewServer] builds that server with the limits below.
//
// Forwarding follows RFC 9110 and RFC 9112 the way NGINX and Envoy do:
//
//   - Hop-by-hop fields (Connection and every field it names, Keep-Alive, Proxy-Connection,
//     Proxy-Authenticate, Proxy-Authorization, TE except "trailers", Trailer,
//     Transfer-Encoding, Upgrade) are removed in both directions.
//   - X-Forwarded-For, X-Forwarded-Host, X-Forwarded-Proto and the RFC 7239 Forwarded field are
//     set. Values a client sent are kept (and appended to) only when the TCP peer is in
//     TrustedProxies; otherwise they are replaced, so a client cannot forge its address.
//     X-Real-IP is set to the client address [sluice.ClientIP] resolves, as ingress-nginx
//     sets it from NGINX's realip $remote_addr. True-Client-IP, X-Client-IP,
//     CF-Connecting-IP and Fastly-Client-IP are kept from a trusted peer and replaced by the
//     peer's address from any other. Spellings of all these with '_' for '-' (X_Real_IP),
//     which CGI-style backends read as the same field, are dropped.
//   - 1xx responses (103 Early Hints and others) are passed through as they arrive, except to
//     HTTP/1.0 clients, which must not be sent any (RFC 9110 §15.2). A client's
//     "Expect: 100-continue" reaches the upstream, and the client gets one 100 Continue when
//     the proxy starts reading its body: once the upstream sent its 100, or the transport
//     stopped waiting for it.
//   - Responses of unknown length, text/event-stream and gRPC are flushed chunk by chunk;
//     others are copied through a pooled buffer. Request bodies stream to the upstream as they
//     arrive; only their first Retry.MaxBodyBytes bytes are kept, for a retry. The one
//     exception is small: with the default HTTP1 transports, a body of known length up to
//     64 KiB (and Retry.MaxBodyBytes), not awaiting 100 Continue, is read whole before an
//     endpoint is picked and sent with the request's head in one write, so that an upstream
//     gets all of it or nothing. No larger body is ever held whole.
//   - Trailers travel end to end, so gRPC works over h2 and h2c.
//   - Upgrade requests (WebSocket and others) become a bidirectional tunnel with an idle
//     timeout; when either side ends, both are closed. The Upgrade of an HTTP/1.0 request is
//     ignored (RFC 9110 §7.8).
//   - With ProxyProtocol set, every upstream connection starts with a PROXY protocol header
//     (package proxyproto) naming the client's connection, as HAProxy's send-proxy does, for
//     upstreams that take the client's address from it rather than from X-Forwarded-For; a
//     connection then carries no other client's requests.
//
// # Errors and retries
//
// A failure the client can see maps to one status: no endpoint is 503 with Retry-After, a
// connection failure is 502, an upstream timeout (Retry.PerTryTimeout, Retry.Timeout) is 504.
// ErrorHandler may render its own page; it receives an [*Error] saying which. A gRPC call gets
// what gRPC clients expect instead: HTTP 200 with grpc-status (14 UNAVAILABLE, 4
// DEADLINE_EXCEEDED, ...), as Envoy answers, and its grpc-timeout is its deadline.
//
// Faults are put where they belong. A client whose body is malformed, cut short, over a
// limit or too slow gets 400, 413 or 408 and a closed connection; the try is reported as
// [sluice.ClientFailure] (no endpoint is even picked when the body was read ahead) and a
// client that goes away as [sluice.Canceled] (logged 499, its connection aborted): neither
// ever counts against the endpoint nor is retried. An upstream that breaks off or stalls
// mid-body is charged with the failure, the client's connection is aborted so that a
// truncated body is never taken for a whole one, and the access log says 502 or 504 rather
// than the status that had gone out. A panic in ModifyResponse or in a ResponseWriter
// wrapper is recovered: the try is released as [sluice.InternalFailure], the upstream
// connection closed, the client answered 500 (or aborted) and the panic logged.
//
// Framing never trusts what it cannot see: the upstream request is framed from the body the
// proxy sends, not from the client's Content-Length; fields RFC 9110 §6.5.1 keeps out of
// trailers (framing, routing, authentication, cookies, caching, content metadata) are dropped
// from forwarded trailers; and a chunked HTTP/1.1 request or any HTTP/1.0 request closes its
// connection after the response (RFC 9112 §6.1). net/http's server deletes Content-Length
// from a chunked request, and Transfer-Encoding from an HTTP/1.0 one, before a handler runs, so
// a request carrying both framings cannot be told from an honest chunked one; closing after
// every such request is the sound way to keep bytes a front hop counted into the body from
// being read as a request here. An HTTP/1.0 Transfer-Encoding is ignored by net/http, not
// answered 400.
//
// A failed try is retried on another endpoint only when that is safe: always when the request
// provably never reached the upstream (the dial or TLS handshake failed), and otherwise only
// for idempotent methods, after a broken connection, a per-try timeout or a status in
// Retry.RetryOn (none by default). Either way the body, if any, must be replayable from the
// bounded buffer, and no 1xx may have reached the client yet. A POST that may have reached an
// upstream is never sent again, unless it carries an Idempotency-Key. Tries are spaced by
// exponential backoff with full jitter, and a retry budget in the manner of Envoy's
// retry_budget keeps retries to a fraction of the requests in flight, so a failing backend
// does not turn into a retry storm.
//
// # Safe defaults
//
// Every limit here is on with zero configuration. The client-side ones are [ServerOptions]
// fields applied by [NewServer]; the upstream-side ones are [Proxy] fields. NGINX's and
// HAProxy's defaults stand beside ours. "none*" marks a HAProxy timeout with no default: left
// unset it is no limit at all, and HAProxy warns at startup that it is missing.
//
//	limit                                      sluice            NGINX              HAProxy
//	request-header read timeout                10s               60s                none*
//	  ServerOptions.ReadHeaderTimeout; client_header_timeout; timeout http-request (else timeout client)
//	idle keep-alive timeout                    60s               75s                none*
//	  ServerOptions.IdleTimeout; keepalive_timeout; timeout http-keep-alive (else http-request, client)
//	header size limit                          32 KiB, 431       32 KiB, 400        ~15 KiB, 400
//	  ServerOptions.MaxHeaderBytes; large_client_header_buffers 4 8k; the whole head must fit in
//	  tune.bufsize (16 KiB) less tune.maxrewrite (1 KiB)
//	URL length limit                           8 KiB, 414        8 KiB, 414         ~15 KiB, 400
//	  ServerOptions.MaxRequestTargetBytes (a target over ~32 KiB gets net/http's 431); one
//	  large_client_header_buffers buffer; within the head
//	single field line limit                    8 KiB, 431        8 KiB, 400         ~15 KiB, 400
//	  ServerOptions.MaxFieldLineBytes; one large_client_header_buffers buffer; within the head
//	request body read timeout, between reads   60s               60s                none*
//	  ServerOptions.BodyReadTimeout; client_body_timeout; timeout client (inactivity)
//	response write timeout, between writes     60s               60s                none*
//	  ServerOptions.ResponseWriteTimeout; send_timeout; timeout client (inactivity)
//	HTTP/2 concurrent streams                  128               128                100
//	  ServerOptions.MaxConcurrentStreams; http2_max_concurrent_streams; tune.h2.max-concurrent-streams
//	HTTP/2 streams canceled per connection     100, then GOAWAY  1,000 streams      not checked
//	  ServerOptions.MaxStreamResets, once over half the connection's streams were canceled
//	  (rapid reset); NGINX keepalive_requests bounds every stream of a connection, canceled or
//	  not; HAProxy's figure was not checked
//	upstream connect timeout                   5s                60s                none*
//	  Proxy.DialContext default dialer; proxy_connect_timeout; timeout connect
//	upstream response-header timeout           60s               60s                none*
//	  Retry.PerTryTimeout (zero means 60s, negative none); proxy_read_timeout; timeout server
//	upstream response body, between reads      60s               60s                none*
//	  Proxy.ResponseBodyTimeout (zero means 60s, negative none); proxy_read_timeout; timeout server
//	upstream idle keep-alive                   60s               60s                5s
//	  Proxy.IdleConnTimeout; keepalive_timeout (upstream module); pool-purge-delay
//	retries                                    error, timeout    error, timeout     3, conn-failure
//	  By default a request that provably never left is retried whatever its method, and an
//	  idempotent one after a broken connection or a try timeout; status-based retries
//	  (502/503/504) are opt-in through Retry.RetryOn. NGINX proxy_next_upstream error
//	  timeout (never a non-idempotent request once sent); HAProxy retries 3 with retry-on
//	  conn-failure; Envoy retries nothing by default.
//	upgraded tunnel idle timeout               10 min            60s                none*
//	  Proxy.UpgradeIdleTimeout; proxy_read_timeout applies to the tunnel; timeout tunnel (else
//	  timeout client and server)
//
// ReadTimeout and WriteTimeout of the http.Server stay zero, as NGINX has no whole-request
// timeout either: they would cut long uploads, downloads and streams however steadily they
// moved. The body and response timeouts bound the wait between reads and between writes
// instead.
//
// # Observing
//
// Logger receives one structured access-log line per request (route, endpoint, status,
// bytes, duration, tries, client IP, failure). It sees only what reaches the proxy; package
// accesslog's middleware, wrapping the whole handler chain, logs every response at the edge,
// cache hits, 429s and redirects included.
//
// [Hooks] are the events an embedder's metrics library or tracer listens to, each an
// optional func that costs a nil check when unset: RequestDone gets a [RequestEvent] per
// finished request (the log line's fields, request bytes, upstream latency), and TryStart is
// called as each try starts, with the request about to be sent, so that a tracer can start a
// client span and inject its traceparent into the header whichever default transport sends
// it; the func it returns gets the try's [TryEvent] (endpoint, attempt, outcome, and why a
// retry follows), so that retries show as sibling tries. [JoinHooks] lets several listen.
//
// # Shutting down
//
// [http.Server.Shutdown] waits for in-flight requests but not for hijacked connections such as
// WebSockets. [Drain] does both: it shuts the server down, then closes the proxies' upgraded
// connections (WebSocket peers get a close frame "going away") rather than wait for them to
// end by themselves, and closes whatever is left at the deadline. A proxy taken out of use
// while the program runs (a route change) keeps its tunnels; [Proxy.InFlight] says when it has
// nothing left to drain. [Proxy.CloseTunnels] closes the tunnels to endpoints that left the
// service, as package pool does after its Options.TunnelGrace.
package proxy
