package metrics

import (
	"crypto/tls"
	"errors"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/sluiceproxy/sluice/tls/certs"
)

// versions are the values of the version label, indexed by tlsVersion; handshakeResults
// those of a handshake's result label.
var (
	versions         = [...]string{"none", "1.0", "1.1", "1.2", "1.3", "other"}
	handshakeResults = [...]string{"ok", "no_certificate", "failed"}
	loadResults      = [...]string{"stored", "removed", "error"}
)

func tlsVersion(v uint16) int {
	switch v {
	case 0:
		return 0
	case tls.VersionTLS10:
		return 1
	case tls.VersionTLS11:
		return 2
	case tls.VersionTLS12:
		return 3
	case tls.VersionTLS13:
		return 4
	}
	return 5
}

// tlsMetrics are the metrics of keyrings (package tls/certs), one set of children per keyring
// name.
type tlsMetrics struct {
	handshakes, loads *prometheus.CounterVec
	names             table[keyringChildren]
}

type keyringChildren struct {
	t          *tlsMetrics
	name       string
	handshakes [len(versions)][len(handshakeResults)]slot[prometheus.Counter]
	loads      [len(loadResults)]prometheus.Counter
}

func (t *tlsMetrics) init(m *Metrics) {
	t.handshakes = m.counter("tls_handshakes_total",
		"Server TLS handshakes, by keyring, version agreed (\"none\" when the handshake failed first) and result: ok, no_certificate, or failed (a client certificate that did not verify).",
		"keyring", "version", "result")
	t.loads = m.counter("tls_certificate_loads_total",
		"Changes to a keyring, by keyring and result: stored, removed, or error (a certificate refused or a file unreadable).",
		"keyring", "result")
	t.names.make = func(name string) *keyringChildren {
		k := &keyringChildren{t: t, name: name}
		for i, r := range loadResults {
			k.loads[i] = t.loads.WithLabelValues(name, r)
		}
		return k
	}
}

// TLS returns the hooks of the keyring named name (a label value; "" will do for one), for
// certs.Keyring.Hooks:
//
//	SLUICE_tls_handshakes_total{keyring,version,result}   counter, version "1.2", "1.3", ...;
//	                                                      result "ok", "no_certificate", "failed"
//	SLUICE_tls_certificate_loads_total{keyring,result}    counter, "stored", "removed", "error"
//
// WatchKeyring adds each server name's certificate expiry.
func (m *Metrics) TLS(name string) certs.Hooks {
	k := m.tls.names.get(name)
	return certs.Hooks{Handshake: k.handshake, Load: k.load}
}

func (k *keyringChildren) handshake(e certs.HandshakeEvent) {
	vi, ri := tlsVersion(e.Version), 0
	switch {
	case errors.Is(e.Err, certs.ErrNoCertificate):
		ri = 1
	case e.Err != nil:
		ri = 2
	}
	k.handshakes[vi][ri].get(func() prometheus.Counter {
		return k.t.handshakes.WithLabelValues(k.name, versions[vi], handshakeResults[ri])
	}).Inc()
}

func (k *keyringChildren) load(e certs.LoadEvent) {
	switch {
	case e.Err != nil:
		k.loads[2].Inc()
	case e.Removed:
		k.loads[1].Inc()
	default:
		k.loads[0].Inc()
	}
}
