package ratelimit

import (
	"encoding/binary"
	"hash/maphash"
	"net/http"
	"net/netip"
	"net/textproto"
	"strings"

	"github.com/sluiceproxy/sluice"
)

// A Key names one bucket of a [Store]. The Limiter sets one field and leaves the other zero:
// Addr for client-IP keys, Str for every other kind. Key is comparable so that the in-memory
// store can index it without building a string per request; a network store makes its own
// key from it (Addr.AsSlice or Addr.String, and Str as bytes).
type Key struct {
	// Addr is the client's address grouped by Options.IPv4Prefix or IPv6Prefix (the first
	// address of the network), never with a zone. An IPv4 client is an IPv4 address, not
	// an IPv4-mapped IPv6 one. Requests whose peer has no IP (a Unix socket) share the zero
	// Addr.
	Addr netip.Addr

	// Str is the header value, cookie value, path or ByFunc result, or "" for Global (whose
	// one bucket is the zero Key). A value longer than 64 bytes is replaced by a 17-byte
	// hash that begins with a NUL byte, so Str may hold any bytes: a store whose keys must be
	// text has to encode it. Str may share memory with the request; a store that keeps it
	// past the call should copy it (strings.Clone) so as not to pin the request's headers.
	Str string
}

// maxKeyLen is the longest string key stored as is. Longer keys (a header can be a megabyte)
// are replaced by a 128-bit hash so that the memory a bucket costs does not depend on what a
// client sends.
const maxKeyLen = 64

// keySeed seeds the hash that shortens long keys; it is per process so that clients cannot
// aim for collisions.
var keySeed = maphash.MakeSeed()

type byKind uint8

const (
	byClientIP byKind = iota
	byHeader
	byCookie
	byPath
	byGlobal
	byFunc
)

// By says what a limit counts requests by. The zero By counts by client IP.
type By struct {
	kind byKind
	name string
	fn   func(*http.Request) (string, bool)
}

// ByClientIP counts requests by the client's IP address as [sluice.ClientIP] finds it with
// [Options.TrustedProxies], grouped by [Options.IPv4Prefix] and [Options.IPv6Prefix].
func ByClientIP() By { return By{kind: byClientIP} }

// ByHeader counts requests by the first value of the named request header, such as an API
// key. Like NGINX, a request without the header is not counted by this limit: pair it with a
// client-IP limit so that leaving the header out is no way around limits.
func ByHeader(name string) By {
	return By{kind: byHeader, name: textproto.CanonicalMIMEHeaderKey(name)}
}

// ByCookie counts requests by the value of the named cookie. A request without the cookie is
// not counted by this limit.
func ByCookie(name string) By { return By{kind: byCookie, name: name} }

// ByPath counts requests by URL path, giving every path its own bucket.
func ByPath() By { return By{kind: byPath} }

// Global counts every request in one bucket: a limit for the whole service or route.
func Global() By { return By{kind: byGlobal} }

// ByFunc counts requests by the string fn returns. When fn reports false the limit does not
// apply to the request, which is how a limit is confined to one route:
//
//	ratelimit.ByFunc(func(r *http.Request) (string, bool) { return "login", r.URL.Path == "/login" })
func ByFunc(fn func(r *http.Request) (key string, ok bool)) By { return By{kind: byFunc, fn: fn} }

// keyer extracts keys for one By.
type keyer struct {
	by      By
	trusted *sluice.TrustedProxies
	v4, v6  int
}

// key returns r's key, or false when the limit does not apply to r. It allocates only when a
// string key is longer than maxKeyLen.
func (k *keyer) key(r *http.Request) (Key, bool) {
	var key Key
	ok := k.keyInto(r, &key)
	return key, ok
}

// keyInto is key writing the key into dst, which must be the zero Key. The Limiter calls it
// directly: a Key returned by value is spilled and copied on the stack, and reloading those
// stores stalls the CPU.
func (k *keyer) keyInto(r *http.Request, dst *Key) bool {
	switch k.by.kind {
	case byClientIP:
		if a, ok := peerIPv4(r.RemoteAddr); ok && !k.trusted.Contains(a) {
			dst.Addr = k.groupIP(a) // what sluice.ClientIP returns, sooner
			return true
		}
		dst.Addr = k.groupIP(sluice.ClientIP(r, k.trusted))
		return true
	case byHeader:
		vs := r.Header[k.by.name]
		if len(vs) == 0 {
			return false
		}
		v := textproto.TrimString(vs[0])
		if v == "" {
			return false
		}
		dst.Str = strKey(v)
	case byCookie:
		v, ok := cookieValue(r.Header["Cookie"], k.by.name)
		if !ok || v == "" {
			return false
		}
		dst.Str = strKey(v)
	case byPath:
		dst.Str = strKey(r.URL.Path)
	case byGlobal:
	default:
		s, ok := k.by.fn(r)
		if !ok {
			return false
		}
		dst.Str = strKey(s)
	}
	return true
}

// peerIPv4 parses the commonest RemoteAddr, a dotted IPv4 address and a port ("192.0.2.1:
// 4242"), in a quarter of the time netip.ParseAddrPort takes, which was a quarter of a
// decision. It accepts only what ParseAddrPort accepts (four decimal fields of 0..255 without
// leading zeros, and a port of up to five digits below 65536) and so returns the address
// sluice.PeerAddr would; anything else reports false and takes the general path.
// FuzzPeerIPv4 holds it to sluice.PeerAddr.
func peerIPv4(s string) (netip.Addr, bool) {
	var ip [4]byte
	field, val, digits := 0, 0, 0
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case '0' <= c && c <= '9':
			if digits > 0 && val == 0 {
				return netip.Addr{}, false // a leading zero
			}
			val = val*10 + int(c-'0')
			digits++
			if val > 255 {
				return netip.Addr{}, false
			}
		case c == '.' || c == ':':
			if digits == 0 || field == 4 || (c == ':') != (field == 3) {
				return netip.Addr{}, false
			}
			ip[field] = byte(val)
			field, val, digits = field+1, 0, 0
			if c == ':' {
				return netip.AddrFrom4(ip), validPort(s[i+1:])
			}
		default:
			return netip.Addr{}, false
		}
	}
	return netip.Addr{}, false
}

// validPort reports whether p is one to five decimal digits of a number below 65536.
func validPort(p string) bool {
	if p == "" || len(p) > 5 {
		return false
	}
	n := 0
	for i := 0; i < len(p); i++ {
		if p[i] < '0' || p[i] > '9' {
			return false
		}
		n = n*10 + int(p[i]-'0')
	}
	return n <= 65535
}

// groupIP masks a to the configured prefix length, so that a client cannot escape its limit
// by hopping between the addresses of its own IPv6 /64.
func (k *keyer) groupIP(a netip.Addr) netip.Addr {
	bits := k.v6
	if a.Is4() {
		if k.v4 == 32 {
			return a // the default: nothing to mask, and IPv4 has no zone
		}
		bits = k.v4
	}
	if p, err := a.Prefix(bits); err == nil {
		return p.Addr()
	}
	return a // the zero Addr: every request without a peer IP shares one bucket
}

// strKey makes the string of a string key, hashing long strings to a fixed size.
func strKey(s string) string {
	if len(s) <= maxKeyLen {
		return s
	}
	var b [17]byte
	b[0] = 0 // no header or cookie value can start with NUL, so hashes never equal real keys
	binary.LittleEndian.PutUint64(b[1:], maphash.String(keySeed, s))
	h := maphash.Hash{}
	h.SetSeed(keySeed)
	h.WriteByte(1)
	h.WriteString(s)
	binary.LittleEndian.PutUint64(b[9:], h.Sum64())
	return string(b[:])
}

// cookieValue returns the value of the first well-formed cookie called name in the Cookie
// header lines, with surrounding double quotes removed. It follows what net/http's
// Request.Cookie accepts but does not allocate.
func cookieValue(lines []string, name string) (string, bool) {
	for _, line := range lines {
		for line != "" {
			var part string
			part, line, _ = strings.Cut(line, ";")
			part = textproto.TrimString(part)
			n, v, _ := strings.Cut(part, "=")
			if textproto.TrimString(n) != name {
				continue
			}
			if len(v) > 1 && v[0] == '"' && v[len(v)-1] == '"' {
				v = v[1 : len(v)-1]
			}
			if validCookieValue(v) {
				return v, true
			}
		}
	}
	return "", false
}

// validCookieValue reports whether v holds only the bytes net/http accepts in a cookie value.
func validCookieValue(v string) bool {
	for i := 0; i < len(v); i++ {
		if b := v[i]; b < 0x20 || b >= 0x7f || b == '"' || b == ';' || b == '\\' {
			return false
		}
	}
	return true
}

// validCookieName reports whether name is an RFC 7230 token, as a cookie name must be.
func validCookieName(name string) bool {
	if name == "" {
		return false
	}
	for i := 0; i < len(name); i++ {
		b := name[i]
		if b <= ' ' || b >= 0x7f || strings.IndexByte(`()<>@,;:\"/[]?={}`, b) >= 0 {
			return false
		}
	}
	return true
}
