package proxy

import (
	"crypto/tls"
	"net/http"
	"net/textproto"
	"slices"
	"strings"
	"testing"

	"golang.org/x/net/http/httpguts"

	"github.com/sluiceproxy/sluice"
)

// parseFields turns "Name: value" lines into a header, the way a client could send them.
// Lines whose name is not a token are left out, as net/http's server rejects them.
func parseFields(raw string) http.Header {
	h := http.Header{}
	for _, line := range strings.Split(raw, "\n") {
		k, v, ok := strings.Cut(line, ":")
		k = strings.TrimSpace(k)
		if !ok || !httpguts.ValidHeaderFieldName(k) {
			continue // a server rejects the request; values are left raw on purpose
		}
		k = textproto.CanonicalMIMEHeaderKey(k)
		h[k] = append(h[k], strings.TrimSpace(v))
	}
	return h
}

// connectionOptions lists the field names a Connection field names, lower-cased. It is
// written independently of namedIn so that the fuzz target checks one against the other.
func connectionOptions(h http.Header) []string {
	var opts []string
	for _, line := range h.Values("Connection") {
		for _, o := range strings.Split(line, ",") {
			if o = strings.Trim(o, " \t"); o != "" {
				opts = append(opts, strings.ToLower(o))
			}
		}
	}
	return opts
}

var forwardingFields = []string{"X-Forwarded-For", "X-Forwarded-Host", "X-Forwarded-Proto", "Forwarded", "X-Real-Ip"}

// FuzzSanitize checks the header the proxy forwards: no hop-by-hop field and no field the
// Connection field names survives (TE only as "trailers"), every other field passes
// unchanged, and sanitize never makes up a value, so nothing a server rejected (CR, LF, NUL)
// can appear that the client did not send.
func FuzzSanitize(f *testing.F) {
	f.Add("Host: a\nAccept: */*\nUser-Agent: curl")
	f.Add("Connection: X-Secret, keep-alive\nX-Secret: s\nKeep-Alive: timeout=5\nX-Kept: k")
	f.Add("Te: trailers, deflate\nTrailer: Grpc-Status\nTransfer-Encoding: chunked\nUpgrade: websocket")
	f.Add("Proxy-Authorization: Basic x\nProxy-Connection: keep-alive\nProxy-Authenticate: y")
	f.Add("Connection: te\nTe: trailers;q=1")
	f.Add("Connection: ,,x-a ,\tX-B\nX-A: 1\nX-B: 2\nX-C: 3")
	f.Add("X-Forwarded-For: 6.6.6.6\nForwarded: for=6.6.6.6\nX-Forwarded-Host: evil\nX-Forwarded-Proto: https")
	f.Add("X-Bad: a\r\nInjected: b\nX-Nul: \x00")
	f.Fuzz(func(t *testing.T, raw string) {
		src := parseFields(raw)
		dst := http.Header{}
		sanitize(dst, src)
		opts := connectionOptions(src)
		for k, vv := range dst {
			if k == "Te" {
				if !slices.Equal(vv, []string{"trailers"}) {
					t.Fatalf("TE forwarded as %q, want only trailers", vv)
				}
				continue
			}
			if isHopByHop(k) {
				t.Fatalf("hop-by-hop field %q forwarded", k)
			}
			if slices.Contains(opts, strings.ToLower(k)) {
				t.Fatalf("field %q named in Connection %q forwarded", k, src.Values("Connection"))
			}
			if slices.Contains(forwardingFields, k) {
				t.Fatalf("client's %s copied by sanitize", k)
			}
			if !slices.Equal(vv, src[k]) {
				t.Fatalf("field %q changed from %q to %q", k, src[k], vv)
			}
		}
		for k := range src {
			if isHopByHop(k) || slices.Contains(opts, strings.ToLower(k)) || slices.Contains(forwardingFields, k) ||
				(strings.Contains(k, "_") && isAlias(k)) {
				continue
			}
			if _, ok := dst[k]; !ok {
				t.Fatalf("end-to-end field %q dropped", k)
			}
		}
	})
}

// FuzzForwarded checks the forwarding fields the proxy builds from a client's Host,
// X-Forwarded-* and Forwarded fields and its address: every value is a valid field value (no
// CR, LF, NUL, whatever the client sent), an untrusted client's values are replaced, and the
// next hop, trusting this proxy, resolves the same client IP from X-Forwarded-For that
// sluice.ClientIP resolved here.
func FuzzForwarded(f *testing.F) {
	f.Add("127.0.0.1:5000", "shop.example", "", "", "", "", false)
	f.Add("10.1.2.3:5000", "shop.example", "1.2.3.4, 10.0.0.1", "for=1.2.3.4;proto=https", "public.example", "https", true)
	f.Add("[2001:db8::1]:443", "[2001:db8::1]:8443", "", `for="[2001:db8::7]"`, "", "", false)
	f.Add("[fe80::1%eth0]:80", "a b", "unknown, _hidden", "for=unknown", "x", "y", false)
	f.Add("10.0.0.9:1", "h\r\nX-Injected: 1", "1.1.1.1\r\nX: y", "for=1.1.1.1\x00", "a\nb", "http\r", true)
	f.Add("not-an-ip", "", ",,", ";;", "", "", false)
	f.Add("[fe80::1%a\r\nX-Injected: 1]:80", "h", "", "", "", "", false)
	f.Fuzz(func(t *testing.T, remote, host, xff, fwd, xfh, xfp string, useTLS bool) {
		trusted, err := sluice.ParseTrustedProxies("10.0.0.0/8", "fd00::/8")
		if err != nil {
			t.Fatal(err)
		}
		in := &http.Request{Method: "GET", Host: host, RemoteAddr: remote, Header: http.Header{}}
		for k, v := range map[string]string{"X-Forwarded-For": xff, "Forwarded": fwd,
			"X-Forwarded-Host": xfh, "X-Forwarded-Proto": xfp} {
			if v != "" {
				in.Header[k] = strings.Split(v, "\n")
			}
		}
		if useTLS {
			in.TLS = &tls.ConnectionState{}
		}
		p := &Proxy{TrustedProxies: trusted}
		p.once.Do(p.setup)
		x := &exchange{p: p, in: in}
		out := x.outHeader()

		for _, k := range forwardingFields {
			for _, v := range out[k] {
				if !httpguts.ValidHeaderFieldValue(v) {
					t.Fatalf("%s value %q is not a valid field value", k, v)
				}
			}
		}
		if len(out["Forwarded"]) != 1 || len(out["X-Forwarded-Proto"]) == 0 {
			t.Fatalf("Forwarded and X-Forwarded-Proto must always be set: %q", out)
		}
		peer := sluice.PeerAddr(in)
		if !trusted.Contains(peer) {
			// The peer as written, or without its zone (an IPv4-mapped one stays as written).
			if peer.IsValid() && out.Get("X-Forwarded-For") != peer.WithZone("").String() &&
				out.Get("X-Forwarded-For") != peerHost(remote) {
				t.Fatalf("untrusted X-Forwarded-For %q, want the peer %s", out.Get("X-Forwarded-For"), peer)
			}
			if xfh != "" && out.Get("X-Forwarded-Host") == xfh && xfh != host {
				t.Fatalf("untrusted X-Forwarded-Host %q kept", xfh)
			}
			if strings.Contains(out.Get("Forwarded"), ",") && !strings.Contains(host, ",") {
				t.Fatalf("untrusted Forwarded %q kept", fwd)
			}
		}

		// The next hop trusts this proxy too: it must find the client this proxy found.
		if !peer.IsValid() || !validLines(in.Header["X-Forwarded-For"]) {
			return
		}
		want := sluice.ClientIP(&http.Request{RemoteAddr: remote,
			Header: http.Header{"X-Forwarded-For": in.Header["X-Forwarded-For"]}}, trusted)
		next, _ := sluice.ParseTrustedProxies("10.0.0.0/8", "fd00::/8", "192.0.2.1")
		got := sluice.ClientIP(&http.Request{RemoteAddr: "192.0.2.1:80",
			Header: http.Header{"X-Forwarded-For": out["X-Forwarded-For"]}}, next)
		if got != want.WithZone("") {
			t.Fatalf("next hop resolves client %v, this proxy %v (X-Forwarded-For in %q, out %q)",
				got, want, in.Header["X-Forwarded-For"], out["X-Forwarded-For"])
		}
	})
}

// validLines reports whether a server would have accepted these field lines.
func validLines(vv []string) bool {
	for _, v := range vv {
		if !httpguts.ValidHeaderFieldValue(v) || strings.TrimSpace(v) != v {
			return false
		}
	}
	return true
}
