package main

import (
	"net/http"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	networkingv1 "k8s.io/api/networking/v1"
	"k8s.io/client-go/kubernetes/fake"

	"github.com/sluiceproxy/sluice/internal/kubetest"
	"github.com/sluiceproxy/sluice/internal/testcert"
)

// Plain HTTP to a host its Ingress has TLS for is redirected to HTTPS unless the Ingress says
// ssl-redirect "false"; hosts without TLS, and other Ingresses' routes on a TLS host, are not.
func TestSSLRedirectByDefault(t *testing.T) {
	client := fake.NewClientset()
	pods := &kubetest.AddrMap{}
	backend(t, pods, "web", "10.244.1.1:8080")
	ca := testcert.NewCA(t)
	apply(t, client, ingressClass+"---"+service("default", "web", 8080, "10.244.1.1")+"\n---\n"+
		tlsSecret("default", "tls", ca.Server(t, "secure.test", "optout.test"))+`
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {name: secure, namespace: default}
spec:
  ingressClassName: sluice
  tls:
  - {hosts: [secure.test], secretName: tls}
  rules:
  - host: secure.test
    http:
      paths:
      - {path: /, pathType: Prefix, backend: {service: {name: web, port: {number: 80}}}}
  - host: plain.test
    http:
      paths:
      - {path: /, pathType: Prefix, backend: {service: {name: web, port: {number: 80}}}}
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {name: acme, namespace: default}
spec:
  ingressClassName: sluice
  rules:
  - host: secure.test
    http:
      paths:
      - {path: /.well-known/acme-challenge, pathType: Prefix, backend: {service: {name: web, port: {number: 80}}}}
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata:
  name: optout
  namespace: default
  annotations: {sluiceproxy.io/ssl-redirect: "false"}
spec:
  ingressClassName: sluice
  tls:
  - {hosts: [optout.test], secretName: tls}
  rules:
  - host: optout.test
    http:
      paths:
      - {path: /, pathType: Prefix, backend: {service: {name: web, port: {number: 80}}}}
`)
	r := startRig(t, client, pods, nil)
	r.waitBody(t, "optout.test", "/", "web")
	noFollow := &http.Client{Timeout: 5 * time.Second,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	for _, tc := range []struct {
		host, path string
		want       int
		why        string
	}{
		{"secure.test", "/cart", http.StatusMovedPermanently, "a TLS host is redirected by default"},
		{"SECURE.test", "/", http.StatusMovedPermanently, "whatever the case of the host"},
		{"plain.test", "/", http.StatusOK, "a host without TLS is not, in the same Ingress"},
		{"secure.test", "/.well-known/acme-challenge/x", http.StatusOK, "another Ingress's route on a TLS host is not"},
		{"optout.test", "/", http.StatusOK, `ssl-redirect "false" turns it off`},
	} {
		code, _, err := r.get(noFollow, tc.host, tc.path)
		require.NoError(t, err)
		assert.Equal(t, tc.want, code, "%s%s: %s", tc.host, tc.path, tc.why)
	}
	resp, err := httpsClient(r.https, nil).Get("https://secure.test/cart")
	require.NoError(t, err)
	resp.Body.Close()
	assert.Equal(t, http.StatusOK, resp.StatusCode, "HTTPS itself is served")
}

func TestRedirects(t *testing.T) {
	tls := []networkingv1.IngressTLS{{Hosts: []string{"a.test", "*.b.test"}, SecretName: "s"}}
	yes, no := true, false
	for _, tc := range []struct {
		name       string
		annotation *bool
		host       string
		https      bool
		want       bool
	}{
		{"TLS host", nil, "a.test", true, true},
		{"wildcard TLS host", nil, "*.b.test", true, true},
		{"host without TLS", nil, "c.test", true, false},
		{"default backend", nil, "", true, false},
		{"no HTTPS listener", nil, "a.test", false, false},
		{"annotation false", &no, "a.test", true, false},
		{"annotation true", &yes, "c.test", true, true},
		{"annotation true without HTTPS listener", &yes, "c.test", false, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ic := &ingressConfig{ing: &networkingv1.Ingress{Spec: networkingv1.IngressSpec{TLS: tls}}}
			if tc.annotation != nil {
				ic.opts.sslRedirect, ic.opts.sslRedirectSet = *tc.annotation, true
			}
			assert.Equal(t, tc.want, redirects(ic, tc.host, tc.https))
		})
	}
}

// -default-backend serves what no rule matches; an Ingress's spec.defaultBackend wins over
// it; without either, the answer is 404.
func TestDefaultBackendFlag(t *testing.T) {
	client := fake.NewClientset()
	pods := &kubetest.AddrMap{}
	backend(t, pods, "web", "10.244.1.1:8080")
	backend(t, pods, "fallback", "10.244.9.1:8080")
	apply(t, client, ingressClass+"---"+service("default", "web", 8080, "10.244.1.1")+"\n---\n"+
		service("infra", "fallback", 8080, "10.244.9.1")+`
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {name: shop, namespace: default}
spec:
  ingressClassName: sluice
  rules:
  - host: shop.test
    http:
      paths:
      - {path: /api, pathType: Prefix, backend: {service: {name: web, port: {number: 80}}}}
`)
	r := startRig(t, client, pods, func(c *config) { c.DefaultBackend = "infra/fallback:http" })
	r.waitBody(t, "shop.test", "/api", "web")
	r.waitBody(t, "other.test", "/", "fallback")
	r.waitBody(t, "shop.test", "/not-api", "fallback")

	apply(t, client, defaultIngress("web"))
	r.waitBody(t, "other.test", "/", "web") // spec.defaultBackend first

	t.Run("without the flag, 404", func(t *testing.T) {
		client := fake.NewClientset()
		apply(t, client, ingressClass+"---"+service("default", "web", 8080, "10.244.1.1"))
		r := startRig(t, client, pods, nil)
		code, _, err := r.get(&http.Client{Timeout: 5 * time.Second}, "other.test", "/")
		require.NoError(t, err)
		assert.Equal(t, http.StatusNotFound, code)
	})
}

func TestParseDefaultBackend(t *testing.T) {
	for _, tc := range []struct {
		in, ns, name, portName string
		port                   int32
		wantErr                bool
	}{
		{in: "default/fallback:80", ns: "default", name: "fallback", port: 80},
		{in: "infra/fallback:http", ns: "infra", name: "fallback", portName: "http"},
		{in: "fallback:80", wantErr: true},
		{in: "default/fallback", wantErr: true},
		{in: "/fallback:80", wantErr: true},
		{in: "default/:80", wantErr: true},
		{in: "default/fallback:", wantErr: true},
		{in: "default/fallback:0", wantErr: true},
		{in: "default/fallback:70000", wantErr: true},
	} {
		t.Run(tc.in, func(t *testing.T) {
			ns, b, err := parseDefaultBackend(tc.in)
			if tc.wantErr {
				require.Error(t, err)
				assert.Contains(t, err.Error(), "-default-backend", "the error names the flag")
				return
			}
			require.NoError(t, err)
			assert.Equal(t, tc.ns, ns)
			assert.Equal(t, tc.name, b.Service.Name)
			assert.Equal(t, tc.port, b.Service.Port.Number)
			assert.Equal(t, tc.portName, b.Service.Port.Name)
		})
	}
}
