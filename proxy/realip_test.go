package proxy_test

import (
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/sluiceproxy/sluice"
	"github.com/sluiceproxy/sluice/proxy"
)

// TestRealIPHeaders checks the client-address fields besides X-Forwarded-For and Forwarded: a
// client must not be able to name its own address in any field a backend may read.
func TestRealIPHeaders(t *testing.T) {
	trusted, err := sluice.ParseTrustedProxies("127.0.0.0/8", "10.0.0.0/8")
	require.NoError(t, err)
	forged := http.Header{
		"X-Real-Ip": {"6.6.6.6"}, "True-Client-Ip": {"6.6.6.6"}, "X-Client-Ip": {"6.6.6.6"},
		"Cf-Connecting-Ip": {"6.6.6.6"}, "Fastly-Client-Ip": {"6.6.6.6"},
		// CGI-style backends read X_Real_IP as X-Real-IP.
		"X_real_ip": {"6.6.6.6"}, "X_forwarded_for": {"6.6.6.6"}, "Cf_connecting_ip": {"6.6.6.6"},
	}
	tests := []struct {
		name    string
		trusted *sluice.TrustedProxies
		extra   []string // Proxy.ClientIPHeaders
		in      http.Header
		want    map[string]string // "" means absent
	}{
		{"no fields: X-Real-IP set", nil, nil, http.Header{},
			map[string]string{"X-Real-Ip": "127.0.0.1", "Cf-Connecting-Ip": "", "True-Client-Ip": ""}},
		{"untrusted peer: every client address replaced", nil, nil, forged,
			map[string]string{"X-Real-Ip": "127.0.0.1", "True-Client-Ip": "127.0.0.1", "X-Client-Ip": "127.0.0.1",
				"Cf-Connecting-Ip": "127.0.0.1", "Fastly-Client-Ip": "127.0.0.1",
				"X_real_ip": "", "X_forwarded_for": "", "Cf_connecting_ip": ""}},
		{"trusted peer: X-Real-IP is the client its chain names, the others kept", trusted, nil, http.Header{
			"X-Forwarded-For": {"1.2.3.4, 10.0.0.1"}, "X-Real-Ip": {"9.9.9.9"},
			"Cf-Connecting-Ip": {"5.5.5.5"}, "X_real_ip": {"6.6.6.6"}},
			map[string]string{"X-Real-Ip": "1.2.3.4", "Cf-Connecting-Ip": "5.5.5.5", "X_real_ip": "",
				"X-Forwarded-For": "1.2.3.4, 10.0.0.1, 127.0.0.1"}},
		{"trusted peer without a chain: the peer", trusted, nil, http.Header{"X-Real-Ip": {"9.9.9.9"}},
			map[string]string{"X-Real-Ip": "127.0.0.1", "X-Forwarded-For": "127.0.0.1"}},
		{"an embedder's field is replaced too", nil, []string{"x-cluster-client-ip"},
			http.Header{"X-Cluster-Client-Ip": {"6.6.6.6"}, "X_cluster_client_ip": {"6.6.6.6"}},
			map[string]string{"X-Cluster-Client-Ip": "127.0.0.1", "X_cluster_client_ip": ""}},
		{"an embedder's field is kept from a trusted peer", trusted, []string{"X-Cluster-Client-Ip"},
			http.Header{"X-Cluster-Client-Ip": {"5.5.5.5"}},
			map[string]string{"X-Cluster-Client-Ip": "5.5.5.5"}},
		{"without ClientIPHeaders it passes", nil, nil,
			http.Header{"X-Cluster-Client-Ip": {"6.6.6.6"}},
			map[string]string{"X-Cluster-Client-Ip": "6.6.6.6"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := newCluster()
			var got http.Header
			c.backend(t, "10.0.0.1:80", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				got = r.Header.Clone()
			}))
			p := &proxy.Proxy{Picker: newPicker("10.0.0.1:80"), DialContext: c.dial, TrustedProxies: tt.trusted,
				ClientIPHeaders: tt.extra}
			srv := httptest.NewServer(p)
			defer srv.Close()
			defer p.CloseIdleConnections()
			req, err := http.NewRequest("GET", srv.URL, nil)
			require.NoError(t, err)
			for k, vv := range tt.in {
				req.Header[k] = vv
			}
			res, err := srv.Client().Do(req)
			require.NoError(t, err)
			res.Body.Close()
			require.Equal(t, http.StatusOK, res.StatusCode)
			for k, v := range tt.want {
				if v == "" {
					assert.NotContains(t, got, k, "%s must not reach the backend", k)
					continue
				}
				assert.Equal(t, []string{v}, got[k], k)
			}
		})
	}
}
