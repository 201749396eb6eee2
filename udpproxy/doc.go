// Package udpproxy forwards UDP datagrams to the endpoints of a [sluice.Picker], as kube-proxy
// does for a Service's UDP ports, NGINX's stream module for a `listen ... udp` server and
// Envoy's udp_proxy filter. Every balancer, health checker and discovery source of sluice
// works with it unchanged.
//
//	p, err := udpproxy.New(udpproxy.Options{Picker: bal})
//	...
//	pc, err := net.ListenUDP("udp", &net.UDPAddr{IP: serviceIP, Port: 53})
//	...
//	go p.Serve(pc)
//	...
//	p.Shutdown(ctx) // or p.Close()
//
// # Flows
//
// UDP has no connections, so the proxy makes its own. A flow is the datagrams one client
// address (IP and port) sends to one listening socket, and the replies to them. The first
// datagram from a new address opens a flow: the Picker chooses an endpoint, told the client's
// address in [sluice.PickInfo].Client (there is no Request, so balancer.Maglev{}, whose zero
// key is the client IP, keeps every flow of one client IP on one endpoint, as kube-proxy's
// sessionAffinity: ClientIP does), and the proxy opens a UDP socket connected to that
// endpoint, from a port of its own. The client's datagrams go out on that socket; whatever
// the endpoint sends back to it is written to the client from the listening socket, so that
// the client sees its replies come from the address it sent to. Each flow having its own
// upstream socket, the kernel tells their replies apart by port: a reply can only reach the
// client whose flow it came back on, and, the socket being connected, only the flow's
// endpoint can send one. This is kube-proxy's userspace mode; its iptables and IPVS modes
// get the same effect from conntrack, rewriting addresses in the kernel.
//
// Endpoints should be IP addresses, as EndpointSlices give them: a host name is resolved on
// Serve's goroutine when a flow opens, holding up every client's datagrams meanwhile.
//
// Balancing is per flow, not per datagram: all of one client's datagrams reach one endpoint,
// which protocols with state across datagrams (QUIC, DTLS, SIP, game sessions) need, and which
// DNS does not mind. Per-datagram balancing, which Envoy offers for stateless protocols, is
// not done.
//
// Serve reads the listening socket on the caller's goroutine and starts one goroutine per
// flow, which waits for the endpoint's replies. That goroutine waits in the runtime's poller
// without a buffer (where the OS allows: every unix) and borrows one from a pool only when a
// reply has arrived, so an idle flow costs its goroutine's stack, one socket (a file
// descriptor: raise the process's limit above Options.MaxFlows) and a few small structs:
// about 3 KB of Go memory in TestIdleFlowMemory, against 64 KiB for a buffer of its own.
//
// # Timeouts and bounds
//
// A flow ends after Options.IdleTimeout (default 60s, Envoy's) without a datagram in either
// direction. The timeout is the socket's read deadline, moved only when it passes, so a
// datagram costs a clock read rather than a timer reset.
//
// At most Options.MaxFlows flows (default 10,000) are open at once. The datagram that would
// open one more is dropped and counted in [Stats].OverLimit, with a warning logged at most
// once a second.
//
// Datagrams larger than Options.MaxDatagramSize (default 65,535, which none is) are dropped
// and counted in Stats.Oversized, either way: buffers are one byte longer than the limit, so
// a datagram the kernel had to cut short is recognised, and never forwarded as if whole.
// Forwarding a datagram on an open flow allocates nothing (TestForwardingAllocatesNothing).
//
// # What it costs
//
// BenchmarkForward sends request-reply exchanges from eight client flows on a two-vCPU
// machine shared by the clients, the proxy and an echo backend. 64-byte datagrams: 4.0µs an
// exchange sent straight to the backend, 8.1µs through the proxy, which moves each datagram
// twice (1,472 bytes: 4.2µs and 8.7–12µs; 16 KiB: 6.3µs and 11–13µs), allocating nothing:
//
//	go test -run '^$' -bench Forward -benchtime 1s -count 3 ./udpproxy/
//
// # The flow bound
//
// When the bound is reached, new clients are refused rather than the oldest flows evicted.
// UDP source addresses are trivially forged: were a new flow to evict an old one, anyone
// sending from ten thousand made-up addresses would flush every real client's flow, each of
// which would then be picked afresh and lose its endpoint, and its replies in flight. Refused
// new flows leave the clients already served alone, and idle flows make room as they expire.
// Envoy makes the same choice (its UDP sessions count against the cluster's max_connections
// circuit breaker), as does Linux when its conntrack table is full, although conntrack first
// drops entries that never saw a reply; such an early drop is not done here.
//
// # Outcomes
//
// Each pick's [sluice.PickResult].Done is called once, when its flow ends, so LeastRequest
// counts open flows, and the Observer is told the same outcome:
//
//   - a flow that got a reply reports success, with the Latency from its first datagram to
//     the first reply;
//   - a flow that never got one reports [sluice.Canceled], which balancers and health checks
//     do not count: a one-way protocol (syslog, StatsD) never answers, and a client that
//     stops sending is no failure of the endpoint;
//   - an endpoint that answers with ICMP port (or host, or network) unreachable before any
//     reply — nothing listens there — is charged a [sluice.ConnectFailure] at once, and the
//     flow picks another endpoint (PickInfo.Tried lists those tried), up to
//     Options.MaxAttempts endpoints in all; then it ends. The datagram that drew the error is
//     lost, as on any UDP path; the client's retransmission goes to the new endpoint;
//   - an ICMP unreachable after replies ends the flow with a [sluice.ConnectionFailure]; the
//     client's next datagram opens a new flow.
//
// ICMP errors reach a connected socket on Linux, the BSDs and macOS. Go turns them off on
// Windows, where a refusing endpoint is noticed only by health checks.
//
// # Endpoint changes
//
// A flow keeps its endpoint until it ends, even when the endpoint leaves the Picker's set: a
// client that sends more often than the idle timeout would stay on a deleted pod for ever.
// kube-proxy deletes the conntrack entries of UDP endpoints that stop serving, so that their
// traffic moves at once; [Proxy.Prune] does the same here, ending every flow whose endpoint
// is not in a given set. Call it with each set given to the balancer.
//
// # Not done
//
// The PROXY protocol has a UDP form (version 2 over datagrams) that few servers read; it is
// not sent. Replies leave the listening socket from the address the kernel chooses for the
// client's route: a socket bound to a wildcard address on a host with several addresses
// might answer from another one than the client sent to, so bind each socket to one
// address, as kube-proxy's userspace mode bound each Service IP. A reply that arrives after
// its flow ended is dropped, unless a new flow to the same endpoint was given the same
// local port (the kernel picks among some 28,000 at random): conntrack has the same window,
// and no UDP proxy can close it without knowing the protocol.
package udpproxy
