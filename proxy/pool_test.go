package proxy_test

import (
	"net/http"
	"net/http/httptest"
	"strconv"
	"sync"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/sluiceproxy/sluice"
	"github.com/sluiceproxy/sluice/proxy"
)

// The proxy keeps the state of a request (its exchange) in a pool, and clears it as the
// request ends. These tests keep what the request handed out — the client's response header,
// the response ModifyResponse got, the request a RoundTripper got, the Tried a Picker got —
// and check it after ServeHTTP returned and after the next requests: a pooled exchange that
// something still reached would show up as values cleared or taken over by a later request.

// numbered answers each request with its number in X-N and its body.
func numbered(t *testing.T) *httptest.Server {
	var mu sync.Mutex
	n := 0
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		n++
		s := strconv.Itoa(n)
		mu.Unlock()
		w.Header().Set("X-N", s)
		w.Header().Add("X-Pair", "a"+s)
		w.Header().Add("X-Pair", "b"+s)
		w.Write([]byte(s))
	}))
	t.Cleanup(srv.Close)
	return srv
}

// TestPooledExchangeResponseHeader keeps the response header maps of requests served one
// after another: the values the proxy put there must stay the upstream's.
func TestPooledExchangeResponseHeader(t *testing.T) {
	backend := numbered(t)
	p := &proxy.Proxy{Picker: newPicker(backend.Listener.Addr().String())}
	defer p.CloseIdleConnections()
	var kept []http.Header
	for range 5 {
		rec := httptest.NewRecorder()
		p.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "http://shop.example/", nil))
		require.Equal(t, http.StatusOK, rec.Code)
		kept = append(kept, rec.Header()) // the map the proxy wrote, not the recorder's copy
	}
	for i, h := range kept {
		s := strconv.Itoa(i + 1)
		assert.Equal(t, s, h.Get("X-N"), "response %d", i+1)
		assert.Equal(t, []string{"a" + s, "b" + s}, h["X-Pair"], "response %d", i+1)
	}
}

// TestPooledExchangeModifyResponse keeps the responses ModifyResponse was given, with their
// header, request and URL.
func TestPooledExchangeModifyResponse(t *testing.T) {
	backend := numbered(t)
	var kept []*http.Response
	p := &proxy.Proxy{
		Picker: newPicker(backend.Listener.Addr().String()),
		ModifyResponse: func(res *http.Response) error {
			kept = append(kept, res)
			return nil
		},
	}
	defer p.CloseIdleConnections()
	for i := range 5 {
		req := httptest.NewRequest(http.MethodGet, "http://shop.example/"+strconv.Itoa(i+1), nil)
		p.ServeHTTP(httptest.NewRecorder(), req)
	}
	require.Len(t, kept, 5)
	for i, res := range kept {
		s := strconv.Itoa(i + 1)
		assert.Equal(t, s, res.Header.Get("X-N"), "response %d", i+1)
		require.NotNil(t, res.Request, "response %d", i+1)
		assert.Equal(t, "/"+s, res.Request.URL.Path, "response %d", i+1)
		assert.Equal(t, backend.Listener.Addr().String(), res.Request.URL.Host, "response %d", i+1)
		assert.Equal(t, "192.0.2.1", res.Request.Header.Get("X-Forwarded-For"), "response %d", i+1)
	}
}

// keepingTransport answers every request itself and keeps it.
type keepingTransport struct {
	mu   sync.Mutex
	reqs []*http.Request
}

func (t *keepingTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	t.mu.Lock()
	t.reqs = append(t.reqs, r)
	t.mu.Unlock()
	return &http.Response{StatusCode: http.StatusOK, Header: http.Header{}, Body: http.NoBody, Request: r}, nil
}

// TestPooledExchangeTransport keeps the requests a RoundTripper was given: their header and
// URL must stay as sent.
func TestPooledExchangeTransport(t *testing.T) {
	rt := &keepingTransport{}
	p := &proxy.Proxy{Picker: newPicker("10.0.0.1:80"), Transport: rt}
	for i := range 5 {
		req := httptest.NewRequest(http.MethodGet, "http://shop.example/"+strconv.Itoa(i+1), nil)
		req.RemoteAddr = "192.0.2." + strconv.Itoa(i+1) + ":5000"
		p.ServeHTTP(httptest.NewRecorder(), req)
	}
	require.Len(t, rt.reqs, 5)
	for i, r := range rt.reqs {
		s := strconv.Itoa(i + 1)
		assert.Equal(t, "/"+s, r.URL.Path, "request %d", i+1)
		assert.Equal(t, "10.0.0.1:80", r.URL.Host, "request %d", i+1)
		assert.Equal(t, "192.0.2."+s, r.Header.Get("X-Forwarded-For"), "request %d", i+1)
		assert.Equal(t, "for=192.0.2."+s+";host=shop.example;proto=http", r.Header.Get("Forwarded"),
			"request %d", i+1)
	}
}

// keepingPicker fails over from a refusing endpoint to a live one, and keeps every Tried it
// was given.
type keepingPicker struct {
	live  string
	tried [][]string
}

func (p *keepingPicker) Pick(info sluice.PickInfo) (sluice.PickResult, error) {
	p.tried = append(p.tried, info.Tried)
	if len(info.Tried) == 0 {
		return sluice.PickResult{Endpoint: sluice.Endpoint{Addr: refusingAddr}}, nil
	}
	return sluice.PickResult{Endpoint: sluice.Endpoint{Addr: p.live}}, nil
}

// TestPooledExchangeTried keeps the Tried lists of requests that were retried.
func TestPooledExchangeTried(t *testing.T) {
	backend := numbered(t)
	pk := &keepingPicker{live: backend.Listener.Addr().String()}
	p := &proxy.Proxy{Picker: pk, Retry: proxy.Retry{Backoff: -1}}
	defer p.CloseIdleConnections()
	for range 3 {
		rec := httptest.NewRecorder()
		p.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "http://shop.example/", nil))
		require.Equal(t, http.StatusOK, rec.Code)
	}
	require.Len(t, pk.tried, 6)
	for i, tried := range pk.tried {
		if i%2 == 0 {
			assert.Empty(t, tried, "pick %d is a first try", i+1)
		} else {
			assert.Equal(t, []string{refusingAddr}, tried, "pick %d retries", i+1)
		}
	}
}
