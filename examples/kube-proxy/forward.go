package main

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"time"

	"github.com/sluiceproxy/sluice"
	"github.com/sluiceproxy/sluice/tcpproxy"
	"github.com/sluiceproxy/sluice/udpproxy"
)

// forwarding makes the forwarders of listeners: the proxier binds the sockets, a forwarder
// moves their traffic to the endpoints a Picker chooses. Its methods are called from the
// proxier's Run goroutine.
type forwarding interface {
	// TCP returns a forwarder for the connections ln accepts.
	TCP(ln net.Listener, p sluice.Picker) (forwarder, error)
	// UDP returns a forwarder for the datagrams pc receives, one flow per client address.
	UDP(pc *net.UDPConn, p sluice.Picker) (forwarder, error)
}

// forwarder forwards one listener's traffic. Its methods are safe for concurrent use.
type forwarder interface {
	// Serve forwards until Drain or Close, and then returns nil; it returns an error if the
	// socket fails otherwise. It is called once, on its own goroutine.
	Serve() error
	// Prune is given every endpoint set the listener's balancer gets. A UDP forwarder ends
	// the flows to endpoints no longer in eps, so that their clients' next datagrams pick
	// afresh, as kube-proxy deletes the conntrack entries of UDP endpoints that left; a TCP
	// forwarder leaves established connections alone, as kube-proxy does.
	Prune(eps []sluice.Endpoint)
	// Drain stops taking new connections or flows and closes the socket. TCP connections go
	// on until they end or ctx does, when they are closed; UDP flows end at once, as
	// kube-proxy deletes a removed Service's UDP conntrack entries. It returns once all have
	// ended.
	Drain(ctx context.Context) error
	// Close closes the socket and everything forwarded through it at once.
	Close() error
}

// l4 is the forwarding of packages tcpproxy and udpproxy: a tcpproxy.Proxy with one default
// route per TCP listener, which tries the next endpoint when one refuses and splices bytes
// both ways, and a udpproxy.Proxy per UDP listener, one flow per client address.
type l4 struct {
	dial    func(ctx context.Context, network, addr string) (net.Conn, error) // to TCP endpoints; nil: net.Dialer
	tcpIdle time.Duration                                                     // a TCP connection ends after this long without a byte
	udpIdle time.Duration                                                     // a UDP flow ends after this long without a datagram
	log     *slog.Logger
}

func (f l4) TCP(ln net.Listener, p sluice.Picker) (forwarder, error) {
	table, err := tcpproxy.NewTable([]tcpproxy.Route{{Name: "service", Picker: p}})
	if err != nil {
		return nil, err
	}
	tp, err := tcpproxy.New(table, tcpproxy.Options{Dial: f.dial, IdleTimeout: f.tcpIdle, Logger: f.log})
	if err != nil {
		return nil, err
	}
	return &tcpForwarder{p: tp, ln: ln}, nil
}

func (f l4) UDP(pc *net.UDPConn, p sluice.Picker) (forwarder, error) {
	up, err := udpproxy.New(udpproxy.Options{Picker: p, IdleTimeout: f.udpIdle, Logger: f.log})
	if err != nil {
		return nil, err
	}
	return &udpForwarder{p: up, pc: pc}, nil
}

type tcpForwarder struct {
	p  *tcpproxy.Proxy
	ln net.Listener
}

func (f *tcpForwarder) Serve() error {
	if err := f.p.Serve(f.ln); !errors.Is(err, tcpproxy.ErrClosed) {
		return err
	}
	return nil
}

// Prune does nothing: established TCP connections stay, as under kube-proxy.
func (f *tcpForwarder) Prune([]sluice.Endpoint) {}

func (f *tcpForwarder) Drain(ctx context.Context) error { return f.p.Shutdown(ctx) }
func (f *tcpForwarder) Close() error                    { return f.p.Close() }

type udpForwarder struct {
	p  *udpproxy.Proxy
	pc *net.UDPConn
}

func (f *udpForwarder) Serve() error {
	if err := f.p.Serve(f.pc); !errors.Is(err, udpproxy.ErrClosed) {
		return err
	}
	return nil
}

func (f *udpForwarder) Prune(eps []sluice.Endpoint) { f.p.Prune(eps) }

// Drain closes at once: a removed UDP port's flows end, as kube-proxy deletes their
// conntrack entries; udpproxy's Shutdown would wait for every flow to go idle.
func (f *udpForwarder) Drain(context.Context) error { return f.p.Close() }
func (f *udpForwarder) Close() error                { return f.p.Close() }
