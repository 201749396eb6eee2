package proxy_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/sluiceproxy/sluice"
	"github.com/sluiceproxy/sluice/proxy"
)

// tryLog records what a tracer would see of the tries: the order of starts and ends, the
// start events, the outgoing requests' endpoint and context, and the end events. Each try's
// request is given a traceparent naming its attempt, as a tracer injects its client span's.
type tryLog struct {
	mu     sync.Mutex
	seq    []string
	starts []proxy.TryStartEvent
	hosts  []string
	parent []any // the value of parentKey in each try's context
	ends   []proxy.TryEvent
}

type parentKey struct{}

func traceparent(attempt int) string { return fmt.Sprintf("00-%032x-%016x-01", 0xabc, attempt) }

func (l *tryLog) hooks() proxy.Hooks {
	return proxy.Hooks{TryStart: func(out *http.Request, e proxy.TryStartEvent) func(proxy.TryEvent) {
		l.mu.Lock()
		defer l.mu.Unlock()
		l.seq = append(l.seq, fmt.Sprint("start ", e.Attempt))
		l.starts = append(l.starts, e)
		l.hosts = append(l.hosts, out.URL.Host)
		l.parent = append(l.parent, out.Context().Value(parentKey{}))
		out.Header.Set("Traceparent", traceparent(e.Attempt))
		return func(e proxy.TryEvent) {
			l.mu.Lock()
			defer l.mu.Unlock()
			l.seq = append(l.seq, fmt.Sprint("end ", e.Attempt))
			l.ends = append(l.ends, e)
		}
	}}
}

func (l *tryLog) snapshot() ([]string, []proxy.TryStartEvent, []string, []any, []proxy.TryEvent) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.seq, l.starts, l.hosts, l.parent, l.ends
}

// withParent serves h with a request context carrying parentKey, as a server span would be.
func withParent(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), parentKey{}, "server span")))
	})
}

// Every field of RequestEvent, for a request whose body the lean client sends whole and one
// of unknown length that net/http's Transport streams.
func TestHooksRequestDone(t *testing.T) {
	for _, tt := range []struct {
		name    string
		chunked bool
	}{{"lean client", false}, {"transport", true}} {
		t.Run(tt.name, func(t *testing.T) {
			c := newCluster()
			c.backend(t, "10.0.0.1:80", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				n, _ := io.Copy(io.Discard, r.Body)
				time.Sleep(5 * time.Millisecond) // a time to first byte to measure, not a wait for behaviour
				fmt.Fprintf(w, "got %d bytes", n)
			}))
			var m metrics
			p := &proxy.Proxy{Picker: newPicker("10.0.0.1:80"), DialContext: c.dial, Hooks: m.hooks()}
			h, served := once(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				p.ServeHTTP(w, r.WithContext(proxy.WithRoute(r.Context(), "upload")))
			}))
			srv := front(t, h)
			payload := strings.Repeat("p", 3000)
			var body io.Reader = strings.NewReader(payload)
			if tt.chunked {
				body = io.MultiReader(body) // hides the length: the client sends it chunked
			}
			before := time.Now()
			res, err := srv.Client().Post(srv.URL+"/up", "text/plain", body)
			require.NoError(t, err)
			got, _ := io.ReadAll(res.Body)
			res.Body.Close()
			require.Equal(t, "got 3000 bytes", string(got))
			waitClosed(t, served, "the proxy must finish serving")
			after := time.Now()
			require.Len(t, m.stats, 1)

			e := m.stats[0]
			assert.False(t, e.Start.Before(before) || e.Start.After(after), "Start %v is when the proxy got the request", e.Start)
			assert.Equal(t, "upload", e.Route)
			assert.Equal(t, "10.0.0.1:80", e.Endpoint)
			assert.Equal(t, 200, e.Status)
			assert.Equal(t, sluice.NoFailure, e.Failure)
			assert.Equal(t, 1, e.Tries)
			assert.EqualValues(t, 3000, e.RequestBytes, "the request body read from the client")
			assert.EqualValues(t, len(got), e.Bytes, "the response body written to the client")
			assert.GreaterOrEqual(t, e.UpstreamLatency, 5*time.Millisecond, "the upstream's time to first byte")
			assert.GreaterOrEqual(t, e.Duration, e.UpstreamLatency, "the whole request lasts longer than its wait for the head")
			assert.LessOrEqual(t, e.Duration, after.Sub(before))
			assert.False(t, e.Upgraded)
		})
	}
}

// once serves one request with h and closes the channel it returns when h has returned:
// hooks run after the response reached the client, who may see it first.
func once(h http.Handler) (http.Handler, <-chan struct{}) {
	served := make(chan struct{})
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		defer close(served)
		h.ServeHTTP(w, r)
	}), served
}

// Each retry is a try of its own, started after the one before ended, with the same parent
// context (sibling spans), and each end says why the next try happens.
func TestHooksTryRetries(t *testing.T) {
	c := newCluster()
	// 10.0.0.1 refuses connections.
	c.backend(t, "10.0.0.2:80", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		conn, _, err := http.NewResponseController(w).Hijack()
		if err == nil {
			conn.Close() // no response at all
		}
	}))
	c.backend(t, "10.0.0.3:80", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "busy", http.StatusServiceUnavailable)
	}))
	c.backend(t, "10.0.0.4:80", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		<-r.Context().Done() // until the per-try timeout gives up on it
	}))
	seen := make(chan []string, 1)
	c.backend(t, "10.0.0.5:80", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		seen <- r.Header.Values("Traceparent")
		io.WriteString(w, "ok")
	}))
	var l tryLog
	var m metrics
	p := &proxy.Proxy{
		Picker:      newPicker("10.0.0.1:80", "10.0.0.2:80", "10.0.0.3:80", "10.0.0.4:80", "10.0.0.5:80"),
		DialContext: c.dial,
		Retry: proxy.Retry{MaxTries: 5, Backoff: -1, PerTryTimeout: 300 * time.Millisecond,
			RetryOn: []int{http.StatusServiceUnavailable}},
		Hooks: proxy.JoinHooks(l.hooks(), m.hooks()),
	}
	h, served := once(withParent(p))
	srv := front(t, h)
	t.Cleanup(p.CloseIdleConnections)
	res, body := get(t, srv.Client(), srv.URL+"/retry")
	require.Equal(t, 200, res.StatusCode)
	require.Equal(t, "ok", body)
	assert.Equal(t, []string{traceparent(5)}, <-seen, "the upstream gets the last try's traceparent, once")
	waitClosed(t, served, "the proxy must finish serving")
	require.Len(t, m.stats, 1)

	seq, starts, hosts, parents, ends := l.snapshot()
	assert.Equal(t, []string{"start 1", "end 1", "start 2", "end 2", "start 3", "end 3", "start 4", "end 4", "start 5", "end 5"},
		seq, "each try ends before the next starts")
	require.Len(t, starts, 5)
	require.Len(t, ends, 5)
	wantReason := []proxy.RetryReason{proxy.RetryConnect, proxy.RetryConnection, proxy.RetryStatus, proxy.RetryTimeout, proxy.NoRetry}
	wantFailure := []sluice.Failure{sluice.ConnectFailure, sluice.ConnectionFailure, sluice.NoFailure, sluice.Timeout, sluice.NoFailure}
	wantStatus := []int{0, 0, 503, 0, 200}
	for i := range 5 {
		addr := fmt.Sprintf("10.0.0.%d:80", i+1)
		assert.Equal(t, proxy.TryStartEvent{Endpoint: sluice.Endpoint{Addr: addr}, Attempt: i + 1}, starts[i])
		assert.Equal(t, addr, hosts[i], "the outgoing request names the try's endpoint")
		assert.Equal(t, "server span", parents[i], "every try's request has the client's context: sibling spans")
		e := ends[i]
		assert.Equal(t, addr, e.Endpoint.Addr)
		assert.Equal(t, i+1, e.Attempt)
		assert.Equal(t, wantReason[i], e.Retry, "why try %d is followed by another", i+1)
		assert.Equal(t, wantFailure[i], e.Outcome.Failure, "try %d", i+1)
		assert.Equal(t, wantStatus[i], e.Outcome.Status, "try %d", i+1)
		assert.GreaterOrEqual(t, e.Outcome.Duration, e.Outcome.Latency, "a try lasts at least until its head")
	}
	assert.GreaterOrEqual(t, ends[3].Outcome.Latency, 300*time.Millisecond, "the timed-out try waited for its per-try timeout")
	assert.Equal(t, 5, m.stats[0].Tries)
	assert.Equal(t, sluice.NoFailure, m.stats[0].Failure, "the request's failure is its last try's: none")
	assert.Equal(t, "timeout", proxy.RetryTimeout.String())
}

// The header TryStart sets reaches the upstream whichever default transport carries the try:
// the lean HTTP/1.1 client (a GET), net/http's Transport (a body of unknown length, and h2c),
// and the HTTP/1.1 transport of upgrades.
func TestHooksTryStartHeaderReachesUpstream(t *testing.T) {
	for _, tt := range []struct {
		name  string
		proto proxy.Protocol
		body  bool // a body of unknown length: not the lean client's
	}{
		{"lean HTTP/1.1 client", proxy.HTTP1, false},
		{"net/http Transport", proxy.HTTP1, true},
		{"h2c Transport", proxy.H2C, false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			c := newCluster()
			got := make(chan []string, 1)
			h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				io.Copy(io.Discard, r.Body)
				got <- r.Header.Values("Traceparent")
			})
			if tt.proto == proxy.H2C {
				c.h2cBackend(t, "10.0.0.1:80", h)
			} else {
				c.backend(t, "10.0.0.1:80", h)
			}
			var l tryLog
			p := &proxy.Proxy{Picker: newPicker("10.0.0.1:80"), DialContext: c.dial, Protocol: tt.proto, Hooks: l.hooks()}
			fh, served := once(p)
			srv := front(t, fh)
			t.Cleanup(p.CloseIdleConnections)
			var body io.Reader
			method := http.MethodGet
			if tt.body {
				method, body = http.MethodPost, io.MultiReader(bytes.NewReader([]byte("x")))
			}
			req, err := http.NewRequest(method, srv.URL, body)
			require.NoError(t, err)
			res, err := srv.Client().Do(req)
			require.NoError(t, err)
			res.Body.Close()
			assert.Equal(t, []string{traceparent(1)}, <-got)
			waitClosed(t, served, "the proxy must finish serving")
			seq, _, _, _, _ := l.snapshot()
			assert.Equal(t, []string{"start 1", "end 1"}, seq)
		})
	}
	t.Run("upgrade", func(t *testing.T) {
		c := newCluster()
		ws := newWSBackend()
		c.backend(t, "10.0.0.1:80", ws)
		var l tryLog
		var m metrics
		p := &proxy.Proxy{Picker: newPicker("10.0.0.1:80"), DialContext: c.dial, Hooks: proxy.JoinHooks(l.hooks(), m.hooks())}
		served := make(chan struct{})
		srv := front(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			defer close(served)
			p.ServeHTTP(w, r)
		}))
		t.Cleanup(p.CloseIdleConnections)
		conn, br := wsDial(t, srv.Listener.Addr().String())
		assert.Equal(t, []string{traceparent(1)}, (<-ws.header).Values("Traceparent"))
		io.WriteString(conn, "hi\n")
		line, err := readLine(br, 10*time.Second)
		require.NoError(t, err)
		assert.Equal(t, "hi\n", line)
		seq, _, _, _, _ := l.snapshot()
		assert.Equal(t, []string{"start 1"}, seq, "an upgraded try lasts as long as its tunnel")
		conn.Close()
		waitClosed(t, served, "the proxy must finish serving when the tunnel ends")
		seq, _, _, _, ends := l.snapshot()
		assert.Equal(t, []string{"start 1", "end 1"}, seq)
		require.Len(t, ends, 1)
		assert.Equal(t, 101, ends[0].Outcome.Status)
		m.mu.Lock()
		defer m.mu.Unlock()
		require.Len(t, m.stats, 1)
		assert.True(t, m.stats[0].Upgraded)
		assert.Equal(t, 101, m.stats[0].Status)
	})
}

// A retry through net/http's Transport sends its own traceparent, not the first try's: the
// hook's header change applies to its try alone.
func TestHooksTryStartHeaderOnRetry(t *testing.T) {
	c := newCluster()
	got := make(chan []string, 2)
	for _, ep := range []string{"10.0.0.1:80", "10.0.0.2:80"} {
		status := http.StatusServiceUnavailable
		if ep == "10.0.0.2:80" {
			status = http.StatusOK
		}
		c.backend(t, ep, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			io.Copy(io.Discard, r.Body)
			got <- r.Header.Values("Traceparent")
			w.WriteHeader(status)
		}))
	}
	var l tryLog
	p := &proxy.Proxy{Picker: newPicker("10.0.0.1:80", "10.0.0.2:80"), DialContext: c.dial, Hooks: l.hooks(),
		Retry: proxy.Retry{Backoff: -1, RetryOn: []int{http.StatusServiceUnavailable}}}
	srv := front(t, p)
	req, err := http.NewRequest(http.MethodPut, srv.URL, io.MultiReader(strings.NewReader("body")))
	require.NoError(t, err)
	res, err := srv.Client().Do(req)
	require.NoError(t, err)
	res.Body.Close()
	assert.Equal(t, 200, res.StatusCode)
	assert.Equal(t, []string{traceparent(1)}, <-got)
	assert.Equal(t, []string{traceparent(2)}, <-got)
}

func TestJoinHooks(t *testing.T) {
	assert.Equal(t, proxy.Hooks{}, proxy.JoinHooks(proxy.Hooks{}, proxy.Hooks{}), "nothing set, nothing to call")

	var calls []string
	mk := func(name string, end bool) proxy.Hooks {
		return proxy.Hooks{
			RequestDone: func(*http.Request, proxy.RequestEvent) { calls = append(calls, name+" done") },
			TryStart: func(*http.Request, proxy.TryStartEvent) func(proxy.TryEvent) {
				calls = append(calls, name+" start")
				if !end {
					return nil
				}
				return func(proxy.TryEvent) { calls = append(calls, name+" end") }
			},
		}
	}
	j := proxy.JoinHooks(mk("a", true), proxy.Hooks{}, mk("b", false), mk("c", true))
	j.RequestDone(nil, proxy.RequestEvent{})
	end := j.TryStart(nil, proxy.TryStartEvent{})
	require.NotNil(t, end)
	end(proxy.TryEvent{})
	assert.Equal(t, []string{"a done", "b done", "c done", "a start", "b start", "c start", "a end", "c end"}, calls)

	calls = nil
	only := proxy.JoinHooks(mk("b", false))
	assert.Nil(t, only.TryStart(nil, proxy.TryStartEvent{}), "no listener wants the end")

	// A try that one listener of several wants the end of costs no allocation: its end is
	// returned as it is.
	end1 := func(proxy.TryEvent) {}
	quiet := proxy.JoinHooks(
		proxy.Hooks{TryStart: func(*http.Request, proxy.TryStartEvent) func(proxy.TryEvent) { return end1 }},
		proxy.Hooks{TryStart: func(*http.Request, proxy.TryStartEvent) func(proxy.TryEvent) { return nil }},
	)
	out := httptest.NewRequest("GET", "/", nil)
	assert.Zero(t, testing.AllocsPerRun(100, func() { quiet.TryStart(out, proxy.TryStartEvent{})(proxy.TryEvent{}) }))
}
