package certs_test

import (
	"crypto/tls"
	"crypto/x509"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/sluiceproxy/sluice/internal/testcert"
	"github.com/sluiceproxy/sluice/tls/certs"
)

func TestStoreSelection(t *testing.T) {
	ca := testcert.NewCA(t)
	var s certs.Keyring
	exact := ca.Server(t, "example.com", "www.example.com")
	wild := ca.Server(t, "*.example.com")
	other := ca.Server(t, "Other.TEST")
	def := ca.Server(t, "default.invalid")
	require.NoError(t, s.Update(map[string]*tls.Certificate{
		"exact": &exact.TLS, "wild": &wild.TLS, "other": &other.TLS, "default": &def.TLS,
	}))
	s.SetDefault("default")

	tests := []struct {
		sni  string
		want *testcert.Cert
	}{
		{"example.com", exact},
		{"www.example.com", exact},               // exact beats the wildcard
		{"WWW.Example.COM", exact},               // case-insensitive
		{"www.example.com.", exact},              // trailing dot ignored
		{"api.example.com", wild},                // one label under the wildcard
		{"API.example.com..", wild},              // both at once
		{"a.b.example.com", def},                 // a wildcard covers one label only
		{".example.com", def},                    // an empty first label is not a label
		{"other.test", other},                    // certificate names are normalized too
		{"", def},                                // no SNI
		{"unknown.test", def},                    // no match
		{strings.Repeat("a", 300) + ".com", def}, // longer than any DNS name
	}
	for _, tt := range tests {
		t.Run(tt.sni, func(t *testing.T) {
			got, err := s.GetCertificate(&tls.ClientHelloInfo{ServerName: tt.sni})
			require.NoError(t, err)
			assert.Equal(t, tt.want.Leaf.SerialNumber, got.Leaf.SerialNumber,
				"SNI %q should select %v, got %v", tt.sni, tt.want.Leaf.DNSNames, got.Leaf.DNSNames)
		})
	}
}

func TestStoreNoDefault(t *testing.T) {
	ca := testcert.NewCA(t)
	var s certs.Keyring
	_, err := s.GetCertificate(&tls.ClientHelloInfo{ServerName: "example.com"})
	assert.ErrorIs(t, err, certs.ErrNoCertificate, "an empty store has nothing to serve")

	require.NoError(t, s.Set("a", &ca.Server(t, "a.test").TLS))
	s.SetDefault("") // no default at all
	_, err = s.GetCertificate(&tls.ClientHelloInfo{ServerName: "b.test"})
	assert.ErrorIs(t, err, certs.ErrNoCertificate, "an unknown name without a default must fail")
	assert.Contains(t, err.Error(), `"b.test"`, "the error should name the server name")

	s.SetDefault("later") // named before it exists
	_, err = s.GetCertificate(&tls.ClientHelloInfo{})
	assert.ErrorIs(t, err, certs.ErrNoCertificate, "a chosen default not yet stored is no default")
	later := ca.Server(t, "later.test")
	require.NoError(t, s.Set("later", &later.TLS))
	got, err := s.GetCertificate(&tls.ClientHelloInfo{})
	require.NoError(t, err)
	assert.Equal(t, later.Leaf.SerialNumber, got.Leaf.SerialNumber, "the default should apply once its key is stored")

	s.Delete("later")
	_, err = s.GetCertificate(&tls.ClientHelloInfo{})
	assert.ErrorIs(t, err, certs.ErrNoCertificate, "a chosen default that is deleted leaves none: \"a\" must not stand in")
}

// Until SetDefault is called the default is the certificate stored first: a batch stores its
// new keys in sorted order, a replaced certificate keeps its key's place, and when the default
// is deleted the next oldest takes over.
func TestDefaultIsFirstStored(t *testing.T) {
	ca := testcert.NewCA(t)
	c := map[string]*testcert.Cert{}
	for _, k := range []string{"a", "b", "c", "d"} {
		c[k] = ca.Server(t, k+".test")
	}
	var s certs.Keyring
	def := func() string {
		got := s.Certificate("")
		for k, cert := range c {
			if got != nil && got.Leaf.SerialNumber.Cmp(cert.Leaf.SerialNumber) == 0 {
				return k
			}
		}
		return "none"
	}
	require.NoError(t, s.Update(map[string]*tls.Certificate{"c": &c["c"].TLS, "b": &c["b"].TLS}))
	assert.Equal(t, "b", def(), "a batch stores its keys in sorted order")
	require.NoError(t, s.Set("a", &c["a"].TLS))
	assert.Equal(t, "b", def(), "a later key does not take over, even one that sorts first")
	assert.Equal(t, []string{"b", "c", "a"}, s.Keys(), "Keys lists the keys in the order stored")

	b2 := ca.Server(t, "b.test")
	require.NoError(t, s.Set("b", &b2.TLS))
	assert.Equal(t, b2.Leaf.SerialNumber, s.Certificate("unknown.test").Leaf.SerialNumber,
		"a rotated certificate keeps its key's place and serves unknown names")
	c["b"] = b2

	s.Delete("b")
	assert.Equal(t, "c", def(), "the next oldest takes over from a deleted default")
	require.NoError(t, s.Set("b", &c["b"].TLS))
	assert.Equal(t, "c", def(), "a key stored again goes to the back")

	s.SetDefault("d")
	assert.Equal(t, "none", def(), "SetDefault wins, even before its key is stored")
	require.NoError(t, s.Set("d", &c["d"].TLS))
	assert.Equal(t, "d", def(), "SetDefault wins over the first stored")
}

func TestStorePrecedenceAndDelete(t *testing.T) {
	ca := testcert.NewCA(t)
	now := time.Now()
	older := ca.Issue(t, testcert.Template{Names: []string{"x.test"}, NotAfter: now.Add(24 * time.Hour)})
	newer := ca.Issue(t, testcert.Template{Names: []string{"x.test"}, NotAfter: now.Add(48 * time.Hour)})

	var s certs.Keyring
	// "a" sorts first, but the certificate that expires later wins.
	require.NoError(t, s.Set("z-new", &newer.TLS))
	require.NoError(t, s.Set("a-old", &older.TLS))
	assert.Equal(t, newer.Leaf.SerialNumber, s.Certificate("x.test").Leaf.SerialNumber,
		"the certificate expiring last should serve a shared name")

	s.Delete("z-new")
	assert.Equal(t, older.Leaf.SerialNumber, s.Certificate("x.test").Leaf.SerialNumber,
		"after deleting the newer certificate the older one should serve")
	assert.ElementsMatch(t, []string{"a-old"}, s.Keys())
	assert.Same(t, &older.TLS, s.Get("a-old"))
	s.Delete("a-old")
	assert.Nil(t, s.Certificate("x.test"))
}

func TestStoreRejectsUnusableCertificates(t *testing.T) {
	ca := testcert.NewCA(t)
	good := ca.Server(t, "good.test")
	var s certs.Keyring
	err := s.Update(map[string]*tls.Certificate{
		"nokey":   {Certificate: good.TLS.Certificate},
		"empty":   {},
		"garbage": {Certificate: [][]byte{[]byte("not DER")}, PrivateKey: good.TLS.PrivateKey},
		"good":    &good.TLS,
	})
	require.Error(t, err)
	for _, key := range []string{"nokey", "empty", "garbage"} {
		assert.Contains(t, err.Error(), key, "the error should name each bad key")
	}
	assert.ElementsMatch(t, []string{"good"}, s.Keys(), "good certificates in the batch still apply")
	assert.NotNil(t, s.Certificate("good.test"))
}

func TestStoreLeafParsedWhenMissing(t *testing.T) {
	ca := testcert.NewCA(t)
	c := ca.Server(t, "leafless.test")
	pair := tls.Certificate{Certificate: c.TLS.Certificate, PrivateKey: c.TLS.PrivateKey}
	var s certs.Keyring
	require.NoError(t, s.Set("k", &pair))
	assert.Same(t, &pair, s.Certificate("leafless.test"))
}

func TestCertificateDoesNotAllocate(t *testing.T) {
	ca := testcert.NewCA(t)
	var s certs.Keyring
	require.NoError(t, s.Set("a", &ca.Server(t, "a.example.com").TLS))
	require.NoError(t, s.Set("w", &ca.Server(t, "*.example.com").TLS))
	require.NoError(t, s.Set("d", &ca.Server(t, "default.test").TLS))
	s.SetDefault("d")
	for _, sni := range []string{"a.example.com", "A.EXAMPLE.COM.", "b.example.com", "x.y.example.com", "", "unknown.test"} {
		hello := &tls.ClientHelloInfo{ServerName: sni}
		allocs := testing.AllocsPerRun(1000, func() {
			if c, err := s.GetCertificate(hello); c == nil || err != nil {
				panic("no certificate")
			}
		})
		assert.Zero(t, allocs, "GetCertificate(%q) should not allocate", sni)
	}
}

// fakeLeafStore fills a store with n certificates whose leaves are built in memory: selection
// reads only the names, so this avoids signing 10,000 certificates.
func fakeLeafStore(tb testing.TB, n int) *certs.Keyring {
	tb.Helper()
	var s certs.Keyring
	key := testcert.NewCA(tb).Key
	changes := make(map[string]*tls.Certificate, n)
	for i := range n {
		names := []string{hostN(i)}
		if i%10 == 0 {
			names = append(names, "*.w"+hostN(i))
		}
		changes[hostN(i)] = &tls.Certificate{
			Certificate: [][]byte{{0}},
			PrivateKey:  key,
			Leaf:        &x509.Certificate{DNSNames: names, NotAfter: time.Now().Add(time.Hour)},
		}
	}
	require.NoError(tb, s.Update(changes))
	s.SetDefault(hostN(0))
	return &s
}

func hostN(i int) string {
	const digits = "0123456789"
	b := []byte("h")
	for _, c := range []int{i / 10000 % 10, i / 1000 % 10, i / 100 % 10, i / 10 % 10, i % 10} {
		b = append(b, digits[c])
	}
	return string(b) + ".example.net"
}

func TestStoreAtScale(t *testing.T) {
	s := fakeLeafStore(t, 10000)
	assert.Equal(t, []string{hostN(9999)}, s.Certificate(strings.ToUpper(hostN(9999))).Leaf.DNSNames)
	assert.Equal(t, hostN(9990), s.Certificate("x.w" + hostN(9990)).Leaf.DNSNames[0])
	hello := &tls.ClientHelloInfo{ServerName: "API.w" + hostN(5000)}
	assert.Zero(t, testing.AllocsPerRun(1000, func() { _, _ = s.GetCertificate(hello) }),
		"selection among 10,000 certificates should not allocate")
}

func BenchmarkGetCertificate(b *testing.B) {
	for _, n := range []int{10, 1000, 10000} {
		s := fakeLeafStore(b, n)
		names := []string{hostN(n - 1), strings.ToUpper(hostN(n / 2)), "x.w" + hostN(0), "unknown.test"}
		b.Run(sizeName(n), func(b *testing.B) {
			b.ReportAllocs()
			b.RunParallel(func(pb *testing.PB) {
				hellos := make([]tls.ClientHelloInfo, len(names))
				for i, n := range names {
					hellos[i].ServerName = n
				}
				i := 0
				for pb.Next() {
					if _, err := s.GetCertificate(&hellos[i%len(hellos)]); err != nil {
						b.Fatal(err)
					}
					i++
				}
			})
		})
	}
	// Baseline: a plain map lookup after strings.ToLower, which allocates for
	// mixed-case names.
	b.Run("baseline-ToLower-map/n=10000", func(b *testing.B) {
		m := make(map[string]*tls.Certificate, 10000)
		for i := range 10000 {
			m[hostN(i)] = &tls.Certificate{}
		}
		name := strings.ToUpper(hostN(5000))
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				if m[strings.ToLower(name)] == nil {
					b.Fatal("missing")
				}
			}
		})
	})
}

func sizeName(n int) string {
	switch n {
	case 10:
		return "n=10"
	case 1000:
		return "n=1000"
	}
	return "n=10000"
}

// BenchmarkHandshake runs whole TLS 1.3 handshakes over in-memory pipes, serving from a store
// of 10,000 certificates and, as the baseline, from a static crypto/tls config with one: the
// selection is lost in the cost of the handshake.
func BenchmarkHandshake(b *testing.B) {
	ca := testcert.NewCA(b)
	cert := ca.Server(b, "bench.example.com")
	s := fakeLeafStore(b, 10000)
	require.NoError(b, s.Set("cert", &cert.TLS))
	storeCfg, err := certs.ServerConfig(s, certs.ServerOptions{})
	require.NoError(b, err)
	for _, bc := range []struct {
		name string
		cfg  *tls.Config
	}{
		{"store/n=10000", storeCfg},
		{"baseline-static", &tls.Config{Certificates: []tls.Certificate{cert.TLS}}},
	} {
		b.Run(bc.name, func(b *testing.B) {
			client := &tls.Config{ServerName: "bench.example.com", RootCAs: ca.Pool}
			b.ReportAllocs()
			for b.Loop() {
				c1, c2 := net.Pipe()
				srv := tls.Server(c1, bc.cfg)
				errc := make(chan error, 1)
				go func() { errc <- srv.Handshake() }()
				cli := tls.Client(c2, client)
				if err := cli.Handshake(); err != nil {
					b.Fatal(err)
				}
				if err := <-errc; err != nil {
					b.Fatal(err)
				}
				_ = c1.Close()
				_ = c2.Close()
			}
		})
	}
}

// BenchmarkSet measures one rotation (replacing one certificate), which rebuilds the index:
// the cost grows with the keyring, which is why sources batch with Update.
func BenchmarkSet(b *testing.B) {
	for _, n := range []int{10, 1000, 10000} {
		s := fakeLeafStore(b, n)
		cert := s.Get(hostN(0))
		b.Run(sizeName(n), func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if err := s.Set(hostN(0), cert); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
