// Package e2e holds end-to-end tests that wire sluice's packages together the way an embedder
// does, against real servers.
package e2e

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/sluiceproxy/sluice"
	"github.com/sluiceproxy/sluice/balancer"
	"github.com/sluiceproxy/sluice/healthcheck"
	"github.com/sluiceproxy/sluice/proxy"
)

// backend is a real HTTP server that counts what reaches it. Every POST carries a unique id in
// its body; posts counts, over all backends, how many times each id arrived.
type backend struct {
	name     string
	address  string
	handler  http.Handler
	srv      *httptest.Server // replaced by revive; only the load loop touches it after start
	requests atomic.Int64
	postsIn  atomic.Int64 // POSTs being handled
}

type postLedger struct {
	mu   sync.Mutex
	seen map[string]int // mu protects seen
}

func (l *postLedger) record(id string) {
	l.mu.Lock()
	l.seen[id]++
	l.mu.Unlock()
}

func (l *postLedger) count(id string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.seen[id]
}

func newBackend(t *testing.T, name string, posts *postLedger) *backend {
	b := &backend{name: name}
	b.handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/healthz" {
			return
		}
		b.requests.Add(1)
		body, err := io.ReadAll(r.Body)
		if err != nil {
			return
		}
		if r.Method == http.MethodPost {
			posts.record(string(body))
			b.postsIn.Add(1)
			defer b.postsIn.Add(-1)
		}
		// Some work, so that requests are in flight when a backend dies.
		work := time.NewTimer(20 * time.Millisecond)
		defer work.Stop()
		select {
		case <-work.C:
		case <-r.Context().Done():
			return
		}
		io.WriteString(w, name)
	})
	b.srv = httptest.NewServer(b.handler)
	b.address = b.srv.Listener.Addr().String()
	t.Cleanup(b.srv.Close)
	return b
}

// kill makes b vanish as a crashed pod does: new connections are refused and open ones,
// busy or idle, are cut.
func (b *backend) kill() {
	b.srv.Listener.Close()
	b.srv.CloseClientConnections()
}

// revive starts b again on its old address, as a restarted pod that keeps its IP would.
func (b *backend) revive(t *testing.T) {
	l, err := net.Listen("tcp", b.address)
	require.NoError(t, err)
	b.srv = httptest.NewUnstartedServer(b.handler)
	b.srv.Listener.Close()
	b.srv.Listener = l
	b.srv.Start()
	t.Cleanup(b.srv.Close)
}

func (b *backend) addr() string { return b.address }

// call is one client request and what became of it.
type call struct {
	method string
	id     string
	start  time.Time
	status int
	body   string
	why    string // the proxy's explanation of a failure
	err    error
}

// explainError is the proxy's default error handler, plus a header that says what failed, so
// that the test can report why a request failed.
func explainError(w http.ResponseWriter, r *http.Request, err error) {
	var pe *proxy.Error
	if errors.As(err, &pe) {
		w.Header().Set("X-Failure", fmt.Sprintf("%v after %d tries, the last to %s: %v", pe.Failure, pe.Tries, pe.Endpoint, pe.Err))
	}
	proxy.DefaultErrorHandler(w, r, err)
}

// Three backends behind proxy, balancer and healthcheck, wired as an embedder does; one is
// killed under a few hundred requests a second, and later restarted. Outlier detection, fed
// by the proxy's Observer, ejects it within a few failed tries; the balancer stops picking
// it; its ejection time runs out while it is still dead, but the failing probes keep it out
// until it is back. From the ejection on every request succeeds, and no POST ever reaches a
// backend twice.
func TestBackendKilledUnderLoad(t *testing.T) {
	const (
		rate     = 300 // requests a second
		duration = 6 * time.Second
		killAt   = 1500 * time.Millisecond
		downFor  = 2 * time.Second
		maxGWF   = 3 // Outlier.ConsecutiveGatewayFailure
	)
	posts := &postLedger{seen: map[string]int{}}
	backends := []*backend{newBackend(t, "a", posts), newBackend(t, "b", posts), newBackend(t, "c", posts)}
	victim := backends[1]
	eps := make([]sluice.Endpoint, len(backends))
	for i, b := range backends {
		eps[i] = sluice.Endpoint{Addr: b.addr()}
	}

	bal, err := balancer.New(balancer.RoundRobin{}, balancer.Options{})
	require.NoError(t, err)
	var evMu sync.Mutex
	var events []healthcheck.ChangeEvent
	hc, err := healthcheck.New(healthcheck.Options{
		Probe:              &healthcheck.HTTP{Path: "/healthz"},
		Interval:           500 * time.Millisecond,
		UnhealthyInterval:  100 * time.Millisecond,
		Timeout:            2 * time.Second, // generous: a loaded CI machine must not fail healthy backends
		UnhealthyThreshold: 2,
		Outlier: &healthcheck.Outlier{
			ConsecutiveGatewayFailure: maxGWF,
			BaseEjectionTime:          500 * time.Millisecond, // over long before the victim is back
		},
		// The change log goes to the test's output; Hooks.Change keeps the events to check.
		Logger: slog.New(slog.NewTextHandler(t.Output(), nil)),
		Hooks: healthcheck.Hooks{Change: func(e healthcheck.ChangeEvent) {
			evMu.Lock()
			events = append(events, e)
			evMu.Unlock()
		}},
	})
	require.NoError(t, err)

	// The wiring: the source pushes sets into the checker, the checker pushes marked sets to
	// the balancer, the proxy picks from the balancer and reports every try to the checker.
	// The update function also notes when the balancer first learnt that the victim is out,
	// and when it learnt that it is back.
	var ejectedAt, returnedAt atomic.Pointer[time.Time]
	var lastSet atomic.Pointer[[]sluice.Endpoint]
	firstPush := make(chan struct{})
	toBalancer := func(set []sluice.Endpoint) {
		bal.Update(set)
		if lastSet.Swap(&set) == nil {
			close(firstPush)
		}
		for _, ep := range set {
			if ep.Addr != victim.addr() {
				continue
			}
			now := time.Now()
			switch {
			case ep.State == sluice.Unhealthy && ejectedAt.Load() == nil:
				ejectedAt.Store(&now)
			case ep.State == sluice.Ready && ejectedAt.Load() != nil && returnedAt.Load() == nil:
				returnedAt.Store(&now)
			}
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	runDone := make(chan error, 1)
	go func() { runDone <- hc.Run(ctx, toBalancer) }()
	defer func() {
		cancel()
		assert.ErrorIs(t, <-runDone, context.Canceled)
	}()
	hc.Update(eps) // a discovery source's Watch, in a real program

	p := &proxy.Proxy{Picker: bal, Observer: hc, ErrorHandler: explainError}
	front := httptest.NewServer(p)
	defer front.Close()
	defer p.CloseIdleConnections()
	client := &http.Client{
		Transport: &http.Transport{MaxIdleConnsPerHost: 256},
		Timeout:   10 * time.Second,
	}
	defer client.CloseIdleConnections()

	select { // the balancer has endpoints once the checker has pushed its first set
	case <-firstPush:
	case <-time.After(5 * time.Second):
		require.FailNow(t, "the checker never pushed the endpoint set")
	}

	var (
		callsMu sync.Mutex
		calls   []call
		wg      sync.WaitGroup
		sem     = make(chan struct{}, 128)
	)
	do := func(n int) {
		defer wg.Done()
		defer func() { <-sem }()
		c := call{method: http.MethodGet, start: time.Now()}
		var body io.Reader
		if n%5 == 1 || n%5 == 3 { // not a multiple of 3, so that round robin gives every backend POSTs
			c.method = http.MethodPost
			c.id = fmt.Sprintf("post-%d", n)
			body = strings.NewReader(c.id)
		}
		req, err := http.NewRequest(c.method, front.URL+fmt.Sprintf("/work/%d", n), body)
		if err != nil {
			c.err = err
		} else if res, err := client.Do(req); err != nil {
			c.err = err
		} else {
			b, _ := io.ReadAll(res.Body)
			res.Body.Close()
			c.status, c.body, c.why = res.StatusCode, string(b), res.Header.Get("X-Failure")
		}
		callsMu.Lock()
		calls = append(calls, c)
		callsMu.Unlock()
	}

	start := time.Now()
	tick := time.NewTicker(time.Second / rate)
	kill := time.NewTimer(killAt)
	end := time.NewTimer(duration)
	var killedAt, revivedAt time.Time
	var revivedRequests int64
	killing := false
	n := 0
load:
	for {
		select {
		case now := <-tick.C:
			// Kill the victim while it handles a POST, to see that the proxy does not send
			// that POST again elsewhere.
			if killing && killedAt.IsZero() && victim.postsIn.Load() > 0 {
				victim.kill()
				killedAt = time.Now()
			}
			if !killedAt.IsZero() && revivedAt.IsZero() && now.Sub(killedAt) >= downFor {
				revivedRequests = victim.requests.Load()
				victim.revive(t)
				revivedAt = time.Now()
			}
			// Catch up on ticks the runtime dropped, to keep to the rate.
			for due := int(now.Sub(start) * rate / time.Second); n < due; n++ {
				sem <- struct{}{}
				wg.Add(1)
				go do(n)
			}
		case <-kill.C:
			killing = true
		case <-end.C:
			break load
		}
	}
	tick.Stop()
	wg.Wait()
	elapsed := time.Since(start)

	require.False(t, killedAt.IsZero())
	require.False(t, revivedAt.IsZero())
	ej := ejectedAt.Load()
	require.NotNil(t, ej, "the killed backend is marked Unhealthy for the balancer")
	back := returnedAt.Load()
	require.NotNil(t, back, "the revived backend is marked Ready again")
	t.Logf("%d requests in %v (%.0f/s); victim killed at %v, out of the balancer %v later; "+
		"revived %v after the kill, back in the balancer %v later",
		len(calls), elapsed.Round(time.Millisecond), float64(len(calls))/elapsed.Seconds(),
		killedAt.Sub(start).Round(time.Millisecond), ej.Sub(killedAt).Round(time.Millisecond),
		revivedAt.Sub(killedAt).Round(time.Millisecond), back.Sub(revivedAt).Round(time.Millisecond))
	assert.Less(t, ej.Sub(killedAt), time.Second, "ejected soon after it died")
	assert.True(t, back.After(revivedAt), "not back before it was revived, though its ejection time ran out long before")
	assert.Less(t, back.Sub(revivedAt), 2*time.Second, "back soon after it was revived")
	assert.Greater(t, victim.requests.Load(), revivedRequests, "the revived backend takes traffic again")
	assert.GreaterOrEqual(t, float64(len(calls))/elapsed.Seconds(), 150.0, "a few hundred requests a second")

	evMu.Lock()
	var victimEvents []healthcheck.ChangeEvent
	for _, e := range events {
		if e.Endpoint.Addr == victim.addr() {
			victimEvents = append(victimEvents, e)
		}
	}
	evMu.Unlock()
	require.NotEmpty(t, victimEvents)
	assert.Equal(t, healthcheck.ConsecutiveGatewayFailure, victimEvents[0].Reason,
		"outlier detection, fed by the proxy's Observer, is first to notice")
	assert.True(t, containsReason(victimEvents, healthcheck.ProbeFailed), "the active probes notice too")
	assert.True(t, containsReason(victimEvents, healthcheck.EjectionEnded), "the ejection ends once a probe passes")
	for _, ep := range *lastSet.Load() {
		assert.Equal(t, sluice.Ready, ep.State, "%s in the last set", ep.Addr)
	}

	var gets, postsSent, postsCut, failedBefore, failedAfter int
	for _, c := range calls {
		ok := c.err == nil && c.status == http.StatusOK
		if c.method == http.MethodGet {
			gets++
		} else {
			postsSent++
			got := posts.count(c.id)
			assert.LessOrEqual(t, got, 1, "POST %s reached the backends %d times", c.id, got)
			if ok {
				assert.Equal(t, 1, got, "POST %s was answered 200, so a backend saw it", c.id)
			} else if got == 1 {
				postsCut++
			}
		}
		switch {
		case ok:
		case c.start.Before(*ej):
			failedBefore++
			t.Logf("before the ejection: %s %s failed: status %d (%s), err %v; the backends saw it %d times",
				c.method, c.id, c.status, c.why, c.err, posts.count(c.id))
		default:
			failedAfter++
			assert.Failf(t, "a request failed after the ejection",
				"%s %s started %v after the ejection: status %d (%s), err %v",
				c.method, c.id, c.start.Sub(*ej), c.status, c.why, c.err)
		}
	}
	t.Logf("%d GETs, %d POSTs; %d failed before the ejection, %d after; %d POSTs cut by the kill",
		gets, postsSent, failedBefore, failedAfter, postsCut)
	assert.Positive(t, postsCut, "a POST the victim had received failed rather than being sent again")
	assert.Greater(t, postsSent, 200, "enough POSTs to mean something")
	for _, b := range backends {
		assert.Positive(t, b.requests.Load(), "backend %s took traffic", b.name)
	}
}

func containsReason(events []healthcheck.ChangeEvent, r healthcheck.Reason) bool {
	for _, e := range events {
		if e.Reason == r {
			return true
		}
	}
	return false
}
