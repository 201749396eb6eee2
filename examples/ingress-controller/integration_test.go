//go:build integration

package main

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net/http"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/sluiceproxy/sluice/internal/kubetest"
	"github.com/sluiceproxy/sluice/internal/testcert"
)

// shopManifest is what an operator would apply: a namespace, two Services with their
// EndpointSlices (written by hand here, since no EndpointSlice controller runs), a TLS Secret
// and an Ingress of class sluice.
func shopManifest(apiService string, cert *testcert.Cert) string {
	return `
apiVersion: v1
kind: Namespace
metadata: {name: shop}
---` + ingressClass + "---" +
		service("shop", "web", 8080, "10.244.1.1") + "\n---" +
		service("shop", "api-v1", 8080, "10.244.2.1") + "\n---" +
		service("shop", "api-v2", 8080, "10.244.3.1") + "\n---" +
		tlsSecret("shop", "shop-tls", cert) + "---" + shopIngressFor(apiService, "")
}

// shopIngressFor is the shop Ingress with /api on the given Service and, if extraHost is not
// empty, a second host.
func shopIngressFor(apiService, extraHost string) string {
	s := fmt.Sprintf(`
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata:
  name: shop
  namespace: shop
  annotations:
    sluiceproxy.io/load-balance: round-robin
    sluiceproxy.io/retries: "2"
    sluiceproxy.io/ssl-redirect: "false" # the loop below checks plain HTTP too
spec:
  ingressClassName: sluice
  tls:
  - hosts: [shop.test]
    secretName: shop-tls
  rules:
  - host: shop.test
    http:
      paths:
      - {path: /, pathType: Prefix, backend: {service: {name: web, port: {name: http}}}}
      - {path: /api, pathType: Prefix, backend: {service: {name: %s, port: {number: 80}}}}
`, apiService)
	if extraHost != "" {
		s += fmt.Sprintf(`  - host: %s
    http:
      paths:
      - {path: /, pathType: Prefix, backend: {service: {name: api-v2, port: {number: 80}}}}
`, extraHost)
	}
	return s
}

// TestIntegrationIngressController applies manifests to a real kube-apiserver, serves them
// through the controller to httptest backends, and changes them under a concurrent request
// loop that must see no failed request. It measures the time from an Ingress or EndpointSlice
// write to the first request routed by it.
func TestIntegrationIngressController(t *testing.T) {
	cluster := kubetest.Start(t)
	client := cluster.Client
	pods := &kubetest.AddrMap{}
	backend(t, pods, "web", "10.244.1.1:8080")
	backend(t, pods, "api-v1", "10.244.2.1:8080")
	backend(t, pods, "api-v2", "10.244.3.1:8080")
	ca := testcert.NewCA(t)
	firstCert := ca.Server(t, "shop.test")
	apply(t, client, shopManifest("api-v1", firstCert))

	// The controller runs as the ServiceAccount of deploy/, so the test also proves that its
	// least-privilege RBAC is enough.
	for _, f := range []string{"deploy/namespace.yaml", "deploy/rbac.yaml"} {
		b, err := os.ReadFile(f)
		require.NoError(t, err)
		apply(t, client, string(b))
	}
	rc := rest.CopyConfig(cluster.Config)
	rc.Impersonate = rest.ImpersonationConfig{UserName: "system:serviceaccount:sluice-system:sluice-ingress"}
	saClient, err := kubernetes.NewForConfig(rc)
	require.NoError(t, err)
	r := startRig(t, saClient, pods, func(c *config) { c.PublishAddress = "203.0.113.7" })
	r.waitBody(t, "shop.test", "/api/x", "api-v1")

	// The concurrent loop: plain and TLS requests on URLs that stay valid through every
	// change below. Any error or non-200 answer is a failure.
	var served, failed atomic.Int64
	var failures sync.Map
	stop := make(chan struct{})
	var loop sync.WaitGroup
	tlsc := httpsClient(r.https, nil)
	tlsc.Transport.(*http.Transport).DisableKeepAlives = false
	plain := &http.Client{Timeout: 10 * time.Second}
	for i := range 2 {
		loop.Go(func() {
			tick := time.NewTicker(2 * time.Millisecond) // pacing, so the loop leaves CPU to the rest
			defer tick.Stop()
			for n := 0; ; n++ {
				select {
				case <-stop:
					return
				case <-tick.C:
				}
				var code int
				var body string
				var err error
				switch (n + i) % 3 {
				case 0:
					code, body, err = r.get(plain, "shop.test", "/")
				case 1:
					code, body, err = r.get(plain, "shop.test", "/api/orders")
				case 2:
					var resp *http.Response
					if resp, err = tlsc.Get("https://shop.test/api/x"); err == nil {
						b, _ := io.ReadAll(resp.Body)
						resp.Body.Close()
						code, body = resp.StatusCode, string(b)
					}
				}
				served.Add(1)
				if err != nil || code != http.StatusOK {
					failed.Add(1)
					failures.Store(fmt.Sprintf("%d %q %v", code, body, err), true)
				}
			}
		})
	}

	// Ingress changes: move /api between two Services 20 times; each time, measure until a
	// request is routed by the new version.
	var ingressLat []time.Duration
	svc := "api-v1"
	for range 20 {
		svc = map[string]string{"api-v1": "api-v2", "api-v2": "api-v1"}[svc]
		start := time.Now()
		apply(t, client, shopIngressFor(svc, ""))
		r.waitBody(t, "shop.test", "/api/x", svc)
		ingressLat = append(ingressLat, time.Since(start))
	}

	t.Run("add a host", func(t *testing.T) {
		apply(t, client, shopIngressFor(svc, "blog.test"))
		r.waitBody(t, "blog.test", "/", "api-v2")
	})

	t.Run("move a path", func(t *testing.T) {
		// /api keeps its Service; a new Exact path takes /api/special elsewhere.
		other := map[string]string{"api-v1": "api-v2", "api-v2": "api-v1"}[svc]
		ing := shopIngressFor(svc, "blog.test") + fmt.Sprintf(`  - host: shop.test
    http:
      paths:
      - {path: /api/special, pathType: Exact, backend: {service: {name: %s, port: {number: 80}}}}
`, other)
		apply(t, client, ing)
		r.waitBody(t, "shop.test", "/api/special", other)
		r.waitBody(t, "shop.test", "/api/special/not", svc)
	})

	// EndpointSlice changes: scale web to one new pod at a time next to the first; measure
	// until the new pod answers. Removed pods keep running, as terminating pods do, so
	// requests already sent to them finish.
	var sliceLat []time.Duration
	for i := range 20 {
		name, ip := fmt.Sprintf("web-%d", i), fmt.Sprintf("10.244.1.%d", 10+i)
		backend(t, pods, name, ip+":8080")
		start := time.Now()
		apply(t, client, service("shop", "web", 8080, "10.244.1.1", ip))
		waitAny(t, r, "shop.test", "/", name)
		sliceLat = append(sliceLat, time.Since(start))
	}

	t.Run("rotate the TLS Secret", func(t *testing.T) {
		var mu sync.Mutex
		var serial string
		c := httpsClient(r.https, func(cs *tls.ConnectionState) {
			mu.Lock()
			serial = cs.PeerCertificates[0].SerialNumber.String()
			mu.Unlock()
		})
		rotated := ca.Server(t, "shop.test")
		apply(t, client, tlsSecret("shop", "shop-tls", rotated))
		require.Eventually(t, func() bool {
			resp, err := c.Get("https://shop.test/")
			if err != nil {
				return false
			}
			resp.Body.Close()
			mu.Lock()
			defer mu.Unlock()
			return serial == rotated.Leaf.SerialNumber.String()
		}, 20*time.Second, 2*time.Millisecond, "the rotated certificate should be served")
	})

	t.Run("set a canary", func(t *testing.T) {
		apply(t, client, fmt.Sprintf(`
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata:
  name: shop-canary
  namespace: shop
  annotations:
    sluiceproxy.io/canary: "true"
    sluiceproxy.io/canary-by-header: X-Canary
    sluiceproxy.io/canary-weight: "50"
spec:
  ingressClassName: sluice
  rules:
  - host: shop.test
    http:
      paths:
      - {path: /api, pathType: Prefix, backend: {service: {name: %s, port: {number: 80}}}}
`, map[string]string{"api-v1": "api-v2", "api-v2": "api-v1"}[svc]))
		canary := map[string]string{"api-v1": "api-v2", "api-v2": "api-v1"}[svc]
		r.waitBody(t, "shop.test", "/api/x", canary, "X-Canary", "always")
		waitAny(t, r, "shop.test", "/api/x", canary) // by weight, without the header
		waitAny(t, r, "shop.test", "/api/x", svc)
	})

	t.Run("a bad annotation is an Event and leaves the rest alone", func(t *testing.T) {
		apply(t, client, `
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata:
  name: broken
  namespace: shop
  annotations: {sluiceproxy.io/retries: "9"}
spec:
  ingressClassName: sluice
  rules:
  - host: broken.test
    http:
      paths:
      - {path: /, pathType: Prefix, backend: {service: {name: web, port: {number: 80}}}}
`)
		require.Eventually(t, func() bool {
			evs, err := client.CoreV1().Events("shop").List(context.Background(), metav1.ListOptions{FieldSelector: "involvedObject.name=broken"})
			return err == nil && len(evs.Items) > 0 && strings.Contains(evs.Items[0].Message, "sluiceproxy.io/retries")
		}, 20*time.Second, 5*time.Millisecond, "a Warning Event naming the annotation should be recorded")
	})

	t.Run("status", func(t *testing.T) {
		require.Eventually(t, func() bool {
			ing, err := client.NetworkingV1().Ingresses("shop").Get(context.Background(), "shop", metav1.GetOptions{})
			return err == nil && len(ing.Status.LoadBalancer.Ingress) == 1 && ing.Status.LoadBalancer.Ingress[0].IP == "203.0.113.7"
		}, 20*time.Second, 5*time.Millisecond, "status.loadBalancer.ingress should carry -publish-address")
	})

	close(stop)
	loop.Wait()
	var msgs []string
	failures.Range(func(k, _ any) bool { msgs = append(msgs, k.(string)); return true })
	assert.Zero(t, failed.Load(), "no request of the concurrent loop may fail; %d of %d did: %v", failed.Load(), served.Load(), msgs)
	assert.Greater(t, served.Load(), int64(100), "the loop should have run throughout")

	p50i, p99i := percentiles(ingressLat)
	p50s, p99s := percentiles(sliceLat)
	t.Logf("Ingress write → first request routed by it: p50 %v p99 %v (n=%d)", p50i, p99i, len(ingressLat))
	t.Logf("EndpointSlice write → first request to the new pod: p50 %v p99 %v (n=%d)", p50s, p99s, len(sliceLat))
	t.Logf("concurrent loop: %d requests, %d failed", served.Load(), failed.Load())
	assert.Less(t, p99i, 500*time.Millisecond, "target: Ingress change p99 < 500ms")
	assert.Less(t, p99s, 500*time.Millisecond, "target: EndpointSlice change p99 < 500ms")
}

// waitAny polls until one GET for host and path is answered by want.
func waitAny(t *testing.T, r *rig, host, path, want string) {
	t.Helper()
	c := &http.Client{Timeout: 5 * time.Second}
	require.Eventually(t, func() bool {
		_, body, err := r.get(c, host, path)
		return err == nil && body == want
	}, 20*time.Second, time.Millisecond, "a request for %s%s should reach %s", host, path, want)
}

// percentiles returns the p50 and p99 of ds (nearest rank).
func percentiles(ds []time.Duration) (p50, p99 time.Duration) {
	s := slices.Clone(ds)
	slices.Sort(s)
	rank := func(p float64) time.Duration {
		i := int(p*float64(len(s))+0.999999) - 1
		return s[max(0, min(i, len(s)-1))]
	}
	return rank(0.50), rank(0.99)
}
