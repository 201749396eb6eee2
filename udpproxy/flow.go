package udpproxy

import (
	"errors"
	"net"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/sluiceproxy/sluice"
)

// Why a flow ended.
const (
	endIdle     int32 = iota + 1 // IdleTimeout passed without a datagram
	endPruned                    // Prune: its endpoint left the set
	endClosed                    // its listener or the proxy closed
	endRefused                   // every attempt was refused before a reply
	endNoRepick                  // refused, and no endpoint was left to pick
	endBroken                    // the endpoint refused after it had replied
	endError                     // reading the endpoint's socket failed otherwise
)

// flow is one client's session: its datagrams go to one upstream socket, connected to the
// endpoint picked for it, and that socket's datagrams go back to the client.
type flow struct {
	p      *Proxy
	l      *listener
	client netip.AddrPort

	up   atomic.Pointer[upstream] // the current upstream socket; replaced after a refusal
	last atomic.Int64             // flow clock of the last datagram either way

	mu     sync.Mutex   // orders replacing up against stop
	reason atomic.Int32 // why the flow ends; 0 while it runs. Set under mu.

	// tried lists the endpoints the flow has picked, oldest first: the PickInfo.Tried of its
	// next pick. Only whoever holds the current upstream's refusal (upstream.failed) appends.
	tried []string
}

// upstream is one connected socket to one picked endpoint.
type upstream struct {
	conn *net.UDPConn
	pick sluice.PickResult

	firstSend  atomic.Int64 // flow clock of the first datagram sent; 0 before
	firstReply int64        // flow clock of the first reply; written by the flow's goroutine before replied is set
	replied    atomic.Bool  // a datagram came back from the endpoint
	failed     atomic.Bool  // a refusal of this socket was claimed, by the reader or the flow's goroutine
	reported   atomic.Bool  // the pick's outcome was reported

	reader // how replies are waited for: without a buffer where the OS allows
}

// send forwards one datagram from the client. It runs on Serve's goroutine.
func (f *flow) send(b []byte) {
	now := f.p.now()
	f.last.Store(now)
	u := f.up.Load()
	if u.firstSend.Load() == 0 {
		u.firstSend.CompareAndSwap(0, now)
	}
	if _, err := u.conn.Write(b); err != nil && unreachable(err) {
		// The socket reported an ICMP error for an earlier datagram, and this one was not
		// sent: send it to the endpoint picked instead, if there is one.
		if nu := f.refused(u); nu != nil && nu != u {
			nu.firstSend.CompareAndSwap(0, f.p.now())
			nu.conn.Write(b)
		}
	}
}

// run relays the endpoint's replies to the client until the flow ends, then ends it. It is
// the flow's goroutine.
func (f *flow) run() {
	p := f.p
	defer f.finish()
	var cur *upstream
	for {
		if f.reason.Load() != 0 {
			return
		}
		u := f.up.Load()
		if u != cur {
			cur = u
			f.arm(u)
		}
		buf, n, err := u.read(p)
		if err == nil {
			if n > p.maxSize {
				p.oversized.Add(1)
			} else {
				now := p.now()
				f.last.Store(now)
				if !u.replied.Load() {
					u.firstReply = now
					u.replied.Store(true)
				}
				f.l.pc.WriteToUDPAddrPort((*buf)[:n], f.client)
			}
			u.release(p, buf)
			continue
		}
		switch {
		case f.reason.Load() != 0:
			return
		case f.up.Load() != u:
			continue // Serve's goroutine replaced a refused socket, closing this one
		case errors.Is(err, os.ErrDeadlineExceeded):
			if p.now()-f.last.Load() >= int64(p.idle) {
				f.stop(endIdle)
				return
			}
			f.arm(u)
		case unreachable(err):
			if f.refused(u) == nil {
				return
			}
		default:
			if p.debugging() {
				p.log.Debug("udpproxy: reading from endpoint failed", "client", f.client,
					"endpoint", u.pick.Endpoint.Addr, "error", err)
			}
			f.stop(endError)
			return
		}
	}
}

// arm sets u's read deadline to IdleTimeout after the flow's last datagram. It is moved only
// when it passes, so that forwarding a datagram costs a clock read, not a timer reset.
func (f *flow) arm(u *upstream) {
	u.conn.SetReadDeadline(f.p.epoch.Add(time.Duration(f.last.Load()) + f.p.idle))
}

// refused handles an ICMP unreachable error on u, seen by Serve's goroutine or the flow's.
// Before any reply it charges u's endpoint with a ConnectFailure and, while attempts are
// left, picks and dials another, which takes u's place; after a reply it ends the flow,
// charging a ConnectionFailure. It returns the flow's upstream socket from now on, or nil
// when the flow ends.
func (f *flow) refused(u *upstream) *upstream {
	p := f.p
	if !u.failed.CompareAndSwap(false, true) {
		return f.up.Load() // the other goroutine is handling it
	}
	if u.replied.Load() {
		f.stop(endBroken)
		return nil
	}
	var latency time.Duration
	if s := u.firstSend.Load(); s != 0 {
		latency = time.Duration(p.now() - s)
	}
	if p.debugging() {
		p.log.Debug("udpproxy: endpoint refused flow", "client", f.client, "endpoint", u.pick.Endpoint.Addr)
	}
	var nu *upstream
	reason := endRefused
	if len(f.tried) < p.attempts {
		if nu = p.connect(f); nu == nil {
			reason = endNoRepick
		}
	}
	if nu != nil {
		f.mu.Lock()
		if f.reason.Load() == 0 {
			f.up.Store(nu)
		} else {
			nu.conn.Close()
			p.report(nu, sluice.Outcome{Failure: sluice.Canceled})
			nu = nil
		}
		f.mu.Unlock()
	}
	if nu == nil {
		f.stop(reason)
	}
	// Counted once the flow has its new socket (or is ending), so that a caller who sees the
	// count knows where the flow's next datagram goes.
	p.connectFailures.Add(1)
	p.report(u, sluice.Outcome{Failure: sluice.ConnectFailure, Latency: latency})
	if nu == nil {
		return nil
	}
	u.conn.Close() // wakes the flow's goroutine if it waits on u
	return nu
}

// stop ends the flow for reason, unless it is already ending, and wakes its goroutine.
func (f *flow) stop(reason int32) {
	f.mu.Lock()
	f.reason.CompareAndSwap(0, reason)
	u := f.up.Load()
	f.mu.Unlock()
	u.conn.Close()
}

// finish is the end of the flow's goroutine: it forgets the flow, closes its socket and
// reports the outcome of its last pick.
func (f *flow) finish() {
	p := f.p
	f.mu.Lock()
	f.reason.CompareAndSwap(0, endError)
	u := f.up.Load()
	f.mu.Unlock()
	u.conn.Close()

	f.l.mu.Lock()
	if f.l.flows[f.client] == f {
		delete(f.l.flows, f.client)
	}
	f.l.mu.Unlock()

	// The outcome of a flow that got replies is a success, timed to its first reply. One
	// that never got any says nothing about the endpoint: a one-way protocol (syslog,
	// StatsD) never answers, and a client that stops sending is no failure of the endpoint,
	// so it is reported as Canceled, which balancers and health checks do not count.
	reason := f.reason.Load()
	var o sluice.Outcome
	switch {
	case reason == endBroken:
		o.Failure = sluice.ConnectionFailure
		if s := u.firstSend.Load(); s != 0 {
			o.Latency = time.Duration(p.now() - s)
		}
	case u.replied.Load():
		if s := u.firstSend.Load(); s != 0 {
			o.Latency = time.Duration(u.firstReply - s)
		}
	default:
		o.Failure = sluice.Canceled
	}
	p.report(u, o)
	if p.debugging() {
		p.log.Debug("udpproxy: flow ended", "client", f.client, "endpoint", u.pick.Endpoint.Addr,
			"reason", reasonName(reason))
	}
	p.release()
	f.l.wg.Done()
}

func reasonName(r int32) string {
	switch r {
	case endIdle:
		return "idle"
	case endPruned:
		return "pruned"
	case endClosed:
		return "closed"
	case endRefused:
		return "refused"
	case endNoRepick:
		return "no endpoint"
	case endBroken:
		return "unreachable"
	}
	return "error"
}

// unreachable reports whether err is an ICMP error reported on a connected socket: the port
// (or host, or network) is unreachable.
func unreachable(err error) bool {
	return errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, syscall.EHOSTUNREACH) ||
		errors.Is(err, syscall.ENETUNREACH)
}
