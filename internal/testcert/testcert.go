// Package testcert issues throwaway certificates for tests: a CA, server certificates for given
// names and client certificates, with both the parsed [tls.Certificate] and the PEM bytes a
// file or Kubernetes Secret would hold.
//
//	ca := testcert.NewCA(t)
//	srv := ca.Server(t, "example.com", "127.0.0.1")
//	cli := ca.Client(t, "proxy")
//	cfg := &tls.Config{Certificates: []tls.Certificate{srv.TLS}, ClientCAs: ca.Pool}
//
// Keys are ECDSA P-256 so that issuing hundreds of certificates stays fast. Nothing here is
// fit for production.
package testcert

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"testing"
	"time"
)

// CA is a self-signed certificate authority.
type CA struct {
	// Cert is the CA certificate.
	Cert *x509.Certificate
	// Key is the CA's private key.
	Key *ecdsa.PrivateKey
	// CertPEM is Cert, PEM-encoded: what a ca.crt file holds.
	CertPEM []byte
	// Pool holds only Cert; use it as RootCAs or ClientCAs.
	Pool *x509.CertPool
}

// Cert is an issued certificate with its key.
type Cert struct {
	// TLS is the certificate and key ready for a tls.Config, with Leaf set.
	TLS tls.Certificate
	// Leaf is the parsed certificate (the same as TLS.Leaf).
	Leaf *x509.Certificate
	// CertPEM is the certificate, PEM-encoded (tls.crt). It holds the leaf only: the issuing CA
	// is the root.
	CertPEM []byte
	// KeyPEM is the private key as a PKCS #8 PEM block (tls.key).
	KeyPEM []byte
}

// NewCA returns a new CA valid from an hour ago for a year. It fails t on error.
func NewCA(t testing.TB) *CA {
	t.Helper()
	key := newKey(t)
	tmpl := &x509.Certificate{
		SerialNumber:          serial(t),
		Subject:               pkix.Name{CommonName: "sluice test CA"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(365 * 24 * time.Hour),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatalf("testcert: create CA: %v", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatalf("testcert: parse CA: %v", err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	return &CA{Cert: cert, Key: key, CertPEM: pemBlock("CERTIFICATE", der), Pool: pool}
}

// Server issues a server certificate for names, valid from an hour ago for 90 days. A name that
// parses as an IP address becomes an IP SAN, every other name a DNS SAN; the first name is also
// the subject's common name.
func (ca *CA) Server(t testing.TB, names ...string) *Cert {
	t.Helper()
	return ca.Issue(t, Template{Names: names, Usage: x509.ExtKeyUsageServerAuth})
}

// Client issues a client certificate with common name cn, valid from an hour ago for 90 days.
func (ca *CA) Client(t testing.TB, cn string) *Cert {
	t.Helper()
	return ca.Issue(t, Template{CommonName: cn, Usage: x509.ExtKeyUsageClientAuth})
}

// Template says what Issue puts in a certificate. Zero fields take the defaults of Server.
type Template struct {
	// CommonName is the subject common name; empty means the first of Names.
	CommonName string
	// Names are the DNS and IP subject alternative names.
	Names []string
	// NotBefore and NotAfter bound validity; zero means an hour ago and 90 days from now.
	NotBefore, NotAfter time.Time
	// Usage is the extended key usage; zero means server authentication.
	Usage x509.ExtKeyUsage
	// OCSPServer lists OCSP responder URLs (the authority information access extension).
	OCSPServer []string
}

// Issue issues a certificate signed by ca as described by tmpl. It fails t on error.
func (ca *CA) Issue(t testing.TB, tmpl Template) *Cert {
	t.Helper()
	key := newKey(t)
	c := &x509.Certificate{
		SerialNumber: serial(t),
		Subject:      pkix.Name{CommonName: tmpl.CommonName},
		NotBefore:    tmpl.NotBefore,
		NotAfter:     tmpl.NotAfter,
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{tmpl.Usage},
		OCSPServer:   tmpl.OCSPServer,
	}
	if tmpl.Usage == 0 {
		c.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
	}
	if c.NotBefore.IsZero() {
		c.NotBefore = time.Now().Add(-time.Hour)
	}
	if c.NotAfter.IsZero() {
		c.NotAfter = time.Now().Add(90 * 24 * time.Hour)
	}
	for _, n := range tmpl.Names {
		if ip := net.ParseIP(n); ip != nil {
			c.IPAddresses = append(c.IPAddresses, ip)
		} else {
			c.DNSNames = append(c.DNSNames, n)
		}
	}
	if c.Subject.CommonName == "" && len(tmpl.Names) > 0 {
		c.Subject.CommonName = tmpl.Names[0]
	}
	der, err := x509.CreateCertificate(rand.Reader, c, ca.Cert, &key.PublicKey, ca.Key)
	if err != nil {
		t.Fatalf("testcert: create certificate: %v", err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatalf("testcert: parse certificate: %v", err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatalf("testcert: marshal key: %v", err)
	}
	return &Cert{
		TLS:     tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf},
		Leaf:    leaf,
		CertPEM: pemBlock("CERTIFICATE", der),
		KeyPEM:  pemBlock("PRIVATE KEY", keyDER),
	}
}

func newKey(t testing.TB) *ecdsa.PrivateKey {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatalf("testcert: generate key: %v", err)
	}
	return key
}

func serial(t testing.TB) *big.Int {
	t.Helper()
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 128))
	if err != nil {
		t.Fatalf("testcert: serial: %v", err)
	}
	return n
}

func pemBlock(typ string, der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der})
}
