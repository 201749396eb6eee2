package udpproxy_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/sluiceproxy/sluice"
	"github.com/sluiceproxy/sluice/balancer"
	"github.com/sluiceproxy/sluice/internal/idlecost"
	"github.com/sluiceproxy/sluice/udpproxy"
)

// wait is how long a test waits for something that should happen within milliseconds.
const wait = 5 * time.Second

// backend is a UDP echo server on loopback: it answers every datagram with its tag followed
// by the datagram, from a goroutine that allocates nothing.
type backend struct {
	addr  string
	conn  *net.UDPConn
	count atomic.Int64 // datagrams received

	mu      sync.Mutex
	sources map[netip.AddrPort]bool // the proxy sockets that sent to it: one per flow
}

func newBackend(t testing.TB, tag string) *backend {
	t.Helper()
	conn, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	require.NoError(t, err)
	b := &backend{addr: conn.LocalAddr().String(), conn: conn, sources: map[netip.AddrPort]bool{}}
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, 65536+len(tag))
		copy(buf, tag)
		var last netip.AddrPort
		for {
			n, src, err := conn.ReadFromUDPAddrPort(buf[len(tag):])
			if err != nil {
				return
			}
			b.count.Add(1)
			if src != last { // a map write per new source only, so that echoing allocates nothing
				last = src
				b.mu.Lock()
				b.sources[src] = true
				b.mu.Unlock()
			}
			conn.WriteToUDPAddrPort(buf[:len(tag)+n], src)
		}
	}()
	t.Cleanup(func() { conn.Close(); <-done })
	return b
}

// flows returns how many proxy sockets (flows) have sent to b.
func (b *backend) flows() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return len(b.sources)
}

// deadAddr returns a loopback UDP address where nothing listens, so that datagrams sent to
// it draw ICMP port unreachable.
func deadAddr(t *testing.T) string {
	t.Helper()
	conn, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	require.NoError(t, err)
	addr := conn.LocalAddr().String()
	require.NoError(t, conn.Close())
	return addr
}

// start serves a new Proxy for opts on a loopback socket, closed at the end of the test.
func start(t testing.TB, opts udpproxy.Options) (*udpproxy.Proxy, netip.AddrPort) {
	t.Helper()
	if opts.Logger == nil { // formatted, so that the debug lines are run too, and dropped
		opts.Logger = slog.New(slog.NewTextHandler(io.Discard, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	p, err := udpproxy.New(opts)
	require.NoError(t, err)
	pc, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	require.NoError(t, err)
	served := make(chan error, 1)
	go func() { served <- p.Serve(pc) }()
	t.Cleanup(func() {
		p.Close()
		assert.ErrorIs(t, <-served, udpproxy.ErrClosed, "Serve returns ErrClosed after Close")
	})
	return p, pc.LocalAddr().(*net.UDPAddr).AddrPort()
}

// client is an unconnected socket on ip (127.0.0.1 when empty), so that it can check where
// replies come from.
func client(t testing.TB, ip string) *net.UDPConn {
	t.Helper()
	if ip == "" {
		ip = "127.0.0.1"
	}
	c, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(netip.AddrPortFrom(netip.MustParseAddr(ip), 0)))
	require.NoError(t, err)
	t.Cleanup(func() { c.Close() })
	return c
}

// roundTrip sends msg to the proxy at to and returns the reply, which must come from to and
// end with msg (the backends echo behind a tag). Loopback drops datagrams when the machine is
// busy (softnet backlog overflows), so a datagram with no reply within a second is sent again,
// up to wait in all, and a late reply to an earlier send is skipped.
func roundTrip(t testing.TB, c *net.UDPConn, to netip.AddrPort, msg []byte) []byte {
	t.Helper()
	buf := make([]byte, 65536)
	deadline := time.Now().Add(wait)
	for time.Now().Before(deadline) {
		_, err := c.WriteToUDPAddrPort(msg, to)
		require.NoError(t, err)
		next := time.Now().Add(time.Second)
		if next.After(deadline) {
			next = deadline
		}
		require.NoError(t, c.SetReadDeadline(next))
		for {
			n, src, err := c.ReadFromUDPAddrPort(buf)
			if errors.Is(err, os.ErrDeadlineExceeded) {
				break // lost on the way: send again
			}
			require.NoError(t, err)
			assert.Equal(t, to, src, "the reply comes from the address the client sent to")
			if bytes.HasSuffix(buf[:n], msg) {
				return buf[:n]
			}
		}
	}
	require.FailNow(t, "no reply", "within %v", wait)
	return nil
}

// lockedBuffer is a bytes.Buffer a logger may write to while a test reads it.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// outcome is one pick's outcome as reported to Done or to the Observer.
type outcome struct {
	addr string
	o    sluice.Outcome
}

// recorder records the outcomes a Proxy reports, through the picks' Done and the Observer.
type recorder struct {
	mu       sync.Mutex
	done     []outcome
	observed []outcome
	picks    []sluice.PickInfo
}

// wrap returns pk with every pick's Done recorded.
func (r *recorder) wrap(pk sluice.Picker) sluice.Picker {
	return sluice.PickerFunc(func(info sluice.PickInfo) (sluice.PickResult, error) {
		res, err := pk.Pick(info)
		if err != nil {
			return res, err
		}
		r.mu.Lock()
		info.Tried = slices.Clone(info.Tried)
		r.picks = append(r.picks, info)
		r.mu.Unlock()
		inner := res.Done
		var once atomic.Bool
		res.Done = func(o sluice.Outcome) {
			if !once.CompareAndSwap(false, true) {
				panic("Done called twice for " + res.Endpoint.Addr)
			}
			r.mu.Lock()
			r.done = append(r.done, outcome{res.Endpoint.Addr, o})
			r.mu.Unlock()
			if inner != nil {
				inner(o)
			}
		}
		return res, nil
	})
}

func (r *recorder) Observe(ep sluice.Endpoint, o sluice.Outcome) {
	r.mu.Lock()
	r.observed = append(r.observed, outcome{ep.Addr, o})
	r.mu.Unlock()
}

// noLeak waits until no more goroutines run than before, and fails with their stacks if that
// does not come.
func noLeak(t *testing.T, before int) {
	t.Helper()
	// Eventually calls the condition on a goroutine of its own: one more than before.
	if !assert.Eventually(t, func() bool { return runtime.NumGoroutine() <= before+1 }, wait, time.Millisecond,
		"no goroutine outlives the proxy") {
		buf := make([]byte, 1<<20)
		t.Logf("%s", buf[:runtime.Stack(buf, true)])
	}
}

func (r *recorder) pickCount() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.picks)
}

func (r *recorder) dones() []outcome {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.done)
}

func (r *recorder) observations() []outcome {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.observed)
}

// ordered picks the first endpoint of eps not yet tried, and the last one when all were.
func ordered(eps ...string) sluice.Picker {
	return sluice.PickerFunc(func(info sluice.PickInfo) (sluice.PickResult, error) {
		for _, a := range eps {
			if !slices.Contains(info.Tried, a) {
				return sluice.PickResult{Endpoint: sluice.Endpoint{Addr: a}}, nil
			}
		}
		return sluice.PickResult{Endpoint: sluice.Endpoint{Addr: eps[len(eps)-1]}}, nil
	})
}

func newBalancer(t testing.TB, policy balancer.Policy, backends ...*backend) *balancer.Balancer {
	t.Helper()
	bal, err := balancer.New(policy, balancer.Options{})
	require.NoError(t, err)
	var eps []sluice.Endpoint
	for _, b := range backends {
		eps = append(eps, sluice.Endpoint{Addr: b.addr})
	}
	bal.Update(eps)
	return bal
}

func TestNewNamesTheBadField(t *testing.T) {
	pk := ordered("127.0.0.1:1")
	for _, tc := range []struct {
		opts udpproxy.Options
		want string
	}{
		{udpproxy.Options{}, "udpproxy: Picker is required"},
		{udpproxy.Options{Picker: pk, IdleTimeout: -time.Second}, "udpproxy: IdleTimeout must be ≥ 0, got -1s"},
		{udpproxy.Options{Picker: pk, MaxFlows: -1}, "udpproxy: MaxFlows must be ≥ 0, got -1"},
		{udpproxy.Options{Picker: pk, MaxDatagramSize: 65536}, "udpproxy: MaxDatagramSize must be between 0 and 65535, got 65536"},
		{udpproxy.Options{Picker: pk, MaxDatagramSize: -1}, "udpproxy: MaxDatagramSize must be between 0 and 65535, got -1"},
		{udpproxy.Options{Picker: pk, MaxAttempts: -2}, "udpproxy: MaxAttempts must be ≥ 0, got -2"},
	} {
		t.Run(tc.want, func(t *testing.T) {
			_, err := udpproxy.New(tc.opts)
			assert.EqualError(t, err, tc.want)
		})
	}
	p, err := udpproxy.New(udpproxy.Options{Picker: pk})
	require.NoError(t, err, "only Picker is required")
	assert.Equal(t, udpproxy.Stats{}, p.Stats(), "a new proxy has counted nothing")
}

func TestForwardsBothWays(t *testing.T) {
	be := newBackend(t, "a:")
	rec := &recorder{}
	p, addr := start(t, udpproxy.Options{Picker: rec.wrap(ordered(be.addr)), Observer: rec})
	c := client(t, "")
	for i := range 3 {
		msg := fmt.Appendf(nil, "ping %d", i)
		assert.Equal(t, append([]byte("a:"), msg...), roundTrip(t, c, addr, msg))
	}
	assert.Equal(t, udpproxy.Stats{Active: 1, Opened: 1}, p.Stats(), "one client, one flow")
	assert.Equal(t, 1, be.flows(), "one flow, one upstream socket")
	require.Len(t, rec.picks, 1, "one pick per flow, not per datagram")
	assert.Equal(t, c.LocalAddr().(*net.UDPAddr).AddrPort(), rec.picks[0].Client,
		"the pick is told the client's address")
	assert.Nil(t, rec.picks[0].Request)
}

// Many clients at once each get their own replies, and only those.
func TestManyClientsGetOnlyTheirReplies(t *testing.T) {
	b1, b2 := newBackend(t, "1:"), newBackend(t, "2:")
	p, addr := start(t, udpproxy.Options{Picker: newBalancer(t, balancer.RoundRobin{}, b1, b2)})
	const clients, rounds = 32, 20
	var wg sync.WaitGroup
	for i := range clients {
		c := client(t, "")
		wg.Go(func() {
			var tag []byte
			for j := range rounds {
				msg := fmt.Appendf(nil, "client %d datagram %d", i, j)
				_, err := c.WriteToUDPAddrPort(msg, addr)
				if !assert.NoError(t, err) {
					return
				}
				buf := make([]byte, 1024)
				c.SetReadDeadline(time.Now().Add(wait))
				n, src, err := c.ReadFromUDPAddrPort(buf)
				if !assert.NoError(t, err) {
					return
				}
				assert.Equal(t, addr, src)
				reply := buf[:n]
				if j == 0 {
					tag = reply[:2]
				}
				assert.Equal(t, append(slices.Clone(tag), msg...), reply,
					"client %d gets its own datagram back, from the backend of its flow", i)
			}
		})
	}
	wg.Wait()
	s := p.Stats()
	assert.Equal(t, clients, s.Active)
	assert.Equal(t, uint64(clients), s.Opened)
	assert.Equal(t, clients/2, b1.flows(), "round robin alternates flows, not datagrams")
	assert.Equal(t, clients/2, b2.flows())
	assert.Equal(t, int64(clients*rounds), b1.count.Load()+b2.count.Load())
}

func TestIdleFlowsExpire(t *testing.T) {
	be := newBackend(t, "")
	rec := &recorder{}
	const idle = 250 * time.Millisecond
	p, addr := start(t, udpproxy.Options{Picker: rec.wrap(ordered(be.addr)), Observer: rec, IdleTimeout: idle})

	// A flow that carries a datagram either way more often than the timeout stays open.
	c := client(t, "")
	for begin := time.Now(); time.Since(begin) < 3*idle; {
		roundTrip(t, c, addr, []byte("still here"))
	}
	assert.Equal(t, uint64(1), p.Stats().Opened, "a busy flow does not expire")
	assert.Empty(t, rec.dones(), "nor is it reported")

	require.Eventually(t, func() bool { return p.Stats().Active == 0 }, wait, time.Millisecond,
		"a flow with no datagram for IdleTimeout ends")
	done := rec.dones()
	require.Len(t, done, 1, "Done is called once per flow")
	assert.Equal(t, be.addr, done[0].addr)
	assert.Equal(t, sluice.NoFailure, done[0].o.Failure, "a flow that got replies succeeded")
	assert.Positive(t, done[0].o.Latency, "timed from the first datagram to the first reply")
	assert.Less(t, done[0].o.Latency, idle)
	assert.Equal(t, done, rec.observations(), "the Observer hears what Done does")

	// A silent endpoint is not charged with the client's silence, nor credited.
	silent, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	require.NoError(t, err)
	defer silent.Close()
	rec2 := &recorder{}
	p2, addr2 := start(t, udpproxy.Options{Picker: rec2.wrap(ordered(silent.LocalAddr().String())), Observer: rec2, IdleTimeout: idle})
	_, err = c.WriteToUDPAddrPort([]byte("anyone?"), addr2)
	require.NoError(t, err)
	require.Eventually(t, func() bool { return p2.Stats().Opened == 1 && p2.Stats().Active == 0 }, wait, time.Millisecond)
	require.Len(t, rec2.dones(), 1)
	assert.Equal(t, sluice.Canceled, rec2.dones()[0].o.Failure,
		"a flow without replies reports Canceled, which balancers and health checks ignore")
	assert.False(t, rec2.dones()[0].o.Counts())
}

func TestFlowBound(t *testing.T) {
	be := newBackend(t, "")
	var logged lockedBuffer
	p, addr := start(t, udpproxy.Options{Picker: ordered(be.addr), MaxFlows: 2, Logger: slog.New(slog.NewTextHandler(&logged, nil))})
	c1, c2, c3 := client(t, ""), client(t, ""), client(t, "")
	roundTrip(t, c1, addr, []byte("one"))
	roundTrip(t, c2, addr, []byte("two"))

	_, err := c3.WriteToUDPAddrPort([]byte("three"), addr)
	require.NoError(t, err)
	require.Eventually(t, func() bool { return p.Stats().OverLimit == 1 }, wait, time.Millisecond,
		"the datagram of a third client is dropped and counted")

	assert.Equal(t, []byte("one again"), roundTrip(t, c1, addr, []byte("one again")), "open flows go on")
	assert.Equal(t, []byte("two again"), roundTrip(t, c2, addr, []byte("two again")))
	assert.Equal(t, udpproxy.Stats{Active: 2, Opened: 2, OverLimit: 1}, p.Stats())
	assert.Equal(t, int64(4), be.count.Load(), "the dropped datagram never reached the backend")
	assert.Contains(t, logged.String(), `level=WARN msg="udpproxy: flow bound reached, dropping datagrams of new clients" max_flows=2 dropped=1`)
}

// An endpoint with no socket on its port answers with ICMP port unreachable: the flow is
// charged a ConnectFailure and moves to the next endpoint.
func TestRefusedEndpointMovesTheFlow(t *testing.T) {
	dead, live := deadAddr(t), newBackend(t, "live:")
	rec := &recorder{}
	p, addr := start(t, udpproxy.Options{Picker: rec.wrap(ordered(dead, live.addr)), Observer: rec})
	c := client(t, "")

	_, err := c.WriteToUDPAddrPort([]byte("first"), addr)
	require.NoError(t, err)
	require.Eventually(t, func() bool { return p.Stats().ConnectFailures == 1 }, wait, time.Millisecond,
		"the refusal is noticed (and counted once the flow has its next endpoint)")
	// The first datagram went to the dead endpoint and is lost, as on any UDP path; the
	// client's next one (its retransmission) goes to the endpoint picked instead.
	assert.Equal(t, []byte("live:again"), roundTrip(t, c, addr, []byte("again")))

	rec.mu.Lock()
	assert.Equal(t, []string{dead}, rec.picks[1].Tried, "the re-pick is told what was tried")
	rec.mu.Unlock()
	done := rec.dones()
	require.Len(t, done, 1)
	assert.Equal(t, dead, done[0].addr)
	assert.Equal(t, sluice.ConnectFailure, done[0].o.Failure)
	assert.Equal(t, done, rec.observations(), "the Observer is told of the refusal")
	s := p.Stats()
	assert.Equal(t, 1, s.Active, "the flow survives its first endpoint")
	assert.Equal(t, uint64(1), s.Opened)

	p.Close()
	done = rec.dones()
	require.Len(t, done, 2, "each pick's Done is called once")
	assert.Equal(t, live.addr, done[1].addr)
	assert.Equal(t, sluice.NoFailure, done[1].o.Failure)
}

func TestEveryEndpointRefuses(t *testing.T) {
	d1, d2 := deadAddr(t), deadAddr(t)
	rec := &recorder{}
	p, addr := start(t, udpproxy.Options{Picker: rec.wrap(ordered(d1, d2)), Observer: rec, MaxAttempts: 2})
	c := client(t, "")
	for range 2 { // each datagram draws one refusal: the first one's, then the second one's
		n := p.Stats().ConnectFailures
		_, err := c.WriteToUDPAddrPort([]byte("hello?"), addr)
		require.NoError(t, err)
		require.Eventually(t, func() bool { return p.Stats().ConnectFailures == n+1 }, wait, time.Millisecond)
	}
	require.Eventually(t, func() bool { return p.Stats().Active == 0 }, wait, time.Millisecond,
		"after MaxAttempts refusals the flow ends")
	want := []outcome{{d1, sluice.Outcome{Failure: sluice.ConnectFailure}}, {d2, sluice.Outcome{Failure: sluice.ConnectFailure}}}
	got := rec.dones()
	for i := range got {
		got[i].o.Latency = 0
	}
	assert.Equal(t, want, got)
	assert.Len(t, rec.observations(), 2)
}

// LeastRequest counts flows in flight, since Done is called when a flow ends: flows spread
// evenly, and ended flows stop counting.
func TestLeastRequestSpreadsFlows(t *testing.T) {
	b1, b2 := newBackend(t, "1"), newBackend(t, "2")
	p, addr := start(t, udpproxy.Options{Picker: newBalancer(t, balancer.LeastRequest{}, b1, b2), IdleTimeout: time.Hour})
	for range 10 {
		roundTrip(t, client(t, ""), addr, []byte("x")) // the client stays open until cleanup
	}
	assert.Equal(t, 5, b1.flows(), "least-request puts every flow on the endpoint with fewer")
	assert.Equal(t, 5, b2.flows())

	// End b1's flows: Prune as if b1 had gone, then restore it. b1 now has none in flight, so
	// the next flows all go there.
	require.Equal(t, 5, p.Prune([]sluice.Endpoint{{Addr: b2.addr}}))
	require.Eventually(t, func() bool { return p.Stats().Active == 5 }, wait, time.Millisecond)
	for range 4 {
		roundTrip(t, client(t, ""), addr, []byte("y"))
	}
	assert.Equal(t, 9, b1.flows(), "the flows that ended were given back to the balancer")
	assert.Equal(t, 5, b2.flows())
}

// Maglev's zero key hashes PickInfo.Client's IP: every socket of one client IP lands on one
// endpoint, and IPs spread.
func TestMaglevClientIPAffinity(t *testing.T) {
	backends := []*backend{newBackend(t, "0"), newBackend(t, "1"), newBackend(t, "2")}
	_, addr := start(t, udpproxy.Options{Picker: newBalancer(t, balancer.Maglev{}, backends...)})
	used := map[byte]bool{}
	for i := range 24 {
		ip := fmt.Sprintf("127.0.0.%d", 10+i)
		var tag byte
		for j := range 3 { // three sockets, three flows, one IP
			got := roundTrip(t, client(t, ip), addr, []byte("k"))
			if j == 0 {
				tag = got[0]
			}
			assert.Equal(t, tag, got[0], "every flow of %s goes to one endpoint", ip)
		}
		used[tag] = true
	}
	assert.Len(t, used, 3, "24 client IPs spread over all three endpoints")
}

func TestDatagramSizes(t *testing.T) {
	be := newBackend(t, "")
	p, addr := start(t, udpproxy.Options{Picker: ordered(be.addr)})
	c := client(t, "")
	require.NoError(t, c.SetReadBuffer(1<<20))
	for _, n := range []int{0, 1, 512, 1472, 9000, 65507} {
		msg := make([]byte, n)
		for i := range msg {
			msg[i] = byte(i*7 + n)
		}
		got := roundTrip(t, c, addr, msg)
		assert.True(t, bytes.Equal(msg, got), "a %d-byte datagram comes back intact (got %d bytes)", n, len(got))
	}
	assert.Zero(t, p.Stats().Oversized)
}

// A datagram over MaxDatagramSize is dropped and counted, either way; never cut short.
func TestOversizedDatagramsAreDropped(t *testing.T) {
	be := newBackend(t, "++") // the echo adds two bytes, so that 999 and 1000 go out too long
	p, addr := start(t, udpproxy.Options{Picker: ordered(be.addr), MaxDatagramSize: 1000})
	c := client(t, "")

	assert.Equal(t, append([]byte("++"), make([]byte, 998)...), roundTrip(t, c, addr, make([]byte, 998)))
	_, err := c.WriteToUDPAddrPort(make([]byte, 1001), addr)
	require.NoError(t, err)
	require.Eventually(t, func() bool { return p.Stats().Oversized == 1 }, wait, time.Millisecond,
		"a datagram from the client over the limit is counted")
	_, err = c.WriteToUDPAddrPort(make([]byte, 999), addr)
	require.NoError(t, err)
	require.Eventually(t, func() bool { return p.Stats().Oversized == 2 }, wait, time.Millisecond,
		"and so is one from the endpoint")
	assert.Equal(t, int64(2), be.count.Load(), "only the datagrams within the limit reached the backend")

	assert.Equal(t, []byte("++ok"), roundTrip(t, c, addr, []byte("ok")), "the flow goes on")
}

func TestPruneMovesFlowsAtOnce(t *testing.T) {
	b1, b2 := newBackend(t, "1"), newBackend(t, "2")
	bal := newBalancer(t, balancer.RoundRobin{}, b1)
	rec := &recorder{}
	p, addr := start(t, udpproxy.Options{Picker: rec.wrap(bal), IdleTimeout: time.Hour})
	c := client(t, "")
	assert.Equal(t, []byte("1a"), roundTrip(t, c, addr, []byte("a")))

	eps := []sluice.Endpoint{{Addr: b2.addr}}
	bal.Update(eps)
	assert.Equal(t, []byte("1b"), roundTrip(t, c, addr, []byte("b")),
		"without Prune an open flow keeps its endpoint after it left the set")
	assert.Equal(t, 1, p.Prune(eps))
	assert.Equal(t, []byte("2c"), roundTrip(t, c, addr, []byte("c")), "after Prune the next datagram is picked afresh")
	assert.Equal(t, 0, p.Prune(eps), "flows to endpoints in the set are kept")
	assert.Equal(t, uint64(2), p.Stats().Opened)
	require.Eventually(t, func() bool { return len(rec.dones()) == 1 }, wait, time.Millisecond)
	assert.Equal(t, b1.addr, rec.dones()[0].addr)
	assert.Equal(t, sluice.NoFailure, rec.dones()[0].o.Failure)
}

func TestNoEndpoint(t *testing.T) {
	p, addr := start(t, udpproxy.Options{Picker: newBalancer(t, balancer.RoundRobin{})})
	_, err := client(t, "").WriteToUDPAddrPort([]byte("x"), addr)
	require.NoError(t, err)
	require.Eventually(t, func() bool { return p.Stats().NoEndpoint == 1 }, wait, time.Millisecond)
	assert.Zero(t, p.Stats().Active)
}

func TestShutdownWaitsForFlowsToIdle(t *testing.T) {
	before := runtime.NumGoroutine()
	be := newBackend(t, "")
	p, err := udpproxy.New(udpproxy.Options{Picker: ordered(be.addr), IdleTimeout: 500 * time.Millisecond})
	require.NoError(t, err)
	pc, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	require.NoError(t, err)
	addr := pc.LocalAddr().(*net.UDPAddr).AddrPort()
	served := make(chan error, 1)
	go func() { served <- p.Serve(pc) }()
	old := client(t, "")
	roundTrip(t, old, addr, []byte("before"))

	shut := make(chan error, 1)
	go func() { shut <- p.Shutdown(context.Background()) }()
	require.Eventually(t, func() bool {
		roundTrip(t, old, addr, []byte("keep-alive"))
		_, err := client(t, "").WriteToUDPAddrPort([]byte("new"), addr)
		require.NoError(t, err)
		return p.Stats().Draining > 0
	}, wait, time.Millisecond, "once Shutdown is called, new clients are dropped")
	opened := p.Stats().Opened
	assert.Equal(t, []byte("during"), roundTrip(t, old, addr, []byte("during")), "open flows go on")
	assert.Equal(t, opened, p.Stats().Opened, "and none is opened")
	require.NoError(t, <-shut, "Shutdown returns once the flow has gone idle")
	assert.ErrorIs(t, <-served, udpproxy.ErrClosed)
	assert.ErrorIs(t, p.Serve(pc), udpproxy.ErrClosed, "Serve after Shutdown")

	be.conn.Close() // the backend's goroutine ends too
	noLeak(t, before)
}

func TestShutdownDeadlineCloses(t *testing.T) {
	be := newBackend(t, "")
	rec := &recorder{}
	p, addr := start(t, udpproxy.Options{Picker: rec.wrap(ordered(be.addr)), IdleTimeout: time.Hour})
	roundTrip(t, client(t, ""), addr, []byte("x"))
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	assert.ErrorIs(t, p.Shutdown(ctx), context.Canceled, "a flow still open when ctx ends")
	assert.Equal(t, udpproxy.Stats{Opened: 1}, p.Stats(), "Shutdown closed it")
	require.Len(t, rec.dones(), 1, "and reported it before returning")
}

func TestCloseLeaksNoGoroutine(t *testing.T) {
	be := newBackend(t, "")
	before := runtime.NumGoroutine()
	p, err := udpproxy.New(udpproxy.Options{Picker: ordered(be.addr), IdleTimeout: time.Hour})
	require.NoError(t, err)
	var served sync.WaitGroup
	var addrs []netip.AddrPort
	for range 2 { // two listening sockets
		pc, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
		require.NoError(t, err)
		addrs = append(addrs, pc.LocalAddr().(*net.UDPAddr).AddrPort())
		served.Go(func() { assert.ErrorIs(t, p.Serve(pc), udpproxy.ErrClosed) })
	}
	for i := range 20 {
		roundTrip(t, client(t, ""), addrs[i%2], []byte("x"))
	}
	require.Equal(t, 20, p.Stats().Active)
	require.Greater(t, runtime.NumGoroutine(), before+20, "a goroutine per flow")
	require.NoError(t, p.Close())
	assert.Zero(t, p.Stats().Active, "Close ends every flow before it returns")
	served.Wait()
	noLeak(t, before)
}

// Forwarding a datagram on an open flow allocates nothing, either way.
func TestForwardingAllocatesNothing(t *testing.T) {
	be := newBackend(t, "")
	_, addr := start(t, udpproxy.Options{Picker: ordered(be.addr)})
	c, err := net.DialUDP("udp", nil, net.UDPAddrFromAddrPort(addr))
	require.NoError(t, err)
	defer c.Close()
	msg, buf := []byte("0123456789abcdef"), make([]byte, 64)
	roundTrip := func() {
		if _, err := c.Write(msg); err != nil {
			panic(err)
		}
		if n, err := c.Read(buf); err != nil || n != len(msg) {
			panic(fmt.Sprint(n, err))
		}
	}
	require.NoError(t, c.SetReadDeadline(time.Now().Add(time.Minute)))
	roundTrip() // opens the flow
	// Everything allocated in the process counts: the client's round trip and the echo
	// backend allocate nothing, so what is left is the proxy's, both ways.
	allocs := testing.AllocsPerRun(1000, roundTrip)
	pin := 0.0
	if raceEnabled {
		// The race detector's sync.Pool drops a quarter of what is put in it, and a dropped
		// buffer is allocated again: under one allocation per round trip on average.
		pin = 1
	}
	assert.LessOrEqual(t, allocs, pin, "allocations per round trip through the proxy")
}

func TestServeReturnsReadErrors(t *testing.T) {
	p, err := udpproxy.New(udpproxy.Options{Picker: ordered("127.0.0.1:1")})
	require.NoError(t, err)
	pc, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	require.NoError(t, err)
	require.NoError(t, pc.Close())
	err = p.Serve(pc)
	assert.ErrorIs(t, err, net.ErrClosed, "a socket closed by the caller is the caller's error")
	assert.False(t, errors.Is(err, udpproxy.ErrClosed))
}

// An idle flow holds its goroutine and its socket, not a buffer.
func TestIdleFlowMemory(t *testing.T) {
	limit := 8 * 1024.0
	if raceEnabled {
		// The race detector enlarges stack frames, and so the stack an idle flow's
		// goroutine keeps; its shadow memory is outside the Go heap and not counted.
		limit = 16 * 1024
	}
	be := newBackend(t, "")
	p, addr := start(t, udpproxy.Options{Picker: ordered(be.addr), IdleTimeout: time.Hour})
	const flows = 1000
	clients := make([]*net.UDPConn, flows)
	for i := range clients {
		clients[i] = client(t, "")
	}
	before := idlecost.InUse()
	for _, c := range clients {
		roundTrip(t, c, addr, []byte("x"))
	}
	require.Equal(t, flows, p.Stats().Active)
	per := float64(idlecost.InUse()-before) / flows
	t.Logf("%.0f bytes per idle flow", per)
	assert.Less(t, per, limit, "an idle flow costs its goroutine's stack, a socket and a few structs")
}

// An IPv6 listening socket forwards to an IPv4 endpoint, and the pick sees the IPv6 client.
func TestIPv6Clients(t *testing.T) {
	pc, err := net.ListenUDP("udp6", &net.UDPAddr{IP: net.IPv6loopback})
	if err != nil {
		t.Skipf("no IPv6 loopback: %v", err)
	}
	be := newBackend(t, "v4:")
	rec := &recorder{}
	p, err := udpproxy.New(udpproxy.Options{Picker: rec.wrap(ordered(be.addr))})
	require.NoError(t, err)
	served := make(chan error, 1)
	go func() { served <- p.Serve(pc) }()
	defer func() { p.Close(); <-served }()
	addr := pc.LocalAddr().(*net.UDPAddr).AddrPort()

	c := client(t, "::1")
	assert.Equal(t, []byte("v4:six"), roundTrip(t, c, addr, []byte("six")))
	require.Equal(t, 1, rec.pickCount())
	assert.Equal(t, c.LocalAddr().(*net.UDPAddr).AddrPort(), rec.picks[0].Client)
}
