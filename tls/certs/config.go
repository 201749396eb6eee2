package certs

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"sync/atomic"
	"time"
)

// CAPool holds a CA certificate pool that can be replaced while connections use it: [Files]
// reloads it from a bundle on disk, tls/secrets from a Secret. Configs built by
// [ServerConfig] and [ClientConfig] read the current pool on every handshake.
//
// The zero value holds no pool. A CAPool must not be copied after first use.
type CAPool struct {
	p atomic.Pointer[x509.CertPool]
}

// NewCAPool returns a CAPool holding pool.
func NewCAPool(pool *x509.CertPool) *CAPool {
	c := new(CAPool)
	c.Set(pool)
	return c
}

// Set replaces the pool; the next handshake verifies against it.
func (c *CAPool) Set(pool *x509.CertPool) { c.p.Store(pool) }

// Pool returns the current pool, or nil if none was set.
func (c *CAPool) Pool() *x509.CertPool { return c.p.Load() }

// verify checks a peer chain against the current pool, as crypto/tls would with a static pool.
func (c *CAPool) verify(certs []*x509.Certificate, dnsName string, usage x509.ExtKeyUsage) error {
	pool := c.Pool()
	if pool == nil {
		return errors.New("certs: no CA pool loaded yet")
	}
	opts := x509.VerifyOptions{
		Roots:         pool,
		DNSName:       dnsName,
		Intermediates: x509.NewCertPool(),
		CurrentTime:   time.Now(),
		KeyUsages:     []x509.ExtKeyUsage{usage},
	}
	for _, ic := range certs[1:] {
		opts.Intermediates.AddCert(ic)
	}
	if _, err := certs[0].Verify(opts); err != nil {
		return &tls.CertificateVerificationError{UnverifiedCertificates: certs, Err: err}
	}
	return nil
}

// defaultNextProtos are offered by servers: HTTP/2 first, HTTP/1.1 as the fallback.
var defaultNextProtos = []string{"h2", "http/1.1"}

// secureCipherSuites are the TLS 1.2 suites allowed: forward secret (ECDHE) and authenticated
// encryption (GCM, ChaCha20-Poly1305) only. TLS 1.3 suites are not configurable and all safe.
var secureCipherSuites = []uint16{
	tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
	tls.TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
	tls.TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
	tls.TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
	tls.TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
	tls.TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
}

// ServerOptions adjusts [ServerConfig]. The zero value gives TLS 1.2 and 1.3, ALPN h2 and
// http/1.1, and no client certificates.
type ServerOptions struct {
	// ClientCAs, if not nil, turns on client-certificate authentication (mTLS): clients must
	// present a certificate that chains to the pool current at handshake time.
	ClientCAs *CAPool

	// ClientAuth says whether a client certificate is required when ClientCAs is set:
	// tls.RequireAndVerifyClientCert (what zero means with ClientCAs) or
	// tls.VerifyClientCertIfGiven. Modes that accept unverified certificates are refused.
	ClientAuth tls.ClientAuthType

	// NextProtos are the ALPN protocols offered, most preferred first. Nil means h2 then
	// http/1.1.
	NextProtos []string

	// MinVersion is the lowest TLS version accepted. Zero means TLS 1.2; lower is refused.
	MinVersion uint16
}

// ServerConfig returns a *crypto/tls.Config for a server that takes its certificates from certs
// by SNI, with safe defaults: TLS 1.2 minimum (1.3 preferred, as crypto/tls does), only
// forward-secret AEAD cipher suites for TLS 1.2, and ALPN for HTTP/2 and HTTP/1.1.
//
// With opts.ClientCAs, client certificates are verified against the pool current at each
// handshake, so a rotated CA bundle takes effect without a restart. The verification is done
// in VerifyConnection rather than by crypto/tls, which therefore neither fills
// ConnectionState.VerifiedChains nor lists acceptable CAs in its certificate request.
//
// With certs.Hooks.Handshake set, the config reports each handshake through it (see
// [Hooks.Handshake]); a VerifyConnection of the caller's own must call the one installed.
//
// The returned config may be further adjusted before use; it shares certs, not a copy.
func ServerConfig(certs *Keyring, opts ServerOptions) (*tls.Config, error) {
	if certs == nil {
		return nil, errors.New("certs: ServerConfig needs a Keyring, got nil")
	}
	minVersion := opts.MinVersion
	if minVersion == 0 {
		minVersion = tls.VersionTLS12
	}
	if minVersion < tls.VersionTLS12 {
		return nil, fmt.Errorf("certs: MinVersion must be ≥ TLS 1.2, got %s", tls.VersionName(minVersion))
	}
	nextProtos := opts.NextProtos
	if nextProtos == nil {
		nextProtos = defaultNextProtos
	}
	cfg := &tls.Config{
		GetCertificate: certs.GetCertificate,
		MinVersion:     minVersion,
		CipherSuites:   secureCipherSuites,
		NextProtos:     append([]string(nil), nextProtos...),
	}

	switch {
	case opts.ClientCAs == nil && opts.ClientAuth != tls.NoClientCert:
		return nil, fmt.Errorf("certs: ClientAuth %s needs ClientCAs", opts.ClientAuth)
	case opts.ClientCAs == nil:
		if certs.Hooks.Handshake != nil {
			cfg.VerifyConnection = func(cs tls.ConnectionState) error {
				certs.handshakeDone(&cs, nil)
				return nil
			}
		}
		return cfg, nil
	}
	var required bool
	switch opts.ClientAuth {
	case tls.NoClientCert, tls.RequireAndVerifyClientCert:
		required = true
		cfg.ClientAuth = tls.RequireAnyClientCert
	case tls.VerifyClientCertIfGiven:
		cfg.ClientAuth = tls.RequestClientCert
	default:
		return nil, fmt.Errorf("certs: ClientAuth must be RequireAndVerifyClientCert or VerifyClientCertIfGiven, got %s", opts.ClientAuth)
	}
	// crypto/tls checks that the client holds the certificate's key; the chain is checked
	// here against the current pool.
	pool := opts.ClientCAs
	verify := func(cs *tls.ConnectionState) error {
		if len(cs.PeerCertificates) == 0 {
			if required {
				return errors.New("certs: client certificate required")
			}
			return nil
		}
		return pool.verify(cs.PeerCertificates, "", x509.ExtKeyUsageClientAuth)
	}
	cfg.VerifyConnection = func(cs tls.ConnectionState) error { return verify(&cs) }
	if certs.Hooks.Handshake != nil {
		cfg.VerifyConnection = func(cs tls.ConnectionState) error {
			err := verify(&cs)
			certs.handshakeDone(&cs, err)
			return err
		}
	}
	return cfg, nil
}

// ClientOptions configures [ClientConfig], the TLS configuration a proxy uses towards one pool
// of upstream servers. The zero value verifies servers against the system roots by the name
// dialed and presents no client certificate.
type ClientOptions struct {
	// ServerName is sent as SNI and checked against the server's certificate. Empty means the
	// host being dialed (http.Transport fills it in). Set it when dialing pods by IP address:
	// their certificates usually name the Service, and with RootCAs set an IP alone cannot be
	// verified.
	ServerName string

	// RootCAs, if not nil, is the pool upstream certificates must chain to, read at each
	// handshake so that a rotated bundle takes effect without a restart. Nil means the
	// system roots.
	RootCAs *CAPool

	// Certificates, if not nil, supplies the client certificate (mTLS to upstreams): its
	// default certificate — the first stored unless [Keyring.SetDefault] chose one — is
	// presented, read at each handshake.
	Certificates *Keyring

	// MinVersion is the lowest TLS version accepted. Zero means TLS 1.2; lower is refused.
	MinVersion uint16
}

// ClientConfig returns a *crypto/tls.Config for connecting to upstream servers, for use as
// http.Transport.TLSClientConfig (set ForceAttemptHTTP2 to speak h2 to backends).
//
// When opts.RootCAs is set, crypto/tls's own verification is replaced by an equivalent one in
// VerifyConnection that reads the current pool: the config therefore has InsecureSkipVerify
// set, but every handshake is still verified, against opts.ServerName or else the SNI sent.
func ClientConfig(opts ClientOptions) (*tls.Config, error) {
	minVersion := opts.MinVersion
	if minVersion == 0 {
		minVersion = tls.VersionTLS12
	}
	if minVersion < tls.VersionTLS12 {
		return nil, fmt.Errorf("certs: MinVersion must be ≥ TLS 1.2, got %s", tls.VersionName(minVersion))
	}
	cfg := &tls.Config{
		ServerName:   opts.ServerName,
		MinVersion:   minVersion,
		CipherSuites: secureCipherSuites,
	}
	if store := opts.Certificates; store != nil {
		cfg.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
			if c := store.Certificate(""); c != nil {
				return c, nil
			}
			// An empty certificate sends none; the server decides whether that is enough.
			return &tls.Certificate{}, nil
		}
	}
	if pool := opts.RootCAs; pool != nil {
		serverName := opts.ServerName
		cfg.InsecureSkipVerify = true // verified below against the current pool
		cfg.VerifyConnection = func(cs tls.ConnectionState) error {
			name := serverName
			if name == "" {
				name = cs.ServerName
			}
			if name == "" {
				return errors.New("certs: cannot verify upstream certificate without a server name: set ClientOptions.ServerName")
			}
			if len(cs.PeerCertificates) == 0 {
				return errors.New("certs: upstream sent no certificate")
			}
			return pool.verify(cs.PeerCertificates, name, x509.ExtKeyUsageServerAuth)
		}
	}
	return cfg, nil
}
