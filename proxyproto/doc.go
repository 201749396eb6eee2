// Package proxyproto speaks the PROXY protocol, versions 1 and 2, as HAProxy's
// proxy-protocol.txt defines it: how a proxy that relays a TCP connection tells the server
// behind it who the client is.
//
// # The protocol
//
// A proxy that relays a connection opens its own to the server, so the server sees the
// proxy's address as its peer, not the client's. With the PROXY protocol the proxy sends, as
// the very first bytes of that connection, one header naming the client's address and port
// and the address and port the client connected to; the connection's own bytes follow. It
// works for any protocol over TCP, TLS included (the header comes before the handshake),
// which is why cloud load balancers (AWS NLB, GCP, Azure) and HAProxy, NGINX and Envoy
// offer it.
//
// Version 1 is a line of text, at most 107 bytes:
//
//	PROXY TCP4 192.0.2.7 198.51.100.1 56324 443\r\n
//	PROXY UNKNOWN\r\n
//
// Version 2 is binary: a 12-byte signature that no other protocol starts with, a version and
// command byte (PROXY, or LOCAL for the proxy's own connections such as health checks), a
// family and transport byte, a 16-bit length, the addresses and ports in network byte
// order, then TLVs (type-length-value extensions: the TLS server name the client asked for,
// its ALPN, a connection ID, a checksum, a cloud load balancer's endpoint ID). A receiver
// knows the whole length after 16 bytes.
//
// A header with the LOCAL command, or with an unknown address (v1 UNKNOWN, v2 AF_UNSPEC),
// says nothing about a client: the receiver keeps the connection's real addresses.
//
// # The trust model
//
// A header is a claim, and anyone who can reach the server can make it. A receiver must
// believe only the proxies it put in front of itself, must not let anyone else make the
// claim, and must know, for a trusted proxy, where the header ends to the byte: what follows
// is the application's.
//
// [Listener] does this. It believes headers from the peers in its Trusted list (CIDRs, as
// [github.com/sluiceproxy/sluice.ParseTrustedProxies] reads them) and requires one from
// them; it refuses a connection from any other peer that starts with a PROXY signature,
// and passes everything else through untouched. It reads a header with a deadline and
// never reads past it (on Unix it looks with recv(MSG_PEEK) before it reads), and its
// connections' RemoteAddr and LocalAddr are the header's, so that servers that read them —
// net/http's and h1's r.RemoteAddr, [github.com/sluiceproxy/sluice.ClientIP], access logs,
// rate limits — see the client:
//
//	trusted, err := sluice.ParseTrustedProxies("10.0.0.0/8") // the load balancers' subnet
//	...
//	ln, err := net.Listen("tcp", ":8080")
//	...
//	srv.Serve(&proxyproto.Listener{Listener: ln, Trusted: trusted})
//
// For TLS, wrap the Listener in the TLS listener, not the other way round.
//
// [Parse] and [ReadHeader] are the parser alone, strict about every byte: a truncated,
// oversized or lying header is an error, never a panic or a hang.
//
// # Sending
//
// A proxy that sends headers builds one with [TCP] or [FromConn] and writes what
// [Header.Append] gives, once, before anything else on a new upstream connection. Such a
// connection speaks for one client: it must not carry another client's requests, so a
// pool of upstream connections keys them by the header's addresses (package proxy does).
package proxyproto
