// Command kube-proxy is a Kubernetes service proxy built from sluice's packages: kube-proxy's
// old userspace mode, as a readable program. It watches Services and EndpointSlices and, for
// every TCP and UDP port of every Service, listens on an address of its own and forwards each
// connection or UDP flow to one of the port's endpoints, as kube-proxy chooses them:
//
//   - sessionAffinity: ClientIP keeps a client IP on one endpoint until
//     sessionAffinityConfig.clientIP.timeoutSeconds (3 hours by default) after its last new
//     connection (balancer.ClientIPAffinity);
//   - internalTrafficPolicy: Local sends the port's traffic only to endpoints on this node
//     (-node-name), and refuses it when there is none, as kube-proxy drops it;
//     externalTrafficPolicy: Local does the same for node ports (-nodeports);
//   - ready endpoints are used, and serving terminating ones only when none is ready, for
//     cluster and local traffic separately;
//   - topology hints, which the EndpointSlice controller writes for trafficDistribution
//     (PreferSameZone, PreferSameNode), keep cluster traffic in this node's zone (-zone, by
//     default the Node's topology.kubernetes.io/zone label) or on this node, under
//     kube-proxy's rule: only when every ready endpoint has hints and some are for us;
//   - connections are spread at random (-balance; kube-proxy's iptables and nftables modes
//     are random too), a connection that cannot connect tries the next endpoint, and UDP
//     flows to endpoints that left the Service end, so that their clients move at once.
//
// Ports appear and disappear as Services change. A listener stays open as long as some
// Service asks for it: a change elsewhere (another Service, a scale of this one, an
// annotation) never closes it, and a change of its traffic policy or affinity re-routes it
// without dropping a connection. Deleting a Service, or one of its ports, closes the
// listener; its established TCP connections go on until they end, as they do under
// kube-proxy.
//
// Usage:
//
//	kube-proxy [-kubeconfig FILE] [-node-name NAME] [-address IP|cluster-ip] [-nodeports] ...
//
// Each Service port is served at -address (127.0.0.1 by default) and its port number plus
// -port-offset; -address cluster-ip serves each Service at its own cluster IPs instead, which
// is how it stands in for kube-proxy on a node (see README.md). With one fixed address, two
// Services with the same port number cannot both be served: the older Service keeps the
// listener and the other is logged. -port-offset moves every listener, so that the proxy can
// run without the privilege to bind ports below 1024 and beside a real kube-proxy, and tests
// can serve port 80 on a free port. -proxy-name makes it serve only the Services labelled
// service.kubernetes.io/service-proxy-name=NAME, which kube-proxy then leaves alone.
//
// What it does not do, compared with kube-proxy: it writes no iptables, nftables or IPVS
// rules and so intercepts nothing: clients must connect to its listeners (README.md says how
// to route ClusterIPs to them). Forwarding in user space costs a copy of every byte through
// the proxy (spliced in the kernel for TCP on Linux), and the endpoints see the proxy's
// address, not the client's. It does not serve externalIPs or load balancer IPs, SCTP ports,
// or the per-Service health check node ports of externalTrafficPolicy: Local, and it reads
// its zone once at start.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/sluiceproxy/sluice/balancer"
)

// config is everything run needs; flags fill it, tests build it.
type config struct {
	Kubeconfig string
	NodeName   string // this node, for Local traffic policies and node hints
	Zone       string // this node's zone, for zone hints; empty: read from the Node
	ProxyName  string // serve the Services labelled service-proxy-name=ProxyName
	Listen     listenConfig
	Policy     balancer.Policy // how a route's balancer places new clients
	Drain      time.Duration   // how long shutdown waits for TCP connections
	TCPIdle    time.Duration   // a TCP connection ends after this long without a byte
	UDPIdle    time.Duration   // a UDP flow ends after this long without a datagram
	Debounce   time.Duration   // how long an update waits for more Service changes
	Coalesce   time.Duration   // shortest time between two endpoint updates of one Service
	Retry      time.Duration   // how often listeners that could not be opened are retried
	Healthz    string          // host:port of /healthz; empty: none

	// Set by tests.
	Client    kubernetes.Interface                                              // nil: built from Kubeconfig
	Dial      func(ctx context.Context, network, addr string) (net.Conn, error) // TCP endpoints; nil: net.Dialer
	Forward   forwarding                                                        // nil: tcpproxy and udpproxy, TCP over Dial
	Logger    *slog.Logger
	Listening func(healthz string) // called once /healthz listens
	Now       func() time.Time     // the balancers' clock (affinity timeouts); nil: the runtime's
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "kube-proxy:", err)
		os.Exit(1)
	}
}

// run parses args and serves until ctx ends. The log goes to stderr.
func run(ctx context.Context, args []string, stderr io.Writer) error {
	cfg, err := parseFlags(args, stderr)
	if err != nil {
		return err
	}
	cfg.Logger = slog.New(slog.NewJSONHandler(stderr, nil))
	return serve(ctx, cfg)
}

// parseFlags turns the command line into a config.
func parseFlags(args []string, stderr io.Writer) (*config, error) {
	cfg := &config{}
	fs := flag.NewFlagSet("kube-proxy", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&cfg.Kubeconfig, "kubeconfig", "", "path to a kubeconfig; empty means the in-cluster config")
	fs.StringVar(&cfg.NodeName, "node-name", defaultNodeName(), "this node's name, for Local traffic policies and node hints")
	fs.StringVar(&cfg.Zone, "zone", "", "this node's zone, for zone hints; empty means the Node's topology.kubernetes.io/zone label")
	fs.StringVar(&cfg.ProxyName, "proxy-name", "", "serve only Services labelled service.kubernetes.io/service-proxy-name=`NAME`; empty means those without the label, as kube-proxy")
	fs.StringVar(&cfg.Listen.Address, "address", "127.0.0.1", "`IP` the Service ports listen on, or cluster-ip for each Service's own cluster IPs")
	fs.BoolVar(&cfg.Listen.NodePorts, "nodeports", false, "also listen on the node ports of NodePort and LoadBalancer Services")
	fs.StringVar(&cfg.Listen.NodePortAddress, "nodeport-address", "", "`IP` the node ports listen on; empty means every address")
	fs.IntVar(&cfg.Listen.PortOffset, "port-offset", 0, "`N` added to every port listened on")
	balance := fs.String("balance", "random", "how new clients are spread: random (as kube-proxy's iptables and nftables modes), round-robin or least-request")
	fs.DurationVar(&cfg.Drain, "drain", 10*time.Second, "how long SIGTERM waits for TCP connections to end")
	fs.DurationVar(&cfg.TCPIdle, "tcp-idle", time.Hour, "how long a TCP connection lasts without a byte moving")
	fs.DurationVar(&cfg.UDPIdle, "udp-idle", time.Minute, "how long a UDP flow lasts without a datagram")
	fs.DurationVar(&cfg.Debounce, "debounce", 50*time.Millisecond, "how long an update waits for more Service changes after the first")
	fs.DurationVar(&cfg.Coalesce, "coalesce", 100*time.Millisecond, "shortest time between two endpoint updates of one Service")
	fs.DurationVar(&cfg.Retry, "retry", 5*time.Second, "how often listeners that could not be opened are tried again")
	fs.StringVar(&cfg.Healthz, "healthz", ":10256", "`host:port` serving /healthz (200 once the first sync is applied); empty disables")
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	var err error
	if cfg.Policy, err = parsePolicy(*balance); err != nil {
		return nil, err
	}
	if a := cfg.Listen.Address; a != clusterIPAddress && net.ParseIP(a) == nil {
		return nil, fmt.Errorf("-address %q: want an IP address or %s", a, clusterIPAddress)
	}
	if a := cfg.Listen.NodePortAddress; a != "" && net.ParseIP(a) == nil {
		return nil, fmt.Errorf("-nodeport-address %q: want an IP address", a)
	}
	if o := cfg.Listen.PortOffset; o < 0 || o > 65534 {
		return nil, fmt.Errorf("-port-offset must be in [0, 65534], got %d", o)
	}
	return cfg, nil
}

// parsePolicy returns the balancer policy named by -balance.
func parsePolicy(name string) (balancer.Policy, error) {
	switch name {
	case "random":
		return balancer.Random{}, nil
	case "round-robin":
		return balancer.RoundRobin{}, nil
	case "least-request":
		return balancer.LeastRequest{}, nil
	}
	return nil, fmt.Errorf("-balance %q: want random, round-robin or least-request", name)
}

// defaultNodeName is $NODE_NAME (set from spec.nodeName in a DaemonSet), else the host
// name, lower-cased as kube-proxy does.
func defaultNodeName() string {
	if n := os.Getenv("NODE_NAME"); n != "" {
		return n
	}
	h, _ := os.Hostname()
	return strings.ToLower(h)
}

// serve runs the proxier and /healthz until ctx ends, and returns nil then.
func serve(ctx context.Context, cfg *config) error {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	client := cfg.Client
	if client == nil {
		var rc *rest.Config
		var err error
		if cfg.Kubeconfig == "" {
			rc, err = rest.InClusterConfig()
		} else {
			rc, err = clientcmd.BuildConfigFromFlags("", cfg.Kubeconfig)
		}
		if err != nil {
			return err
		}
		if client, err = kubernetes.NewForConfig(rc); err != nil {
			return err
		}
	}
	if cfg.Zone == "" && cfg.NodeName != "" {
		cfg.Zone = nodeZone(ctx, client, cfg.NodeName, cfg.Logger)
	}
	fwd := cfg.Forward
	if fwd == nil {
		fwd = l4{dial: cfg.Dial, tcpIdle: cfg.TCPIdle, udpIdle: cfg.UDPIdle, log: cfg.Logger}
	}
	p, err := newProxier(cfg, client, fwd)
	if err != nil {
		return err
	}
	cfg.Logger.Info("starting", "node", cfg.NodeName, "zone", cfg.Zone, "address", cfg.Listen.Address,
		"nodeports", cfg.Listen.NodePorts, "port_offset", cfg.Listen.PortOffset)

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	errc := make(chan error, 1)
	go func() { errc <- p.Run(ctx) }()
	if cfg.Healthz != "" {
		ln, err := net.Listen("tcp", cfg.Healthz)
		if err != nil {
			cancel()
			<-errc
			return err
		}
		srv := &http.Server{Handler: healthz(p), ReadHeaderTimeout: 5 * time.Second}
		go srv.Serve(ln) // until the deferred Close
		defer srv.Close()
		if cfg.Listening != nil {
			cfg.Listening(ln.Addr().String())
		}
	}
	err = <-errc // Run returns once ctx ends, after draining its listeners
	if ctx.Err() != nil {
		return nil
	}
	return err
}

// healthz answers 200 once p has applied its first sync, 503 before.
func healthz(p *proxier) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/healthz" {
			http.NotFound(w, r)
			return
		}
		if !p.Ready() {
			http.Error(w, "not synced", http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintln(w, "ok")
	})
}

// nodeZone reads node's topology.kubernetes.io/zone label, as kube-proxy does, or returns ""
// (no zone hints) when the Node cannot be read.
func nodeZone(ctx context.Context, client kubernetes.Interface, node string, log *slog.Logger) string {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	n, err := client.CoreV1().Nodes().Get(ctx, node, metav1.GetOptions{})
	if err != nil {
		log.Warn("cannot read this Node's zone; zone hints are off (set -zone)", "node", node, "err", err)
		return ""
	}
	return n.Labels[corev1.LabelTopologyZone]
}
