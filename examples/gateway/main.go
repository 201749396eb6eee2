// Command gateway routes two hosts and a 5% canary to demo backends started
// in-process, and prints curl lines to try it. No cluster is needed.
//
// Each pool is a pool.Pool — a balancer over its pods with a *proxy.Proxy in
// front — which is what a route's backend is in a real gateway; only the
// source of the endpoints differs (here a static list of local test servers,
// in a cluster an endpointslices.Source).
//
//	go run ./examples/gateway -addr 127.0.0.1:8080
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/signal"
	"strings"
	"time"

	"github.com/sluiceproxy/sluice"
	"github.com/sluiceproxy/sluice/balancer"
	"github.com/sluiceproxy/sluice/discovery"
	"github.com/sluiceproxy/sluice/pool"
	"github.com/sluiceproxy/sluice/proxy"
	"github.com/sluiceproxy/sluice/proxy/route"
)

// gateway is the router with what it needs to stop.
type gateway struct {
	router  *route.Router
	proxies []*proxy.Proxy
	pods    []*httptest.Server
}

// close stops the demo pods and the proxies' idle connections.
func (g *gateway) close() {
	for _, p := range g.proxies {
		p.CloseIdleConnections()
	}
	for _, s := range g.pods {
		s.Close()
	}
}

// pool starts n demo pods answering with the pool's name and their index, and
// returns a pool balancing over them, running until ctx ends.
func (g *gateway) pool(ctx context.Context, name string, n int, logger *slog.Logger) (*pool.Pool, error) {
	var src discovery.Static
	for i := range n {
		pod := fmt.Sprintf("%s-%d", name, i)
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			fmt.Fprintf(w, "%s %s %s\n", pod, r.Host, r.URL.Path)
		}))
		g.pods = append(g.pods, srv)
		src.Endpoints = append(src.Endpoints, sluice.Endpoint{Addr: strings.TrimPrefix(srv.URL, "http://")})
	}
	p, err := pool.New(pool.Options{Source: src, Policy: balancer.PeakEWMA{}, Proxy: &proxy.Proxy{Logger: logger}})
	if err != nil {
		return nil, err
	}
	go func() {
		if err := p.Run(ctx); err != nil && ctx.Err() == nil {
			slog.Error("pool", "name", name, "err", err)
		}
	}()
	<-p.Synced()
	g.proxies = append(g.proxies, p.Proxy())
	return p, nil
}

// newGateway builds the route table over freshly started demo pods, whose pools
// run until ctx ends. A nil logger means no access log.
func newGateway(ctx context.Context, logger *slog.Logger) (*gateway, error) {
	g := &gateway{}
	shopV1, err := g.pool(ctx, "shop-v1", 2, logger)
	if err != nil {
		g.close()
		return nil, err
	}
	shopV2, err := g.pool(ctx, "shop-v2", 1, logger)
	if err != nil {
		g.close()
		return nil, err
	}
	api, err := g.pool(ctx, "api", 2, logger)
	if err != nil {
		g.close()
		return nil, err
	}
	table, err := route.New([]route.Route{
		{Name: "shop", Hosts: []string{"shop.localhost"}, Backends: []route.Backend{
			{Name: "v1", Handler: shopV1, Weight: 95},
			{Name: "v2", Handler: shopV2, Weight: 5},
		}, Pins: []route.Pin{{Header: "X-Canary", Value: "always", Backend: "v2"}}},
		{Name: "api", Hosts: []string{"api.localhost"}, Path: "/v1", Backends: []route.Backend{{Handler: api}}},
	}, route.Options{})
	if err != nil {
		g.close()
		return nil, err
	}
	g.router = route.NewRouter(table, route.RouterOptions{})
	return g, nil
}

func main() {
	addr := flag.String("addr", "127.0.0.1:8080", "listen address")
	flag.Parse()
	ctx, cancel := signal.NotifyContext(context.Background(), os.Interrupt)
	defer cancel()
	g, err := newGateway(ctx, slog.New(slog.NewTextHandler(os.Stderr, nil)))
	if err != nil {
		slog.Error("gateway", "err", err)
		os.Exit(1)
	}
	defer g.close()
	ln, err := net.Listen("tcp", *addr)
	if err != nil {
		slog.Error("listen", "err", err)
		os.Exit(1)
	}
	a := ln.Addr().String()
	fmt.Printf("curl -H 'Host: shop.localhost' http://%s/\n", a)
	fmt.Printf("curl -H 'Host: shop.localhost' -H 'X-Canary: always' http://%s/\n", a)
	fmt.Printf("curl -H 'Host: api.localhost' http://%s/v1/orders\n", a)
	fmt.Printf("curl -H 'Host: api.localhost' http://%s/v1/../admin   # 404: cleaned before matching\n", a)
	srv := proxy.NewServer(g.router, proxy.ServerOptions{})
	go g.router.Run(ctx)
	go func() {
		if err := srv.Serve(ln); err != http.ErrServerClosed {
			slog.Error("serve", "err", err)
			cancel()
		}
	}()
	<-ctx.Done()
	drainCtx, stop := context.WithTimeout(context.Background(), 10*time.Second)
	defer stop()
	if err := proxy.Drain(drainCtx, []proxy.Server{srv}, g.proxies...); err != nil {
		// Requests were still running at the deadline and were cut off.
		slog.Error("drain", "err", err)
		g.close()
		os.Exit(1)
	}
}
