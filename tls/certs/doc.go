// Package certs terminates TLS for a proxy: it picks a server certificate per handshake by SNI,
// keeps certificates current as they rotate, and builds *crypto/tls.Config values with safe
// defaults for both the listening side and the connections to upstreams.
//
// It lives under tls/ with its Kubernetes sibling, tls/secrets, and is named for what it holds
// so that it imports beside crypto/tls without an alias.
//
// # Certificates by SNI
//
// A [Keyring] holds certificates under keys chosen by their source (a file path, a Secret's
// namespace/name). Every write builds an immutable index — exact names in one map, wildcard
// names in another keyed by the parent domain — and publishes it with an atomic pointer swap.
// [Keyring.GetCertificate] reads the index with no lock and no allocation: it lower-cases the
// server name into a stack buffer, tries the exact map, then strips the first label and tries
// the wildcard map, then falls back to the default certificate: the one [Keyring.SetDefault]
// names or, if it was never called, the certificate stored first, so that clients without SNI
// are served with no setup. A wildcard covers one label, as RFC 6125 §6.4.3 and browsers have
// it.
//
// # Sources
//
// [Files] polls PEM files and swaps in a certificate when the content changes; a broken file
// is reported and the previous certificate keeps serving. Package [github.com/sluiceproxy/sluice/tls/secrets] does the same
// for Secrets of type kubernetes.io/tls through a client-go informer, so a certificate renewed
// by cert-manager is served on the next handshake. Both feed the same Keyring, and a [CAPool]
// for client or upstream verification.
//
// # Configs
//
// [ServerConfig] returns a server config: TLS 1.2 minimum, forward-secret AEAD suites only,
// ALPN h2 and http/1.1, and optional client-certificate authentication against a reloadable
// CA pool. [ClientConfig] returns an upstream config with a custom CA pool, server name and
// client certificate, all read at handshake time so rotation needs no new transport.
//
// # Hooks and expiry
//
// [Keyring.Hooks] report handshakes of configs built by [ServerConfig] (server name, TLS
// version, cipher suite, ALPN protocol, resumption, client certificate, and why a handshake
// failed where crypto/tls lets a config see it: no certificate for the name, a client
// certificate that did not verify) and every change to the keyring (a certificate stored
// with its names and expiry, removed, or refused with the error, including key pairs [Files]
// cannot read). Hooks run synchronously on the goroutine of the event, never under the
// keyring's lock: they must be safe for concurrent use and must not block. [JoinHooks] lets
// several listeners share them; an unset hook costs a nil check. [Keyring.Certificates]
// lists the stored certificates' keys, names and validity, never their keys, for an expiry
// gauge or a dashboard.
//
// # OCSP stapling
//
// [Stapler] fetches OCSP responses for stored certificates that name a responder and staples
// the Good ones, refetching past half of each response's validity.
package certs
