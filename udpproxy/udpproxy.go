package udpproxy

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sluiceproxy/sluice"
)

// ErrClosed is returned by Serve once the proxy has been shut down or closed, and by Serve
// called after that.
var ErrClosed = errors.New("udpproxy: proxy closed")

// Options configures a Proxy. Only Picker is required; every zero field means the documented
// default.
type Options struct {
	// Picker chooses the endpoint of every new flow, and of a flow whose endpoint refused
	// it. It is asked with PickInfo.Client set to the flow's client address (no Request), so
	// balancer.Maglev{} pins clients by IP. Required.
	Picker sluice.Picker

	// Observer, when not nil, is told the outcome of every pick, in addition to the pick's
	// Done: a ConnectFailure when the endpoint refused the flow, else the flow's outcome when
	// it ends. Passive health checking plugs in here.
	Observer sluice.Observer

	// IdleTimeout ends a flow after this long without a datagram in either direction. Zero
	// means 60s, Envoy's udp_proxy default: longer than the 30s Linux keeps a conntrack
	// entry that saw no reply, shorter than the 120s it keeps one that did, and long enough
	// for DNS, QUIC (whose own idle timeout is usually 30s) and game or VoIP sessions that
	// send keep-alives. Each open flow holds a socket and a goroutine until it expires.
	IdleTimeout time.Duration

	// MaxFlows bounds the flows open at once, over every listening socket. Zero means 10,000.
	// The datagram that would open one more is dropped and counted in Stats.OverLimit; open
	// flows are never evicted to make room (see "The flow bound" in the package doc).
	MaxFlows int

	// MaxDatagramSize is the largest datagram forwarded, in bytes, either way. Zero means
	// 65,535, which no UDP datagram exceeds (65,507 bytes is the most IPv4 carries). A larger
	// datagram is dropped and counted in Stats.Oversized, never forwarded cut short.
	MaxDatagramSize int

	// MaxAttempts bounds the endpoints one flow tries when each refuses it before it got a
	// reply (ICMP port unreachable), counting the first. Zero means 3. When the last one
	// refuses too, the flow ends; the client's next datagram opens a new flow.
	MaxAttempts int

	// Logger receives flow events at debug level and, at most once a second, a warning that
	// the flow bound is dropping datagrams. Nil means slog.Default().
	Logger *slog.Logger
}

// Stats are a Proxy's counters. Counts of dropped datagrams are since the Proxy was made.
type Stats struct {
	// Active is the number of flows open now.
	Active int
	// Opened is the number of flows opened.
	Opened uint64
	// OverLimit counts datagrams dropped because opening their flow would have exceeded
	// Options.MaxFlows.
	OverLimit uint64
	// NoEndpoint counts datagrams dropped because no endpoint could be picked and dialled
	// for their new flow.
	NoEndpoint uint64
	// Draining counts datagrams of new clients dropped because Shutdown was called.
	Draining uint64
	// Oversized counts datagrams dropped, either way, for exceeding Options.MaxDatagramSize.
	Oversized uint64
	// ConnectFailures counts picks whose endpoint refused the flow (ICMP unreachable before
	// any reply) or could not be dialled: the ConnectFailure outcomes reported.
	ConnectFailures uint64
}

// Proxy forwards UDP datagrams between clients and the endpoints of a Picker, one flow per
// client address. Create it with New; it is safe for concurrent use.
type Proxy struct {
	picker   sluice.Picker
	observer sluice.Observer
	idle     time.Duration
	maxFlows int
	maxSize  int
	attempts int
	log      *slog.Logger
	epoch    time.Time // the zero of every flow clock reading (monotonic)

	bufs sync.Pool // *[]byte of maxSize+1 bytes: the reply buffers flows borrow

	mu        sync.Mutex // protects listeners, active, shutdown and drained
	listeners map[*listener]struct{}
	active    int           // open flows, and flows being opened
	shutdown  bool          // Shutdown or Close was called: no new flows or listeners
	drained   chan struct{} // closed when active reaches 0 after Shutdown; nil before

	// Stats' counters.
	opened, overLimit, noEndpoint, draining, oversized, connectFailures atomic.Uint64

	lastWarn atomic.Int64 // flow clock of the last flow-bound warning
}

// New returns a Proxy for opts. The error names the field that is wrong.
func New(opts Options) (*Proxy, error) {
	p := &Proxy{
		picker:    opts.Picker,
		observer:  opts.Observer,
		idle:      opts.IdleTimeout,
		maxFlows:  opts.MaxFlows,
		maxSize:   opts.MaxDatagramSize,
		attempts:  opts.MaxAttempts,
		log:       opts.Logger,
		epoch:     time.Now(),
		listeners: map[*listener]struct{}{},
	}
	switch {
	case p.picker == nil:
		return nil, errors.New("udpproxy: Picker is required")
	case p.idle < 0:
		return nil, fmt.Errorf("udpproxy: IdleTimeout must be ≥ 0, got %v", p.idle)
	case p.maxFlows < 0:
		return nil, fmt.Errorf("udpproxy: MaxFlows must be ≥ 0, got %d", p.maxFlows)
	case p.maxSize < 0 || p.maxSize > 65535:
		return nil, fmt.Errorf("udpproxy: MaxDatagramSize must be between 0 and 65535, got %d", p.maxSize)
	case p.attempts < 0:
		return nil, fmt.Errorf("udpproxy: MaxAttempts must be ≥ 0, got %d", p.attempts)
	}
	if p.idle == 0 {
		p.idle = 60 * time.Second
	}
	if p.maxFlows == 0 {
		p.maxFlows = 10000
	}
	if p.maxSize == 0 {
		p.maxSize = 65535
	}
	if p.attempts == 0 {
		p.attempts = 3
	}
	if p.log == nil {
		p.log = slog.Default()
	}
	size := p.maxSize + 1 // one byte more than allowed, so that a read that fills it was too big
	p.bufs.New = func() any { b := make([]byte, size); return &b }
	return p, nil
}

// Stats returns the proxy's counters.
func (p *Proxy) Stats() Stats {
	p.mu.Lock()
	active := p.active
	p.mu.Unlock()
	return Stats{
		Active:          active,
		Opened:          p.opened.Load(),
		OverLimit:       p.overLimit.Load(),
		NoEndpoint:      p.noEndpoint.Load(),
		Draining:        p.draining.Load(),
		Oversized:       p.oversized.Load(),
		ConnectFailures: p.connectFailures.Load(),
	}
}

// now reads the flow clock: nanoseconds since the proxy was made, never 0.
func (p *Proxy) now() int64 { return int64(time.Since(p.epoch)) + 1 }

// listener is one socket Serve reads from, and the flows of its clients.
type listener struct {
	pc *net.UDPConn

	mu     sync.Mutex // protects flows and closed
	flows  map[netip.AddrPort]*flow
	closed bool // no flow may be added: the listener's flows are being ended

	wg sync.WaitGroup // the flows' goroutines; Add only under mu while !closed
}

// Serve reads datagrams from pc and forwards them, each to its client's flow, until pc fails
// or the proxy is shut down or closed; it then ends the flows it opened, closes pc and
// returns. It returns ErrClosed after Shutdown or Close, else the read error.
//
// Serve runs on the caller's goroutine and starts one more per flow, which waits for the
// endpoint's replies and writes them to the client through pc, so that the client sees them
// come from the address it sent to. Serve may be called with several sockets (IPv4 and IPv6,
// say); each has flows of its own, and Options.MaxFlows bounds them all together.
//
// Replies leave pc from the address the kernel chooses for the client's route: bind pc to a
// specific address, not a wildcard, on a host that has several. Serve takes a *net.UDPConn
// rather than a net.PacketConn for its ReadFromUDPAddrPort and WriteToUDPAddrPort, which
// allocate nothing; a burst of datagrams larger than pc's receive buffer (pc.SetReadBuffer)
// is dropped by the kernel before Serve sees it.
func (p *Proxy) Serve(pc *net.UDPConn) error {
	l := &listener{pc: pc, flows: map[netip.AddrPort]*flow{}}
	p.mu.Lock()
	if p.shutdown {
		p.mu.Unlock()
		pc.Close()
		return ErrClosed
	}
	p.listeners[l] = struct{}{}
	p.mu.Unlock()

	err := p.serve(l)

	l.end()
	l.pc.Close()
	l.wg.Wait()
	p.mu.Lock()
	delete(p.listeners, l)
	shutdown := p.shutdown
	p.mu.Unlock()
	if shutdown {
		return ErrClosed
	}
	return err
}

// serve is Serve's loop: the hot path of every datagram from a client.
func (p *Proxy) serve(l *listener) error {
	buf := make([]byte, p.maxSize+1)
	for {
		n, src, err := l.pc.ReadFromUDPAddrPort(buf)
		if err != nil {
			return err
		}
		if n > p.maxSize {
			p.oversized.Add(1)
			continue
		}
		l.mu.Lock()
		f := l.flows[src]
		l.mu.Unlock()
		if f == nil {
			if f = p.open(l, src); f == nil {
				continue
			}
		}
		f.send(buf[:n])
	}
}

// end marks l closed, so that no flow is added to it, and ends its flows.
func (l *listener) end() {
	l.mu.Lock()
	l.closed = true
	flows := make([]*flow, 0, len(l.flows))
	for _, f := range l.flows {
		flows = append(flows, f)
	}
	l.mu.Unlock()
	for _, f := range flows {
		f.stop(endClosed)
	}
}

// open opens the flow of a new client: it reserves a place under the flow bound, picks and
// dials an endpoint, and starts the goroutine that relays the endpoint's replies. It returns
// nil, and the datagram is dropped, when any of that fails.
func (p *Proxy) open(l *listener, src netip.AddrPort) *flow {
	p.mu.Lock()
	if p.shutdown {
		p.mu.Unlock()
		p.draining.Add(1)
		return nil
	}
	if p.active >= p.maxFlows {
		p.mu.Unlock()
		n := p.overLimit.Add(1)
		if now, last := p.now(), p.lastWarn.Load(); (last == 0 || now-last >= int64(time.Second)) &&
			p.lastWarn.CompareAndSwap(last, now) {
			p.log.Warn("udpproxy: flow bound reached, dropping datagrams of new clients",
				"max_flows", p.maxFlows, "dropped", n)
		}
		return nil
	}
	p.active++
	p.mu.Unlock()

	f := &flow{p: p, l: l, client: src}
	u := p.connect(f)
	if u == nil {
		p.noEndpoint.Add(1)
		p.release()
		return nil
	}
	f.up.Store(u)
	f.last.Store(p.now())
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		u.conn.Close()
		p.report(u, sluice.Outcome{Failure: sluice.Canceled})
		p.release()
		return nil
	}
	l.flows[src] = f
	l.wg.Add(1)
	l.mu.Unlock()
	p.opened.Add(1)
	if p.debugging() {
		p.log.Debug("udpproxy: flow opened", "client", src, "endpoint", u.pick.Endpoint.Addr)
	}
	go f.run()
	return f
}

// release gives back a flow's place under the bound.
func (p *Proxy) release() {
	p.mu.Lock()
	p.active--
	if p.active == 0 && p.drained != nil {
		close(p.drained)
		p.drained = nil
	}
	p.mu.Unlock()
}

// connect picks an endpoint for f and dials it, trying the next pick when a dial fails,
// until f has tried Options.MaxAttempts endpoints. It returns nil when no endpoint is left.
func (p *Proxy) connect(f *flow) *upstream {
	for len(f.tried) < p.attempts {
		pr, err := p.picker.Pick(sluice.PickInfo{Client: f.client, Tried: f.tried})
		if err != nil {
			p.log.Debug("udpproxy: no endpoint", "client", f.client, "error", err)
			return nil
		}
		f.tried = append(f.tried, pr.Endpoint.Addr)
		conn, err := dial(pr.Endpoint.Addr)
		if err != nil {
			p.connectFailures.Add(1)
			p.log.Debug("udpproxy: dial failed", "endpoint", pr.Endpoint.Addr, "error", err)
			p.report(&upstream{pick: pr}, sluice.Outcome{Failure: sluice.ConnectFailure})
			continue
		}
		u := &upstream{conn: conn, pick: pr}
		if err := u.init(p); err != nil {
			conn.Close()
			p.report(u, sluice.Outcome{Failure: sluice.InternalFailure})
			return nil
		}
		return u
	}
	return nil
}

// dial opens a connected UDP socket to addr: an IP literal at once, a host name after
// resolving it.
func dial(addr string) (*net.UDPConn, error) {
	if ap, err := netip.ParseAddrPort(addr); err == nil {
		return net.DialUDP("udp", nil, net.UDPAddrFromAddrPort(ap))
	}
	c, err := net.Dial("udp", addr)
	if err != nil {
		return nil, err
	}
	return c.(*net.UDPConn), nil
}

// report tells u's pick and the Observer the outcome of u, once.
func (p *Proxy) report(u *upstream, o sluice.Outcome) {
	if !u.reported.CompareAndSwap(false, true) {
		return
	}
	if u.pick.Done != nil {
		u.pick.Done(o)
	}
	if p.observer != nil {
		p.observer.Observe(u.pick.Endpoint, o)
	}
}

// Prune ends every flow whose endpoint's Addr is not among eps, and returns how many it
// ended. The next datagram of such a flow's client opens a new flow, picked afresh.
//
// Without Prune a flow keeps its endpoint until it goes idle, even after the endpoint left
// the Picker's set: a client that sends more often than IdleTimeout stays on a deleted pod
// for ever. kube-proxy avoids that by deleting the conntrack entries of UDP endpoints that
// are no longer serving, so their traffic moves at once; call Prune with every set given to
// the balancer to do the same:
//
//	go src.Watch(ctx, func(eps []sluice.Endpoint) { bal.Update(eps); up.Prune(eps) })
//
// The endpoints' State is not looked at: a Terminating endpoint keeps its flows, as
// kube-proxy keeps the conntrack entries of serving, terminating endpoints.
func (p *Proxy) Prune(eps []sluice.Endpoint) int {
	keep := make(map[string]struct{}, len(eps))
	for _, ep := range eps {
		keep[ep.Addr] = struct{}{}
	}
	p.mu.Lock()
	ls := make([]*listener, 0, len(p.listeners))
	for l := range p.listeners {
		ls = append(ls, l)
	}
	p.mu.Unlock()
	var ended []*flow
	for _, l := range ls {
		l.mu.Lock()
		for src, f := range l.flows {
			u := f.up.Load()
			if _, ok := keep[u.pick.Endpoint.Addr]; !ok {
				delete(l.flows, src) // the client's next datagram opens a new flow at once
				ended = append(ended, f)
			}
		}
		l.mu.Unlock()
	}
	for _, f := range ended {
		f.stop(endPruned)
	}
	return len(ended)
}

// Shutdown stops opening flows — a datagram from a new client is dropped — and waits until
// every open flow has ended by going idle (Options.IdleTimeout without a datagram either
// way), then closes the listening sockets and returns nil. When ctx ends first it closes
// everything as Close does and returns ctx.Err(). Serve then returns ErrClosed.
//
// UDP has no end of session to wait for, so a flow that keeps sending keeps Shutdown
// waiting until ctx ends: give it a deadline.
func (p *Proxy) Shutdown(ctx context.Context) error {
	p.mu.Lock()
	p.shutdown = true
	var drained chan struct{}
	if p.active > 0 {
		if p.drained == nil {
			p.drained = make(chan struct{})
		}
		drained = p.drained
	}
	p.mu.Unlock()
	var err error
	if drained != nil {
		select {
		case <-drained:
		case <-ctx.Done():
			err = ctx.Err()
		}
	}
	p.Close()
	return err
}

// Close closes every listening socket and ends every flow at once, and returns when their
// goroutines have ended and their outcomes have been reported. Serve then returns ErrClosed.
func (p *Proxy) Close() error {
	p.mu.Lock()
	p.shutdown = true
	ls := make([]*listener, 0, len(p.listeners))
	for l := range p.listeners {
		ls = append(ls, l)
	}
	p.mu.Unlock()
	for _, l := range ls {
		l.end()
		l.pc.Close()
	}
	for _, l := range ls {
		l.wg.Wait()
	}
	return nil
}

// debugging reports whether debug lines are logged, so that their arguments are not built
// for nothing.
func (p *Proxy) debugging() bool { return p.log.Enabled(context.Background(), slog.LevelDebug) }
