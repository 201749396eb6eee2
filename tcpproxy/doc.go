// Package tcpproxy forwards TCP connections: it routes each one by the server name (SNI) and
// ALPN of its TLS ClientHello, read without terminating TLS, or by a default route, to an
// endpoint a [github.com/sluiceproxy/sluice.Picker] chooses, and copies bytes both ways.
// It is sluice at layer 4: the balancers, health checkers and discovery sources that serve
// the HTTP proxy serve it unchanged, because a connection is one try.
//
//	bal, _ := balancer.New(balancer.LeastRequest{}, balancer.Options{})
//	go discovery.Static{Endpoints: eps}.Watch(ctx, bal.Update)
//	table, err := tcpproxy.NewTable([]tcpproxy.Route{
//		{Name: "db", ServerNames: []string{"db.example.com"}, Picker: bal}, // TLS passthrough
//		{Name: "rest", Picker: other},                                      // everything else
//	})
//	p, err := tcpproxy.New(table, tcpproxy.Options{})
//	go p.Serve(ln)
//	...
//	p.Shutdown(ctx) // stop accepting, let connections finish, then close them
//
// # Routing
//
// A [Table] is an immutable set of [Route]s, built once by [NewTable] and swapped atomically
// with [Proxy.Store]. Server names are matched as [github.com/sluiceproxy/sluice/proxy/route]
// matches hosts: case-insensitively, exact names first, then wildcards ("*.example.com"
// covers exactly one more label), then the default routes, those without ServerNames; within
// each, a route whose ALPN the client offers beats one without ALPN. Lookup reads two maps and
// allocates nothing, whatever the number of names.
//
// When some route needs the ClientHello, the proxy reads it first ([ReadClientHello]): it
// may come in pieces and span TLS records, must fit in Options.MaxHelloBytes and arrive
// within Options.HelloTimeout, and is parsed strictly, so that a malformed, truncated or lying
// hello closes the connection rather than confuse the proxy. The bytes read are replayed to
// whoever gets the connection, so the endpoint sees the stream from its first byte. A client
// whose first byte is not a TLS handshake goes to the default route at once; one that sends
// nothing within HelloTimeout is taken for a protocol whose server speaks first (SMTP, MySQL)
// and goes there too. A table with only a default route reads nothing before connecting.
//
// # Connecting
//
// For each connection the route's Picker picks an endpoint, with PickInfo.Client set to the
// client's address (so that Maglev's client-IP key works); the proxy connects within
// Options.ConnectTimeout, and when that fails — nothing was sent — reports a ConnectFailure
// to the pick's Done and to Options.Observer and asks the Picker again, with the failed
// endpoints in PickInfo.Tried, up to Options.ConnectTries endpoints. With
// Options.MaxConnsPerEndpoint, an endpoint at its limit is skipped the same way without being
// tried (circuit breaking); with Options.MaxConns, a listener at its limit closes new
// connections at once. [Proxy.Stats] and [Proxy.EndpointConns] count all of it.
//
// Done is called once per forwarded connection, when it ends, so that least-request balancing
// counts open connections. Its Outcome has Latency, the time to connect, and Duration, how
// long the connection lasted; its Failure is NoFailure for a connection that ended with both
// sides closing, ConnectionFailure when the endpoint reset it or stopped taking bytes with an
// error, and a failure that does not count against the endpoint (Outcome.Counts is false)
// when the client reset it or the proxy closed it: Canceled for a client's reset and for
// Close or a Shutdown that ran out of time, ClientFailure for the idle timeout.
//
// # Forwarding
//
// Bytes are copied both ways, one goroutine per direction. Between TCP sockets on Linux they
// are moved with splice(2) through a kernel pipe, never entering user space, as Go's io.Copy
// does — but io.Copy holds its pipe (two descriptors and a pipe buffer) for as long as the
// direction lasts, so that 10,000 idle connections would hold 20,000 pipes. This package's
// loop tries the splice from the runtime poller's readiness callback and takes a pipe from a
// pool only when the source has bytes, giving it back as soon as the source is drained: an
// idle connection holds its two sockets, two parked goroutines and no pipe or buffer (about
// 8.6 KB of heap and stack in TestIdleConnectionMemory, against 13.7 KB and four more
// descriptors with io.Copy). Elsewhere, and for TLS-terminated connections, a portable loop
// copies through a pooled 32 KiB buffer per direction, held while the connection lasts.
//
// When one side finishes sending (FIN), the proxy half-closes the other side's writing
// (CloseWrite) and keeps the other direction going; the connection ends when both directions
// have ended, or at once on an error or a reset, which is passed on as a reset. A connection
// on which no byte moved for Options.IdleTimeout is closed: the sockets' deadlines are armed
// once and, when one fires, moved to IdleTimeout after the last transfer of either
// direction, so the timeout costs nothing per read and closes within milliseconds of the
// moment it describes.
//
// # TLS termination and in-process routes
//
// A route with a TLS config terminates TLS at the proxy — the config normally comes from
// [github.com/sluiceproxy/sluice/tls/certs.ServerConfig] over a Keyring — within
// Options.HandshakeTimeout, and forwards the plain bytes. A route with a [Listener] hands its
// connections to a server in the same process instead of an endpoint: an ingress controller
// passes some names through to their pods and terminates the others in its own HTTPS server,
// on one port. The connections it accepts replay the ClientHello first, and refuse to expose
// their socket (SyscallConn) until it is read, so that no reader skips it.
//
// # PROXY protocol
//
// A route with ProxyProtocol 1 or 2 sends the endpoint a PROXY header
// ([github.com/sluiceproxy/sluice/proxyproto]) naming the client before any byte of the
// stream; served from a proxyproto.Listener behind a trusted load balancer, the proxy passes
// on the client the balancer named, and splices all the same.
//
// # Shutting down
//
// [Proxy.Shutdown] closes the listeners and waits for the open connections to end on their
// own until its context ends, then closes them; [Proxy.Close] closes them at once. Both wait
// for the connections' goroutines to finish. Serve returns [ErrClosed].
package tcpproxy
