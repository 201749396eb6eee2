package main

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	networkingv1 "k8s.io/api/networking/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/scheme"

	"github.com/sluiceproxy/sluice/internal/kubetest"
)

// rig is a controller started by run in-process, with its listeners' addresses.
type rig struct {
	http, https, admin string
	client             kubernetes.Interface
	pods               *kubetest.AddrMap
	done               chan error
	cancel             context.CancelFunc
}

// startRig runs the controller against client until the test ends, mapping pod addresses
// through pods, and waits for /readyz.
func startRig(t *testing.T, client kubernetes.Interface, pods *kubetest.AddrMap, tweak func(*config)) *rig {
	t.Helper()
	r := &rig{client: client, pods: pods, done: make(chan error, 1)}
	listening := make(chan struct{})
	cfg := &config{
		Class: "sluice", HTTPAddr: "127.0.0.1:0", HTTPSAddr: "127.0.0.1:0", AdminAddr: "127.0.0.1:0",
		Drain: 10 * time.Second, Debounce: 5 * time.Millisecond, Coalesce: 20 * time.Millisecond,
		Client: client, Dial: pods.DialContext,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
		Listening: func(h, s, a string) {
			r.http, r.https, r.admin = h, s, a
			close(listening)
		},
	}
	if testing.Verbose() {
		cfg.Logger = slog.New(slog.NewTextHandler(tWriter{t}, &slog.HandlerOptions{Level: slog.LevelInfo}))
	}
	if tweak != nil {
		tweak(cfg)
	}
	ctx, cancel := context.WithCancel(context.Background())
	r.cancel = cancel
	go func() { r.done <- run(ctx, cfg) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-r.done:
			if err != nil {
				t.Errorf("run returned %v after cancel, want nil", err)
			}
		case <-time.After(20 * time.Second):
			t.Error("run did not return within 20s of cancel")
		}
	})
	select {
	case <-listening:
	case err := <-r.done:
		t.Fatalf("run ended before listening: %v", err)
	}
	require.Eventually(t, func() bool {
		resp, err := http.Get("http://" + r.admin + "/readyz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	}, 30*time.Second, 5*time.Millisecond, "/readyz should turn 200 after the first sync")
	return r
}

// tWriter sends log lines to t.Log.
type tWriter struct{ t *testing.T }

func (w tWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}

// backend starts a real HTTP server that answers with its name and maps pod (an address such
// as "10.244.1.1:8080") to it.
func backend(t *testing.T, pods *kubetest.AddrMap, name, pod string) *httptest.Server {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprint(w, name)
	}))
	t.Cleanup(srv.Close)
	pods.Set(pod, srv.Listener.Addr().String())
	return srv
}

// get sends one request for host and path to the controller's HTTP listener and returns the
// status and body.
func (r *rig) get(c *http.Client, host, path string, hdr ...string) (int, string, error) {
	req, err := http.NewRequest(http.MethodGet, "http://"+r.http+path, nil)
	if err != nil {
		return 0, "", err
	}
	req.Host = host
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := c.Do(req)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), err
}

// httpsClient trusts any certificate but records the one served, so tests can check which
// certificate SNI picked.
func httpsClient(addr string, seen func(*tls.ConnectionState)) *http.Client {
	return &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{
		DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, network, addr)
		},
		TLSClientConfig: &tls.Config{InsecureSkipVerify: true, VerifyConnection: func(cs tls.ConnectionState) error {
			if seen != nil {
				seen(&cs)
			}
			return nil
		}},
		DisableKeepAlives: true,
	}}
}

// waitBody polls until a GET for host and path answers 200 with want.
func (r *rig) waitBody(t *testing.T, host, path, want string, hdr ...string) {
	t.Helper()
	c := &http.Client{Timeout: 5 * time.Second}
	var last string
	ok := assert.Eventually(t, func() bool {
		code, body, err := r.get(c, host, path, hdr...)
		last = fmt.Sprintf("%d %q %v", code, body, err)
		return err == nil && code == http.StatusOK && body == want
	}, 20*time.Second, 2*time.Millisecond)
	if !ok {
		t.Fatalf("GET %s%s should reach %s (last answer: %s)", host, path, want, last)
	}
}

// apply creates or updates every object of a multi-document YAML manifest, as kubectl apply
// would for these kinds.
func apply(t *testing.T, client kubernetes.Interface, manifest string) {
	t.Helper()
	ctx := context.Background()
	for _, doc := range strings.Split(manifest, "\n---\n") {
		if strings.TrimSpace(doc) == "" {
			continue
		}
		obj, _, err := scheme.Codecs.UniversalDeserializer().Decode([]byte(doc), nil, nil)
		require.NoError(t, err, "decode manifest:\n%s", doc)
		require.NoError(t, applyObject(ctx, client, obj), "apply:\n%s", doc)
	}
}

func applyObject(ctx context.Context, c kubernetes.Interface, obj runtime.Object) error {
	opts := metav1.CreateOptions{}
	switch o := obj.(type) {
	case *corev1.Namespace:
		_, err := c.CoreV1().Namespaces().Create(ctx, o, opts)
		if apierrors.IsAlreadyExists(err) {
			return nil
		}
		return err
	case *corev1.Service:
		return upsert(ctx, c.CoreV1().Services(o.Namespace), o, func(cur *corev1.Service) {
			o.ResourceVersion = cur.ResourceVersion
			o.Spec.ClusterIP, o.Spec.ClusterIPs = cur.Spec.ClusterIP, cur.Spec.ClusterIPs
		})
	case *corev1.Secret:
		return upsert(ctx, c.CoreV1().Secrets(o.Namespace), o, func(cur *corev1.Secret) { o.ResourceVersion = cur.ResourceVersion })
	case *discoveryv1.EndpointSlice:
		return upsert(ctx, c.DiscoveryV1().EndpointSlices(o.Namespace), o, func(cur *discoveryv1.EndpointSlice) { o.ResourceVersion = cur.ResourceVersion })
	case *networkingv1.Ingress:
		return upsert(ctx, c.NetworkingV1().Ingresses(o.Namespace), o, func(cur *networkingv1.Ingress) { o.ResourceVersion = cur.ResourceVersion; o.Status = cur.Status })
	case *corev1.ServiceAccount:
		return upsert(ctx, c.CoreV1().ServiceAccounts(o.Namespace), o, func(cur *corev1.ServiceAccount) { o.ResourceVersion = cur.ResourceVersion })
	case *rbacv1.ClusterRole:
		return upsert(ctx, c.RbacV1().ClusterRoles(), o, func(cur *rbacv1.ClusterRole) { o.ResourceVersion = cur.ResourceVersion })
	case *rbacv1.ClusterRoleBinding:
		return upsert(ctx, c.RbacV1().ClusterRoleBindings(), o, func(cur *rbacv1.ClusterRoleBinding) { o.ResourceVersion = cur.ResourceVersion })
	case *rbacv1.Role:
		return upsert(ctx, c.RbacV1().Roles(o.Namespace), o, func(cur *rbacv1.Role) { o.ResourceVersion = cur.ResourceVersion })
	case *rbacv1.RoleBinding:
		return upsert(ctx, c.RbacV1().RoleBindings(o.Namespace), o, func(cur *rbacv1.RoleBinding) { o.ResourceVersion = cur.ResourceVersion })
	case *networkingv1.IngressClass:
		return upsert(ctx, c.NetworkingV1().IngressClasses(), o, func(cur *networkingv1.IngressClass) { o.ResourceVersion = cur.ResourceVersion })
	}
	return fmt.Errorf("apply: unsupported kind %T", obj)
}

// typedClient is the part of a typed client-go resource client that upsert needs.
type typedClient[T runtime.Object] interface {
	Get(ctx context.Context, name string, opts metav1.GetOptions) (T, error)
	Create(ctx context.Context, obj T, opts metav1.CreateOptions) (T, error)
	Update(ctx context.Context, obj T, opts metav1.UpdateOptions) (T, error)
}

func upsert[T interface {
	runtime.Object
	GetName() string
}](ctx context.Context, c typedClient[T], obj T, carry func(cur T)) error {
	cur, err := c.Get(ctx, obj.GetName(), metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		_, err = c.Create(ctx, obj, metav1.CreateOptions{})
		return err
	}
	if err != nil {
		return err
	}
	carry(cur)
	_, err = c.Update(ctx, obj, metav1.UpdateOptions{})
	return err
}

// ingressClass is the IngressClass of this controller, as deploy/ingressclass.yaml has it.
const ingressClass = `
apiVersion: networking.k8s.io/v1
kind: IngressClass
metadata:
  name: sluice
spec:
  controller: sluiceproxy.io/ingress-controller
`

// defaultIngress returns an Ingress of class sluice in namespace default whose default backend
// is port 80 of the Service with the same name.
func defaultIngress(name string) string {
	return fmt.Sprintf(`apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {name: %[1]s, namespace: default}
spec:
  ingressClassName: sluice
  defaultBackend: {service: {name: %[1]s, port: {number: 80}}}
`, name)
}

// service returns a Service with one named port and its EndpointSlice with the given pod IPs.
func service(ns, name string, port int, ips ...string) string {
	var eps strings.Builder
	for _, ip := range ips {
		fmt.Fprintf(&eps, "  - addresses: [%q]\n    conditions: {ready: true}\n", ip)
	}
	if len(ips) == 0 {
		eps.WriteString("  []\n")
	}
	return fmt.Sprintf(`
apiVersion: v1
kind: Service
metadata:
  name: %[2]s
  namespace: %[1]s
spec:
  ports:
  - name: http
    port: 80
    targetPort: %[3]d
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: %[2]s-1
  namespace: %[1]s
  labels:
    kubernetes.io/service-name: %[2]s
addressType: IPv4
ports:
- name: http
  port: %[3]d
  protocol: TCP
endpoints:
%[4]s`, ns, name, port, eps.String())
}
