package sluice

import (
	"net/http"
	"net/netip"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestParseTrustedProxies(t *testing.T) {
	tp, err := ParseTrustedProxies("10.0.0.0/8", " 192.0.2.7 ", "fd00::/8", "::ffff:172.16.0.0/108")
	require.NoError(t, err)
	for _, s := range []string{"10.1.2.3", "192.0.2.7", "fd00::1", "172.16.5.5", "::ffff:10.9.9.9"} {
		assert.True(t, tp.Contains(netip.MustParseAddr(s)), "%s should be trusted", s)
	}
	for _, s := range []string{"11.0.0.1", "192.0.2.8", "fe80::1", "172.32.0.1"} {
		assert.False(t, tp.Contains(netip.MustParseAddr(s)), "%s should not be trusted", s)
	}

	_, err = ParseTrustedProxies("10.0.0.0/8", "not-an-ip")
	require.Error(t, err)
	assert.Contains(t, err.Error(), `trusted proxy 1 ("not-an-ip")`, "the error names the bad entry")
	_, err = ParseTrustedProxies("10.0.0.0/33")
	assert.Error(t, err)

	var none *TrustedProxies
	assert.False(t, none.Contains(netip.MustParseAddr("10.0.0.1")), "nil trusts nobody")
}

func TestClientIP(t *testing.T) {
	trusted, err := ParseTrustedProxies("10.0.0.0/8", "2001:db8:ff::/48")
	require.NoError(t, err)
	tests := []struct {
		name    string
		remote  string
		headers map[string][]string
		trusted *TrustedProxies
		want    string
	}{
		{"no trust: peer, whatever the header", "203.0.113.9:5555",
			map[string][]string{"X-Forwarded-For": {"1.2.3.4"}}, nil, "203.0.113.9"},
		{"untrusted peer: header ignored", "203.0.113.9:5555",
			map[string][]string{"X-Forwarded-For": {"1.2.3.4"}}, trusted, "203.0.113.9"},
		{"trusted peer, one hop", "10.0.0.2:5555",
			map[string][]string{"X-Forwarded-For": {"198.51.100.1"}}, trusted, "198.51.100.1"},
		{"forged left part is skipped", "10.0.0.2:5555",
			map[string][]string{"X-Forwarded-For": {"6.6.6.6, 198.51.100.1, 10.1.1.1"}}, trusted, "198.51.100.1"},
		{"several header lines form one list", "10.0.0.2:5555",
			map[string][]string{"X-Forwarded-For": {"6.6.6.6, 198.51.100.1", "10.1.1.1"}}, trusted, "198.51.100.1"},
		{"all trusted: leftmost", "10.0.0.2:5555",
			map[string][]string{"X-Forwarded-For": {"10.3.3.3, 10.1.1.1"}}, trusted, "10.3.3.3"},
		{"garbage fails closed at last believable hop", "10.0.0.2:5555",
			map[string][]string{"X-Forwarded-For": {"198.51.100.1, garbage"}}, trusted, "10.0.0.2"},
		{"empty element fails closed", "10.0.0.2:5555",
			map[string][]string{"X-Forwarded-For": {"198.51.100.1, ,"}}, trusted, "10.0.0.2"},
		{"ipv6 peer and hop with port", "[2001:db8:ff::1]:443",
			map[string][]string{"X-Forwarded-For": {"[2001:db8:1::5]:1234"}}, trusted, "2001:db8:1::5"},
		{"trusted peer without header", "10.0.0.2:5555", nil, trusted, "10.0.0.2"},
		{"forwarded header when no XFF", "10.0.0.2:5555",
			map[string][]string{"Forwarded": {`for=6.6.6.6, for="[2001:db8:1::7]:80";proto=https`}}, trusted, "2001:db8:1::7"},
		{"forwarded quoted comma does not split", "10.0.0.2:5555",
			map[string][]string{"Forwarded": {`for=198.51.100.3;by="a,b"`}}, trusted, "198.51.100.3"},
		{"forwarded obfuscated node fails closed", "10.0.0.2:5555",
			map[string][]string{"Forwarded": {`for=198.51.100.3, for=_hidden`}}, trusted, "10.0.0.2"},
		{"forwarded element without for fails closed", "10.0.0.2:5555",
			map[string][]string{"Forwarded": {`proto=https`}}, trusted, "10.0.0.2"},
		{"XFF wins over Forwarded", "10.0.0.2:5555",
			map[string][]string{"X-Forwarded-For": {"198.51.100.1"}, "Forwarded": {"for=198.51.100.2"}}, trusted, "198.51.100.1"},
		{"mapped v4 peer", "[::ffff:10.0.0.2]:80",
			map[string][]string{"X-Forwarded-For": {"198.51.100.1"}}, trusted, "198.51.100.1"},
		{"no IP in RemoteAddr", "@", nil, trusted, "invalid IP"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := &http.Request{RemoteAddr: tt.remote, Header: http.Header(tt.headers)}
			if r.Header == nil {
				r.Header = http.Header{}
			}
			assert.Equal(t, tt.want, ClientIP(r, tt.trusted).String())
		})
	}
}

func TestClientIPDoesNotAllocate(t *testing.T) {
	trusted, err := ParseTrustedProxies("10.0.0.0/8")
	require.NoError(t, err)
	r := &http.Request{RemoteAddr: "10.0.0.2:5555", Header: http.Header{
		"X-Forwarded-For": {"6.6.6.6, 198.51.100.1, 10.1.1.1"},
	}}
	allocs := testing.AllocsPerRun(100, func() { _ = ClientIP(r, trusted) })
	assert.Zero(t, allocs, "ClientIP runs on every request and must not allocate")
}

// FuzzClientIP checks that whatever a client sends, ClientIP never panics and never returns an
// address that only an untrusted party could have written: the answer is either the peer or an
// address that appears in the headers behind a chain of trusted hops.
func FuzzClientIP(f *testing.F) {
	for _, seed := range []struct{ xff, fwd string }{
		{"1.2.3.4", ""},
		{"6.6.6.6, 198.51.100.1, 10.1.1.1", ""},
		{"[2001:db8::1]:80, 10.0.0.1", ""},
		{"", `for=192.0.2.60;proto=http;by=203.0.113.43`},
		{"", `for="[2001:db8:cafe::17]:4711", for=10.0.0.9`},
		{"", `for=unknown, for="_gazonk"`},
		{"garbage,,", `for="\"quoted\\",x`},
	} {
		f.Add(seed.xff, seed.fwd)
	}
	trusted, err := ParseTrustedProxies("10.0.0.0/8")
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, xff, fwd string) {
		h := http.Header{}
		if xff != "" {
			h.Set("X-Forwarded-For", xff)
		}
		if fwd != "" {
			h.Set("Forwarded", fwd)
		}
		r := &http.Request{RemoteAddr: "10.0.0.2:5555", Header: h}
		got := ClientIP(r, trusted)
		if !got.IsValid() {
			t.Fatalf("ClientIP returned an invalid address for a valid peer")
		}
		if got == netip.MustParseAddr("10.0.0.2") {
			return
		}
		text := xff + "," + fwd // a separator, so the two fields cannot run into one token
		if !strings.Contains(strings.ToLower(text), strings.ToLower(got.WithZone("").String())) &&
			!strings.Contains(text, got.Unmap().String()) {
			// netip normalises (e.g. "::ffff:1.2.3.4" or leading zeros in v6); accept any
			// parse of a substring, but an address from nowhere is a bug.
			if !appearsParsed(text, got) {
				t.Fatalf("ClientIP returned %v, which is not in the headers %q / %q", got, xff, fwd)
			}
		}
		// ClientIP without trust ignores the headers entirely.
		if p := ClientIP(r, nil); p != netip.MustParseAddr("10.0.0.2") {
			t.Fatalf("ClientIP with no trusted proxies = %v, want the peer", p)
		}
	})
}

// appearsParsed reports whether some token of text parses to a.
func appearsParsed(text string, a netip.Addr) bool {
	for _, tok := range strings.FieldsFunc(text, func(r rune) bool {
		return r == ',' || r == ';' || r == ' ' || r == '"' || r == '=' || r == '\t'
	}) {
		if b, ok := parseNode(tok); ok && b == a {
			return true
		}
	}
	return false
}
