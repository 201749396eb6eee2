//go:build integration

package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"regexp"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/sluiceproxy/sluice/internal/kubetest"
	"github.com/sluiceproxy/sluice/internal/testcert"
	"github.com/sluiceproxy/sluice/proxyproto"
)

// secureIngress is the passthrough Ingress of TestIntegrationSSLPassthrough: secure.test to
// Service svc and other.test to secure-b. Its spec.tls and backend-protocol serve a controller
// that terminates it instead (without -enable-ssl-passthrough, or once the annotation goes).
func secureIngress(svc string, passthrough bool) string {
	ann := ""
	if passthrough {
		ann = `sluiceproxy.io/ssl-passthrough: "true"`
	}
	return fmt.Sprintf(`
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata:
  name: secure
  namespace: pt
  annotations:
    sluiceproxy.io/backend-protocol: HTTPS
    %s
spec:
  ingressClassName: sluice
  tls:
  - {hosts: [secure.test], secretName: secure-tls}
  rules:
  - host: secure.test
    http:
      paths:
      - {path: /anything, pathType: Prefix, backend: {service: {name: web, port: {number: 80}}}}
      - {path: /, pathType: Prefix, backend: {service: {name: %s, port: {number: 80}}}}
  - host: other.test
    http:
      paths:
      - {path: /, pathType: Prefix, backend: {service: {name: secure-b, port: {number: 80}}}}
`, ann, svc)
}

// TestIntegrationSSLPassthrough runs two controllers against a real API server, one with
// -enable-ssl-passthrough and one without, over real TLS backends that hold their own
// certificates (from a CA of their own) and a plain backend behind a terminated host.
func TestIntegrationSSLPassthrough(t *testing.T) {
	cluster := kubetest.Start(t)
	client := cluster.Client
	pods := &kubetest.AddrMap{}
	backendCA, ingressCA := testcert.NewCA(t), testcert.NewCA(t)
	certA := tlsPod(t, pods, "secure-a", "10.244.5.1:8443", backendCA.Server(t, "secure.test"))
	certB := tlsPod(t, pods, "secure-b", "10.244.6.1:8443", backendCA.Server(t, "secure.test", "other.test"))
	backend(t, pods, "web", "10.244.1.1:8080")
	shopCert, secureCert := ingressCA.Server(t, "shop.test"), ingressCA.Server(t, "secure.test")
	apply(t, client, "apiVersion: v1\nkind: Namespace\nmetadata: {name: pt}\n---"+ingressClass+"---"+
		service("pt", "secure-a", 8443, "10.244.5.1")+"\n---"+service("pt", "secure-b", 8443, "10.244.6.1")+"\n---"+
		service("pt", "web", 8080, "10.244.1.1")+"\n---"+
		tlsSecret("pt", "shop-tls", shopCert)+"---"+tlsSecret("pt", "secure-tls", secureCert)+`---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata:
  name: shop
  namespace: pt
  annotations: {sluiceproxy.io/ssl-redirect: "false"}
spec:
  ingressClassName: sluice
  tls:
  - {hosts: [shop.test], secretName: shop-tls}
  rules:
  - host: shop.test
    http:
      paths:
      - {path: /, pathType: Prefix, backend: {service: {name: web, port: {number: 80}}}}
---`+secureIngress("secure-a", true))
	r := startRig(t, client, pods, func(c *config) { c.SSLPassthrough = true })

	t.Run("the backend gets the client's own TLS session, chosen by SNI", func(t *testing.T) {
		for _, h2 := range []bool{false, true} {
			proto := map[bool]string{false: "HTTP/1.1", true: "HTTP/2.0"}[h2]
			got := waitTLS(t, r.https, "secure.test", backendCA.Pool, h2, "secure-a "+proto+" secure.test")
			assert.Equal(t, certA.Leaf.SerialNumber, got.leaf.SerialNumber, "the client should see secure-a's own certificate")
			assert.Equal(t, proto, got.proto)
			got = waitTLS(t, r.https, "other.test", backendCA.Pool, h2, "secure-b "+proto+" other.test")
			assert.Equal(t, certB.Leaf.SerialNumber, got.leaf.SerialNumber, "other.test goes to Service secure-b")
		}
	})

	t.Run("a terminated host on the same port still works", func(t *testing.T) {
		for _, h2 := range []bool{false, true} {
			got := waitTLS(t, r.https, "shop.test", ingressCA.Pool, h2, "web")
			assert.Equal(t, shopCert.Leaf.SerialNumber, got.leaf.SerialNumber, "shop.test is served with its Secret's certificate")
			assert.Equal(t, map[bool]string{false: "HTTP/1.1", true: "HTTP/2.0"}[h2], got.proto)
		}
		r.waitBody(t, "shop.test", "/", "web") // and plain HTTP
	})

	t.Run("metrics", func(t *testing.T) {
		resp, err := http.Get("http://" + r.admin + "/metrics")
		require.NoError(t, err)
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		assert.Contains(t, string(b), "sluice_passthrough_hosts 2\n")
		assert.Regexp(t, `sluice_passthrough_connections_total [1-9]`, string(b))
	})

	t.Run("the route follows the Service's endpoints", func(t *testing.T) {
		certC := tlsPod(t, pods, "secure-c", "10.244.6.2:8443", backendCA.Server(t, "secure.test", "other.test"))
		apply(t, client, service("pt", "secure-b", 8443, "10.244.6.2"))
		got := waitTLS(t, r.https, "other.test", backendCA.Pool, false, "secure-c HTTP/1.1 other.test")
		assert.Equal(t, certC.Leaf.SerialNumber, got.leaf.SerialNumber, "the new pod of secure-b holds the session")
		apply(t, client, service("pt", "secure-b", 8443, "10.244.6.1"))
		waitTLS(t, r.https, "other.test", backendCA.Pool, false, "secure-b HTTP/1.1 other.test")
	})

	t.Run("without the flag the Ingress is reported and served terminated", func(t *testing.T) {
		off := startRig(t, client, pods, nil)
		// The controller's own HTTPS connection to the pod names no server (a pod IP).
		got := waitTLS(t, off.https, "secure.test", ingressCA.Pool, false, "secure-a ")
		assert.Equal(t, secureCert.Leaf.SerialNumber, got.leaf.SerialNumber,
			"the controller without -enable-ssl-passthrough terminates with the Ingress's Secret")
		require.Eventually(t, func() bool {
			evs, err := client.CoreV1().Events("pt").List(context.Background(), metav1.ListOptions{FieldSelector: "involvedObject.name=secure"})
			if err != nil {
				return false
			}
			for _, ev := range evs.Items {
				if ev.Reason == "IgnoredConfiguration" && strings.Contains(ev.Message, "-enable-ssl-passthrough") {
					return true
				}
			}
			return false
		}, 20*time.Second, 5*time.Millisecond, "a Warning Event should say that the annotation is ignored without the flag")
	})

	t.Run("the route follows Ingress updates; established connections stay", func(t *testing.T) {
		var dials atomic.Int64
		kept := tlsClient(r.https, "secure.test", backendCA.Pool, true, nil, &dials)
		defer kept.CloseIdleConnections()
		got, err := getTLS(kept, "secure.test")
		require.NoError(t, err)
		require.Equal(t, "secure-a HTTP/2.0 secure.test", got.body)

		apply(t, client, secureIngress("secure-b", true))
		got = waitTLS(t, r.https, "secure.test", backendCA.Pool, true, "secure-b HTTP/2.0 secure.test")
		assert.Equal(t, certB.Leaf.SerialNumber, got.leaf.SerialNumber)
		got, err = getTLS(kept, "secure.test")
		require.NoError(t, err, "the connection passed through before the update should still work")
		assert.Equal(t, "secure-a HTTP/2.0 secure.test", got.body, "the connection passed through before the update keeps its pod")
		assert.EqualValues(t, 1, dials.Load(), "on the same connection")

		// Without the annotation, the controller terminates the host with its Secret and
		// forwards to secure-b over HTTPS.
		apply(t, client, secureIngress("secure-b", false))
		got = waitTLS(t, r.https, "secure.test", ingressCA.Pool, false, "secure-b ")
		assert.Equal(t, secureCert.Leaf.SerialNumber, got.leaf.SerialNumber, "secure.test is terminated once the annotation goes")

		require.NoError(t, client.NetworkingV1().Ingresses("pt").Delete(context.Background(), "secure", metav1.DeleteOptions{}))
		require.Eventually(t, func() bool {
			_, err := getTLS(tlsClient(r.https, "other.test", backendCA.Pool, false, nil, nil), "other.test")
			return err != nil && regexp.MustCompile(`tls|EOF|reset`).MatchString(err.Error())
		}, 20*time.Second, 5*time.Millisecond, "other.test should no longer reach a backend once its Ingress is deleted")
		waitTLS(t, r.https, "shop.test", ingressCA.Pool, true, "web")
	})
}

// TestIntegrationProxyProtocol runs the controller behind a pretend load balancer that sends
// PROXY protocol headers from loopback, the trusted network, with passthrough on: the
// backends see the client the header names, over HTTP, terminated HTTPS and passthrough.
func TestIntegrationProxyProtocol(t *testing.T) {
	cluster := kubetest.Start(t)
	client := cluster.Client
	pods := &kubetest.AddrMap{}
	backendCA, ingressCA := testcert.NewCA(t), testcert.NewCA(t)
	pods.Set("10.244.1.1:8080", newServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprint(w, r.Header.Get("X-Forwarded-For"))
	})))
	for _, p := range []struct{ name, pod string }{{"sticky-a", "10.244.7.1:8443"}, {"sticky-b", "10.244.7.2:8443"}} {
		tlsPod(t, pods, p.name, p.pod, backendCA.Server(t, "sticky.test"))
	}
	apply(t, client, ingressClass+"---"+service("default", "echo", 8080, "10.244.1.1")+"\n---"+
		service("default", "sticky", 8443, "10.244.7.1", "10.244.7.2")+"\n---"+
		tlsSecret("default", "echo-tls", ingressCA.Server(t, "echo.test", "limited.test"))+`---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata:
  name: echo
  namespace: default
  annotations: {sluiceproxy.io/ssl-redirect: "false"}
spec:
  ingressClassName: sluice
  tls:
  - {hosts: [echo.test, limited.test], secretName: echo-tls}
  rules:
  - host: echo.test
    http:
      paths:
      - {path: /, pathType: Prefix, backend: {service: {name: echo, port: {number: 80}}}}
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata:
  name: limited
  namespace: default
  annotations: {sluiceproxy.io/ssl-redirect: "false", sluiceproxy.io/rate-limit-rps: "0.001", sluiceproxy.io/rate-limit-burst: "1"}
spec:
  ingressClassName: sluice
  rules:
  - host: limited.test
    http:
      paths:
      - {path: /, pathType: Prefix, backend: {service: {name: echo, port: {number: 80}}}}
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata:
  name: sticky
  namespace: default
  annotations:
    sluiceproxy.io/ssl-passthrough: "true"
    sluiceproxy.io/load-balance: maglev
    sluiceproxy.io/hash-key: client-ip
spec:
  ingressClassName: sluice
  rules:
  - host: sticky.test
    http:
      paths:
      - {path: /, pathType: Prefix, backend: {service: {name: sticky, port: {number: 80}}}}
`)
	r := startRig(t, client, pods, func(c *config) { c.SSLPassthrough, c.ProxyProtocolFrom = true, "127.0.0.0/8, ::1" })

	// get sends one request for host through the listener at addr (http or https), each
	// connection starting with header.
	get := func(addr, scheme, host string, header *proxyproto.Header) (int, string, error) {
		c := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DialContext: proxiedDial(addr, header, nil)}}
		if scheme == "https" {
			c = tlsClient(addr, host, ingressCA.Pool, true, header, nil)
		}
		defer c.CloseIdleConnections()
		resp, err := c.Get(scheme + "://" + host + "/")
		if err != nil {
			return 0, "", err
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b), err
	}

	t.Run("X-Forwarded-For names the header's client", func(t *testing.T) {
		for _, tc := range []struct {
			name, addr, scheme string
			header             *proxyproto.Header
			want               string
		}{
			{"HTTP, v1", r.http, "http", tcpHeader(1, "192.0.2.7:50000", "198.51.100.1:80"), "192.0.2.7"},
			{"HTTP, v2 IPv6", r.http, "http", tcpHeader(2, "[2001:db8::7]:50000", "[2001:db8::1]:80"), "2001:db8::7"},
			{"HTTPS terminated, v2", r.https, "https", tcpHeader(2, "192.0.2.8:50000", "198.51.100.1:443"), "192.0.2.8"},
			{"HTTPS terminated, v1", r.https, "https", tcpHeader(1, "192.0.2.9:50000", "198.51.100.1:443"), "192.0.2.9"},
		} {
			var code int
			var body string
			var err error
			require.Eventually(t, func() bool {
				code, body, err = get(tc.addr, tc.scheme, "echo.test", tc.header)
				return err == nil && code == http.StatusOK
			}, 20*time.Second, 5*time.Millisecond, "%s: echo.test should answer", tc.name)
			assert.Equal(t, tc.want, body, "%s: the backend should see the header's client in X-Forwarded-For", tc.name)
		}
	})

	t.Run("rate limits count the header's client", func(t *testing.T) {
		a, b := tcpHeader(1, "192.0.2.20:50000", "198.51.100.1:80"), tcpHeader(2, "192.0.2.21:50000", "198.51.100.1:80")
		require.Eventually(t, func() bool {
			code, _, err := get(r.http, "http", "limited.test", a)
			return err == nil && code == http.StatusOK
		}, 20*time.Second, 5*time.Millisecond, "limited.test should answer the first request")
		code, _, err := get(r.http, "http", "limited.test", a)
		require.NoError(t, err)
		assert.Equal(t, http.StatusTooManyRequests, code, "192.0.2.20 has spent its burst")
		code, _, err = get(r.http, "http", "limited.test", b)
		require.NoError(t, err)
		assert.Equal(t, http.StatusOK, code, "192.0.2.21 is another client with a burst of its own, though both came from loopback")
	})

	t.Run("a trusted peer must send the header", func(t *testing.T) {
		for _, addr := range []string{r.http, r.https} {
			_, _, err := get(addr, map[string]string{r.http: "http", r.https: "https"}[addr], "echo.test", nil)
			assert.Error(t, err, "a connection from the trusted network without a header should be refused on %s", addr)
		}
	})

	t.Run("passthrough behind the PROXY protocol balances by the header's client", func(t *testing.T) {
		// Maglev's bounded loads would move a client whose backend still counts the
		// connections before: each starts once the proxy has let go of the one before.
		idle := func() {
			require.Eventually(t, func() bool {
				resp, err := http.Get("http://" + r.admin + "/metrics")
				if err != nil {
					return false
				}
				b, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				return strings.Contains(string(b), "sluice_passthrough_connections_open 0\n")
			}, 10*time.Second, time.Millisecond, "the passthrough connections should end")
		}
		seen := map[string]string{} // client → backend
		backends := map[string]bool{}
		for i := range 16 {
			h := tcpHeader(2, fmt.Sprintf("192.0.2.%d:40000", 100+i), "198.51.100.1:443")
			for range 2 {
				idle()
				var got tlsAnswer
				require.Eventually(t, func() bool {
					c := tlsClient(r.https, "sticky.test", backendCA.Pool, false, h, nil)
					defer c.CloseIdleConnections()
					var err error
					got, err = getTLS(c, "sticky.test")
					return err == nil
				}, 20*time.Second, 5*time.Millisecond, "sticky.test should be passed through")
				name, _, _ := strings.Cut(got.body, " ")
				if prev, ok := seen[h.Source.String()]; ok {
					assert.Equal(t, prev, name, "client %s should stay on its backend", h.Source)
				}
				seen[h.Source.String()] = name
				backends[name] = true
			}
		}
		assert.Len(t, backends, 2, "16 clients named by headers, all from loopback, should be spread over both backends by their address: %v", seen)
	})

	t.Run("an untrusted peer's header is refused", func(t *testing.T) {
		u := startRig(t, client, pods, func(c *config) { c.SSLPassthrough, c.ProxyProtocolFrom = true, "192.0.2.0/24" })
		for _, addr := range []string{u.http, u.https} {
			assert.NoError(t, checkRefused(addr, *tcpHeader(1, "192.0.2.7:50000", "198.51.100.1:80")), "a header from loopback, untrusted, on %s", addr)
			assert.NoError(t, checkRefused(addr, *tcpHeader(2, "192.0.2.7:50000", "198.51.100.1:80")), "a v2 header from loopback, untrusted, on %s", addr)
		}
		u.waitBody(t, "echo.test", "/", "127.0.0.1") // without a header, loopback is the client
		_, body, err := get(u.https, "https", "echo.test", nil)
		require.NoError(t, err)
		assert.Equal(t, "127.0.0.1", body, "and over HTTPS")
	})
}
