package h1

import (
	"net"
	"syscall"
)

// deferAcceptSeconds is how long the kernel may hold a connection that has sent nothing
// before it hands it to Accept anyway.
const deferAcceptSeconds = 10

// ListenConfig returns a net.ListenConfig for a listener that Server serves from. Accepted
// connections get no TCP keep-alive probes: the server's IdleTimeout ends idle connections,
// as NGINX and Envoy do by default, and Go's default probes cost four setsockopt calls per
// accepted connection. On Linux the listener also sets TCP_DEFER_ACCEPT, so that Accept
// returns a connection once its first bytes have arrived: the first read finds them, without
// a wait in the poller (nginx's "deferred"). Connections that send nothing are accepted all
// the same after 10 seconds, and then meet ReadHeaderTimeout.
//
//	ln, err := h1.ListenConfig().Listen(ctx, "tcp", ":8080")
func ListenConfig() *net.ListenConfig {
	return &net.ListenConfig{
		KeepAlive: -1,
		Control: func(network, address string, c syscall.RawConn) error {
			var serr error
			if err := c.Control(func(fd uintptr) { serr = deferAccept(fd) }); err != nil {
				return err
			}
			return serr
		},
	}
}
