package certs_test

import (
	"crypto/tls"
	"crypto/x509"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/sluiceproxy/sluice/internal/testcert"
	"github.com/sluiceproxy/sluice/tls/certs"
)

// plainHostname reports whether s is made of non-empty labels of [a-zA-Z0-9-], optionally
// with a wildcard first label: the names on which the keyring and crypto/x509 must agree.
// Certificate names (pattern) may not end in a dot: the keyring drops them, since no SNI can
// carry the dot they would need (crypto/x509 matches them only literally).
func plainHostname(s string, pattern bool) bool {
	if pattern && strings.HasSuffix(s, ".") {
		return false
	}
	s = strings.TrimSuffix(s, ".")
	if s == "" || len(s) > 253 || net.ParseIP(s) != nil {
		return false
	}
	for i, label := range strings.Split(s, ".") {
		if label == "" {
			return false
		}
		if pattern && i == 0 && label == "*" {
			continue
		}
		for _, c := range label {
			if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-') {
				return false
			}
		}
	}
	return true
}

// FuzzMatch checks SNI selection against crypto/x509's hostname verification: on plain names
// the keyring serves a certificate exactly when a client would accept it for that name; on any
// input it neither panics nor depends on case or a trailing dot.
func FuzzMatch(f *testing.F) {
	for _, seed := range [][2]string{
		{"example.com", "example.com"},
		{"*.example.com", "a.example.com"},
		{"*.example.com", "a.b.example.com"},
		{"*.example.com", "example.com"},
		{"*.example.com", ".example.com"},
		{"Example.COM.", "example.com"},
		{"a.test", "A.TEST.."},
		{"*", "x"},
		{"*.", "a."},
		{"x*.example.com", "xa.example.com"},
		{"127.0.0.1", "127.0.0.1"},
		{"ünï.test", "ÜNÏ.test"},
		{"", ""},
	} {
		f.Add(seed[0], seed[1])
	}
	f.Fuzz(func(t *testing.T, certName, sni string) {
		leaf := &x509.Certificate{DNSNames: []string{certName}, NotAfter: time.Now().Add(time.Hour)}
		var s certs.Keyring
		if err := s.Set("k", &tls.Certificate{Certificate: [][]byte{{0}}, PrivateKey: struct{}{}, Leaf: leaf}); err != nil {
			t.Fatalf("Set: %v", err)
		}
		s.SetDefault("") // no default: only a match selects
		got := s.Certificate(sni) != nil
		if upper := s.Certificate(strings.ToUpper(sni)) != nil; upper != got && isASCII(sni) {
			t.Errorf("%q and its upper case select differently", sni)
		}
		if dot := s.Certificate(sni+".") != nil; dot != got {
			t.Errorf("%q and %q. select differently", sni, sni)
		}
		if plainHostname(certName, true) && plainHostname(sni, false) {
			want := leaf.VerifyHostname(sni) == nil
			if got != want {
				t.Errorf("cert %q, SNI %q: store selects %v, x509 verifies %v", certName, sni, got, want)
			}
		}
	})
}

func isASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] >= 0x80 {
			return false
		}
	}
	return true
}

// FuzzParseKeyPair feeds untrusted bytes to the PEM loaders: they must return an error or a
// usable result, never panic.
func FuzzParseKeyPair(f *testing.F) {
	ca := testcert.NewCA(f)
	c := ca.Server(f, "fuzz.test")
	f.Add(c.CertPEM, c.KeyPEM)
	f.Add(append(append([]byte{}, c.CertPEM...), ca.CertPEM...), c.KeyPEM)
	f.Add(c.CertPEM[:len(c.CertPEM)/2], c.KeyPEM)
	f.Add([]byte("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"), c.KeyPEM)
	f.Add(c.KeyPEM, c.CertPEM)
	f.Add([]byte{}, []byte{})
	f.Fuzz(func(t *testing.T, certPEM, keyPEM []byte) {
		pair, err := certs.ParseKeyPair(certPEM, keyPEM)
		if err == nil {
			if pair.Leaf == nil || pair.PrivateKey == nil {
				t.Fatal("ParseKeyPair succeeded without a leaf or key")
			}
			var s certs.Keyring
			if err := s.Set("k", pair); err != nil {
				t.Fatalf("a parsed pair should be storable: %v", err)
			}
		}
		pool, err := certs.ParseCertPool(certPEM)
		if err == nil && pool == nil {
			t.Fatal("ParseCertPool returned neither pool nor error")
		}
	})
}
