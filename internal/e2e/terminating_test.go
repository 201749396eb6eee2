package e2e

import (
	"context"
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
	"github.com/sluiceproxy/sluice/healthcheck"
	"github.com/sluiceproxy/sluice/proxy"
)

// A pod that Kubernetes starts terminating (EndpointSlice serving && terminating) gets no new
// requests while a Ready pod exists, yet the requests it is serving finish; once it is the
// only endpoint left, it takes traffic as a last resort.
func TestTerminatingEndpointDrains(t *testing.T) {
	type pod struct {
		srv  *httptest.Server
		work atomic.Int64 // /work requests
		slow atomic.Int64 // /slow requests being served
	}
	release := make(chan struct{})
	newPod := func(name string) *pod {
		p := &pod{}
		p.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			switch r.URL.Path {
			case "/work":
				p.work.Add(1)
			case "/slow":
				p.slow.Add(1)
				defer p.slow.Add(-1)
				select {
				case <-release:
				case <-r.Context().Done():
					return
				}
			}
			io.WriteString(w, name)
		}))
		t.Cleanup(p.srv.Close)
		return p
	}
	old, cur := newPod("old"), newPod("new")
	defer func() {
		select {
		case <-release:
		default:
			close(release)
		}
	}()

	bal, err := balancer.New(balancer.RoundRobin{}, balancer.Options{})
	require.NoError(t, err)
	hc, err := healthcheck.New(healthcheck.Options{
		Probe:    &healthcheck.HTTP{Path: "/healthz"},
		Interval: 50 * time.Millisecond,
		Outlier:  &healthcheck.Outlier{},
		Logger:   slog.New(slog.NewTextHandler(t.Output(), nil)), // the change log, in the test's output
	})
	require.NoError(t, err)
	var latest atomic.Pointer[[]sluice.Endpoint]
	pushed := make(chan struct{}, 1) // a token after every push
	ctx, cancel := context.WithCancel(context.Background())
	runDone := make(chan error, 1)
	go func() {
		runDone <- hc.Run(ctx, func(set []sluice.Endpoint) {
			bal.Update(set)
			latest.Store(&set)
			select {
			case pushed <- struct{}{}:
			default:
			}
		})
	}()
	defer func() {
		cancel()
		assert.ErrorIs(t, <-runDone, context.Canceled)
	}()
	// waitPush waits until the balancer has the set want, as the checker passes it on.
	waitPush := func(want ...sluice.Endpoint) {
		t.Helper()
		timeout := time.After(5 * time.Second)
		for {
			if set := latest.Load(); set != nil && assert.ObjectsAreEqual(want, *set) {
				return
			}
			select {
			case <-pushed:
			case <-timeout:
				require.FailNow(t, "the balancer never got the set", "want %v", want)
			}
		}
	}

	p := &proxy.Proxy{Picker: bal, Observer: hc}
	front := httptest.NewServer(p)
	defer front.Close()
	defer p.CloseIdleConnections()
	client := front.Client()
	get := func(path string) (string, error) {
		res, err := client.Get(front.URL + path)
		if err != nil {
			return "", err
		}
		defer res.Body.Close()
		b, err := io.ReadAll(res.Body)
		if res.StatusCode != http.StatusOK {
			return string(b), &statusError{res.StatusCode}
		}
		return string(b), err
	}

	oldEP := sluice.Endpoint{Addr: old.srv.Listener.Addr().String()}
	curEP := sluice.Endpoint{Addr: cur.srv.Listener.Addr().String()}
	hc.Update([]sluice.Endpoint{oldEP, curEP})
	waitPush(oldEP, curEP)

	// Two slow requests: round robin puts one on each pod.
	var wg sync.WaitGroup
	slowAnswers := make(chan string, 2)
	for range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			body, err := get("/slow")
			assert.NoError(t, err, "a slow request in flight finishes")
			slowAnswers <- body
		}()
	}
	require.Eventually(t, func() bool { return old.slow.Load() == 1 && cur.slow.Load() == 1 },
		5*time.Second, time.Millisecond, "one slow request in flight on each pod")

	// The old pod starts terminating: discovery pushes it serving && terminating.
	oldEP.State = sluice.Terminating
	hc.Update([]sluice.Endpoint{oldEP, curEP})
	waitPush(oldEP, curEP)
	before := old.work.Load()
	for range 50 {
		body, err := get("/work")
		require.NoError(t, err)
		assert.Equal(t, "new", body, "new requests go to the Ready pod")
	}
	assert.Equal(t, before, old.work.Load(), "the terminating pod gets no new request")
	assert.Equal(t, int64(1), old.slow.Load(), "its request in flight is still being served")

	close(release)
	wg.Wait()
	close(slowAnswers)
	var answers []string
	for a := range slowAnswers {
		answers = append(answers, a)
	}
	assert.ElementsMatch(t, []string{"old", "new"}, answers, "the terminating pod finished its request")

	// With no Ready pod left, the terminating one is the last resort.
	hc.Update([]sluice.Endpoint{oldEP})
	waitPush(oldEP)
	body, err := get("/work")
	require.NoError(t, err)
	assert.Equal(t, "old", body)
}

type statusError struct{ status int }

func (e *statusError) Error() string { return http.StatusText(e.status) }
