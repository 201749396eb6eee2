package certs

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
)

// ParseKeyPair parses a PEM certificate chain (leaf first, then intermediates) and its PEM
// private key, as found in tls.crt and tls.key. It checks that the key matches the leaf and
// returns the pair with Leaf set. The input may be untrusted: malformed bytes give an error,
// never a panic.
func ParseKeyPair(certPEM, keyPEM []byte) (*tls.Certificate, error) {
	if len(certPEM) == 0 {
		return nil, errors.New("certs: certificate PEM is empty")
	}
	if len(keyPEM) == 0 {
		return nil, errors.New("certs: key PEM is empty")
	}
	pair, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return nil, fmt.Errorf("certs: %w", err)
	}
	if pair.Leaf == nil {
		leaf, err := x509.ParseCertificate(pair.Certificate[0])
		if err != nil {
			return nil, fmt.Errorf("certs: leaf certificate: %w", err)
		}
		pair.Leaf = leaf
	}
	// Parse the rest of the chain too, so that a truncated intermediate is caught here
	// rather than in a client's verification.
	for i, der := range pair.Certificate[1:] {
		if _, err := x509.ParseCertificate(der); err != nil {
			return nil, fmt.Errorf("certs: chain certificate %d: %w", i+1, err)
		}
	}
	return &pair, nil
}

// ParseCertPool parses one or more PEM certificates (a CA bundle such as ca.crt) into a pool.
// Unlike [crypto/x509.CertPool.AppendCertsFromPEM] it fails when a CERTIFICATE block does not
// parse or when there is no certificate at all, so that a truncated bundle is not mistaken for
// a smaller one.
func ParseCertPool(pemBytes []byte) (*x509.CertPool, error) {
	pool := x509.NewCertPool()
	n := 0
	for rest := pemBytes; ; {
		var block *pem.Block
		block, rest = pem.Decode(rest)
		if block == nil {
			break
		}
		if block.Type != "CERTIFICATE" {
			continue
		}
		cert, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("certs: CA certificate %d: %w", n+1, err)
		}
		pool.AddCert(cert)
		n++
	}
	if n == 0 {
		return nil, errors.New("certs: no CERTIFICATE block in CA PEM")
	}
	return pool, nil
}
