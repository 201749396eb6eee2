package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"

	"github.com/sluiceproxy/sluice/internal/kubetest"
	"github.com/sluiceproxy/sluice/internal/testcert"
	"github.com/sluiceproxy/sluice/proxy"
)

// These tests use client-go's fake clientset, which lets them run without binaries; the
// integration test (integration_test.go) runs the same manifests against a real API server.

const shopIngress = `
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata:
  name: shop
  namespace: default
spec:
  ingressClassName: sluice
  defaultBackend:
    service: {name: web, port: {number: 80}}
  rules:
  - host: shop.example.com
    http:
      paths:
      - {path: /, pathType: Prefix, backend: {service: {name: web, port: {name: http}}}}
      - {path: /api, pathType: Prefix, backend: {service: {name: api, port: {number: 80}}}}
      - {path: /exact, pathType: Exact, backend: {service: {name: api, port: {number: 80}}}}
      - {path: /legacy, pathType: ImplementationSpecific, backend: {service: {name: api, port: {number: 80}}}}
  - host: "*.example.com"
    http:
      paths:
      - {path: /, pathType: Prefix, backend: {service: {name: api, port: {number: 80}}}}
`

func TestRouting(t *testing.T) {
	client := fake.NewClientset()
	pods := &kubetest.AddrMap{}
	backend(t, pods, "web", "10.244.1.1:8080")
	backend(t, pods, "api", "10.244.2.1:8080")
	apply(t, client, ingressClass+"---"+service("default", "web", 8080, "10.244.1.1")+"\n---"+
		service("default", "api", 8080, "10.244.2.1")+"\n---"+shopIngress)
	r := startRig(t, client, pods, nil)
	c := &http.Client{Timeout: 5 * time.Second}

	for _, tc := range []struct{ host, path, want string }{
		{"shop.example.com", "/", "web"},
		{"shop.example.com", "/cart", "web"},
		{"shop.example.com", "/api", "api"},
		{"shop.example.com", "/api/orders", "api"},
		{"shop.example.com", "/apix", "web"}, // Prefix matches by path element
		{"shop.example.com", "/exact", "api"},
		{"shop.example.com", "/exact/more", "web"}, // Exact is exact
		{"shop.example.com", "/legacy/x", "api"},   // ImplementationSpecific reads as Prefix
		{"SHOP.example.com:80", "/api", "api"},     // hosts ignore case and port
		{"blog.example.com", "/", "api"},           // wildcard covers one label
		{"a.b.example.com", "/", "web"},            // ... not two: default backend
		{"other.test", "/anything", "web"},         // default backend
	} {
		code, body, err := r.get(c, tc.host, tc.path)
		require.NoError(t, err)
		assert.Equal(t, http.StatusOK, code, "%s%s", tc.host, tc.path)
		assert.Equal(t, tc.want, body, "%s%s should go to %s", tc.host, tc.path, tc.want)
	}

	t.Run("other classes are not served", func(t *testing.T) {
		apply(t, client, `
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {name: theirs, namespace: default}
spec:
  ingressClassName: nginx
  rules:
  - host: theirs.test
    http:
      paths:
      - {path: /, pathType: Prefix, backend: {service: {name: api, port: {number: 80}}}}
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata:
  name: legacy
  namespace: default
  annotations: {kubernetes.io/ingress.class: sluice}
spec:
  rules:
  - host: legacy.test
    http:
      paths:
      - {path: /, pathType: Prefix, backend: {service: {name: api, port: {number: 80}}}}
`)
		r.waitBody(t, "legacy.test", "/", "api") // the legacy annotation is honoured...
		code, body, err := r.get(c, "theirs.test", "/")
		require.NoError(t, err)
		assert.Equal(t, "web", body, "another class's host must fall to our default backend, got %d", code)
	})

	t.Run("a missing Service answers 503 until it exists", func(t *testing.T) {
		apply(t, client, `
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {name: later, namespace: default}
spec:
  ingressClassName: sluice
  rules:
  - host: later.test
    http:
      paths:
      - {path: /, pathType: Prefix, backend: {service: {name: later, port: {number: 80}}}}
`)
		require.Eventually(t, func() bool {
			code, _, err := r.get(c, "later.test", "/")
			return err == nil && code == http.StatusServiceUnavailable
		}, 10*time.Second, 2*time.Millisecond, "a route to a missing Service should answer 503")
		backend(t, pods, "later", "10.244.3.1:8080")
		apply(t, client, service("default", "later", 8080, "10.244.3.1"))
		r.waitBody(t, "later.test", "/", "later")
	})

	t.Run("metrics count requests by route", func(t *testing.T) {
		resp, err := http.Get("http://" + r.admin + "/metrics")
		require.NoError(t, err)
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		parser := expfmt.NewTextParser(model.UTF8Validation)
		fams, err := parser.TextToMetricFamilies(bytes.NewReader(b))
		require.NoError(t, err, "the exposition parses")
		const api = "default/shop:shop.example.com/api(prefix)"
		assert.Contains(t, string(b), `sluice_requests_total{class="2xx",method="GET",route="`+api+`"}`,
			"the edge counts responses by route")
		assert.Regexp(t, `sluice_upstream_requests_total\{class="2xx",route="`+regexp.QuoteMeta(api)+`"\} [1-9]`, string(b),
			"the proxies count what reached them")
		assert.Regexp(t, `(?m)^sluice_pools [1-9]`, string(b))
		assert.Contains(t, fams, "sluice_upstream_latency_seconds")
		assert.Contains(t, fams, "sluice_discovery_endpoints", "EndpointSlices report through the discovery hooks")
		assert.Regexp(t, `sluice_health_endpoints\{pool="default/api:http",state="ready"\} 1`, string(b),
			"each pool's health checker is read at the scrape")
		assert.Contains(t, fams, "sluice_balancer_pickable_endpoints", "each pool's balancer reports its updates")
	})

	t.Run("the dashboard shows routes, pools and their traffic", func(t *testing.T) {
		getJSON := func(path string, v any) {
			t.Helper()
			resp, err := http.Get("http://" + r.admin + "/dashboard" + path)
			require.NoError(t, err)
			defer resp.Body.Close()
			require.Equal(t, http.StatusOK, resp.StatusCode, path)
			require.NoError(t, json.NewDecoder(resp.Body).Decode(v), path)
		}
		var routes []struct {
			Name  string   `json:"name"`
			Hosts []string `json:"hosts"`
		}
		getJSON("/api/routes", &routes)
		var names []string
		for _, rt := range routes {
			names = append(names, rt.Name)
		}
		assert.Contains(t, names, "default/shop:shop.example.com/api(prefix)")
		var pools []struct {
			Name      string `json:"name"`
			Endpoints []struct {
				Addr  string `json:"addr"`
				State string `json:"state"`
			} `json:"endpoints"`
		}
		getJSON("/api/pools", &pools)
		got := map[string]string{}
		for _, p := range pools {
			for _, e := range p.Endpoints {
				got[p.Name] = e.Addr + " " + e.State
			}
		}
		assert.Equal(t, "10.244.2.1:8080 ready", got["default/api:http"], "pools: %v", got)
		resp, err := http.Get("http://" + r.admin + "/dashboard/")
		require.NoError(t, err)
		page, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		assert.Equal(t, http.StatusOK, resp.StatusCode)
		assert.Contains(t, resp.Header.Get("Content-Type"), "text/html")
		assert.NotEmpty(t, page)
	})
}

func TestInvalidIngressKeepsLastGoodConfig(t *testing.T) {
	client := fake.NewClientset()
	pods := &kubetest.AddrMap{}
	backend(t, pods, "web", "10.244.1.1:8080")
	backend(t, pods, "api", "10.244.2.1:8080")
	apply(t, client, ingressClass+"---"+service("default", "web", 8080, "10.244.1.1")+"\n---"+
		service("default", "api", 8080, "10.244.2.1"))
	r := startRig(t, client, pods, nil)
	ing := func(path, svc, timeout string) string {
		return fmt.Sprintf(`
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata:
  name: good
  namespace: default
  annotations: {sluiceproxy.io/timeout: %q}
spec:
  ingressClassName: sluice
  rules:
  - host: good.test
    http:
      paths:
      - {path: %s, pathType: Prefix, backend: {service: {name: %s, port: {number: 80}}}}
`, timeout, path, svc)
	}
	apply(t, client, ing("/a", "web", "5s"))
	r.waitBody(t, "good.test", "/a", "web")

	// A bad timeout: the path move in the same version must not take effect.
	apply(t, client, ing("/b", "api", "forever"))
	var msg string
	require.Eventually(t, func() bool {
		evs, err := client.CoreV1().Events("default").List(context.Background(), metav1.ListOptions{})
		if err != nil || len(evs.Items) == 0 {
			return false
		}
		msg = evs.Items[0].Message
		return evs.Items[0].InvolvedObject.Name == "good" && evs.Items[0].Type == "Warning"
	}, 10*time.Second, 2*time.Millisecond, "a Warning event should be recorded on the Ingress")
	assert.Contains(t, msg, "sluiceproxy.io/timeout", "the event should name the annotation")
	assert.Contains(t, msg, "last valid configuration", "the event should say the old config stays")

	// Another Ingress changes meanwhile and is served: the bad one blocks nobody.
	apply(t, client, strings.ReplaceAll(strings.ReplaceAll(ing("/", "api", "1s"), "name: good", "name: other"), "good.test", "other.test"))
	r.waitBody(t, "other.test", "/", "api")
	c := &http.Client{Timeout: 5 * time.Second}
	code, body, err := r.get(c, "good.test", "/a")
	require.NoError(t, err)
	assert.Equal(t, "web", body, "the bad Ingress keeps its last good route (status %d)", code)
	code, _, err = r.get(c, "good.test", "/b")
	require.NoError(t, err)
	assert.Equal(t, http.StatusNotFound, code, "the bad version's path must not be served")

	// Fixed: the new version takes over.
	apply(t, client, ing("/b", "api", "2s"))
	r.waitBody(t, "good.test", "/b", "api")
}

func TestCanary(t *testing.T) {
	client := fake.NewClientset()
	pods := &kubetest.AddrMap{}
	backend(t, pods, "stable", "10.244.1.1:8080")
	backend(t, pods, "canary", "10.244.2.1:8080")
	apply(t, client, ingressClass+"---"+service("default", "stable", 8080, "10.244.1.1")+"\n---"+
		service("default", "canary", 8080, "10.244.2.1")+`
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {name: app, namespace: default}
spec:
  ingressClassName: sluice
  rules:
  - host: app.test
    http:
      paths:
      - {path: /, pathType: Prefix, backend: {service: {name: stable, port: {number: 80}}}}
`)
	r := startRig(t, client, pods, nil)
	r.waitBody(t, "app.test", "/", "stable")
	canary := func(weight string) string {
		return fmt.Sprintf(`
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata:
  name: app-canary
  namespace: default
  annotations:
    sluiceproxy.io/canary: "true"
    sluiceproxy.io/canary-by-header: X-Canary
    sluiceproxy.io/canary-weight: %q
spec:
  ingressClassName: sluice
  rules:
  - host: app.test
    http:
      paths:
      - {path: /, pathType: Prefix, backend: {service: {name: canary, port: {number: 80}}}}
`, weight)
	}
	apply(t, client, canary("0"))
	r.waitBody(t, "app.test", "/", "canary", "X-Canary", "always")
	c := &http.Client{Timeout: 5 * time.Second}
	for range 20 {
		_, body, err := r.get(c, "app.test", "/")
		require.NoError(t, err)
		require.Equal(t, "stable", body, "weight 0 sends only header-pinned requests to the canary")
	}
	apply(t, client, canary("100"))
	r.waitBody(t, "app.test", "/", "canary")
	_, body, err := r.get(c, "app.test", "/", "X-Canary", "never")
	require.NoError(t, err)
	assert.Equal(t, "stable", body, "X-Canary: never pins the main backend whatever the weight")
}

func TestTLSAndStatus(t *testing.T) {
	client := fake.NewClientset()
	pods := &kubetest.AddrMap{}
	backend(t, pods, "web", "10.244.1.1:8080")
	ca := testcert.NewCA(t)
	apply(t, client, ingressClass+"---"+service("default", "web", 8080, "10.244.1.1")+"\n---"+
		tlsSecret("default", "shop-tls", ca.Server(t, "shop.example.com"))+`
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata:
  name: shop
  namespace: default
  annotations: {sluiceproxy.io/ssl-redirect: "true"}
spec:
  ingressClassName: sluice
  tls:
  - hosts: [shop.example.com]
    secretName: shop-tls
  rules:
  - host: shop.example.com
    http:
      paths:
      - {path: /, pathType: Prefix, backend: {service: {name: web, port: {number: 80}}}}
`)
	r := startRig(t, client, pods, func(c *config) { c.PublishAddress = "203.0.113.7,lb.example.com" })

	var mu sync.Mutex
	var serial string
	hc := httpsClient(r.https, func(cs *tls.ConnectionState) {
		mu.Lock()
		defer mu.Unlock()
		serial = cs.PeerCertificates[0].SerialNumber.String()
	})
	want := func(cert *testcert.Cert) {
		t.Helper()
		require.Eventually(t, func() bool {
			resp, err := hc.Get("https://shop.example.com/")
			if err != nil {
				return false
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			mu.Lock()
			defer mu.Unlock()
			return string(b) == "web" && serial == cert.Leaf.SerialNumber.String()
		}, 10*time.Second, 2*time.Millisecond, "https://shop.example.com/ should be served with the Secret's certificate")
	}
	first := ca.Server(t, "shop.example.com")
	apply(t, client, tlsSecret("default", "shop-tls", first))
	want(first)
	rotated := ca.Server(t, "shop.example.com")
	apply(t, client, tlsSecret("default", "shop-tls", rotated))
	want(rotated)

	// A client that names no host, or one no Ingress serves, gets no tenant's certificate.
	for _, name := range []string{"", "other.example.com"} {
		conn, err := tls.Dial("tcp", r.https, &tls.Config{ServerName: name, InsecureSkipVerify: true})
		if err == nil {
			served := conn.ConnectionState().PeerCertificates[0].DNSNames
			conn.Close()
			t.Errorf("a handshake for %q was served the certificate for %v", name, served)
		}
	}

	noFollow := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	code, _, err := r.get(noFollow, "shop.example.com", "/x")
	require.NoError(t, err)
	assert.Equal(t, http.StatusMovedPermanently, code, "ssl-redirect sends plain HTTP to HTTPS")

	require.Eventually(t, func() bool {
		ing, err := client.NetworkingV1().Ingresses("default").Get(context.Background(), "shop", metav1.GetOptions{})
		return err == nil && len(ing.Status.LoadBalancer.Ingress) == 2 &&
			ing.Status.LoadBalancer.Ingress[0].IP == "203.0.113.7" &&
			ing.Status.LoadBalancer.Ingress[1].Hostname == "lb.example.com"
	}, 10*time.Second, 2*time.Millisecond, "status.loadBalancer should list the published addresses")
}

// tlsSecret is a kubernetes.io/tls Secret holding cert.
func tlsSecret(ns, name string, cert *testcert.Cert) string {
	return fmt.Sprintf(`
apiVersion: v1
kind: Secret
type: kubernetes.io/tls
metadata: {name: %s, namespace: %s}
data:
  tls.crt: %s
  tls.key: %s
`, name, ns, base64.StdEncoding.EncodeToString(cert.CertPEM), base64.StdEncoding.EncodeToString(cert.KeyPEM))
}

func TestDrainFinishesInFlightRequests(t *testing.T) {
	client := fake.NewClientset()
	pods := &kubetest.AddrMap{}
	started, release := make(chan struct{}), make(chan struct{})
	slow := newServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		close(started)
		<-release
		fmt.Fprint(w, "finished")
	}))
	pods.Set("10.244.1.1:8080", slow)
	apply(t, client, ingressClass+"---"+service("default", "slow", 8080, "10.244.1.1")+`
---
`+defaultIngress("slow"))
	r := startRig(t, client, pods, nil)
	type result struct {
		body string
		err  error
	}
	got := make(chan result, 1)
	go func() {
		_, body, err := r.get(&http.Client{}, "any.test", "/")
		got <- result{body, err}
	}()
	<-started
	r.cancel() // what SIGTERM does in main
	require.Eventually(t, func() bool {
		resp, err := http.Get("http://" + r.admin + "/readyz")
		if err != nil {
			return true // the admin listener may already be gone
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusServiceUnavailable
	}, 5*time.Second, 2*time.Millisecond, "/readyz should fail while draining")
	close(release)
	res := <-got
	require.NoError(t, res.err, "the in-flight request should finish during the drain")
	assert.Equal(t, "finished", res.body)
}

// newServer starts h on loopback for the test and returns its address.
func newServer(t *testing.T, h http.Handler) string {
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return srv.Listener.Addr().String()
}

// TestAnnotationsTakeEffect checks each option on live traffic: rate limit, cache, timeout,
// consistent hashing, and namespace scoping with a default IngressClass.
func TestAnnotationsTakeEffect(t *testing.T) {
	client := fake.NewClientset()
	pods := &kubetest.AddrMap{}
	var hits atomic.Int64
	pods.Set("10.244.1.1:8080", newServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		if r.URL.Path == "/ws" {
			// A minimal upgrade: switch, then echo what comes until the client closes.
			conn, brw, err := http.NewResponseController(w).Hijack()
			if err != nil {
				return
			}
			defer conn.Close()
			brw.WriteString("HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n")
			brw.Flush()
			io.Copy(conn, brw)
			return
		}
		if r.URL.Path == "/slow" {
			select {
			case <-r.Context().Done():
			case <-time.After(5 * time.Second):
			}
			return
		}
		w.Header().Set("Cache-Control", "public, max-age=60")
		fmt.Fprint(w, "pod-1")
	})))
	backend(t, pods, "pod-2", "10.244.1.2:8080")
	backend(t, pods, "pod-3", "10.244.1.3:8080")
	h2c := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprint(w, r.Proto)
	}))
	h2c.Config.Protocols = proxy.ServerProtocols() // HTTP/1.1 and h2c
	h2c.Start()
	t.Cleanup(h2c.Close)
	pods.Set("10.244.1.9:8080", h2c.Listener.Addr().String())
	ing := func(ns, name, host, svc string, ann map[string]string) string {
		var a strings.Builder
		for k, v := range ann {
			fmt.Fprintf(&a, "    sluiceproxy.io/%s: %q\n", k, v)
		}
		if a.Len() == 0 {
			a.WriteString("    {}\n")
		}
		return fmt.Sprintf(`
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata:
  name: %s
  namespace: %s
  annotations:
%s
spec:
  rules:
  - host: %s
    http:
      paths:
      - {path: /, pathType: Prefix, backend: {service: {name: %s, port: {number: 80}}}}
`, name, ns, a.String(), host, svc)
	}
	apply(t, client, `
apiVersion: networking.k8s.io/v1
kind: IngressClass
metadata:
  name: sluice
  annotations: {ingressclass.kubernetes.io/is-default-class: "true"}
spec:
  controller: sluiceproxy.io/ingress-controller
---`+service("team", "app", 8080, "10.244.1.1", "10.244.1.2", "10.244.1.3")+"\n---"+
		service("team", "slow", 8080, "10.244.1.1")+"\n---"+
		ing("team", "limited", "limited.test", "app", map[string]string{"rate-limit-rps": "0.01", "rate-limit-burst": "2"})+"---"+
		ing("team", "cached", "cached.test", "app", map[string]string{"cache": "true", "load-balance": "maglev", "hash-key": "header:X-User"})+"---"+
		ing("team", "hurried", "hurried.test", "slow", map[string]string{"timeout": "100ms", "retries": "0"})+"---"+
		service("team", "grpc", 8080, "10.244.1.9")+"\n---"+
		ing("team", "h2c", "h2c.test", "grpc", map[string]string{"backend-protocol": "GRPC"})+"---"+
		strings.Replace(service("team", "grpc-app", 8080, "10.244.1.9"), "    targetPort:", "    appProtocol: kubernetes.io/h2c\n    targetPort:", 1)+"\n---"+
		ing("team", "by-port", "by-port.test", "grpc-app", nil)+"---"+
		ing("team", "annotated", "annotated.test", "grpc-app", map[string]string{"backend-protocol": "HTTP"})+"---"+
		service("elsewhere", "app", 8080, "10.244.1.2")+"\n---"+
		ing("elsewhere", "outside", "outside.test", "app", nil))
	r := startRig(t, client, pods, func(c *config) { c.Namespace = "team" })
	c := &http.Client{Timeout: 5 * time.Second}

	t.Run("rate limit", func(t *testing.T) {
		var codes []int
		for range 3 {
			code, _, err := r.get(c, "limited.test", "/")
			require.NoError(t, err)
			codes = append(codes, code)
		}
		assert.Equal(t, []int{200, 200, 429}, codes, "a burst of 2 admits two requests, then 429")
		resp, err := http.Get("http://" + r.admin + "/metrics")
		require.NoError(t, err)
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		assert.Regexp(t, `sluice_ratelimit_keys\{limit="ingress",limiter="team/limited"\} 1`, string(b),
			"the Ingress's limiter is read at the scrape: one client, one key")
	})

	t.Run("consistent hashing and cache", func(t *testing.T) {
		// Find a user that maglev sends to pod-1, whose responses are cacheable.
		var user string
		for i := 0; i < 100 && user == ""; i++ {
			u := fmt.Sprint("user-", i)
			_, body, err := r.get(c, "cached.test", "/"+u, "X-User", u)
			require.NoError(t, err)
			if body == "pod-1" {
				user = u
			}
		}
		require.NotEmpty(t, user, "some user should hash to pod-1")
		before := hits.Load()
		for range 5 {
			_, body, err := r.get(c, "cached.test", "/"+user, "X-User", user)
			require.NoError(t, err)
			assert.Equal(t, "pod-1", body, "the same key always reaches the same pod")
		}
		assert.Zero(t, hits.Load()-before, "repeats of a fresh cacheable response are served by the cache")
	})

	t.Run("timeout", func(t *testing.T) {
		start := time.Now()
		code, _, err := r.get(c, "hurried.test", "/slow")
		require.NoError(t, err)
		assert.Equal(t, http.StatusGatewayTimeout, code, "the timeout annotation bounds the wait for headers")
		assert.Less(t, time.Since(start), 3*time.Second, "the answer should come at the timeout, not the pod's 5s")
	})

	t.Run("upgrades work on a route with a timeout", func(t *testing.T) {
		// The timeout annotation bounds the handshake, not the tunnel: a WebSocket opened
		// through the route outlives it.
		conn, err := net.Dial("tcp", r.http)
		require.NoError(t, err)
		defer conn.Close()
		conn.SetDeadline(time.Now().Add(5 * time.Second))
		_, err = io.WriteString(conn, "GET /ws HTTP/1.1\r\nHost: hurried.test\r\nConnection: Upgrade\r\n"+
			"Upgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n")
		require.NoError(t, err)
		br := bufio.NewReader(conn)
		res, err := http.ReadResponse(br, nil)
		require.NoError(t, err)
		require.Equal(t, http.StatusSwitchingProtocols, res.StatusCode, "the handshake is forwarded")
		<-time.After(300 * time.Millisecond) // past the route's 100ms timeout
		_, err = io.WriteString(conn, "ping")
		require.NoError(t, err)
		got := make([]byte, 4)
		_, err = io.ReadFull(br, got)
		require.NoError(t, err, "the tunnel outlives the route's timeout")
		assert.Equal(t, "ping", string(got))
	})

	t.Run("backend protocol", func(t *testing.T) {
		_, body, err := r.get(c, "h2c.test", "/")
		require.NoError(t, err)
		assert.Equal(t, "HTTP/2.0", body, "GRPC backends are reached over h2c")
		_, body, err = r.get(c, "by-port.test", "/")
		require.NoError(t, err)
		assert.Equal(t, "HTTP/2.0", body, "a Service port with appProtocol kubernetes.io/h2c is reached over h2c")
		_, body, err = r.get(c, "annotated.test", "/")
		require.NoError(t, err)
		assert.Equal(t, "HTTP/1.1", body, "the backend-protocol annotation wins over appProtocol")
	})

	t.Run("namespace scope", func(t *testing.T) {
		// limited.test names no class and was served above: the default IngressClass is ours.
		code, _, err := r.get(c, "outside.test", "/")
		require.NoError(t, err)
		assert.Equal(t, http.StatusNotFound, code, "an Ingress outside -namespace must not be served")
	})
}

// TestOutlierDetection checks that passive health checking is on by default: a pod that
// answers every request with 502 is ejected, and retries hide it from clients meanwhile.
func TestOutlierDetection(t *testing.T) {
	client := fake.NewClientset()
	pods := &kubetest.AddrMap{}
	var badHits atomic.Int64
	pods.Set("10.244.1.1:8080", newServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		badHits.Add(1)
		w.WriteHeader(http.StatusBadGateway)
	})))
	backend(t, pods, "good", "10.244.1.2:8080")
	apply(t, client, ingressClass+"---"+service("default", "app", 8080, "10.244.1.1", "10.244.1.2")+`
---
`+defaultIngress("app"))
	r := startRig(t, client, pods, nil)
	c := &http.Client{Timeout: 5 * time.Second}
	// Round robin sends every other request to the bad pod, whose 502 reaches the client:
	// status retries are opt-in, as in ingress-nginx. Once the pod is ejected, a run of 20
	// requests all reach the good pod and the bad one not once.
	require.Eventually(t, func() bool {
		before := badHits.Load()
		for range 20 {
			code, body, err := r.get(c, "app.test", "/")
			if err != nil {
				t.Errorf("GET: %v", err)
				return true
			}
			if code != http.StatusOK || body != "good" {
				return false // the bad pod answered: not ejected yet
			}
		}
		return badHits.Load() == before
	}, 10*time.Second, 10*time.Millisecond, "the pod that answers 502 should be ejected")
}

// TestPublishService checks that the Service named by -publish-service supplies the address
// written to Ingress status.
func TestPublishService(t *testing.T) {
	client := fake.NewClientset()
	pods := &kubetest.AddrMap{}
	backend(t, pods, "web", "10.244.1.1:8080")
	apply(t, client, ingressClass+"---"+service("default", "web", 8080, "10.244.1.1")+`
---
apiVersion: v1
kind: Service
metadata: {name: sluice-ingress, namespace: sluice-system}
spec:
  type: LoadBalancer
  ports: [{name: http, port: 80}]
status:
  loadBalancer:
    ingress: [{hostname: lb-123.elb.example.com}]
---
`+defaultIngress("web"))
	startRig(t, client, pods, func(c *config) { c.PublishService = "sluice-system/sluice-ingress" })
	require.Eventually(t, func() bool {
		ing, err := client.NetworkingV1().Ingresses("default").Get(context.Background(), "web", metav1.GetOptions{})
		return err == nil && len(ing.Status.LoadBalancer.Ingress) == 1 &&
			ing.Status.LoadBalancer.Ingress[0].Hostname == "lb-123.elb.example.com"
	}, 10*time.Second, 2*time.Millisecond, "status should carry the publish Service's load-balancer host name")
}
