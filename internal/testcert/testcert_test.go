package testcert_test

import (
	"crypto/tls"
	"crypto/x509"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/sluiceproxy/sluice/internal/testcert"
)

func TestIssuedCertificatesVerify(t *testing.T) {
	ca := testcert.NewCA(t)
	srv := ca.Server(t, "example.com", "127.0.0.1")
	_, err := srv.Leaf.Verify(x509.VerifyOptions{Roots: ca.Pool, DNSName: "example.com"})
	assert.NoError(t, err, "server certificate should verify for its DNS name")
	_, err = srv.Leaf.Verify(x509.VerifyOptions{Roots: ca.Pool, DNSName: "127.0.0.1"})
	assert.NoError(t, err, "server certificate should verify for its IP")

	cli := ca.Client(t, "proxy")
	_, err = cli.Leaf.Verify(x509.VerifyOptions{Roots: ca.Pool, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}})
	assert.NoError(t, err, "client certificate should verify for client auth")

	pair, err := tls.X509KeyPair(srv.CertPEM, srv.KeyPEM)
	require.NoError(t, err, "PEM bytes should load as a key pair")
	assert.Equal(t, srv.TLS.Certificate[0], pair.Certificate[0])
}
