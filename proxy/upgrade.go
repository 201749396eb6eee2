package proxy

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sluiceproxy/sluice"
)

// switchProtocols turns a 101 response into a tunnel between the client and the upstream.
func (x *exchange) switchProtocols(res *http.Response, pr sluice.PickResult, o sluice.Outcome) {
	back, ok := res.Body.(io.ReadWriteCloser)
	if !ok {
		res.Body.Close()
		x.report(pr, sluice.Outcome{Failure: sluice.ConnectionFailure, Latency: o.Latency})
		x.fail(&Error{Status: http.StatusBadGateway, Endpoint: pr.Endpoint.Addr, Tries: x.stats.Tries,
			Err: errors.New("transport returned a 101 response without a writable body")})
		return
	}
	if got := upgradeType(res.Header); !strings.EqualFold(got, x.upgrade) {
		back.Close()
		x.report(pr, sluice.Outcome{Failure: sluice.ConnectionFailure, Latency: o.Latency})
		x.fail(&Error{Status: http.StatusBadGateway, Endpoint: pr.Endpoint.Addr, Tries: x.stats.Tries,
			Err: errors.New("upstream switched to " + got + ", not the requested " + x.upgrade)})
		return
	}
	conn, brw, err := http.NewResponseController(x.rw).Hijack()
	if err != nil {
		back.Close()
		x.report(pr, o)
		x.fail(&Error{Status: http.StatusBadGateway, Endpoint: pr.Endpoint.Addr, Tries: x.stats.Tries,
			Err: errors.New("cannot switch protocols on this connection: " + err.Error())})
		return
	}
	x.stats.Status = http.StatusSwitchingProtocols
	x.stats.Upgraded = true

	// The 101 head: the upstream's fields (Connection and Upgrade included, they are the
	// point), after any the handler chain set.
	h := x.rw.Header()
	for k, vv := range res.Header {
		h[k] = vv
	}
	res.Header = h
	res.Body = nil
	// A 101 head the client never got must not start a tunnel: the client would take the
	// upstream's bytes for a reply to its handshake.
	if err = res.Write(brw); err == nil {
		err = brw.Flush()
	}
	if err != nil {
		conn.Close()
		back.Close()
		x.stats.Failure = sluice.Canceled
		x.report(pr, o)
		return
	}
	x.stats.Bytes = x.p.tunnels.run(conn, brw.Reader, back, pr.Endpoint.Addr, x.p.idle, strings.EqualFold(x.upgrade, "websocket"))
	x.report(pr, o)
}

// tunnels tracks the upgraded connections of a Proxy, so that Shutdown can close them.
type tunnels struct {
	mu      sync.Mutex // mu guards the fields below
	active  map[*tunnel]struct{}
	idle    chan struct{} // closed when active becomes empty; nil while nobody waits
	closing bool          // Shutdown was called: new tunnels are closed as they start
}

type tunnel struct {
	addr   string // the endpoint's address, for CloseTunnels
	client net.Conn
	back   io.ReadWriteCloser
	once   sync.Once
	// toClient and toBack are the directions of a WebSocket tunnel, nil for other protocols.
	toClient, toBack *wsStream
}

// goAway starts WebSocket's closing handshake with both peers, sending each a close frame
// "going away" where its stream is between two frames. It reports whether any was sent.
func (t *tunnel) goAway() bool {
	if t.toClient == nil {
		return false
	}
	c := t.toClient.goAway(t.client, false)
	b := t.toBack.goAway(t.back, true)
	return c || b
}

func (t *tunnel) close() {
	t.once.Do(func() {
		t.client.Close()
		t.back.Close()
	})
}

// run copies between the hijacked client connection (read through clientR, which may hold
// bytes the server buffered) and the upstream until either side ends, then closes both. A
// tunnel with no traffic for idle is closed. A WebSocket tunnel (ws) follows its frames, so
// that Shutdown can close it cleanly. It returns the bytes sent to the client.
func (ts *tunnels) run(client net.Conn, clientR io.Reader, back io.ReadWriteCloser, addr string, idle time.Duration, ws bool) int64 {
	t := &tunnel{addr: addr, client: client, back: back}
	if ws {
		t.toClient, t.toBack = new(wsStream), new(wsStream)
	}
	ts.mu.Lock()
	if ts.closing {
		// The upgrade finished after Shutdown closed the others: this one would outlive
		// the drain.
		ts.mu.Unlock()
		t.close()
		return 0
	}
	if ts.active == nil {
		ts.active = make(map[*tunnel]struct{})
	}
	ts.active[t] = struct{}{}
	ts.mu.Unlock()
	defer ts.remove(t)

	var last atomic.Int64 // unix nanoseconds of the last byte in either direction
	last.Store(time.Now().UnixNano())
	if idle > 0 {
		var timer atomic.Pointer[time.Timer]
		check := func() {
			quiet := time.Duration(time.Now().UnixNano() - last.Load())
			if quiet >= idle {
				t.close()
				return
			}
			timer.Load().Reset(idle - quiet)
		}
		stored := make(chan struct{}) // closed once the timer is stored, for the first check
		timer.Store(time.AfterFunc(idle, func() { <-stored; check() }))
		close(stored)
		defer func() { timer.Load().Stop() }()
	}

	up := make(chan struct{})
	go func() {
		pump(back, clientR, &last, t.toBack)
		t.close()
		close(up)
	}()
	n := pump(client, back, &last, t.toClient)
	t.close()
	<-up
	return n
}

// pump copies src to dst until either fails, noting the time of every chunk. The writes of a
// WebSocket tunnel go through its stream s.
func pump(dst io.Writer, src io.Reader, last *atomic.Int64, s *wsStream) int64 {
	bp := bufPool.Get().(*[]byte)
	defer bufPool.Put(bp)
	buf := *bp
	var n int64
	for {
		nr, err := src.Read(buf)
		if nr > 0 {
			last.Store(time.Now().UnixNano())
			var nw int
			var werr error
			if s != nil {
				nw, werr = s.write(dst, buf[:nr])
			} else {
				nw, werr = dst.Write(buf[:nr])
			}
			n += int64(nw)
			if werr != nil {
				return n
			}
		}
		if err != nil {
			return n
		}
	}
}

func (ts *tunnels) remove(t *tunnel) {
	ts.mu.Lock()
	delete(ts.active, t)
	if len(ts.active) == 0 && ts.idle != nil {
		close(ts.idle)
		ts.idle = nil
	}
	ts.mu.Unlock()
}

// Upgraded returns the number of upgraded (WebSocket and other) connections open through p.
func (p *Proxy) Upgraded() int {
	p.tunnels.mu.Lock()
	defer p.tunnels.mu.Unlock()
	return len(p.tunnels.active)
}

// InFlight returns the number of requests p is serving, upgraded connections included: a
// request whose connection switched protocols is served until its tunnel closes. A proxy
// taken out of use (by a route change, say) still has work to drain until InFlight is 0.
func (p *Proxy) InFlight() int { return int(p.inflight.Load()) }

// CloseTunnels closes the upgraded connections through p whose endpoint address keep
// rejects, and returns how many it closed. It does not wait for them to end. A WebSocket
// tunnel is closed as Shutdown closes one: both peers are sent close 1001 "going away" and
// are cut off a second later if they have not closed by then; other tunnels are closed at
// once. Upgrades still in progress are not affected.
//
// It is for endpoints that left the service while still running: requests stop reaching
// them as soon as the balancer has the new set, but a tunnel stays with the endpoint it was
// opened to until someone closes it (package pool does, after Options.TunnelGrace). keep is
// called with p's tunnels locked and must not call back into p.
func (p *Proxy) CloseTunnels(keep func(addr string) bool) int {
	ts := &p.tunnels
	ts.mu.Lock()
	var gone []*tunnel
	for t := range ts.active {
		if !keep(t.addr) {
			gone = append(gone, t)
		}
	}
	ts.mu.Unlock()
	for _, t := range gone {
		if t.goAway() {
			time.AfterFunc(goAwayGrace, t.close)
		} else {
			t.close()
		}
	}
	return len(gone)
}

// Shutdown closes every upgraded connection through p, and any that completes its upgrade
// later, then waits until those tunnels have ended or ctx ends, and closes idle upstream
// connections. It returns nil, or ctx.Err() when ctx ended first.
//
// It does not wait for tunnels to end by themselves: a WebSocket is usually held open for as
// long as its peers run, so waiting would only spend the whole deadline. A WebSocket tunnel
// is closed the way a server going down closes one: each peer is sent a close frame with
// status 1001 "going away" (where its stream is between two frames), and the upstream, having
// answered it, closes its connection, which ends the tunnel. Peers that do not answer within
// a second are cut off. Other upgraded connections are closed at once. Either way the peers
// are expected to reconnect, which lands them on a proxy that is not draining.
//
// Call it once the server in front stopped taking requests (see Drain), so that requests in
// flight finish first.
func (p *Proxy) Shutdown(ctx context.Context) error {
	defer p.CloseIdleConnections()
	ts := &p.tunnels
	ts.mu.Lock()
	ts.closing = true
	left := make([]*tunnel, 0, len(ts.active))
	for t := range ts.active {
		left = append(left, t)
	}
	var idle chan struct{}
	if len(ts.active) > 0 {
		if ts.idle == nil {
			ts.idle = make(chan struct{})
		}
		idle = ts.idle
	}
	ts.mu.Unlock()
	// The timers are armed before any close frame is written: a write blocked by a peer that
	// reads nothing is then ended by the close at the end of the grace.
	for _, t := range left {
		defer time.AfterFunc(goAwayGrace, t.close).Stop()
	}
	for _, t := range left {
		if !t.goAway() {
			t.close()
		}
	}
	if idle == nil {
		return nil
	}
	select {
	case <-idle:
		return nil
	case <-ctx.Done():
		for _, t := range left {
			t.close()
		}
		return ctx.Err()
	}
}

// Server is what Drain shuts down: an *http.Server, or an *h1.Server serving HTTP/1.1 in
// front of one.
type Server interface {
	Shutdown(ctx context.Context) error
	Close() error
}

// Drain shuts servers down gracefully, all at once: they stop accepting connections and let
// in-flight requests finish (http.Server.Shutdown). Only when every server is done does it
// close the upgraded connections of proxies (Proxy.Shutdown) and wait for their tunnels to
// end, so that a proxy served on several servers (HTTP and HTTPS) keeps its tunnels until no
// server has requests left. It returns nil when all that is done before ctx ends; otherwise
// whatever is left is closed and the first error (ctx.Err()) is returned.
//
// A typical main:
//
//	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM)
//	defer stop()
//	go srv.ListenAndServe()
//	<-ctx.Done()
//	drainCtx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
//	defer cancel()
//	if err := proxy.Drain(drainCtx, []proxy.Server{srv}, p); err != nil {
//		// Requests were still running at the deadline and were cut off.
//	}
func Drain(ctx context.Context, servers []Server, proxies ...*Proxy) error {
	errs := make([]error, len(servers))
	var wg sync.WaitGroup
	for i, srv := range servers {
		wg.Go(func() {
			if errs[i] = srv.Shutdown(ctx); errs[i] != nil {
				srv.Close()
			}
		})
	}
	wg.Wait()
	var err error
	for _, e := range errs {
		if e != nil {
			err = e
			break
		}
	}
	for _, p := range proxies {
		if perr := p.Shutdown(ctx); perr != nil && err == nil {
			err = perr
		}
	}
	return err
}

// ServerProtocols returns the protocols a server in front of a Proxy should accept: HTTP/1.1,
// HTTP/2 over TLS (negotiated with ALPN when the server has certificates) and HTTP/2 over
// cleartext with prior knowledge (h2c, RFC 9113 §3.3), which gRPC clients inside a cluster
// use. The deprecated "Upgrade: h2c" dance is not supported. Set it as http.Server.Protocols.
func ServerProtocols() *http.Protocols {
	return protocols(true, true, true)
}
