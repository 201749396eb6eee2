package pool_test

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/sluiceproxy/sluice"
	"github.com/sluiceproxy/sluice/balancer"
	"github.com/sluiceproxy/sluice/discovery"
	"github.com/sluiceproxy/sluice/healthcheck"
	"github.com/sluiceproxy/sluice/pool"
	"github.com/sluiceproxy/sluice/proxy"
)

// backend is a real HTTP server that names itself and whose /healthz can be failed.
type backend struct {
	*httptest.Server
	name    string
	sick    atomic.Bool
	served  atomic.Int64
	probed  atomic.Int64
	respond func(w http.ResponseWriter) // nil: 200 with the name
}

func newBackend(t *testing.T, name string) *backend {
	b := &backend{name: name}
	b.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/healthz" {
			b.probed.Add(1)
			if b.sick.Load() {
				http.Error(w, "sick", http.StatusServiceUnavailable)
				return
			}
			io.WriteString(w, "ok")
			return
		}
		b.served.Add(1)
		if b.respond != nil {
			b.respond(w)
			return
		}
		io.WriteString(w, b.name)
	}))
	t.Cleanup(b.Close)
	return b
}

func (b *backend) addr() string { return b.Listener.Addr().String() }

func quiet() *slog.Logger { return slog.New(slog.DiscardHandler) }

// run starts p.Run until the test ends and returns a channel with Run's result.
func run(t *testing.T, p *pool.Pool) (<-chan error, context.CancelFunc) {
	t.Helper()
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	finished := make(chan struct{})
	go func() {
		done <- p.Run(ctx)
		close(finished)
	}()
	t.Cleanup(func() {
		cancel()
		<-finished
	})
	return done, cancel
}

func waitSynced(t *testing.T, p *pool.Pool) {
	t.Helper()
	select {
	case <-p.Synced():
	case <-time.After(10 * time.Second):
		t.Fatal("pool never received its first endpoint set")
	}
}

func get(t *testing.T, h http.Handler, path string) (int, string) {
	t.Helper()
	// A server-shaped request: a cancellable context, as net/http gives every handler.
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	rec := httptest.NewRecorder()
	req := httptest.NewRequest(http.MethodGet, "http://pool.test"+path, nil).WithContext(ctx)
	h.ServeHTTP(rec, req)
	return rec.Code, rec.Body.String()
}

func TestPoolForwardsToEveryEndpoint(t *testing.T) {
	a, b := newBackend(t, "a"), newBackend(t, "b")
	p, err := pool.New(pool.Options{
		Source: discovery.Static{Endpoints: []sluice.Endpoint{{Addr: a.addr()}, {Addr: b.addr()}}},
		Proxy:  &proxy.Proxy{Logger: quiet()},
	})
	require.NoError(t, err)
	run(t, p)
	waitSynced(t, p)

	seen := map[string]int{}
	for range 10 {
		code, body := get(t, p, "/x")
		require.Equal(t, http.StatusOK, code, body)
		seen[body]++
	}
	assert.Equal(t, map[string]int{"a": 5, "b": 5}, seen, "the default policy is round robin over the source's set")
}

func TestPoolBeforeFirstSetAnswers503(t *testing.T) {
	p, err := pool.New(pool.Options{Source: discovery.Static{}, Proxy: &proxy.Proxy{Logger: quiet()}})
	require.NoError(t, err)
	code, _ := get(t, p, "/")
	assert.Equal(t, http.StatusServiceUnavailable, code, "a pool that has not run has no endpoints")
}

// The health checker sits between the source and the balancer: an endpoint that fails its
// probes stops getting traffic, and gets it again when it recovers.
func TestPoolActiveHealthChecks(t *testing.T) {
	a, b := newBackend(t, "a"), newBackend(t, "b")
	b.sick.Store(true)
	p, err := pool.New(pool.Options{
		Source: discovery.Static{Endpoints: []sluice.Endpoint{{Addr: a.addr()}, {Addr: b.addr()}}},
		Health: healthcheck.Options{
			Probe:              &healthcheck.HTTP{Path: "/healthz"},
			Interval:           20 * time.Millisecond,
			UnhealthyThreshold: 1,
			HealthyThreshold:   1,
			InitialState:       sluice.Unhealthy,
			Logger:             quiet(),
		},
		Balancer: balancer.Options{PanicThreshold: -1},
		Proxy:    &proxy.Proxy{Logger: quiet()},
	})
	require.NoError(t, err)
	run(t, p)
	waitSynced(t, p)

	require.Eventually(t, func() bool { return a.probed.Load() > 0 && b.probed.Load() > 0 }, 10*time.Second, 5*time.Millisecond)
	require.Eventually(t, func() bool { code, body := get(t, p, "/"); return code == 200 && body == "a" }, 10*time.Second, 5*time.Millisecond)
	for range 20 {
		code, body := get(t, p, "/")
		require.Equal(t, http.StatusOK, code)
		require.Equal(t, "a", body, "the endpoint failing its probes gets no traffic")
	}
	assert.Zero(t, b.served.Load(), "b was never sent a request while sick")

	b.sick.Store(false)
	require.Eventually(t, func() bool { _, body := get(t, p, "/"); return body == "b" }, 10*time.Second, 5*time.Millisecond,
		"b gets traffic again once its probe passes")
}

// Outcomes reach the checker's outlier detection and the caller's own Observer.
func TestPoolObserversCompose(t *testing.T) {
	good, bad := newBackend(t, "good"), newBackend(t, "bad")
	bad.respond = func(w http.ResponseWriter) { http.Error(w, "boom", http.StatusBadGateway) }
	var mu sync.Mutex
	outcomes := map[string]int{}
	mine := observerFunc(func(ep sluice.Endpoint, o sluice.Outcome) {
		mu.Lock()
		outcomes[ep.Addr]++
		mu.Unlock()
	})
	p, err := pool.New(pool.Options{
		Source: discovery.Static{Endpoints: []sluice.Endpoint{{Addr: good.addr()}, {Addr: bad.addr()}}},
		Health: healthcheck.Options{
			Outlier: &healthcheck.Outlier{ConsecutiveGatewayFailure: 2, Interval: time.Hour},
			Logger:  quiet(),
		},
		Balancer: balancer.Options{PanicThreshold: -1},
		Proxy:    &proxy.Proxy{Observer: mine, Logger: quiet()},
	})
	require.NoError(t, err)
	run(t, p)
	waitSynced(t, p)

	for range 6 {
		get(t, p, "/")
	}
	// Ejection goes through the checker's Run, which pushes a new set to the balancer.
	require.Eventually(t, func() bool {
		for range 4 {
			if _, body := get(t, p, "/"); body != "good" {
				return false
			}
		}
		return true
	}, 10*time.Second, 10*time.Millisecond, "the failing endpoint is ejected by outlier detection")
	mu.Lock()
	defer mu.Unlock()
	assert.Positive(t, outcomes[bad.addr()], "the caller's Observer still sees every outcome")
	assert.Positive(t, outcomes[good.addr()])
}

type observerFunc func(sluice.Endpoint, sluice.Outcome)

func (f observerFunc) Observe(ep sluice.Endpoint, o sluice.Outcome) { f(ep, o) }

// failingSource pushes nothing and fails after a while, as a misconfigured source does.
type failingSource struct{ err error }

func (s failingSource) Watch(ctx context.Context, _ func([]sluice.Endpoint)) error { return s.err }

func TestPoolRunReturnsTheFirstRealError(t *testing.T) {
	boom := errors.New("no such name")
	p, err := pool.New(pool.Options{Source: failingSource{boom}, Health: healthcheck.Options{Logger: quiet()}})
	require.NoError(t, err)
	done, _ := run(t, p)
	select {
	case err := <-done:
		require.ErrorIs(t, err, boom, "Run returns the source's error")
		assert.Contains(t, err.Error(), "pool: source:", "the error says which stage failed")
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not return when its source failed: the checker was not stopped")
	}
}

func TestPoolRunReturnsContextError(t *testing.T) {
	a := newBackend(t, "a")
	p, err := pool.New(pool.Options{Source: discovery.Static{Endpoints: []sluice.Endpoint{{Addr: a.addr()}}}})
	require.NoError(t, err)
	done, cancel := run(t, p)
	waitSynced(t, p)
	cancel()
	select {
	case err := <-done:
		assert.ErrorIs(t, err, context.Canceled, "a pool stopped by its context reports the context's error")
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not return after its context ended")
	}
	assert.ErrorContains(t, p.Run(context.Background()), "Run called twice")
}

func TestNewNamesTheBadField(t *testing.T) {
	tests := []struct {
		name string
		opts pool.Options
		want string
	}{
		{"no source", pool.Options{}, "Options.Source is required"},
		{"picker set", pool.Options{Source: discovery.Static{}, Proxy: &proxy.Proxy{Picker: sluice.PickerFunc(nil)}}, "Options.Proxy.Picker must be nil"},
		{"bad balancer", pool.Options{Source: discovery.Static{}, Balancer: balancer.Options{SlowStart: -time.Second}}, "Options.Balancer"},
		{"bad health", pool.Options{Source: discovery.Static{}, Health: healthcheck.Options{Jitter: 2}}, "Options.Health"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := pool.New(tt.opts)
			assert.Nil(t, p)
			assert.ErrorContains(t, err, tt.want)
		})
	}
}
