// Command gateway routes two hosts and a 5% canary to demo backends started
// in-process, and prints curl lines to try it. No cluster is needed.
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
	"net/http/httputil"
	"net/url"
	"os"
	"os/signal"
	"time"

	"github.com/sluiceproxy/sluice/proxy/route"
)

// backend starts a demo upstream answering with its name, and returns it
// with a reverse proxy to it. (A real gateway uses a *proxy.Proxy over a
// balancer here.)
func backend(name string) (*httptest.Server, http.Handler) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "%s %s %s\n", name, r.Host, r.URL.Path)
	}))
	u, _ := url.Parse(srv.URL)
	return srv, httputil.NewSingleHostReverseProxy(u)
}

// newGateway builds the route table over freshly started demo backends. The
// returned func stops them.
func newGateway() (*route.Router, func(), error) {
	var stops []func()
	mk := func(name string) http.Handler {
		s, h := backend(name)
		stops = append(stops, s.Close)
		return h
	}
	stop := func() {
		for _, s := range stops {
			s()
		}
	}
	shopV1, shopV2, api := mk("shop-v1"), mk("shop-v2"), mk("api")
	table, err := route.New([]route.Route{
		{Name: "shop", Hosts: []string{"shop.localhost"}, Backends: []route.Backend{
			{Name: "v1", Handler: shopV1, Weight: 95},
			{Name: "v2", Handler: shopV2, Weight: 5},
		}, Pins: []route.Pin{{Header: "X-Canary", Value: "always", Backend: "v2"}}},
		{Name: "api", Hosts: []string{"api.localhost"}, Path: "/v1", Backends: []route.Backend{{Handler: api}}},
	}, route.Options{})
	if err != nil {
		stop()
		return nil, nil, err
	}
	return route.NewRouter(table, route.RouterOptions{}), stop, nil
}

func main() {
	addr := flag.String("addr", "127.0.0.1:8080", "listen address")
	flag.Parse()
	router, stop, err := newGateway()
	if err != nil {
		slog.Error("gateway", "err", err)
		os.Exit(1)
	}
	defer stop()
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
	srv := &http.Server{Handler: router, ReadHeaderTimeout: 5 * time.Second}
	ctx, cancel := signal.NotifyContext(context.Background(), os.Interrupt)
	defer cancel()
	go router.Run(ctx)
	go func() {
		<-ctx.Done()
		srv.Shutdown(context.Background())
	}()
	if err := srv.Serve(ln); err != http.ErrServerClosed {
		slog.Error("serve", "err", err)
	}
}
