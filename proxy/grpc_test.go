package proxy_test

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/sluiceproxy/sluice/proxy"
)

// A gRPC call that cannot be forwarded is answered the way gRPC clients understand: HTTP 200
// with grpc-status, not a text/plain 502. grpc-timeout is the call's deadline.
func TestGRPCShapedErrors(t *testing.T) {
	c := newCluster()
	stalled := make(chan struct{})
	up := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-stalled:
		case <-r.Context().Done():
		}
	}))
	up.Config.Protocols = proxy.ServerProtocols()
	up.Start()
	t.Cleanup(up.Close)
	t.Cleanup(func() { close(stalled) }) // runs first
	c.add("10.0.0.1:80", up.Listener.Addr().String())
	tests := []struct {
		name    string
		addrs   []string
		timeout string
		code    string
	}{
		{"no endpoint", nil, "", "14"},
		{"connect failure", []string{"10.9.9.9:80"}, "", "14"},
		{"grpc-timeout passes", []string{"10.0.0.1:80"}, "200m", "4"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := &proxy.Proxy{Picker: newPicker(tt.addrs...), DialContext: c.dial, Protocol: proxy.H2C}
			srv := httptest.NewUnstartedServer(p)
			srv.Config.Protocols = proxy.ServerProtocols()
			srv.Start()
			t.Cleanup(srv.Close)
			tr := &http.Transport{Protocols: new(http.Protocols)}
			tr.Protocols.SetUnencryptedHTTP2(true)
			t.Cleanup(tr.CloseIdleConnections)
			req, err := http.NewRequest(http.MethodPost, srv.URL+"/pkg.Svc/Method", strings.NewReader("\x00\x00\x00\x00\x00"))
			require.NoError(t, err)
			req.Header.Set("Content-Type", "application/grpc+proto")
			req.Header.Set("Te", "trailers")
			if tt.timeout != "" {
				req.Header.Set("Grpc-Timeout", tt.timeout)
			}
			start := time.Now()
			res, err := (&http.Client{Transport: tr, Timeout: 10 * time.Second}).Do(req)
			require.NoError(t, err)
			res.Body.Close()
			assert.Equal(t, http.StatusOK, res.StatusCode, "gRPC errors travel in grpc-status")
			assert.Equal(t, "application/grpc", res.Header.Get("Content-Type"))
			assert.Equal(t, tt.code, res.Header.Get("Grpc-Status"))
			assert.NotEmpty(t, res.Header.Get("Grpc-Message"))
			if tt.timeout != "" {
				assert.Less(t, time.Since(start), 5*time.Second, "the call ends at its grpc-timeout, not the proxy's 60s")
			}
		})
	}
}
