package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/kubernetes/fake"
	"k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/tools/cache"

	"github.com/sluiceproxy/sluice"
	"github.com/sluiceproxy/sluice/internal/kubetest"
	"github.com/sluiceproxy/sluice/internal/testcert"
	"github.com/sluiceproxy/sluice/proxyproto"
)

// decodeIngress parses one Ingress manifest.
func decodeIngress(t *testing.T, manifest string) *networkingv1.Ingress {
	t.Helper()
	obj, _, err := scheme.Codecs.UniversalDeserializer().Decode([]byte(manifest), nil, nil)
	require.NoError(t, err)
	ing, ok := obj.(*networkingv1.Ingress)
	require.True(t, ok, "want an Ingress, got %T", obj)
	return ing
}

func TestPassthroughBackends(t *testing.T) {
	const head = "apiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata: {name: x, namespace: default}\nspec:\n"
	for _, tc := range []struct {
		name    string
		spec    string
		want    map[string]string // host → Service
		wantErr string
	}{
		{name: "the path / of each host, whatever comes before it", spec: `
  rules:
  - host: A.example.com
    http:
      paths:
      - {path: /api, pathType: Prefix, backend: {service: {name: api, port: {number: 80}}}}
      - {path: /, pathType: Exact, backend: {service: {name: web, port: {number: 443}}}}
  - host: b.example.com
    http:
      paths:
      - {path: /, pathType: Prefix, backend: {service: {name: b, port: {number: 443}}}}
  - http:
      paths:
      - {path: /, pathType: Prefix, backend: {service: {name: hostless, port: {number: 443}}}}
`, want: map[string]string{"a.example.com": "web", "b.example.com": "b"}},
		{name: "the default backend for a host without /", spec: `
  defaultBackend: {service: {name: fallback, port: {number: 443}}}
  rules:
  - host: a.example.com
    http:
      paths:
      - {path: /api, pathType: Prefix, backend: {service: {name: api, port: {number: 80}}}}
  - host: "*.example.com"
`, want: map[string]string{"a.example.com": "fallback", "*.example.com": "fallback"}},
		{name: "a host split over two rules", spec: `
  rules:
  - host: a.example.com
    http:
      paths:
      - {path: /api, pathType: Prefix, backend: {service: {name: api, port: {number: 80}}}}
  - host: a.example.com
    http:
      paths:
      - {path: /, pathType: Prefix, backend: {service: {name: web, port: {number: 443}}}}
`, want: map[string]string{"a.example.com": "web"}},
		{name: "no host", spec: `
  defaultBackend: {service: {name: fallback, port: {number: 443}}}
`, wantErr: "no rule has a host"},
		{name: "no / and no default backend", spec: `
  rules:
  - host: a.example.com
    http:
      paths:
      - {path: /api, pathType: Prefix, backend: {service: {name: api, port: {number: 80}}}}
`, wantErr: `host "a.example.com" has no path "/"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			hbs, err := passthroughBackends(decodeIngress(t, head+tc.spec))
			if tc.wantErr != "" {
				require.Error(t, err)
				assert.Contains(t, err.Error(), tc.wantErr)
				assert.Contains(t, err.Error(), "annotation sluiceproxy.io/ssl-passthrough", "the error should name the annotation")
				return
			}
			require.NoError(t, err)
			got := map[string]string{}
			for _, hb := range hbs {
				got[hb.host] = hb.backend.Service.Name
			}
			assert.Equal(t, tc.want, got)
		})
	}
}

// passthroughIngresses exercise the table of the HTTPS port: exact and wildcard passthrough
// hosts, an exact terminated host under a passthrough wildcard, two passthrough Ingresses
// and a terminated one claiming one host, and a passthrough host whose Service is missing.
const passthroughIngresses = `
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata:
  name: pt-old
  namespace: default
  creationTimestamp: "2024-01-01T00:00:00Z"
  annotations: {sluiceproxy.io/ssl-passthrough: "true"}
spec:
  ingressClassName: sluice
  defaultBackend: {service: {name: secure, port: {number: 80}}}
  rules:
  - host: secure.example.com
    http:
      paths:
      - {path: /, pathType: Prefix, backend: {service: {name: secure, port: {number: 80}}}}
  - host: "*.wild.example.com"
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata:
  name: pt-new
  namespace: default
  creationTimestamp: "2024-02-01T00:00:00Z"
  annotations: {sluiceproxy.io/ssl-passthrough: "true", sluiceproxy.io/load-balance: least-request}
spec:
  ingressClassName: sluice
  rules:
  - host: secure.example.com
    http:
      paths:
      - {path: /, pathType: Prefix, backend: {service: {name: other, port: {number: 80}}}}
  - host: new.example.com
    http:
      paths:
      - {path: /, pathType: Prefix, backend: {service: {name: other, port: {number: 80}}}}
  - host: ghost.example.com
    http:
      paths:
      - {path: /, pathType: Prefix, backend: {service: {name: ghost, port: {number: 80}}}}
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata:
  name: web
  namespace: default
  creationTimestamp: "2023-01-01T00:00:00Z"
spec:
  ingressClassName: sluice
  rules:
  - host: shop.example.com
    http:
      paths:
      - {path: /, pathType: Prefix, backend: {service: {name: web, port: {number: 80}}}}
  - host: www.wild.example.com
    http:
      paths:
      - {path: /, pathType: Prefix, backend: {service: {name: web, port: {number: 80}}}}
  - host: secure.example.com
    http:
      paths:
      - {path: /, pathType: Prefix, backend: {service: {name: web, port: {number: 80}}}}
`

// TestPassthroughTable builds the table of the HTTPS port from Ingresses in a fake API server
// and checks where each server name goes.
func TestPassthroughTable(t *testing.T) {
	client := fake.NewClientset()
	apply(t, client, ingressClass+"---"+service("default", "secure", 8443, "10.244.1.1")+"\n---"+
		service("default", "other", 8443, "10.244.2.1")+"\n---"+service("default", "web", 8080, "10.244.3.1")+
		"\n---"+passthroughIngresses)
	cfg := &config{Class: "sluice", HTTPSAddr: "127.0.0.1:0", Coalesce: time.Millisecond,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))}
	m, err := newControllerMetrics()
	require.NoError(t, err)
	c, err := newController(cfg, client, m)
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	c.runCtx = ctx
	t.Cleanup(func() {
		cancel()
		c.wg.Wait()
		c.factory.Shutdown()
		c.cache.Close()
	})
	c.factory.Start(ctx.Done())
	require.True(t, cache.WaitForCacheSync(ctx.Done(), c.synced...))
	require.NoError(t, c.endpoints.WaitForSync(ctx))
	require.NoError(t, c.enablePassthrough(nil))
	c.rebuild(ctx)
	table := c.l4.Load()

	for _, tc := range []struct{ sni, want string }{
		{"secure.example.com", "default/pt-old:secure.example.com"}, // the older passthrough wins
		{"SECURE.example.com.", "default/pt-old:secure.example.com"},
		{"new.example.com", "default/pt-new:new.example.com"},
		{"a.wild.example.com", "default/pt-old:*.wild.example.com"},
		{"www.wild.example.com", "terminated"}, // an exact terminated host beats a passthrough wildcard
		{"shop.example.com", "terminated"},
		{"a.b.wild.example.com", "default"},
		{"unknown.example.com", "default"},
		{"", "default"}, // no SNI, or plain text
	} {
		r := table.Lookup(tc.sni, nil)
		require.NotNil(t, r, "%q should have a route", tc.sni)
		assert.Equal(t, tc.want, r.Name, "route of %q", tc.sni)
		assert.Equal(t, tc.want == "terminated" || tc.want == "default", r.Listener == c.terminate,
			"%q should go to the HTTPS server exactly when it is not passed through", tc.sni)
	}

	pick := func(sni string) (sluice.PickResult, error) {
		r := table.Lookup(sni, nil)
		require.NotNil(t, r.Picker, "%q should be passed through", sni)
		res, err := r.Picker.Pick(sluice.PickInfo{Client: netip.MustParseAddrPort("192.0.2.7:50000")})
		if err == nil && res.Done != nil {
			res.Done(sluice.Outcome{})
		}
		return res, err
	}
	res, err := pick("secure.example.com")
	require.NoError(t, err)
	assert.Equal(t, "10.244.1.1:8443", res.Endpoint.Addr, "secure.example.com should reach the pods of Service secure")
	res, err = pick("new.example.com")
	require.NoError(t, err)
	assert.Equal(t, "10.244.2.1:8443", res.Endpoint.Addr, "new.example.com should reach the pods of Service other")
	_, err = pick("ghost.example.com")
	assert.ErrorIs(t, err, sluice.ErrNoEndpoint, "a missing Service has no endpoint")

	assert.Contains(t, c.pools, poolKey{namespace: "default", service: "secure", port: "http", policy: "round-robin", passthrough: true},
		"a passthrough backend has a pool of its own")
	assert.Contains(t, c.pools, poolKey{namespace: "default", service: "other", port: "http", policy: "least-request", passthrough: true},
		"with the policy of its Ingress")
	assert.Len(t, c.l4Conflicts, 2, "pt-new's and web's claims on secure.example.com are conflicts: %v", c.l4Conflicts)
	assert.EqualValues(t, 4, c.metrics.passthroughHosts.Load(), "secure, *.wild, new and ghost are passed through")

	t.Run("deleting the passthrough Ingresses hands their hosts to the HTTPS server", func(t *testing.T) {
		for _, name := range []string{"pt-old", "pt-new"} {
			require.NoError(t, client.NetworkingV1().Ingresses("default").Delete(ctx, name, metav1.DeleteOptions{}))
		}
		require.Eventually(t, func() bool {
			ings, err := c.ingresses.List(labels.Everything())
			return err == nil && len(ings) == 1
		}, 10*time.Second, time.Millisecond)
		c.rebuild(ctx)
		for _, sni := range []string{"secure.example.com", "new.example.com", "a.wild.example.com"} {
			r := c.l4.Load().Lookup(sni, nil)
			require.NotNil(t, r)
			assert.Same(t, c.terminate, r.Listener, "%q should be terminated once no Ingress passes it through", sni)
		}
		assert.Empty(t, c.l4Conflicts)
		for k := range c.pools {
			assert.False(t, k.passthrough, "the passthrough pools should be stopped, %v is not", k)
		}
	})
}

// TestObservedPicker checks that a passed-through connection's outcome reaches both the
// balancer's Done and the pool's health checker.
func TestObservedPicker(t *testing.T) {
	var observed []sluice.Outcome
	var done int
	inner := pickerFunc(func(sluice.PickInfo) (sluice.PickResult, error) {
		return sluice.PickResult{Endpoint: sluice.Endpoint{Addr: "10.0.0.1:443"}, Done: func(sluice.Outcome) { done++ }}, nil
	})
	p := observedPicker{inner, observerFunc(func(ep sluice.Endpoint, o sluice.Outcome) {
		assert.Equal(t, "10.0.0.1:443", ep.Addr)
		observed = append(observed, o)
	})}
	res, err := p.Pick(sluice.PickInfo{})
	require.NoError(t, err)
	res.Done(sluice.Outcome{Failure: sluice.ConnectFailure})
	assert.Equal(t, 1, done, "the balancer's Done should be called")
	assert.Equal(t, []sluice.Outcome{{Failure: sluice.ConnectFailure}}, observed, "the health checker should see the outcome")

	failing := observedPicker{pickerFunc(func(sluice.PickInfo) (sluice.PickResult, error) {
		return sluice.PickResult{}, sluice.ErrNoEndpoint
	}), observerFunc(func(sluice.Endpoint, sluice.Outcome) { t.Error("nothing to observe without a pick") })}
	_, err = failing.Pick(sluice.PickInfo{})
	assert.ErrorIs(t, err, sluice.ErrNoEndpoint)
}

type pickerFunc func(sluice.PickInfo) (sluice.PickResult, error)

func (f pickerFunc) Pick(i sluice.PickInfo) (sluice.PickResult, error) { return f(i) }

type observerFunc func(sluice.Endpoint, sluice.Outcome)

func (f observerFunc) Observe(ep sluice.Endpoint, o sluice.Outcome) { f(ep, o) }

func TestParseProxyProtocolFrom(t *testing.T) {
	tp, err := parseProxyProtocolFrom("")
	require.NoError(t, err)
	assert.Nil(t, tp, "empty means no PROXY protocol")
	tp, err = parseProxyProtocolFrom(" 10.0.0.0/8 , 192.0.2.7,fd00::/8")
	require.NoError(t, err)
	for addr, want := range map[string]bool{"10.1.2.3": true, "192.0.2.7": true, "192.0.2.8": false, "fd00::1": true, "127.0.0.1": false} {
		assert.Equal(t, want, tp.Contains(netip.MustParseAddr(addr)), "trusts %s", addr)
	}
	for _, bad := range []string{"10.0.0.0/33", "10.0.0.0/8,,192.0.2.7", "lb.example.com"} {
		_, err := parseProxyProtocolFrom(bad)
		require.Error(t, err, "%q", bad)
		assert.Contains(t, err.Error(), "-proxy-protocol-from", "the error should name the flag")
	}
}

// TestRunChecksPassthroughFlags checks the flag combinations run refuses before it does
// anything.
func TestRunChecksPassthroughFlags(t *testing.T) {
	base := func() *config {
		return &config{Class: "sluice", HTTPAddr: "127.0.0.1:0", HTTPSAddr: "127.0.0.1:0", Client: fake.NewClientset(),
			Logger: slog.New(slog.NewTextHandler(io.Discard, nil))}
	}
	cfg := base()
	cfg.SSLPassthrough, cfg.HTTPSAddr = true, ""
	err := run(context.Background(), cfg)
	require.Error(t, err)
	assert.Contains(t, err.Error(), "-enable-ssl-passthrough needs -https")
	cfg = base()
	cfg.ProxyProtocolFrom = "10.0.0.0/99"
	err = run(context.Background(), cfg)
	require.Error(t, err)
	assert.Contains(t, err.Error(), "-proxy-protocol-from")
}

// TestPassthroughFake runs the controller with passthrough on against a fake API server: a
// TLS backend gets the client's own session while a terminated host on the same port is
// served by the controller. TestIntegrationSSLPassthrough does more on a real API server.
func TestPassthroughFake(t *testing.T) {
	client := fake.NewClientset()
	pods := &kubetest.AddrMap{}
	backendCA, ingressCA := testcert.NewCA(t), testcert.NewCA(t)
	secure := tlsPod(t, pods, "secure", "10.244.5.1:8443", backendCA.Server(t, "secure.test"))
	backend(t, pods, "web", "10.244.1.1:8080")
	apply(t, client, ingressClass+"---"+service("default", "secure", 8443, "10.244.5.1")+"\n---"+
		service("default", "web", 8080, "10.244.1.1")+"\n---"+
		tlsSecret("default", "shop-tls", ingressCA.Server(t, "shop.test"))+"---"+`
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata:
  name: secure
  namespace: default
  annotations: {sluiceproxy.io/ssl-passthrough: "true"}
spec:
  ingressClassName: sluice
  rules:
  - host: secure.test
    http:
      paths:
      - {path: /, pathType: Prefix, backend: {service: {name: secure, port: {number: 80}}}}
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {name: shop, namespace: default}
spec:
  ingressClassName: sluice
  tls:
  - {hosts: [shop.test], secretName: shop-tls}
  rules:
  - host: shop.test
    http:
      paths:
      - {path: /, pathType: Prefix, backend: {service: {name: web, port: {number: 80}}}}
`)
	r := startRig(t, client, pods, func(c *config) { c.SSLPassthrough = true })

	got := waitTLS(t, r.https, "secure.test", backendCA.Pool, true, "secure HTTP/2.0 secure.test")
	assert.Equal(t, secure.Leaf.SerialNumber, got.leaf.SerialNumber, "the client should see the backend's own certificate")
	got = waitTLS(t, r.https, "shop.test", ingressCA.Pool, false, "web")
	assert.Equal(t, "HTTP/1.1", got.proto)

	t.Run("a drain lets connections passed through finish", func(t *testing.T) {
		var dials atomic.Int64
		kept := tlsClient(r.https, "secure.test", backendCA.Pool, true, nil, &dials)
		_, err := getTLS(kept, "secure.test")
		require.NoError(t, err)
		r.cancel()
		require.Eventually(t, func() bool {
			c, err := net.Dial("tcp", r.https)
			if err == nil {
				c.Close()
			}
			return err != nil
		}, 10*time.Second, time.Millisecond, "the HTTPS port should stop accepting")
		got, err := getTLS(kept, "secure.test")
		require.NoError(t, err, "the connection passed through before the drain should still work")
		assert.Equal(t, "secure HTTP/2.0 secure.test", got.body)
		assert.EqualValues(t, 1, dials.Load(), "on the same connection")
		select {
		case err := <-r.done:
			t.Fatalf("run returned (%v) while a connection passed through was open", err)
		default:
		}
		kept.CloseIdleConnections()
		select {
		case err := <-r.done:
			assert.NoError(t, err, "the drain should end cleanly once the connection closes")
			r.done <- err // for the rig's cleanup
		case <-time.After(10 * time.Second):
			t.Fatal("run should return once the last connection passed through closes")
		}
	})
}

// TestProxyProtocolFake checks -proxy-protocol-from against a fake API server: a trusted
// peer's header names the client the backend sees, an untrusted peer's header is refused.
// TestIntegrationProxyProtocol does more on a real API server.
func TestProxyProtocolFake(t *testing.T) {
	client := fake.NewClientset()
	pods := &kubetest.AddrMap{}
	pods.Set("10.244.1.1:8080", newServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprint(w, r.Header.Get("X-Forwarded-For"))
	})))
	apply(t, client, ingressClass+"---"+service("default", "echo", 8080, "10.244.1.1")+"\n---\n"+defaultIngress("echo"))
	trusted := startRig(t, client, pods, func(c *config) { c.ProxyProtocolFrom = "127.0.0.1" })
	untrusted := startRig(t, client, pods, func(c *config) { c.ProxyProtocolFrom = "192.0.2.0/24" })

	c := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{
		DialContext: proxiedDial(trusted.http, tcpHeader(1, "192.0.2.7:50000", "198.51.100.1:80"), nil)}}
	resp, err := c.Get("http://echo.test/")
	require.NoError(t, err)
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	assert.Equal(t, "192.0.2.7", string(b), "the backend should see the header's client")

	assert.NoError(t, checkRefused(untrusted.http, *tcpHeader(2, "192.0.2.7:50000", "198.51.100.1:80")),
		"a header from an untrusted peer should be refused")
	untrusted.waitBody(t, "echo.test", "/", "127.0.0.1") // and a plain request served
}

// tlsPod starts a real HTTPS server (HTTP/1.1 and HTTP/2) with cert, maps pod to it, and
// returns cert. It answers with its name, the protocol and the server name it was asked for,
// which only a server that terminated the client's own TLS session knows.
func tlsPod(t *testing.T, pods *kubetest.AddrMap, name, pod string, cert *testcert.Cert) *testcert.Cert {
	t.Helper()
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "%s %s %s", name, r.Proto, r.TLS.ServerName)
	}))
	srv.EnableHTTP2 = true
	srv.TLS = &tls.Config{Certificates: []tls.Certificate{cert.TLS}}
	srv.StartTLS()
	t.Cleanup(srv.Close)
	pods.Set(pod, srv.Listener.Addr().String())
	return cert
}

// tlsAnswer is what one HTTPS request through the controller saw.
type tlsAnswer struct {
	body, proto string
	leaf        *x509.Certificate
}

// tlsClient sends HTTPS requests for host to addr, verifying the server's certificate against
// roots, over HTTP/2 when h2 is true and HTTP/1.1 otherwise. When header is not nil, each
// connection starts with that PROXY protocol header. dials, when not nil, counts connections.
func tlsClient(addr, host string, roots *x509.CertPool, h2 bool, header *proxyproto.Header, dials *atomic.Int64) *http.Client {
	tr := &http.Transport{
		DialContext:     proxiedDial(addr, header, dials),
		TLSClientConfig: &tls.Config{RootCAs: roots, ServerName: host},
	}
	if h2 {
		tr.ForceAttemptHTTP2 = true
	} else {
		tr.TLSClientConfig.NextProtos = []string{"http/1.1"}
	}
	return &http.Client{Transport: tr, Timeout: 5 * time.Second}
}

// proxiedDial dials addr, whatever the address asked for, and writes header first when it is
// not nil, as a load balancer speaking the PROXY protocol does.
func proxiedDial(addr string, header *proxyproto.Header, dials *atomic.Int64) func(ctx context.Context, network, _ string) (net.Conn, error) {
	return func(ctx context.Context, network, _ string) (net.Conn, error) {
		if dials != nil {
			dials.Add(1)
		}
		c, err := (&net.Dialer{}).DialContext(ctx, network, addr)
		if err != nil || header == nil {
			return c, err
		}
		b, err := header.Append(nil)
		if err == nil {
			_, err = c.Write(b)
		}
		if err != nil {
			c.Close()
			return nil, err
		}
		return c, nil
	}
}

// getTLS sends one GET for host with c and returns what it saw.
func getTLS(c *http.Client, host string) (tlsAnswer, error) {
	resp, err := c.Get("https://" + host + "/")
	if err != nil {
		return tlsAnswer{}, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return tlsAnswer{}, err
	}
	if resp.StatusCode != http.StatusOK {
		return tlsAnswer{}, fmt.Errorf("status %d: %s", resp.StatusCode, b)
	}
	return tlsAnswer{body: string(b), proto: resp.Proto, leaf: resp.TLS.PeerCertificates[0]}, nil
}

// waitTLS polls, on fresh connections, until an HTTPS request for host through addr is
// answered with a body that starts with want by a server whose certificate roots verify, and
// returns that answer.
func waitTLS(t *testing.T, addr, host string, roots *x509.CertPool, h2 bool, want string) tlsAnswer {
	t.Helper()
	var got tlsAnswer
	var last error
	ok := assert.Eventually(t, func() bool {
		c := tlsClient(addr, host, roots, h2, nil, nil)
		defer c.CloseIdleConnections()
		got, last = getTLS(c, host)
		return last == nil && strings.HasPrefix(got.body, want)
	}, 20*time.Second, 2*time.Millisecond)
	if !ok {
		t.Fatalf("https://%s/ should be answered %q... (last answer %q, error %v)", host, want, got.body, last)
	}
	return got
}

// checkRefused returns nil when the server at addr closes, without answering, a connection
// that sends header and then a request (a server that took the header for the request would
// answer 400 Bad Request), and an error saying what happened otherwise.
func checkRefused(addr string, header proxyproto.Header) error {
	c, err := proxiedDial(addr, &header, nil)(context.Background(), "tcp", "")
	if err != nil {
		return err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.WriteString(c, "GET / HTTP/1.1\r\nHost: x\r\n\r\n"); err != nil {
		return nil // closed already
	}
	b, err := io.ReadAll(c)
	if len(b) > 0 {
		return fmt.Errorf("the server answered: %q", strings.SplitN(string(b), "\r\n", 2)[0])
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return errors.New("the server neither answered nor closed")
	}
	return nil
}

// tcpHeader is a PROXY header of version v for a client at src connecting to dst.
func tcpHeader(v int, src, dst string) *proxyproto.Header {
	h := proxyproto.TCP(v, netip.MustParseAddrPort(src), netip.MustParseAddrPort(dst))
	return &h
}
