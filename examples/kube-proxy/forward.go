package main

import (
	"context"
	"io"
	"net"
	"net/netip"
	"sync"
	"time"

	"github.com/sluiceproxy/sluice"
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

// The forwarders below are stand-ins with the least a test needs, to be replaced by packages
// tcpproxy and udpproxy: a TCP connection tries up to three endpoints and then copies both
// ways; a UDP flow picks once, forwards datagrams both ways and ends after idle time.

// standIn is the forwarding of the stand-in forwarders.
type standIn struct {
	dial func(ctx context.Context, network, addr string) (net.Conn, error)
	idle time.Duration // UDP flows end after this long without a datagram
}

func (s standIn) TCP(ln net.Listener, p sluice.Picker) (forwarder, error) {
	return &tcpStandIn{ln: ln, picker: p, dial: s.dial, conns: make(map[net.Conn]struct{})}, nil
}

func (s standIn) UDP(pc *net.UDPConn, p sluice.Picker) (forwarder, error) {
	return &udpStandIn{pc: pc, picker: p, dial: s.dial, idle: s.idle, flows: make(map[netip.AddrPort]*udpFlow)}, nil
}

// connectTries is how many endpoints a TCP connection tries before it is closed.
const connectTries = 3

type tcpStandIn struct {
	ln     net.Listener
	picker sluice.Picker
	dial   func(ctx context.Context, network, addr string) (net.Conn, error)
	wg     sync.WaitGroup

	mu     sync.Mutex // protects conns and closed
	conns  map[net.Conn]struct{}
	closed bool
}

func (f *tcpStandIn) Serve() error {
	for {
		c, err := f.ln.Accept()
		if err != nil {
			f.mu.Lock()
			closed := f.closed
			f.mu.Unlock()
			if closed {
				return nil
			}
			return err
		}
		if !f.track(c, true) {
			c.Close()
			return nil
		}
		go func() {
			defer f.wg.Done()
			f.forward(c)
		}()
	}
}

// track adds c to the connections Close closes, unless the forwarder is closed; for a
// client's connection, it also counts the goroutine Drain waits for, under the lock that
// Drain takes to close the forwarder, so that no goroutine starts once Drain waits.
func (f *tcpStandIn) track(c net.Conn, client bool) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.closed {
		return false
	}
	f.conns[c] = struct{}{}
	if client {
		f.wg.Add(1)
	}
	return true
}

func (f *tcpStandIn) untrack(c net.Conn) {
	f.mu.Lock()
	delete(f.conns, c)
	f.mu.Unlock()
	c.Close()
}

func (f *tcpStandIn) forward(c net.Conn) {
	defer f.untrack(c)
	var tried []string
	for range connectTries {
		info := sluice.PickInfo{Tried: tried}
		if a, ok := c.RemoteAddr().(*net.TCPAddr); ok {
			info.Client = a.AddrPort()
		}
		res, err := f.picker.Pick(info)
		if err != nil {
			return // no endpoint: the client sees its connection closed
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		up, err := f.dial(ctx, "tcp", res.Endpoint.Addr)
		cancel()
		if err != nil {
			done(res, sluice.Outcome{Failure: sluice.ConnectFailure})
			tried = append(tried, res.Endpoint.Addr)
			continue
		}
		if !f.track(up, false) {
			up.Close()
			done(res, sluice.Outcome{Failure: sluice.Canceled})
			return
		}
		var wg sync.WaitGroup
		wg.Go(func() { pipe(up, c) })
		pipe(c, up)
		wg.Wait()
		f.untrack(up)
		done(res, sluice.Outcome{})
		return
	}
}

// pipe copies from src to dst until src ends, then half-closes dst.
func pipe(dst, src net.Conn) {
	io.Copy(dst, src)
	if cw, ok := dst.(interface{ CloseWrite() error }); ok {
		cw.CloseWrite()
	} else {
		dst.Close()
	}
}

func done(res sluice.PickResult, o sluice.Outcome) {
	if res.Done != nil {
		res.Done(o)
	}
}

func (f *tcpStandIn) Prune([]sluice.Endpoint) {}

func (f *tcpStandIn) Drain(ctx context.Context) error {
	f.mu.Lock()
	f.closed = true
	f.mu.Unlock()
	f.ln.Close()
	ended := make(chan struct{})
	go func() { f.wg.Wait(); close(ended) }()
	select {
	case <-ended:
		return nil
	case <-ctx.Done():
		f.Close()
		<-ended
		return ctx.Err()
	}
}

func (f *tcpStandIn) Close() error {
	f.mu.Lock()
	f.closed = true
	for c := range f.conns {
		c.Close()
	}
	f.mu.Unlock()
	return f.ln.Close()
}

type udpStandIn struct {
	pc     *net.UDPConn
	picker sluice.Picker
	dial   func(ctx context.Context, network, addr string) (net.Conn, error)
	idle   time.Duration
	wg     sync.WaitGroup

	mu     sync.Mutex // protects flows and closed
	flows  map[netip.AddrPort]*udpFlow
	closed bool
}

// udpFlow is one client's flow: its socket to the endpoint and the pick that chose it.
type udpFlow struct {
	up  net.Conn
	res sluice.PickResult
}

func (f *udpStandIn) Serve() error {
	buf := make([]byte, 65535)
	for {
		n, src, err := f.pc.ReadFromUDPAddrPort(buf)
		if err != nil {
			f.mu.Lock()
			closed := f.closed
			f.mu.Unlock()
			if closed {
				return nil
			}
			return err
		}
		fl := f.flow(src)
		if fl == nil {
			continue // no endpoint: the datagram is dropped
		}
		fl.up.SetReadDeadline(time.Now().Add(f.idle))
		fl.up.Write(buf[:n])
	}
}

// flow returns src's flow, opening it when there is none.
func (f *udpStandIn) flow(src netip.AddrPort) *udpFlow {
	f.mu.Lock()
	fl := f.flows[src]
	f.mu.Unlock()
	if fl != nil {
		return fl
	}
	res, err := f.picker.Pick(sluice.PickInfo{Client: src})
	if err != nil {
		return nil
	}
	up, err := f.dial(context.Background(), "udp", res.Endpoint.Addr)
	if err != nil {
		done(res, sluice.Outcome{Failure: sluice.ConnectFailure})
		return nil
	}
	fl = &udpFlow{up: up, res: res}
	f.mu.Lock()
	if f.closed {
		f.mu.Unlock()
		up.Close()
		done(res, sluice.Outcome{Failure: sluice.Canceled})
		return nil
	}
	f.flows[src] = fl
	f.wg.Add(1) // under mu, as tcpStandIn.track does
	f.mu.Unlock()
	go func() {
		defer f.wg.Done()
		f.replies(src, fl)
	}()
	return fl
}

// replies sends fl's replies to its client until the flow is idle or closed.
func (f *udpStandIn) replies(src netip.AddrPort, fl *udpFlow) {
	buf := make([]byte, 65535)
	for {
		fl.up.SetReadDeadline(time.Now().Add(f.idle))
		n, err := fl.up.Read(buf)
		if err != nil {
			break // idle, closed, or refused by the endpoint
		}
		f.pc.WriteToUDPAddrPort(buf[:n], src)
	}
	f.mu.Lock()
	if f.flows[src] == fl {
		delete(f.flows, src)
	}
	f.mu.Unlock()
	fl.up.Close()
	done(fl.res, sluice.Outcome{})
}

func (f *udpStandIn) Prune(eps []sluice.Endpoint) {
	keep := make(map[string]bool, len(eps))
	for _, ep := range eps {
		keep[ep.Addr] = true
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	for src, fl := range f.flows {
		if !keep[fl.res.Endpoint.Addr] {
			delete(f.flows, src)
			fl.up.Close()
		}
	}
}

func (f *udpStandIn) Drain(context.Context) error {
	f.Close()
	f.wg.Wait()
	return nil
}

func (f *udpStandIn) Close() error {
	f.mu.Lock()
	f.closed = true
	for src, fl := range f.flows {
		delete(f.flows, src)
		fl.up.Close()
	}
	f.mu.Unlock()
	return f.pc.Close()
}
