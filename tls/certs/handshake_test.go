package certs_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"io"
	"log"
	"net"
	"net/http"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/sluiceproxy/sluice/internal/testcert"
	"github.com/sluiceproxy/sluice/tls/certs"
)

// serve runs an HTTP server with cfg on a loopback port and returns its https URL. The handler
// echoes the client certificate's common name, if any.
func serve(t *testing.T, cfg *tls.Config) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	srv := &http.Server{
		TLSConfig: cfg,
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if len(r.TLS.PeerCertificates) > 0 {
				_, _ = io.WriteString(w, r.TLS.PeerCertificates[0].Subject.CommonName)
			}
		}),
		ErrorLog: log.New(io.Discard, "", 0),
	}
	go func() { _ = srv.ServeTLS(ln, "", "") }()
	t.Cleanup(func() { _ = srv.Close() })
	return "https://" + ln.Addr().String()
}

// get makes one request on a fresh connection with client config cfg and returns the response
// with its body read.
func get(t *testing.T, url string, cfg *tls.Config) (*http.Response, string, error) {
	t.Helper()
	tr := &http.Transport{TLSClientConfig: cfg, ForceAttemptHTTP2: true}
	defer tr.CloseIdleConnections()
	resp, err := (&http.Client{Transport: tr}).Get(url)
	if err != nil {
		return nil, "", err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	return resp, string(body), err
}

// handshake dials addr with SNI serverName, trusting roots, and returns the server's leaf.
func handshake(ctx context.Context, addr, serverName string, roots *x509.CertPool) (*x509.Certificate, error) {
	d := &tls.Dialer{Config: &tls.Config{ServerName: serverName, RootCAs: roots}}
	conn, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	return conn.(*tls.Conn).ConnectionState().PeerCertificates[0], nil
}

func TestHandshakeSelectsBySNI(t *testing.T) {
	ca := testcert.NewCA(t)
	var store certs.Keyring
	exact := ca.Server(t, "example.com")
	wild := ca.Server(t, "*.example.com")
	def := ca.Server(t, "default.test", "127.0.0.1")
	require.NoError(t, store.Update(map[string]*tls.Certificate{"exact": &exact.TLS, "wild": &wild.TLS, "def": &def.TLS}))
	store.SetDefault("def")
	cfg, err := certs.ServerConfig(&store, certs.ServerOptions{})
	require.NoError(t, err)
	url := serve(t, cfg)

	tests := []struct {
		name, sni, verify string
		want              *testcert.Cert
	}{
		{"exact", "example.com", "example.com", exact},
		{"wildcard", "api.example.com", "api.example.com", wild},
		{"no SNI gets default", "", "", def}, // dialing 127.0.0.1 sends no SNI
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			// Verify as a client would: by the SNI sent, or by the IP dialed when none is.
			resp, _, err := get(t, url, &tls.Config{RootCAs: ca.Pool, ServerName: tt.verify})
			require.NoError(t, err)
			assert.Equal(t, 2, resp.ProtoMajor, "ALPN should negotiate HTTP/2")
			assert.Equal(t, tt.want.Leaf.SerialNumber, resp.TLS.PeerCertificates[0].SerialNumber,
				"SNI %q should be served %v", tt.sni, tt.want.Leaf.DNSNames)
		})
	}

	// The default does not cover unknown.test, so a verifying client rejects it; look at what
	// was served instead.
	_, _, err = get(t, url, &tls.Config{RootCAs: ca.Pool, ServerName: "unknown.test"})
	assert.Error(t, err, "the default certificate does not name unknown.test")
	leaf, err := handshakeInsecure(url, "unknown.test")
	require.NoError(t, err)
	assert.Equal(t, def.Leaf.SerialNumber, leaf.SerialNumber, "an unknown SNI should get the default")
}

// handshakeInsecure returns what the server presents for sni without verifying it.
func handshakeInsecure(url, sni string) (*x509.Certificate, error) {
	conn, err := tls.Dial("tcp", url[len("https://"):], &tls.Config{ServerName: sni, InsecureSkipVerify: true})
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	return conn.ConnectionState().PeerCertificates[0], nil
}

func TestHandshakeFailsWithoutCertificate(t *testing.T) {
	ca := testcert.NewCA(t)
	var store certs.Keyring
	require.NoError(t, store.Set("a", &ca.Server(t, "a.test").TLS))
	store.SetDefault("") // no default, not even the first stored
	cfg, err := certs.ServerConfig(&store, certs.ServerOptions{})
	require.NoError(t, err)
	url := serve(t, cfg)
	_, err = handshakeInsecure(url, "b.test")
	assert.Error(t, err, "with no default, an unknown SNI must fail the handshake")
	_, err = handshakeInsecure(url, "")
	assert.Error(t, err, "with no default, a handshake without SNI must fail")
}

// A client without SNI is served the first certificate loaded, with no SetDefault; SetDefault
// overrides it.
func TestHandshakeWithoutSNIGetsFirstCertificate(t *testing.T) {
	ca := testcert.NewCA(t)
	first := ca.Server(t, "first.test", "127.0.0.1")
	second := ca.Server(t, "second.test", "127.0.0.1")
	var store certs.Keyring
	require.NoError(t, store.Set("z-first", &first.TLS))
	require.NoError(t, store.Set("a-second", &second.TLS))
	cfg, err := certs.ServerConfig(&store, certs.ServerOptions{})
	require.NoError(t, err)
	url := serve(t, cfg)

	// Dialing 127.0.0.1 sends no SNI; the client verifies the IP.
	resp, _, err := get(t, url, &tls.Config{RootCAs: ca.Pool})
	require.NoError(t, err, "a client without SNI must be served")
	assert.Equal(t, first.Leaf.SerialNumber, resp.TLS.PeerCertificates[0].SerialNumber,
		"the first certificate stored is the default, not the first key in sorted order")

	store.SetDefault("a-second")
	resp, _, err = get(t, url, &tls.Config{RootCAs: ca.Pool})
	require.NoError(t, err)
	assert.Equal(t, second.Leaf.SerialNumber, resp.TLS.PeerCertificates[0].SerialNumber, "SetDefault overrides")
}

func TestServerConfigDefaults(t *testing.T) {
	var store certs.Keyring
	cfg, err := certs.ServerConfig(&store, certs.ServerOptions{})
	require.NoError(t, err)
	assert.Equal(t, uint16(tls.VersionTLS12), cfg.MinVersion)
	assert.Equal(t, []string{"h2", "http/1.1"}, cfg.NextProtos)
	insecure := map[uint16]bool{}
	for _, cs := range tls.InsecureCipherSuites() {
		insecure[cs.ID] = true
	}
	for _, id := range cfg.CipherSuites {
		assert.False(t, insecure[id], "suite %s is insecure", tls.CipherSuiteName(id))
		assert.NotContains(t, tls.CipherSuiteName(id), "CBC", "CBC suites should be off")
		assert.Contains(t, tls.CipherSuiteName(id), "ECDHE", "suites should be forward secret")
	}
	assert.Equal(t, tls.NoClientCert, cfg.ClientAuth)

	// A client limited to TLS 1.1 is refused.
	ca := testcert.NewCA(t)
	require.NoError(t, store.Set("a", &ca.Server(t, "a.test").TLS))
	url := serve(t, cfg)
	_, err = tls.Dial("tcp", url[len("https://"):], &tls.Config{ServerName: "a.test", RootCAs: ca.Pool, MaxVersion: tls.VersionTLS11})
	assert.Error(t, err, "TLS 1.1 must be refused")
	// TLS 1.3 is chosen when both sides can.
	leafConn, err := tls.Dial("tcp", url[len("https://"):], &tls.Config{ServerName: "a.test", RootCAs: ca.Pool})
	require.NoError(t, err)
	assert.Equal(t, uint16(tls.VersionTLS13), leafConn.ConnectionState().Version)
	_ = leafConn.Close()
}

func TestConfigValidation(t *testing.T) {
	var store certs.Keyring
	pool := certs.NewCAPool(x509.NewCertPool())
	tests := []struct {
		name string
		opts certs.ServerOptions
		want string
	}{
		{"old version", certs.ServerOptions{MinVersion: tls.VersionTLS10}, "MinVersion must be ≥ TLS 1.2, got TLS 1.0"},
		{"auth without CAs", certs.ServerOptions{ClientAuth: tls.RequireAndVerifyClientCert}, "needs ClientCAs"},
		{"unverified auth", certs.ServerOptions{ClientCAs: pool, ClientAuth: tls.RequireAnyClientCert}, "ClientAuth must be"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := certs.ServerConfig(&store, tt.opts)
			require.Error(t, err)
			assert.Contains(t, err.Error(), tt.want)
		})
	}
	_, err := certs.ServerConfig(nil, certs.ServerOptions{})
	assert.ErrorContains(t, err, "needs a Keyring")
	_, err = certs.ClientConfig(certs.ClientOptions{MinVersion: tls.VersionTLS11})
	assert.ErrorContains(t, err, "MinVersion must be ≥ TLS 1.2, got TLS 1.1")
}
