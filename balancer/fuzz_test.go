package balancer

import (
	"math"
	"net/http"
	"net/netip"
	"strings"
	"testing"

	"github.com/sluiceproxy/sluice"
)

// FuzzCookieValue checks the zero-allocation Cookie header scanner against net/http's parser:
// whenever net/http finds the (only) cookie of that name, so must we, with the same value up to
// surrounding spaces (which we trim and net/http keeps).
func FuzzCookieValue(f *testing.F) {
	f.Add("a=1; sid=abc; b=2", "sid")
	f.Add(`sid="quoted"`, "sid")
	f.Add("sid=; sid=2", "sid")
	f.Add(";;; =;= ;sid", "sid")
	f.Add("  sid = 1 ", "sid")
	f.Add("sluice_affinity=0123456789abcdef", "sluice_affinity")
	f.Fuzz(func(t *testing.T, header, name string) {
		got, ok := cookieValue([]string{header}, name)
		if ok && !strings.Contains(header, got) {
			t.Fatalf("value %q is not part of the header %q", got, header)
		}
		if !validCookieName(name) || name == "" {
			return
		}
		r := http.Request{Header: http.Header{"Cookie": {header}}}
		// net/http skips pairs with invalid values and moves on to a later pair of the same
		// name, where we take the first: compare only when the name occurs once.
		if c, err := r.Cookie(name); err == nil && !c.Quoted && !strings.ContainsAny(header, `"`) && strings.Count(header, name) == 1 {
			if !ok || got != strings.Trim(c.Value, " \t\r\n") {
				t.Fatalf("cookieValue(%q, %q) = %q, %v; net/http says %q", header, name, got, ok, c.Value)
			}
		}
	})
}

// FuzzQueryValue checks the raw query scanner: it never panics and what it returns is the
// text after "name=" in the query.
func FuzzQueryValue(f *testing.F) {
	f.Add("a=1&u=bob&u=eve", "u")
	f.Add("u", "u")
	f.Add("&&u=%20x&", "u")
	f.Add("=&=", "")
	f.Fuzz(func(t *testing.T, raw, name string) {
		v, ok := queryValue(raw, name)
		if !ok {
			if !strings.ContainsAny(name, "=&") && raw != "" && (strings.HasPrefix(raw, name+"=") || raw == name) {
				t.Fatalf("queryValue(%q, %q) missed the first parameter", raw, name)
			}
			return
		}
		if !strings.Contains(raw, name+"="+v) && !(v == "" && strings.Contains(raw, name)) {
			t.Fatalf("queryValue(%q, %q) = %q, not in the query", raw, name, v)
		}
	})
}

// FuzzDecodeToken checks that sticky cookie tokens round-trip and that nothing else decodes.
func FuzzDecodeToken(f *testing.F) {
	f.Add("0123456789abcdef")
	f.Add("0123456789ABCDEF")
	f.Add("10.0.0.1:8080")
	f.Add("")
	f.Fuzz(func(t *testing.T, s string) {
		tok, ok := decodeToken(s)
		if !ok {
			return
		}
		if enc := encodeToken(tok); enc != s {
			t.Fatalf("decodeToken(%q) = %x, which encodes as %q", s, tok, enc)
		}
	})
}

// FuzzPeerIPv4 checks the hand-written RemoteAddr parser against sluice.PeerAddr: whenever it
// accepts an address, PeerAddr must find the same one, and it must accept every canonical
// "a.b.c.d:port".
func FuzzPeerIPv4(f *testing.F) {
	f.Add("192.0.2.1:8080")
	f.Add("10.0.0.1:0")
	f.Add("1.2.3.4")
	f.Add("01.2.3.4:80")
	f.Add("256.1.1.1:80")
	f.Add("1.2.3.4:99999")
	f.Add("1.2.3.4:8a")
	f.Add("[::ffff:1.2.3.4]:80")
	f.Add("1.2.3.4.5:80")
	f.Add("")
	f.Fuzz(func(t *testing.T, remote string) {
		a, ok := peerIPv4(remote)
		want := sluice.PeerAddr(&http.Request{RemoteAddr: remote})
		if ok && a != want {
			t.Fatalf("peerIPv4(%q) = %v; sluice.PeerAddr says %v", remote, a, want)
		}
		if ap, err := netip.ParseAddrPort(remote); err == nil && ap.Addr().Is4() && ap.String() == remote && !ok {
			t.Fatalf("peerIPv4(%q) rejected a canonical IPv4 address and port", remote)
		}
	})
}

// FuzzHashString checks that the word-at-a-time hash reads every byte: changing any one byte
// of a key changes its hash (a collision of two specific keys is possible but has probability
// 2⁻⁶⁴ per pair).
func FuzzHashString(f *testing.F) {
	f.Add("alice", 0)
	f.Add("/items/12345678/reviews", 17)
	f.Add("0123456789abcdef", 15)
	f.Fuzz(func(t *testing.T, s string, i int) {
		if s == "" {
			return
		}
		i = int(uint(i) % uint(len(s)))
		b := []byte(s)
		b[i] ^= 1
		if hashString(s) == hashString(string(b)) {
			t.Fatalf("hashString(%q) = hashString(%q)", s, b)
		}
		if hashString(s) == hashString(s+"\x00") {
			t.Fatalf("hashString ignores a trailing zero byte of %q", s)
		}
	})
}

func TestDecayFactor(t *testing.T) {
	for _, x := range []float64{0, 1e-9, 1e-4, 1.0 / 65, 1.0 / 64, 0.5, 3, 50} {
		if got, want := decayFactor(x), math.Exp(-x); math.Abs(got-want) > 1e-6 {
			t.Errorf("decayFactor(%v) = %v, want %v", x, got, want)
		}
	}
}
