package sluice

import (
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"strings"
)

// TrustedProxies is the set of networks whose X-Forwarded-For and Forwarded headers are
// believed. A nil or empty *TrustedProxies trusts nobody, which is the safe default: the
// client IP is then always the address of the TCP peer.
//
// A TrustedProxies is immutable once built and safe for concurrent use.
type TrustedProxies struct {
	prefixes []netip.Prefix
}

// ParseTrustedProxies builds a TrustedProxies from CIDRs ("10.0.0.0/8", "fd00::/8") and bare
// addresses ("192.0.2.7", taken as a /32 or /128). The error names the entry that does not
// parse.
func ParseTrustedProxies(cidrs ...string) (*TrustedProxies, error) {
	t := &TrustedProxies{prefixes: make([]netip.Prefix, 0, len(cidrs))}
	for i, s := range cidrs {
		s = strings.TrimSpace(s)
		var p netip.Prefix
		var err error
		if strings.Contains(s, "/") {
			p, err = netip.ParsePrefix(s)
		} else {
			var a netip.Addr
			a, err = netip.ParseAddr(s)
			p = netip.PrefixFrom(a, a.BitLen())
		}
		if err != nil {
			return nil, fmt.Errorf("sluice: trusted proxy %d (%q) is not a CIDR or IP address: %w", i, s, err)
		}
		if p.Addr().Is4In6() {
			// ::ffff:10.0.0.0/104 means 10.0.0.0/8: compare v4 with v4.
			p = netip.PrefixFrom(p.Addr().Unmap(), p.Bits()-96)
			if p.Bits() < 0 {
				return nil, fmt.Errorf("sluice: trusted proxy %d (%q): IPv4-mapped prefix shorter than /96", i, s)
			}
		}
		t.prefixes = append(t.prefixes, p.Masked())
	}
	return t, nil
}

// Contains reports whether a is inside one of the trusted networks.
func (t *TrustedProxies) Contains(a netip.Addr) bool {
	if t == nil || !a.IsValid() {
		return false
	}
	a = a.Unmap().WithZone("")
	for _, p := range t.prefixes {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// PeerAddr returns the IP address of r's TCP peer, from r.RemoteAddr, or the zero Addr when
// RemoteAddr holds no IP (a Unix socket, or a request built by hand).
func PeerAddr(r *http.Request) netip.Addr {
	if ap, err := netip.ParseAddrPort(r.RemoteAddr); err == nil {
		return ap.Addr().Unmap()
	}
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		host = r.RemoteAddr
	}
	a, err := netip.ParseAddr(host)
	if err != nil {
		return netip.Addr{}
	}
	return a.Unmap()
}

// ClientIP returns the address of the client that sent r.
//
// It starts from the TCP peer. While the address in hand belongs to a trusted proxy, it steps
// one hop back through the forwarding headers that proxy added: X-Forwarded-For when present,
// else RFC 7239 Forwarded "for=". The first address outside the trusted networks is the client.
// It fails closed: an entry that does not parse, an obfuscated or "unknown" node, or a list
// that runs out ends the walk at the last address that could be believed, never at an address
// a client could have forged.
//
// ClientIP does not allocate. It returns the zero Addr only when r.RemoteAddr holds no IP.
func ClientIP(r *http.Request, trusted *TrustedProxies) netip.Addr {
	addr := PeerAddr(r)
	if !trusted.Contains(addr) {
		return addr
	}
	if xff := r.Header.Values("X-Forwarded-For"); len(xff) > 0 {
		return walkBack(addr, trusted, xff, nextXFF)
	}
	if fwd := r.Header.Values("Forwarded"); len(fwd) > 0 {
		return walkBack(addr, trusted, fwd, nextForwarded)
	}
	return addr
}

// walkBack steps from addr through the hops in lines (the values of one header field, which
// together form one list), last hop first, while the current address is trusted. next splits
// the last element off a line and returns the rest of the line and the element's address.
func walkBack(addr netip.Addr, trusted *TrustedProxies, lines []string,
	next func(line string) (rest string, hop netip.Addr, ok bool)) netip.Addr {
	for i := len(lines) - 1; i >= 0; i-- {
		line := lines[i]
		for strings.TrimSpace(line) != "" {
			var hop netip.Addr
			var ok bool
			line, hop, ok = next(line)
			if !ok {
				return addr
			}
			addr = hop
			if !trusted.Contains(addr) {
				return addr
			}
		}
	}
	return addr
}

// nextXFF splits the last element off an X-Forwarded-For line: "client, proxy1, proxy2".
func nextXFF(line string) (string, netip.Addr, bool) {
	rest, elem := cutLast(line, ',')
	a, ok := parseNode(strings.TrimSpace(elem))
	return rest, a, ok
}

// nextForwarded splits the last forwarded-element off a Forwarded line and returns its "for"
// node: `for=192.0.2.60;proto=http, for="[2001:db8::1]:4711"`.
func nextForwarded(line string) (string, netip.Addr, bool) {
	rest, elem := cutLastQuoted(line, ',')
	for elem != "" {
		var pair string
		pair, elem = cutFirstQuoted(elem, ';')
		name, value, found := strings.Cut(strings.TrimSpace(pair), "=")
		if !found || !strings.EqualFold(strings.TrimSpace(name), "for") {
			continue
		}
		value = strings.TrimSpace(value)
		if len(value) >= 2 && value[0] == '"' && value[len(value)-1] == '"' {
			value = value[1 : len(value)-1]
		}
		a, ok := parseNode(value)
		return rest, a, ok
	}
	return rest, netip.Addr{}, false
}

// parseNode parses "192.0.2.1", "192.0.2.1:80", "2001:db8::1", "[2001:db8::1]" and
// "[2001:db8::1]:80". Obfuscated ("_hidden") and "unknown" nodes do not parse.
func parseNode(s string) (netip.Addr, bool) {
	if a, err := netip.ParseAddr(s); err == nil {
		return a.Unmap(), true
	}
	if ap, err := netip.ParseAddrPort(s); err == nil {
		return ap.Addr().Unmap(), true
	}
	if len(s) >= 2 && s[0] == '[' && s[len(s)-1] == ']' {
		if a, err := netip.ParseAddr(s[1 : len(s)-1]); err == nil {
			return a.Unmap(), true
		}
	}
	return netip.Addr{}, false
}

// cutLast splits s around the last sep: the text before it and the text after it. With no sep
// the whole of s is the last element.
func cutLast(s string, sep byte) (before, last string) {
	if i := strings.LastIndexByte(s, sep); i >= 0 {
		return s[:i], s[i+1:]
	}
	return "", s
}

// cutLastQuoted is cutLast that ignores separators inside double-quoted strings.
func cutLastQuoted(s string, sep byte) (before, last string) {
	cut := -1
	inQuote := false
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c == '\\' && inQuote:
			i++
		case c == '"':
			inQuote = !inQuote
		case c == sep && !inQuote:
			cut = i
		}
	}
	if cut < 0 {
		return "", s
	}
	return s[:cut], s[cut+1:]
}

// cutFirstQuoted splits s around the first sep outside double-quoted strings.
func cutFirstQuoted(s string, sep byte) (first, after string) {
	inQuote := false
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c == '\\' && inQuote:
			i++
		case c == '"':
			inQuote = !inQuote
		case c == sep && !inQuote:
			return s[:i], s[i+1:]
		}
	}
	return s, ""
}
