package proxy_test

import (
	"io"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/sluiceproxy/sluice"
	"github.com/sluiceproxy/sluice/proxy"
)

// The retry budget stops a retry storm: when every request fails at once, only the budget's
// share is retried; the rest get the failure. Once the storm passes, retries are allowed
// again.
func TestRetryBudget(t *testing.T) {
	const n = 10
	c := newCluster()
	var hitsA, hitsB atomic.Int64
	allIn := make(chan struct{})
	c.backend(t, "10.0.0.1:80", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if hitsA.Add(1) == n {
			close(allIn)
		}
		<-allIn // fail all n requests at once
		http.Error(w, "overloaded", http.StatusServiceUnavailable)
	}))
	releaseB := make(chan struct{})
	var once sync.Once
	release := func() { once.Do(func() { close(releaseB) }) }
	// Deferred, not a Cleanup: a failing test must release B before the servers' Close,
	// which waits for the held requests.
	defer release()
	retried := make(chan struct{}, n) // one token per retry that reached B
	c.backend(t, "10.0.0.2:80", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hitsB.Add(1)
		retried <- struct{}{}
		<-releaseB // hold the retry, and with it the budget, until the others have answered
		io.WriteString(w, "ok")
	}))
	// Every first try goes to A, every retry to B.
	pk := sluice.PickerFunc(func(info sluice.PickInfo) (sluice.PickResult, error) {
		if len(info.Tried) == 0 {
			return sluice.PickResult{Endpoint: sluice.Endpoint{Addr: "10.0.0.1:80"}}, nil
		}
		return sluice.PickResult{Endpoint: sluice.Endpoint{Addr: "10.0.0.2:80"}}, nil
	})
	p := &proxy.Proxy{Picker: pk, DialContext: c.dial,
		Retry: proxy.Retry{Backoff: -1, BudgetRatio: 0.01, BudgetMin: 1, RetryOn: []int{http.StatusServiceUnavailable}}}
	srv := front(t, p)

	statuses := make(chan int, n)
	for range n {
		go func() {
			res, err := srv.Client().Get(srv.URL)
			if err != nil {
				statuses <- 0
				return
			}
			io.Copy(io.Discard, res.Body)
			res.Body.Close()
			statuses <- res.StatusCode
		}()
	}
	// Wait for both the n-1 answers and the retry's arrival at B: nothing orders one before
	// the other. A request decides on its retry before it answers, so once n-1 requests have
	// answered 503 and one retry has arrived, every retry there will be has reached B.
	count := map[int]int{}
	answered, arrived := 0, false
	timeout := time.After(10 * time.Second)
	for answered < n-1 || !arrived {
		select {
		case s := <-statuses:
			count[s]++
			answered++
		case <-retried:
			arrived = true
		case <-timeout:
			t.Fatalf("requests outside the budget must fail at once and one retry reach B; "+
				"got statuses %v, retry arrived %t", count, arrived)
		}
	}
	assert.Equal(t, map[int]int{503: n - 1}, count, "all but the budget's one retry forward the 503")
	assert.EqualValues(t, 1, hitsB.Load(), "exactly one retry fits the budget")
	release()
	assert.Equal(t, 200, <-statuses, "the retried request succeeds")

	// The storm is over: the budget is free again.
	res, body := get(t, srv.Client(), srv.URL)
	assert.Equal(t, 200, res.StatusCode)
	assert.Equal(t, "ok", body)
	assert.EqualValues(t, 2, hitsB.Load())
}

// Every try reports its outcome, once, to the pick's Done and to the Observer, in order.
func TestOutcomesReported(t *testing.T) {
	c := newCluster()
	// 10.0.0.1 refuses connections.
	c.backend(t, "10.0.0.2:80", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "busy", http.StatusServiceUnavailable)
	}))
	c.backend(t, "10.0.0.3:80", echo("c"))
	pk := newPicker("10.0.0.1:80", "10.0.0.2:80", "10.0.0.3:80")
	var mu sync.Mutex
	var observed []done
	p := &proxy.Proxy{Picker: pk, DialContext: c.dial,
		Retry: proxy.Retry{Backoff: -1, RetryOn: []int{http.StatusServiceUnavailable}},
		Observer: sluice.ObserverFunc(func(ep sluice.Endpoint, o sluice.Outcome) {
			mu.Lock()
			defer mu.Unlock()
			observed = append(observed, done{ep.Addr, o})
		})}
	srv := front(t, p)
	res, _ := get(t, srv.Client(), srv.URL)
	require.Equal(t, 200, res.StatusCode)

	d := pk.dones()
	require.Len(t, d, 3, "one Done per try")
	mu.Lock()
	defer mu.Unlock()
	assert.Equal(t, d, observed, "the Observer sees what Done sees")
	want := []struct {
		addr    string
		failure sluice.Failure
		status  int
	}{
		{"10.0.0.1:80", sluice.ConnectFailure, 0},
		{"10.0.0.2:80", sluice.NoFailure, 503},
		{"10.0.0.3:80", sluice.NoFailure, 200},
	}
	for i, w := range want {
		assert.Equal(t, w.addr, d[i].Addr)
		assert.Equal(t, w.failure, d[i].Outcome.Failure, d[i].Addr)
		assert.Equal(t, w.status, d[i].Outcome.Status, d[i].Addr)
		assert.Positive(t, d[i].Outcome.Latency, "every try reports its latency")
	}
}

// Each kind of failure maps to one status with the default error handler, and is what the
// access statistics record.
func TestErrorStatuses(t *testing.T) {
	c := newCluster()
	c.backend(t, "10.0.0.2:80", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		conn, _, err := http.NewResponseController(w).Hijack()
		if err == nil {
			conn.Close()
		}
	}))
	release := make(chan struct{})
	t.Cleanup(func() { close(release) })
	c.backend(t, "10.0.0.3:80", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-r.Context().Done():
		case <-release:
		}
	}))
	// Only the timeout case has a per-try timeout, long enough for a dial on a loaded machine:
	// a refused dial or a reset that took longer would be counted as a timeout, and a dial
	// cut short as a connect failure.
	tests := []struct {
		name       string
		addrs      []string
		perTry     time.Duration
		wantStatus int
		wantFail   sluice.Failure
	}{
		{"no endpoint", nil, 0, 503, sluice.NoFailure},
		{"dial refused", []string{"10.0.0.1:80"}, 0, 502, sluice.ConnectFailure},
		{"connection reset", []string{"10.0.0.2:80"}, 0, 502, sluice.ConnectionFailure},
		{"timeout", []string{"10.0.0.3:80"}, 250 * time.Millisecond, 504, sluice.Timeout},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var m metrics
			p := &proxy.Proxy{Picker: newPicker(tt.addrs...), DialContext: c.dial, Hooks: m.hooks(),
				Retry: proxy.Retry{MaxTries: 1, PerTryTimeout: tt.perTry}}
			srv := front(t, p)
			res, body := get(t, srv.Client(), srv.URL)
			assert.Equal(t, tt.wantStatus, res.StatusCode)
			assert.Equal(t, http.StatusText(tt.wantStatus)+"\n", body, "the body names the status, not the upstream")
			if tt.wantStatus == 503 {
				assert.Equal(t, "1", res.Header.Get("Retry-After"))
			} else {
				assert.Empty(t, res.Header.Get("Retry-After"))
			}
			m.mu.Lock()
			defer m.mu.Unlock()
			require.Len(t, m.stats, 1)
			assert.Equal(t, tt.wantStatus, m.stats[0].Status)
			assert.Equal(t, tt.wantFail, m.stats[0].Failure)
		})
	}
}
