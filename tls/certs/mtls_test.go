package certs_test

import (
	"crypto/tls"
	"crypto/x509"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/sluiceproxy/sluice/internal/testcert"
	"github.com/sluiceproxy/sluice/tls/certs"
)

func TestServerMTLS(t *testing.T) {
	ca, stranger := testcert.NewCA(t), testcert.NewCA(t)
	var store certs.Keyring
	require.NoError(t, store.Set("srv", &ca.Server(t, "mtls.test").TLS))
	clientCAs := certs.NewCAPool(ca.Pool)
	good := ca.Client(t, "alice")
	foreign := stranger.Client(t, "mallory")
	serverCert := ca.Server(t, "not-a-client") // right CA, wrong key usage

	client := func(certs ...tls.Certificate) *tls.Config {
		return &tls.Config{ServerName: "mtls.test", RootCAs: ca.Pool, Certificates: certs}
	}
	for _, mode := range []tls.ClientAuthType{tls.RequireAndVerifyClientCert, tls.VerifyClientCertIfGiven} {
		t.Run(mode.String(), func(t *testing.T) {
			cfg, err := certs.ServerConfig(&store, certs.ServerOptions{ClientCAs: clientCAs, ClientAuth: mode})
			require.NoError(t, err)
			url := serve(t, cfg)

			_, body, err := get(t, url, client(good.TLS))
			require.NoError(t, err, "a certificate from the CA must be accepted")
			assert.Equal(t, "alice", body, "the handler should see the client certificate")

			_, _, err = get(t, url, client(foreign.TLS))
			assert.Error(t, err, "a certificate from another CA must be rejected")
			_, _, err = get(t, url, client(serverCert.TLS))
			assert.Error(t, err, "a certificate without client-auth usage must be rejected")

			_, body, err = get(t, url, client())
			if mode == tls.RequireAndVerifyClientCert {
				assert.Error(t, err, "no certificate must be rejected when one is required")
			} else {
				require.NoError(t, err, "no certificate is fine when optional")
				assert.Empty(t, body)
			}
		})
	}

	t.Run("CA rotation", func(t *testing.T) {
		pool := certs.NewCAPool(ca.Pool)
		cfg, err := certs.ServerConfig(&store, certs.ServerOptions{ClientCAs: pool})
		require.NoError(t, err)
		url := serve(t, cfg)
		_, _, err = get(t, url, client(good.TLS))
		require.NoError(t, err)
		pool.Set(stranger.Pool)
		_, _, err = get(t, url, client(good.TLS))
		assert.Error(t, err, "after the pool is replaced the old CA's clients are refused")
		_, body, err := get(t, url, client(foreign.TLS))
		require.NoError(t, err, "and the new CA's clients accepted")
		assert.Equal(t, "mallory", body)
	})
}

// TestServerMTLSResumption checks that a resumed session is verified against the current
// pool too: a CA removed from the pool must not keep its clients in through session tickets.
func TestServerMTLSResumption(t *testing.T) {
	ca, other := testcert.NewCA(t), testcert.NewCA(t)
	var store certs.Keyring
	require.NoError(t, store.Set("srv", &ca.Server(t, "mtls.test").TLS))
	pool := certs.NewCAPool(ca.Pool)
	cfg, err := certs.ServerConfig(&store, certs.ServerOptions{ClientCAs: pool})
	require.NoError(t, err)
	url := serve(t, cfg)
	client := &tls.Config{ServerName: "mtls.test", RootCAs: ca.Pool, Certificates: []tls.Certificate{ca.Client(t, "alice").TLS},
		ClientSessionCache: tls.NewLRUClientSessionCache(4)}

	_, _, err = get(t, url, client)
	require.NoError(t, err)
	resp, _, err := get(t, url, client)
	require.NoError(t, err)
	require.True(t, resp.TLS.DidResume, "the second connection should resume")

	pool.Set(other.Pool)
	_, _, err = get(t, url, client)
	assert.Error(t, err, "a resumed session must be refused once its CA leaves the pool")
}

// upstream starts an HTTP/2 TLS backend that requires client certificates from ca and answers
// with the client's common name.
func upstream(t *testing.T, ca *testcert.CA, names ...string) *httptest.Server {
	t.Helper()
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, r.TLS.PeerCertificates[0].Subject.CommonName)
	}))
	srv.EnableHTTP2 = true
	srv.TLS = &tls.Config{
		Certificates: []tls.Certificate{ca.Server(t, names...).TLS},
		ClientCAs:    ca.Pool,
		ClientAuth:   tls.RequireAndVerifyClientCert,
	}
	srv.Config.ErrorLog = log.New(io.Discard, "", 0)
	srv.StartTLS()
	t.Cleanup(srv.Close)
	return srv
}

func TestUpstreamMTLS(t *testing.T) {
	ca, stranger := testcert.NewCA(t), testcert.NewCA(t)
	backend := upstream(t, ca, "backend.default.svc")

	var clientCerts certs.Keyring
	require.NoError(t, clientCerts.Set("proxy", &ca.Client(t, "proxy-v1").TLS))
	clientCerts.SetDefault("proxy")
	roots := certs.NewCAPool(ca.Pool)
	cfg, err := certs.ClientConfig(certs.ClientOptions{
		ServerName: "backend.default.svc", RootCAs: roots, Certificates: &clientCerts,
	})
	require.NoError(t, err)

	resp, body, err := get(t, backend.URL, cfg)
	require.NoError(t, err, "upstream mTLS should succeed")
	assert.Equal(t, "proxy-v1", body, "the backend should see the proxy's certificate")
	assert.Equal(t, 2, resp.ProtoMajor, "the upstream should speak HTTP/2")

	// Rotating the client certificate takes effect on the next connection.
	require.NoError(t, clientCerts.Set("proxy", &ca.Client(t, "proxy-v2").TLS))
	_, body, err = get(t, backend.URL, cfg)
	require.NoError(t, err)
	assert.Equal(t, "proxy-v2", body, "the rotated client certificate should be presented")

	t.Run("wrong server name", func(t *testing.T) {
		cfg, err := certs.ClientConfig(certs.ClientOptions{ServerName: "other.default.svc", RootCAs: roots, Certificates: &clientCerts})
		require.NoError(t, err)
		_, _, err = get(t, backend.URL, cfg)
		var verr *tls.CertificateVerificationError
		assert.ErrorAs(t, err, &verr, "a certificate for another name must be rejected")
	})
	t.Run("untrusted server", func(t *testing.T) {
		pool := certs.NewCAPool(ca.Pool)
		cfg, err := certs.ClientConfig(certs.ClientOptions{ServerName: "backend.default.svc", RootCAs: pool, Certificates: &clientCerts})
		require.NoError(t, err)
		pool.Set(stranger.Pool)
		_, _, err = get(t, backend.URL, cfg)
		assert.Error(t, err, "after the roots rotate away from the backend's CA it must be rejected")
	})
	t.Run("no client certificate", func(t *testing.T) {
		var empty certs.Keyring
		cfg, err := certs.ClientConfig(certs.ClientOptions{ServerName: "backend.default.svc", RootCAs: roots, Certificates: &empty})
		require.NoError(t, err)
		_, _, err = get(t, backend.URL, cfg)
		assert.Error(t, err, "the backend requires a client certificate")
	})
	t.Run("no server name to verify", func(t *testing.T) {
		cfg, err := certs.ClientConfig(certs.ClientOptions{RootCAs: roots, Certificates: &clientCerts})
		require.NoError(t, err)
		_, _, err = get(t, backend.URL, cfg) // dialing 127.0.0.1: no SNI
		assert.ErrorContains(t, err, "set ClientOptions.ServerName")
	})
	t.Run("system roots", func(t *testing.T) {
		cfg, err := certs.ClientConfig(certs.ClientOptions{ServerName: "backend.default.svc", Certificates: &clientCerts})
		require.NoError(t, err)
		assert.False(t, cfg.InsecureSkipVerify, "without RootCAs crypto/tls verifies")
		_, _, err = get(t, backend.URL, cfg)
		var uerr x509.UnknownAuthorityError
		assert.ErrorAs(t, err, &uerr, "the test CA is not a system root")
	})
}
