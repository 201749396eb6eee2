package certs

import (
	"cmp"
	"crypto/tls"
	"maps"
	"slices"
	"time"

	"github.com/sluiceproxy/sluice/internal/hookset"
)

// Hooks are a [Keyring]'s events, for metrics, logs and dashboards. Set them in
// Keyring.Hooks before the keyring is first used. Every field is optional: a nil one costs a
// nil check. Hooks are called synchronously on the goroutine where the event happens (the
// handshake's, or the writer's), never under the keyring's lock, so they must be safe for
// concurrent use and must not block. Combine several with [JoinHooks].
type Hooks struct {
	// Handshake is called for each server handshake of a config [ServerConfig] built from
	// the keyring, once its parameters are agreed (from tls.Config.VerifyConnection), and
	// when GetCertificate finds no certificate for it. What crypto/tls does not show a
	// config is not reported: a handshake that fails before a certificate is chosen (no
	// common version or cipher suite, a malformed ClientHello) or after VerifyConnection
	// (the client rejecting the server's certificate, a bad Finished) is seen only by the
	// caller of tls.Conn.Handshake (http.Server logs it to its ErrorLog).
	Handshake func(HandshakeEvent)
	// Load is called for every change a write makes to the keyring: a certificate stored,
	// replaced or removed, or refused as unusable (with Err); and for every key pair that
	// [Files] could not read or parse. OCSP staples that a [Stapler] adds are not reported.
	// The events of a [Files.Load] are reported during it, while it holds the Files' own
	// lock that serializes its loads: the hook must not call that Files' Load.
	Load func(LoadEvent)
}

// JoinHooks returns Hooks that call each of hs's non-nil funcs in order.
func JoinHooks(hs ...Hooks) Hooks {
	return Hooks{
		Handshake: hookset.Join(hs, func(h Hooks) func(HandshakeEvent) { return h.Handshake }),
		Load:      hookset.Join(hs, func(h Hooks) func(LoadEvent) { return h.Load }),
	}
}

// HandshakeEvent describes one server handshake.
type HandshakeEvent struct {
	// ServerName is the SNI the client sent, as it sent it; empty when it sent none.
	ServerName string
	// Version is the TLS version agreed (tls.VersionTLS13, ...; tls.VersionName names it),
	// or 0 when the handshake failed before one was.
	Version uint16
	// CipherSuite is the cipher suite agreed (tls.CipherSuiteName names it), or 0.
	CipherSuite uint16
	// NegotiatedProtocol is the ALPN protocol agreed ("h2", "http/1.1"), or "".
	NegotiatedProtocol string
	// Resumed reports a resumed session.
	Resumed bool
	// ClientCertificate reports that the client presented a certificate.
	ClientCertificate bool
	// Err is why the handshake is failing: no certificate for ServerName (wrapping
	// [ErrNoCertificate]) or a client certificate that did not verify.
	Err error
}

// LoadEvent describes one change to a [Keyring].
type LoadEvent struct {
	// Key is the key the certificate is stored under (a file path, a Secret's
	// namespace/name).
	Key string
	// Names are the DNS names the certificate serves, lower-cased, as the keyring indexes
	// them. They are shared with the keyring: do not modify them. Nil when Removed or Err.
	Names []string
	// NotAfter is when the certificate expires; zero when Removed or Err.
	NotAfter time.Time
	// Removed reports that the key's certificate was removed.
	Removed bool
	// Err is why the certificate could not be loaded; the key keeps its previous
	// certificate, if it had one.
	Err error
}

// CertificateInfo describes a stored certificate, without its private key, for an expiry
// gauge or a dashboard.
type CertificateInfo struct {
	// Key is the key it is stored under.
	Key string
	// Names are the DNS names it serves, lower-cased; shared with the keyring, do not
	// modify them.
	Names []string
	// NotBefore and NotAfter bound its validity.
	NotBefore, NotAfter time.Time
	// Default reports that it is served to clients that send no server name or an unknown
	// one.
	Default bool
}

// Certificates returns the stored certificates in the order they were stored (see
// [Keyring.Keys]). It takes the writers' lock, so it is for gauges and dashboards, not the
// handshake path.
func (s *Keyring) Certificates() []CertificateInfo {
	def := s.index.Load()
	s.mu.Lock()
	es := slices.SortedFunc(maps.Values(s.entries), func(a, b *entry) int { return cmp.Compare(a.seq, b.seq) })
	s.mu.Unlock()
	out := make([]CertificateInfo, len(es))
	for i, e := range es {
		out[i] = CertificateInfo{
			Key: e.key, Names: e.names, NotBefore: e.cert.Leaf.NotBefore, NotAfter: e.cert.Leaf.NotAfter,
			Default: def != nil && def.def == e.cert,
		}
	}
	return out
}

// handshakeDone reports a handshake that reached VerifyConnection, with err the
// verification's result.
func (s *Keyring) handshakeDone(cs *tls.ConnectionState, err error) {
	s.Hooks.Handshake(HandshakeEvent{
		ServerName: cs.ServerName, Version: cs.Version, CipherSuite: cs.CipherSuite,
		NegotiatedProtocol: cs.NegotiatedProtocol, Resumed: cs.DidResume,
		ClientCertificate: len(cs.PeerCertificates) > 0, Err: err,
	})
}
