package healthcheck_test

import (
	"context"
	"crypto/tls"
	"net"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/sluiceproxy/sluice"
	"github.com/sluiceproxy/sluice/healthcheck"
)

// seenRequest is what a test backend saw of a probe.
type seenRequest struct {
	method, uri, host, header string
	proto                     int
}

func TestHTTPProbe(t *testing.T) {
	var mu sync.Mutex
	var last seenRequest
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		last = seenRequest{r.Method, r.RequestURI, r.Host, r.Header.Get("X-Probe"), r.ProtoMajor}
		mu.Unlock()
		code, _ := strconv.Atoi(r.URL.Query().Get("code"))
		if code == 0 {
			code = 200
		}
		w.WriteHeader(code)
		w.Write([]byte(`{"status":"` + r.URL.Query().Get("say") + `"}`))
	})
	srv := httptest.NewServer(h)
	defer srv.Close()
	tlsSrv := httptest.NewTLSServer(h)
	defer tlsSrv.Close()
	ep := sluice.Endpoint{Addr: srv.Listener.Addr().String()}
	tlsEP := sluice.Endpoint{Addr: tlsSrv.Listener.Addr().String()}
	_, port, _ := net.SplitHostPort(ep.Addr)
	portN, _ := strconv.Atoi(port)

	pool := tlsSrv.Client().Transport.(*http.Transport).TLSClientConfig.RootCAs
	for _, tc := range []struct {
		name    string
		probe   *healthcheck.HTTP
		ep      sluice.Endpoint
		wantErr string
		want    seenRequest
	}{
		{
			name:  "defaults: GET / by address",
			probe: &healthcheck.HTTP{},
			ep:    ep,
			want:  seenRequest{method: "GET", uri: "/", host: ep.Addr, proto: 1},
		},
		{
			name: "method, path, Host header and extra headers",
			probe: &healthcheck.HTTP{Method: "HEAD", Path: "/healthz?deep=1", Host: "svc.example",
				Header: http.Header{"X-Probe": {"sluice"}}},
			ep:   ep,
			want: seenRequest{method: "HEAD", uri: "/healthz?deep=1", host: "svc.example", header: "sluice", proto: 1},
		},
		{
			name:    "5xx fails",
			probe:   &healthcheck.HTTP{Path: "/?code=503"},
			ep:      ep,
			wantErr: "unexpected status 503",
		},
		{
			name:  "3xx passes by default and is not followed",
			probe: &healthcheck.HTTP{Path: "/?code=302"},
			ep:    ep,
		},
		{
			name:    "status ranges: 204 is not in 200-200",
			probe:   &healthcheck.HTTP{Path: "/?code=204", Status: []healthcheck.StatusRange{{200, 200}, {418, 418}}},
			ep:      ep,
			wantErr: "unexpected status 204",
		},
		{
			name:  "status ranges: 418 is",
			probe: &healthcheck.HTTP{Path: "/?code=418", Status: []healthcheck.StatusRange{{200, 200}, {418, 418}}},
			ep:    ep,
		},
		{
			name:  "body matches",
			probe: &healthcheck.HTTP{Path: "/?say=green", Body: regexp.MustCompile(`"status":"(green|yellow)"`)},
			ep:    ep,
		},
		{
			name:    "body does not match",
			probe:   &healthcheck.HTTP{Path: "/?say=red", Body: regexp.MustCompile(`"status":"(green|yellow)"`)},
			ep:      ep,
			wantErr: "response body does not match",
		},
		{
			name:  "port override",
			probe: &healthcheck.HTTP{Port: portN},
			ep:    sluice.Endpoint{Addr: "127.0.0.1:1"},
		},
		{
			name:    "bad port",
			probe:   &healthcheck.HTTP{Port: 70000},
			ep:      ep,
			wantErr: "Port must be in [0, 65535], got 70000",
		},
		{
			name:  "HTTPS without verification by default",
			probe: &healthcheck.HTTP{HTTPS: true},
			ep:    tlsEP,
		},
		{
			name:  "HTTPS verified with a TLS config",
			probe: &healthcheck.HTTP{HTTPS: true, TLSConfig: &tls.Config{RootCAs: pool, ServerName: "example.com"}},
			ep:    tlsEP,
		},
		{
			name:    "HTTPS verification failure",
			probe:   &healthcheck.HTTP{HTTPS: true, TLSConfig: &tls.Config{ServerName: "example.com"}},
			ep:      tlsEP,
			wantErr: "certificate",
		},
		{
			name:    "connection refused",
			probe:   &healthcheck.HTTP{},
			ep:      sluice.Endpoint{Addr: closedAddr(t)},
			wantErr: "refused",
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			mu.Lock()
			last = seenRequest{}
			mu.Unlock()
			err := tc.probe.Check(context.Background(), tc.ep)
			if tc.wantErr != "" {
				require.Error(t, err)
				assert.Contains(t, err.Error(), tc.wantErr)
				return
			}
			require.NoError(t, err)
			if tc.want != (seenRequest{}) {
				mu.Lock()
				assert.Equal(t, tc.want, last)
				mu.Unlock()
			}
		})
	}
}

// closedAddr returns an address nothing listens on.
func closedAddr(t *testing.T) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := l.Addr().String()
	l.Close()
	return addr
}

func TestHTTPProbeTimeout(t *testing.T) {
	release := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-release:
		case <-r.Context().Done():
		}
	}))
	defer srv.Close()
	defer close(release)
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	start := time.Now()
	err := (&healthcheck.HTTP{}).Check(ctx, sluice.Endpoint{Addr: srv.Listener.Addr().String()})
	assert.ErrorIs(t, err, context.DeadlineExceeded)
	assert.Less(t, time.Since(start), 5*time.Second)
}

func TestTCPProbe(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer l.Close()
	accepted := make(chan struct{}, 1)
	go func() {
		c, err := l.Accept()
		if err == nil {
			c.Close()
			accepted <- struct{}{}
		}
	}()
	require.NoError(t, (&healthcheck.TCP{}).Check(context.Background(), sluice.Endpoint{Addr: l.Addr().String()}))
	<-accepted

	_, port, _ := net.SplitHostPort(l.Addr().String())
	p, _ := strconv.Atoi(port)
	go func() {
		if c, err := l.Accept(); err == nil {
			c.Close()
		}
	}()
	assert.NoError(t, (&healthcheck.TCP{Port: p}).Check(context.Background(), sluice.Endpoint{Addr: "127.0.0.1:9"}), "Port overrides")

	err = (&healthcheck.TCP{}).Check(context.Background(), sluice.Endpoint{Addr: closedAddr(t)})
	assert.ErrorContains(t, err, "refused")
	err = (&healthcheck.TCP{Port: 80}).Check(context.Background(), sluice.Endpoint{Addr: "no-port"})
	assert.ErrorContains(t, err, `endpoint address "no-port"`)
}
