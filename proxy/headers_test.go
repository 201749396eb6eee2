package proxy

import (
	"net/http"
	"net/netip"
	"strings"
	"testing"

	"golang.org/x/net/http/httpguts"

	"github.com/sluiceproxy/sluice"
)

// FuzzClientIPFields checks the client-address fields the proxy forwards whatever a client
// sends: X-Real-IP is the address sluice.ClientIP resolves (absent when the peer has none),
// an untrusted peer's True-Client-IP and friends are its own address, no underscore spelling
// of a forwarding field survives, and every value is a valid field value.
func FuzzClientIPFields(f *testing.F) {
	f.Add("127.0.0.1:5000", "", "", "", "X_Real_IP", "1.1.1.1")
	f.Add("10.1.2.3:5000", "1.2.3.4, 10.0.0.1", "9.9.9.9", "5.5.5.5", "x_forwarded_for", "1.1.1.1")
	f.Add("10.1.2.3:5000", "", "9.9.9.9", "5.5.5.5", "X-Real-Ip", "1.1.1.1")
	f.Add("[::ffff:10.0.0.1]:80", "2001:db8::1", "", "", "Cf_Connecting_Ip", "x")
	f.Add("[fe80::1%eth0]:80", "unknown, _hidden", "a\r\nb", "", "Fastly_Client_IP", "")
	f.Add("not-an-ip", "1.1.1.1", "2.2.2.2", "3.3.3.3", "True_Client_Ip", "4.4.4.4")
	f.Fuzz(func(t *testing.T, remote, xff, realIP, cf, alias, aliasValue string) {
		trusted, err := sluice.ParseTrustedProxies("10.0.0.0/8", "fd00::/8")
		if err != nil {
			t.Fatal(err)
		}
		in := &http.Request{Method: "GET", Host: "a", RemoteAddr: remote, Header: http.Header{}}
		for k, v := range map[string]string{"X-Forwarded-For": xff, "X-Real-Ip": realIP,
			"Cf-Connecting-Ip": cf, alias: aliasValue} {
			if v != "" && k != "" {
				in.Header[k] = strings.Split(v, "\n")
			}
		}
		p := &Proxy{TrustedProxies: trusted}
		p.once.Do(p.setup)
		x := &exchange{p: p, in: in}
		out := x.outHeader()

		for k, vv := range out {
			if strings.Contains(k, "_") && isAlias(k) {
				t.Fatalf("underscore spelling %q of a forwarding field forwarded", k)
			}
			// A trusted peer's fields pass as sent, like every other field: net/http's server
			// has rejected invalid values before the proxy sees them. The rest are made here.
			if k != "X-Real-Ip" && (!slicesContain(clientIPFields, k) || trusted.Contains(sluice.PeerAddr(in))) {
				continue
			}
			for _, v := range vv {
				if !httpguts.ValidHeaderFieldValue(v) {
					t.Fatalf("%s value %q is not a valid field value", k, v)
				}
			}
		}

		peer := sluice.PeerAddr(in)
		real := out["X-Real-Ip"]
		if !peer.IsValid() {
			if len(real) != 0 {
				t.Fatalf("X-Real-IP %q set for a peer without an address", real)
			}
			return
		}
		if len(real) != 1 {
			t.Fatalf("X-Real-IP %q, want one value", real)
		}
		got, err := netip.ParseAddr(real[0])
		if err != nil {
			t.Fatalf("X-Real-IP %q is not an address", real[0])
		}
		want := sluice.ClientIP(in, trusted).WithZone("")
		if got.Unmap() != want.Unmap() {
			t.Fatalf("X-Real-IP %v, want the client %v", got, want)
		}
		if !trusted.Contains(peer) {
			for _, k := range clientIPFields {
				if vv, ok := out[k]; ok && (len(vv) != 1 || vv[0] != out.Get("X-Forwarded-For")) {
					t.Fatalf("untrusted %s %q, want the peer %q", k, vv, out.Get("X-Forwarded-For"))
				}
			}
		}
	})
}

func slicesContain(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}
