package certs_test

import (
	"context"
	"crypto/tls"
	"io"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/crypto/ocsp"

	"github.com/sluiceproxy/sluice/internal/testcert"
	"github.com/sluiceproxy/sluice/tls/certs"
)

func TestStapler(t *testing.T) {
	ca := testcert.NewCA(t)
	base := time.Now().Truncate(time.Second)
	var status atomic.Int64 // ocsp.Good is 0
	var requests atomic.Int64
	responder := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		requests.Add(1)
		body, _ := io.ReadAll(r.Body)
		req, err := ocsp.ParseRequest(body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		resp, err := ocsp.CreateResponse(ca.Cert, ca.Cert, ocsp.Response{
			Status: int(status.Load()), SerialNumber: req.SerialNumber,
			ThisUpdate: base, NextUpdate: base.Add(4 * time.Hour), RevokedAt: base,
		}, ca.Key)
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		_, _ = w.Write(resp)
	}))
	t.Cleanup(responder.Close)

	leaf := ca.Issue(t, testcert.Template{Names: []string{"ocsp.test"}, OCSPServer: []string{responder.URL}})
	cert := leaf.TLS
	cert.Certificate = append(cert.Certificate, ca.Cert.Raw) // the issuer, as a chain carries it
	var store certs.Keyring
	require.NoError(t, store.Set("site", &cert))
	require.NoError(t, store.Set("plain", &ca.Server(t, "plain.test").TLS)) // no responder: left alone

	now := base
	stapler := &certs.Stapler{Keyring: &store, Now: func() time.Time { return now }, Logger: quiet}
	require.NoError(t, stapler.Refresh(context.Background()))
	assert.Equal(t, int64(1), requests.Load(), "one certificate has a responder")

	cfg, err := certs.ServerConfig(&store, certs.ServerOptions{})
	require.NoError(t, err)
	addr := serve(t, cfg)[len("https://"):]
	staple := func() []byte {
		conn, err := tls.Dial("tcp", addr, &tls.Config{ServerName: "ocsp.test", RootCAs: ca.Pool})
		require.NoError(t, err)
		defer conn.Close()
		return conn.ConnectionState().OCSPResponse
	}
	got := staple()
	require.NotEmpty(t, got, "the handshake should carry a staple")
	parsed, err := ocsp.ParseResponseForCert(got, leaf.Leaf, ca.Cert)
	require.NoError(t, err)
	assert.Equal(t, ocsp.Good, parsed.Status)

	now = base.Add(time.Hour)
	require.NoError(t, stapler.Refresh(context.Background()))
	assert.Equal(t, int64(1), requests.Load(), "a staple before half its validity is not refetched")

	now = base.Add(3 * time.Hour)
	status.Store(ocsp.Revoked)
	err = stapler.Refresh(context.Background())
	assert.ErrorContains(t, err, "revoked", "a revocation is reported")
	assert.Equal(t, int64(2), requests.Load(), "a staple past half its validity is refetched")
	assert.Empty(t, staple(), "a revoked certificate is no longer stapled as good")

	assert.ErrorContains(t, (&certs.Stapler{}).Refresh(context.Background()), "Keyring is nil")
}
