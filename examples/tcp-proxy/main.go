// Command tcp-proxy is a TCP proxy built from sluice: it routes each connection by the TLS
// server name (SNI) of its ClientHello, passing TLS through untouched, or to a default pool,
// balancing over fixed endpoints:
//
//	go run ./examples/tcp-proxy -listen :8443 \
//		-route 'api.example.com=127.0.0.1:9001,127.0.0.1:9002' \
//		-route '*.example.com=127.0.0.1:9003' \
//		-default 127.0.0.1:9100
//
// With -cert and -key it terminates TLS itself, for every route, and forwards plain TCP. On
// SIGINT or SIGTERM it stops accepting, lets open connections finish for -drain, then closes
// them. Forwarded connections are not logged, so that the per-connection path stays lean.
//
// Flags:
//
//	-listen host:port               where the proxy listens (default 127.0.0.1:8443)
//	-route name=host:port,...       send connections for this server name ("*.example.com"
//	                                covers one more label) to these endpoints; repeatable
//	-default host:port,...          send every other connection (plain text too) here
//	-policy least-request|round-robin|random
//	                                how an endpoint is chosen (default least-request)
//	-cert file, -key file           terminate TLS with this PEM chain and key
//	-proxy-protocol 0|1|2           send endpoints a PROXY protocol header of this version
//	-connect-timeout, -idle-timeout, -hello-timeout
//	                                as tcpproxy.Options (defaults 5s, 1h, 5s)
//	-max-conns n, -max-conns-per-endpoint n
//	                                connection limits (default none)
//	-drain duration                 how long SIGTERM lets connections finish (default 30s)
package main

import (
	"context"
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"runtime/debug"
	"strings"
	"syscall"
	"time"

	"github.com/sluiceproxy/sluice/balancer"
	"github.com/sluiceproxy/sluice/discovery"
	"github.com/sluiceproxy/sluice/tcpproxy"
	"github.com/sluiceproxy/sluice/tls/certs"
)

func main() {
	if os.Getenv("GOGC") == "" {
		// The proxy's live heap is small and steady (its connections' state), so Go's default
		// target collects often for nothing; 400% trades a few MiB for less CPU, as
		// examples/quickstart does. GOGC in the environment still wins.
		debug.SetGCPercent(400)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "tcp-proxy:", err)
		os.Exit(1)
	}
}

// route is one -route flag: a server name and its endpoints.
type route struct {
	name      string
	endpoints discovery.Static
}

// run parses args, serves until ctx ends, then drains. It prints the address it listens on.
func run(ctx context.Context, args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("tcp-proxy", flag.ContinueOnError)
	listen := fs.String("listen", "127.0.0.1:8443", "where the proxy listens")
	var routes []route
	fs.Func("route", "name=host:port,... (repeatable)", func(s string) error {
		name, list, ok := strings.Cut(s, "=")
		if !ok || name == "" {
			return fmt.Errorf("%q is not name=host:port[,host:port]", s)
		}
		eps, err := discovery.ParseStatic(list)
		if err != nil {
			return err
		}
		routes = append(routes, route{name, eps})
		return nil
	})
	def := fs.String("default", "", "host:port,... for every other connection")
	policy := fs.String("policy", "least-request", "least-request, round-robin or random")
	certFile := fs.String("cert", "", "terminate TLS with this PEM certificate chain")
	keyFile := fs.String("key", "", "and this PEM private key")
	pp := fs.Int("proxy-protocol", 0, "send endpoints a PROXY protocol header of this version (1 or 2)")
	var opts tcpproxy.Options
	fs.DurationVar(&opts.ConnectTimeout, "connect-timeout", tcpproxy.DefaultConnectTimeout, "bound on connecting to an endpoint")
	fs.DurationVar(&opts.IdleTimeout, "idle-timeout", tcpproxy.DefaultIdleTimeout, "close connections idle this long (negative: never)")
	fs.DurationVar(&opts.HelloTimeout, "hello-timeout", tcpproxy.DefaultHelloTimeout, "bound on reading the ClientHello")
	fs.IntVar(&opts.MaxConns, "max-conns", 0, "connections open at once (0: no limit)")
	fs.IntVar(&opts.MaxConnsPerEndpoint, "max-conns-per-endpoint", 0, "connections open at once to one endpoint (0: no limit)")
	drain := fs.Duration("drain", 30*time.Second, "how long SIGTERM lets connections finish")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	if len(routes) == 0 && *def == "" {
		return errors.New("nothing to forward to: give -route or -default")
	}
	var pol balancer.Policy
	switch *policy {
	case "least-request":
		pol = balancer.LeastRequest{}
	case "round-robin":
		pol = balancer.RoundRobin{}
	case "random":
		pol = balancer.Random{}
	default:
		return fmt.Errorf("-policy %q: want least-request, round-robin or random", *policy)
	}
	var termination *tls.Config
	if *certFile != "" || *keyFile != "" {
		cfg, err := serverConfig(*certFile, *keyFile)
		if err != nil {
			return err
		}
		termination = cfg
	}
	if *def != "" {
		eps, err := discovery.ParseStatic(*def)
		if err != nil {
			return fmt.Errorf("-default: %w", err)
		}
		routes = append(routes, route{"", eps})
	}
	table := make([]tcpproxy.Route, len(routes))
	for i, r := range routes {
		bal, err := balancer.New(pol, balancer.Options{})
		if err != nil {
			return err
		}
		bal.Update(r.endpoints.Endpoints) // fixed endpoints: one update is the whole watch
		table[i] = tcpproxy.Route{Name: r.name, Picker: bal, TLS: termination, ProxyProtocol: *pp}
		if r.name == "" {
			table[i].Name = "default"
		} else {
			table[i].ServerNames = []string{r.name}
		}
	}
	t, err := tcpproxy.NewTable(table)
	if err != nil {
		return err
	}
	opts.Logger = slog.New(slog.NewTextHandler(os.Stderr, nil)) // accept errors; no per-connection lines at Info
	p, err := tcpproxy.New(t, opts)
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "tcp-proxy listening on %s\n", ln.Addr())
	served := make(chan error, 1)
	go func() { served <- p.Serve(ln) }()
	select {
	case err := <-served:
		p.Close()
		return err
	case <-ctx.Done():
	}
	dctx, cancel := context.WithTimeout(context.Background(), *drain)
	defer cancel()
	err = p.Shutdown(dctx)
	<-served
	if errors.Is(err, context.DeadlineExceeded) {
		fmt.Fprintf(stdout, "tcp-proxy: drain timed out after %v; closed the rest\n", *drain)
		return nil
	}
	return err
}

// serverConfig loads the PEM pair into a Keyring and returns a server config over it.
func serverConfig(certFile, keyFile string) (*tls.Config, error) {
	if certFile == "" || keyFile == "" {
		return nil, errors.New("-cert and -key go together")
	}
	certPEM, err := os.ReadFile(certFile)
	if err != nil {
		return nil, err
	}
	keyPEM, err := os.ReadFile(keyFile)
	if err != nil {
		return nil, err
	}
	pair, err := certs.ParseKeyPair(certPEM, keyPEM)
	if err != nil {
		return nil, fmt.Errorf("-cert/-key: %w", err)
	}
	var ring certs.Keyring
	if err := ring.Set(certFile, pair); err != nil {
		return nil, err
	}
	cfg, err := certs.ServerConfig(&ring, certs.ServerOptions{})
	if err != nil {
		return nil, err
	}
	cfg.NextProtos = nil // a TCP proxy knows nothing of the endpoints' protocol: it offers none
	return cfg, nil
}
