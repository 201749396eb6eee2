package proxy

import (
	"net"
	"net/http"
	"slices"
	"strings"

	"golang.org/x/net/http/httpguts"

	"github.com/sluiceproxy/sluice"
)

// Shared read-only field values. The proxy only ever replaces these slices, never writes into
// them, and their capacity equals their length so an append copies.
var (
	teTrailers  = []string{"trailers"}
	connUpgrade = []string{"Upgrade"}
	protoHTTP   = []string{"http"}
	protoHTTPS  = []string{"https"}
)

// clientIPFields are request fields that, like X-Forwarded-For, carry a client's address,
// set by CDNs and other proxies: a backend that reads one must not get an address the client
// made up. From an untrusted peer each is replaced by the peer's address when sent; from a
// trusted one it is kept. Names are canonical. X-Real-IP is handled on its own: it is always
// set (see setForwarded).
var clientIPFields = []string{"True-Client-Ip", "X-Client-Ip", "Cf-Connecting-Ip", "Fastly-Client-Ip"}

// aliasedFields are the fields whose spellings with '_' for '-' are dropped: CGI-style
// backends (PHP, WSGI, Rack) turn both X-Real-IP and X_Real_IP into HTTP_X_REAL_IP, so an
// underscore spelling would smuggle a forged address past the replacement. NGINX drops every
// field with an underscore by default (underscores_in_headers off) for the same reason. The
// framing fields are here too, so that no backend can take Content_Length for the real one.
var aliasedFields = append([]string{"X-Forwarded-For", "X-Forwarded-Host", "X-Forwarded-Proto",
	"Forwarded", "X-Real-Ip", "Content-Length", "Transfer-Encoding"}, clientIPFields...)

// isAlias reports whether k, a field name with an underscore, spells one of aliasedFields
// with '_' for '-', in any case.
func isAlias(k string) bool { return spellsOneOf(k, aliasedFields) }

// spellsOneOf reports whether k spells one of names, with '_' for '-', in any case.
func spellsOneOf(k string, names []string) bool {
	for _, name := range names {
		if len(name) != len(k) {
			continue
		}
		i := 0
		for ; i < len(k); i++ {
			a, b := k[i], name[i]
			if a == '_' {
				a = '-'
			}
			if lower(a) != lower(b) {
				break
			}
		}
		if i == len(k) {
			return true
		}
	}
	return false
}

func lower(c byte) byte {
	if 'A' <= c && c <= 'Z' {
		return c + 'a' - 'A'
	}
	return c
}

// isHopByHop reports whether the canonical field name k belongs to one connection only
// (RFC 9110 §7.6.1) and must not be forwarded.
func isHopByHop(k string) bool {
	switch k {
	case "Connection", "Proxy-Connection", "Keep-Alive", "Proxy-Authenticate",
		"Proxy-Authorization", "Te", "Trailer", "Transfer-Encoding", "Upgrade":
		return true
	}
	return false
}

// namedIn reports whether the field name k is one of the comma-separated options of the
// Connection field lines conn.
func namedIn(conn []string, k string) bool {
	for _, line := range conn {
		for line != "" {
			var tok string
			tok, line, _ = strings.Cut(line, ",")
			if strings.EqualFold(strings.TrimSpace(tok), k) {
				return true
			}
		}
	}
	return false
}

// hasToken reports whether one of the comma-separated tokens of lines is tok, ignoring case
// and parameters ("trailers;q=1" has "trailers").
func hasToken(lines []string, tok string) bool {
	for _, line := range lines {
		for line != "" {
			var t string
			t, line, _ = strings.Cut(line, ",")
			t, _, _ = strings.Cut(t, ";")
			if strings.EqualFold(strings.TrimSpace(t), tok) {
				return true
			}
		}
	}
	return false
}

// removeHopByHop deletes from h every hop-by-hop field and every field its Connection field
// names.
func removeHopByHop(h http.Header) {
	if conn := h["Connection"]; len(conn) > 0 {
		for k := range h {
			if namedIn(conn, k) {
				delete(h, k)
			}
		}
	}
	for k := range h {
		if isHopByHop(k) {
			delete(h, k)
		}
	}
}

// upgradeType returns the protocol an HTTP/1.1 request asks to switch to (the Upgrade field,
// when Connection names "upgrade"), or "". An upgrade to h2c is ignored, as RFC 9113 §3.1
// allows: the request is served over HTTP/1.1, and clients wanting h2c use prior knowledge.
func upgradeType(h http.Header) string {
	conn := h["Connection"]
	if len(conn) == 0 || !hasToken(conn, "upgrade") {
		return ""
	}
	up := h.Get("Upgrade")
	if asciiEqualFold(trimOWS(up), "h2c") {
		return ""
	}
	return up
}

// outHeader builds the header of the outgoing request: the client's fields without the
// hop-by-hop ones, and with this hop's forwarding fields. Field values are shared with the
// incoming header, never copied: nothing writes into them.
func (x *exchange) outHeader() http.Header {
	src := x.in.Header
	h := x.outHdr
	if h == nil {
		h = make(http.Header, len(src)+5)
	}
	if x.pooled {
		x.outHdr = h
	}
	sanitizeAliases(h, src, x.p.aliases)
	if x.upgrade != "" {
		h["Connection"] = connUpgrade
		h["Upgrade"] = src["Upgrade"]
	}
	x.setForwarded(h)
	return h
}

// sanitize copies src's end-to-end fields into dst: it leaves out the hop-by-hop fields, the
// fields the Connection field names, the forwarding fields (set separately) and the
// underscore spellings of the forwarding and client-IP fields. TE survives only as "trailers",
// which gRPC needs.
func sanitize(dst, src http.Header) { sanitizeAliases(dst, src, aliasedFields) }

// sanitizeAliases is sanitize with the underscore spellings of aliases dropped.
func sanitizeAliases(dst, src http.Header, aliases []string) {
	conn := src["Connection"]
	for k, vv := range src {
		switch k {
		case "X-Forwarded-For", "X-Forwarded-Host", "X-Forwarded-Proto", "Forwarded", "X-Real-Ip":
			continue
		}
		if strings.IndexByte(k, '_') >= 0 && spellsOneOf(k, aliases) {
			continue
		}
		if isHopByHop(k) || (len(conn) > 0 && namedIn(conn, k)) {
			continue
		}
		dst[k] = vv
	}
	if te := src["Te"]; len(te) > 0 && hasToken(te, "trailers") {
		dst["Te"] = teTrailers
	}
}

// setForwarded sets X-Forwarded-For, -Host, -Proto, Forwarded and X-Real-IP for this hop. A
// trusted peer's values are kept and this hop appended; an untrusted peer's are replaced, and
// so are the clientIPFields it sent.
//
// X-Real-IP is always set, to the client address sluice.ClientIP resolves: the peer itself
// when it is not trusted, else the first untrusted address walking back through the trusted
// peer's X-Forwarded-For (or Forwarded). That is what NGINX's realip module puts in
// $remote_addr (real_ip_header X-Forwarded-For, real_ip_recursive on) and what
// "proxy_set_header X-Real-IP $remote_addr", as ingress-nginx has it, sends on; it is also the
// address sluice logs and filters on. A trusted peer's own X-Real-IP is replaced too: the
// forwarding chain says more, and a single field cannot be appended to.
func (x *exchange) setForwarded(h http.Header) {
	in := x.in
	src := in.Header
	peer := sluice.PeerAddr(in)
	trusted := x.p.TrustedProxies.Contains(peer)
	ip := ""
	if peer.IsValid() {
		ip = peerHost(in.RemoteAddr)
		if ip == "" || strings.IndexByte(ip, '%') >= 0 {
			// A zone is local to this host, and a RemoteAddr set by a handler (PROXY
			// protocol) could hide CR or LF in it: forward the bare address.
			ip = peer.WithZone("").String()
		}
	}
	proto := protoHTTP
	if in.TLS != nil {
		proto = protoHTTPS
	}

	if prior := src["X-Forwarded-For"]; trusted && len(prior) > 0 {
		x.xff[0] = appendList(prior, ip)
		h["X-Forwarded-For"] = x.xff[:1:1]
	} else if ip != "" {
		x.xff[0] = ip
		h["X-Forwarded-For"] = x.xff[:1:1]
	}
	if prior := src["X-Forwarded-Host"]; trusted && len(prior) > 0 && validValues(prior) {
		h["X-Forwarded-Host"] = prior
	} else if in.Host != "" && httpguts.ValidHeaderFieldValue(in.Host) {
		x.xfh[0] = in.Host
		h["X-Forwarded-Host"] = x.xfh[:1:1]
	}
	if prior := src["X-Forwarded-Proto"]; trusted && len(prior) > 0 && validValues(prior) {
		h["X-Forwarded-Proto"] = prior
	} else {
		h["X-Forwarded-Proto"] = proto
	}
	elem := forwardedElement(ip, in.Host, proto[0])
	if prior := src["Forwarded"]; trusted && len(prior) > 0 {
		x.fwd[0] = appendList(prior, elem)
	} else {
		x.fwd[0] = elem
	}
	h["Forwarded"] = x.fwd[:1:1]

	// The peer's address, shared with X-Forwarded-For when that holds just the peer (always
	// for an untrusted peer), so that the common case allocates nothing.
	var peerIP []string
	if ip != "" && x.xff[0] == ip {
		peerIP = x.xff[:1:1]
	}
	realIP := peerIP
	if trusted {
		if c := sluice.ClientIP(in, x.p.TrustedProxies).WithZone(""); c.IsValid() && c != peer.WithZone("") {
			realIP = []string{c.String()}
		} else if realIP == nil && ip != "" {
			realIP = []string{ip}
		}
	}
	if realIP != nil {
		h["X-Real-Ip"] = realIP
	}
	if trusted {
		return
	}
	for _, k := range x.p.ipFields {
		if _, ok := h[k]; !ok {
			continue
		}
		if peerIP != nil {
			h[k] = peerIP
		} else {
			delete(h, k)
		}
	}
}

// peerHost returns the host part of a RemoteAddr ("192.0.2.1:5000", "[2001:db8::1]:5000")
// without allocating, or "" when it has none.
func peerHost(remote string) string {
	host, _, err := net.SplitHostPort(remote)
	if err != nil {
		return ""
	}
	return host
}

func validValues(vv []string) bool {
	for _, v := range vv {
		if !httpguts.ValidHeaderFieldValue(v) {
			return false
		}
	}
	return true
}

// appendList joins the field lines of a comma-separated list and appends elem, as one line.
// Lines that are not valid field values (they cannot come through net/http's server, but a
// handler may have set them) and empty elements are dropped.
func appendList(lines []string, elem string) string {
	n := len(elem)
	for _, l := range lines {
		n += len(l) + 2
	}
	var b strings.Builder
	b.Grow(n)
	for _, l := range lines {
		l = strings.TrimSpace(l)
		if l == "" || !httpguts.ValidHeaderFieldValue(l) {
			continue
		}
		b.WriteString(l)
		b.WriteString(", ")
	}
	if elem == "" {
		s := b.String()
		return strings.TrimSuffix(s, ", ")
	}
	b.WriteString(elem)
	return b.String()
}

// forwardedElement builds this hop's RFC 7239 forwarded-element:
// for=192.0.2.1;host=example.com;proto=https. An IPv6 node is bracketed and quoted; a host
// that is not a token is quoted.
func forwardedElement(ip, host, proto string) string {
	var node string
	switch {
	case ip == "":
		node = "unknown"
	case strings.IndexByte(ip, ':') >= 0:
		node = `"[` + ip + `]"`
	default:
		node = ip
	}
	if host == "" {
		return "for=" + node + ";proto=" + proto
	}
	return "for=" + node + ";host=" + quoteIfNeeded(host) + ";proto=" + proto
}

// quoteIfNeeded returns s as an RFC 9110 token when it is one, else as a quoted-string.
// Bytes a quoted-string cannot hold (controls other than tab) become '_'.
func quoteIfNeeded(s string) string {
	token := s != ""
	for i := 0; i < len(s); i++ {
		if !httpguts.IsTokenRune(rune(s[i])) {
			token = false
			break
		}
	}
	if token {
		return s
	}
	var b strings.Builder
	b.Grow(len(s) + 2)
	b.WriteByte('"')
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '"' || c == '\\':
			b.WriteByte('\\')
			b.WriteByte(c)
		case c < ' ' && c != '\t', c == 0x7f:
			b.WriteByte('_')
		default:
			b.WriteByte(c)
		}
	}
	b.WriteByte('"')
	return b.String()
}

// clientIPSetup returns the client-IP fields and the aliased fields of a Proxy with its
// ClientIPHeaders: the package's lists when there are none.
func clientIPSetup(extra []string) (ipFields, aliases []string) {
	if len(extra) == 0 {
		return clientIPFields, aliasedFields
	}
	ipFields = slices.Clone(clientIPFields)
	for _, k := range extra {
		k = http.CanonicalHeaderKey(k)
		if !slices.Contains(ipFields, k) && !slices.Contains(aliasedFields, k) {
			ipFields = append(ipFields, k)
		}
	}
	aliases = append(slices.Clone(aliasedFields), ipFields[len(clientIPFields):]...)
	return ipFields, aliases
}
