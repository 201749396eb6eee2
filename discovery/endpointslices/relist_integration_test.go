//go:build integration

package endpointslices_test

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/sluiceproxy/sluice"
	"github.com/sluiceproxy/sluice/discovery/endpointslices"
	"github.com/sluiceproxy/sluice/internal/kubetest"
)

// gate is a TCP relay between a client and the API server that a test can cut, as a
// network partition would: Cut closes every connection through it and stops listening, so
// that reconnections are refused, until Restore listens on the same address again.
type gate struct {
	addr string // where clients connect
	to   string // the API server

	mu    sync.Mutex // mu protects ln and conns
	ln    net.Listener
	conns map[net.Conn]struct{}
}

func newGate(t *testing.T, to string) *gate {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	g := &gate{addr: ln.Addr().String(), to: to, ln: ln, conns: map[net.Conn]struct{}{}}
	go g.serve(ln)
	t.Cleanup(g.Cut)
	return g
}

func (g *gate) serve(ln net.Listener) {
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		go g.relay(ln, c)
	}
}

func (g *gate) relay(ln net.Listener, c net.Conn) {
	up, err := net.Dial("tcp", g.to)
	if err != nil {
		c.Close()
		return
	}
	g.mu.Lock()
	if g.ln != ln { // cut since c was accepted
		g.mu.Unlock()
		c.Close()
		up.Close()
		return
	}
	g.conns[c], g.conns[up] = struct{}{}, struct{}{}
	g.mu.Unlock()
	done := make(chan struct{}, 2)
	go func() { _, _ = io.Copy(up, c); done <- struct{}{} }()
	go func() { _, _ = io.Copy(c, up); done <- struct{}{} }()
	<-done
	c.Close()
	up.Close()
	g.mu.Lock()
	delete(g.conns, c)
	delete(g.conns, up)
	g.mu.Unlock()
}

// Cut stops listening and closes every relayed connection.
func (g *gate) Cut() {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.ln != nil {
		g.ln.Close()
		g.ln = nil
	}
	for c := range g.conns {
		c.Close()
	}
}

// Restore listens again on the gate's address.
func (g *gate) Restore(t *testing.T) {
	ln, err := net.Listen("tcp", g.addr)
	require.NoError(t, err, "listen again on %s", g.addr)
	g.mu.Lock()
	g.ln = ln
	g.mu.Unlock()
	go g.serve(ln)
}

// requestLog records the EndpointSlice requests a client sends.
type requestLog struct {
	mu   sync.Mutex // mu protects reqs
	reqs []url.Values
}

func (l *requestLog) wrap(rt http.RoundTripper) http.RoundTripper {
	return roundTripFunc(func(r *http.Request) (*http.Response, error) {
		if strings.HasSuffix(r.URL.Path, "/endpointslices") {
			l.mu.Lock()
			l.reqs = append(l.reqs, r.URL.Query())
			l.mu.Unlock()
		}
		return rt.RoundTrip(r)
	})
}

// lists counts full lists: plain LISTs, or watches that start with the current state
// (client-go's streaming list).
func (l *requestLog) lists() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := 0
	for _, q := range l.reqs {
		if q.Get("watch") != "true" || q.Get("sendInitialEvents") == "true" {
			n++
		}
	}
	return n
}

func (l *requestLog) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	var b strings.Builder
	for _, q := range l.reqs {
		fmt.Fprintf(&b, "\n  %s", q.Encode())
	}
	return b.String()
}

type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

// TestIntegrationRelistAfterWatchExpiry cuts a Watcher off from the API server mid-watch,
// changes the Service while it cannot see (an endpoint leaves, one joins, a slice is deleted
// and another created) and restarts the API server, so that nothing of the old watch or the
// old server's watch cache survives. The Watcher must re-list (client-go's reflector does so
// after any watch that ends in an error) and the subscriber must keep the last good set while
// cut off, then get exactly the new set: the deleted slice's endpoints go although no delete
// event was ever delivered (the informer reports them as DeletedFinalStateUnknown).
func TestIntegrationRelistAfterWatchExpiry(t *testing.T) {
	cluster := kubetest.Start(t)
	const ns = "relist"
	createNamespace(t, cluster.Client, ns)
	ctx := t.Context()
	api := cluster.Client.DiscoveryV1().EndpointSlices(ns)
	_, err := api.Create(ctx, podSlice(ns, "web-a", "web", 8080, "10.244.6.1", "10.244.6.2"), metav1.CreateOptions{})
	require.NoError(t, err)
	_, err = api.Create(ctx, podSlice(ns, "web-b", "web", 8080, "10.244.6.3"), metav1.CreateOptions{})
	require.NoError(t, err)

	g := newGate(t, strings.TrimPrefix(cluster.Config.Host, "https://"))
	var reqs requestLog
	cfg := rest.CopyConfig(cluster.Config)
	cfg.Host = "https://" + g.addr
	cfg.Wrap(reqs.wrap)
	client, err := kubernetes.NewForConfig(cfg)
	require.NoError(t, err)
	w, err := endpointslices.NewForClient(client, endpointslices.Options{Namespace: ns, Coalesce: 50 * time.Millisecond})
	require.NoError(t, err)
	go w.Run(ctx)
	rec := newRecorder()
	go w.Source(ns, "web", "http").Watch(ctx, rec.update)
	before := rec.waitFor(t, "the first set", hasAddrs("10.244.6.1:8080", "10.244.6.2:8080", "10.244.6.3:8080"))
	listsBefore := reqs.lists()

	g.Cut()
	a, err := api.Get(ctx, "web-a", metav1.GetOptions{})
	require.NoError(t, err)
	a.Endpoints = append(a.Endpoints[1:], ep("10.244.6.4", ptr(true), ptr(true), ptr(false)))
	_, err = api.Update(ctx, a, metav1.UpdateOptions{})
	require.NoError(t, err)
	require.NoError(t, api.Delete(ctx, "web-b", metav1.DeleteOptions{}))
	_, err = api.Create(ctx, podSlice(ns, "web-c", "web", 8080, "10.244.6.5"), metav1.CreateOptions{})
	require.NoError(t, err)
	cluster.RestartAPIServer(t)

	rec.mu.Lock()
	pushedWhileCut := len(rec.sets) - 1
	rec.mu.Unlock()
	assert.Zero(t, pushedWhileCut, "a Watcher cut off from the API server keeps its last set")

	g.Restore(t)
	want := []string{"10.244.6.2:8080", "10.244.6.4:8080", "10.244.6.5:8080"}
	rec.waitWithin(t, time.Minute, "the set changed while cut off", hasAddrs(want...))
	assert.Greater(t, reqs.lists(), listsBefore, "the Watcher must have re-listed; requests:%s", &reqs)
	rec.mu.Lock()
	defer rec.mu.Unlock()
	for _, s := range rec.sets {
		if got := addrs(s); fmt.Sprint(got) != fmt.Sprint(addrs(before)) && fmt.Sprint(got) != fmt.Sprint(want) {
			t.Errorf("a set that is neither the last good one nor the new one was pushed: %v", got)
		}
	}
	t.Logf("EndpointSlice requests:%s", &reqs)
}

// TestIntegrationWaitsForFirstList starts a Watcher while the API server is unreachable: it
// must report that it has not synced and push nothing, not even an empty set that would
// make a proxy refuse traffic, until its first full list arrives.
func TestIntegrationWaitsForFirstList(t *testing.T) {
	cluster := kubetest.Start(t)
	const ns = "sync"
	createNamespace(t, cluster.Client, ns)
	ctx := t.Context()
	_, err := cluster.Client.DiscoveryV1().EndpointSlices(ns).Create(ctx,
		podSlice(ns, "web-a", "web", 8080, "10.244.8.1", "10.244.8.2"), metav1.CreateOptions{})
	require.NoError(t, err)

	g := newGate(t, strings.TrimPrefix(cluster.Config.Host, "https://"))
	g.Cut()
	var reqs requestLog
	cfg := rest.CopyConfig(cluster.Config)
	cfg.Host = "https://" + g.addr
	cfg.Wrap(reqs.wrap)
	client, err := kubernetes.NewForConfig(cfg)
	require.NoError(t, err)
	w, err := endpointslices.NewForClient(client, endpointslices.Options{Namespace: ns})
	require.NoError(t, err)
	go w.Run(ctx)
	rec := newRecorder()
	go w.Source(ns, "web", "http").Watch(ctx, rec.update)

	// Wait until the informer has tried, and failed, to list.
	deadline := time.Now().Add(20 * time.Second)
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for reqs.lists() == 0 {
		require.True(t, time.Now().Before(deadline), "the informer never tried to list")
		<-tick.C
	}
	assert.False(t, w.HasSynced(), "no list has succeeded")
	waitCtx, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
	defer cancel()
	assert.ErrorIs(t, w.WaitForSync(waitCtx), context.DeadlineExceeded, "WaitForSync must wait for the first list")
	rec.mu.Lock()
	assert.Empty(t, rec.sets, "nothing is pushed before the first list")
	rec.mu.Unlock()

	g.Restore(t)
	syncCtx, cancelSync := context.WithTimeout(ctx, time.Minute)
	defer cancelSync()
	require.NoError(t, w.WaitForSync(syncCtx))
	first := rec.waitWithin(t, time.Minute, "the first set", func([]sluice.Endpoint) bool { return true })
	assert.Equal(t, []string{"10.244.8.1:8080", "10.244.8.2:8080"}, addrs(first), "the first set pushed is the full list")
}

// TestIntegrationNamespaces checks that a Source sees only its own namespace's slices, both
// through a Watcher scoped to one namespace and through one watching them all.
func TestIntegrationNamespaces(t *testing.T) {
	cluster := kubetest.Start(t)
	ctx := t.Context()
	for i, ns := range []string{"team-a", "team-b"} {
		createNamespace(t, cluster.Client, ns)
		_, err := cluster.Client.DiscoveryV1().EndpointSlices(ns).Create(ctx,
			podSlice(ns, "web-1", "web", 8080, fmt.Sprintf("10.244.9.%d", i+1)), metav1.CreateOptions{})
		require.NoError(t, err)
	}
	all, err := endpointslices.NewForClient(cluster.Client, endpointslices.Options{})
	require.NoError(t, err)
	onlyB, err := endpointslices.NewForClient(cluster.Client, endpointslices.Options{Namespace: "team-b"})
	require.NoError(t, err)
	go all.Run(ctx)
	go onlyB.Run(ctx)

	a, b, aFromB := newRecorder(), newRecorder(), newRecorder()
	go all.Source("team-a", "web", "http").Watch(ctx, a.update)
	go all.Source("team-b", "web", "http").Watch(ctx, b.update)
	go onlyB.Source("team-a", "web", "http").Watch(ctx, aFromB.update)
	a.waitFor(t, "team-a's endpoint only", hasAddrs("10.244.9.1:8080"))
	b.waitFor(t, "team-b's endpoint only", hasAddrs("10.244.9.2:8080"))
	aFromB.waitFor(t, "nothing: team-a is outside the Watcher's namespace", hasAddrs())
}
