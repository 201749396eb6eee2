package secrets_test

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/informers"
	k8s "k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/fake"

	"github.com/sluiceproxy/sluice/internal/testcert"
	"github.com/sluiceproxy/sluice/tls/certs"
	"github.com/sluiceproxy/sluice/tls/secrets"
)

const ns = "web"

func tlsSecret(name string, c *testcert.Cert, lbls map[string]string) *corev1.Secret {
	return &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Labels: lbls},
		Type:       corev1.SecretTypeTLS,
		Data:       map[string][]byte{corev1.TLSCertKey: c.CertPEM, corev1.TLSPrivateKeyKey: c.KeyPEM},
	}
}

// errorLog collects reported errors.
type errorLog struct {
	mu   sync.Mutex
	errs []error
}

func (l *errorLog) add(err error) { l.mu.Lock(); l.errs = append(l.errs, err); l.mu.Unlock() }
func (l *errorLog) joined() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	return errors.Join(l.errs...)
}

func quietLogger() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// start runs a Watcher until the test ends and waits for its initial sync.
func start(t *testing.T, client k8s.Interface, store *certs.Keyring, opts secrets.Options) *errorLog {
	t.Helper()
	var log errorLog
	opts.OnError = log.add
	opts.Logger = quietLogger()
	src, err := secrets.New(client, store, opts)
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- src.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		assert.ErrorIs(t, <-done, context.Canceled, "Run should return ctx.Err()")
	})
	select {
	case <-src.Synced():
	case <-time.After(10 * time.Second):
		t.Fatal("no initial sync within 10s")
	}
	assert.True(t, src.HasSynced())
	return &log
}

func serial(store *certs.Keyring, sni string) string {
	if c := store.Certificate(sni); c != nil {
		return c.Leaf.SerialNumber.String()
	}
	return "none"
}

// eventually waits for the store to serve want for sni: the informer delivers asynchronously.
func eventually(t *testing.T, store *certs.Keyring, sni string, want *testcert.Cert, msg string) {
	t.Helper()
	w := "none"
	if want != nil {
		w = want.Leaf.SerialNumber.String()
	}
	require.Eventually(t, func() bool { return serial(store, sni) == w }, 10*time.Second, 5*time.Millisecond,
		"%s: SNI %s should be served serial %s, got %s", msg, sni, w, serial(store, sni))
}

func TestSecretsLifecycle(t *testing.T) {
	ca := testcert.NewCA(t)
	v1 := ca.Server(t, "app.example.com")
	other := ca.Server(t, "other.example.com")
	ctx := context.Background()
	client := fake.NewClientset(
		tlsSecret("app", v1, nil),
		tlsSecret("other", other, nil),
		&corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: "elsewhere", Name: "app"}, Type: corev1.SecretTypeTLS,
			Data: map[string][]byte{corev1.TLSCertKey: other.CertPEM, corev1.TLSPrivateKeyKey: other.KeyPEM}},
	)
	var store certs.Keyring
	errs := start(t, client, &store, secrets.Options{Namespace: ns, Default: "app"})

	assert.ElementsMatch(t, []string{"web/app", "web/other"}, store.Keys(), "only the namespace's secrets, keyed namespace/name")
	assert.Equal(t, v1.Leaf.SerialNumber.String(), serial(&store, ""), "the Default secret serves unknown names")

	// cert-manager renews: the Secret is updated in place.
	v2 := ca.Server(t, "app.example.com")
	_, err := client.CoreV1().Secrets(ns).Update(ctx, tlsSecret("app", v2, nil), metav1.UpdateOptions{})
	require.NoError(t, err)
	eventually(t, &store, "app.example.com", v2, "after renewal")

	// A broken update keeps the renewed certificate and is reported.
	broken := tlsSecret("app", v2, nil)
	broken.Data[corev1.TLSPrivateKeyKey] = v1.KeyPEM
	_, err = client.CoreV1().Secrets(ns).Update(ctx, broken, metav1.UpdateOptions{})
	require.NoError(t, err)
	require.Eventually(t, func() bool { return errs.joined() != nil }, 10*time.Second, 5*time.Millisecond, "the broken secret should be reported")
	assert.ErrorContains(t, errs.joined(), "web/app")
	assert.Equal(t, v2.Leaf.SerialNumber.String(), serial(&store, "app.example.com"), "the previous certificate keeps serving")

	// Deletion removes it.
	require.NoError(t, client.CoreV1().Secrets(ns).Delete(ctx, "other", metav1.DeleteOptions{}))
	eventually(t, &store, "other.example.com", v2, "after deletion the default serves")
	assert.ElementsMatch(t, []string{"web/app"}, store.Keys())
}

func TestSecretsSelection(t *testing.T) {
	ca := testcert.NewCA(t)
	a, b, c := ca.Server(t, "a.test"), ca.Server(t, "b.test"), ca.Server(t, "c.test")
	opaque := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "opaque", Labels: map[string]string{"serve": "yes"}},
		Type: corev1.SecretTypeOpaque, Data: map[string][]byte{"password": []byte("x")}}

	t.Run("by name", func(t *testing.T) {
		client := fake.NewClientset(tlsSecret("a", a, nil), tlsSecret("b", b, nil), tlsSecret("c", c, nil))
		var store certs.Keyring
		start(t, client, &store, secrets.Options{Namespace: ns, Names: []string{"a", "c"}})
		assert.ElementsMatch(t, []string{"web/a", "web/c"}, store.Keys())
	})
	t.Run("by one name", func(t *testing.T) {
		client := fake.NewClientset(tlsSecret("a", a, nil), tlsSecret("b", b, nil))
		var store certs.Keyring
		start(t, client, &store, secrets.Options{Namespace: ns, Names: []string{"b"}})
		assert.ElementsMatch(t, []string{"web/b"}, store.Keys())
	})
	t.Run("by label", func(t *testing.T) {
		client := fake.NewClientset(tlsSecret("a", a, map[string]string{"serve": "yes"}), tlsSecret("b", b, nil), opaque)
		var store certs.Keyring
		errs := start(t, client, &store, secrets.Options{Namespace: ns, Selector: labels.SelectorFromSet(labels.Set{"serve": "yes"})})
		assert.ElementsMatch(t, []string{"web/a"}, store.Keys())
		assert.ErrorContains(t, errs.joined(), `secret web/opaque has type "Opaque"`, "a selected non-TLS secret is reported")

		// Removing the label withdraws the certificate; adding it serves b.
		_, err := client.CoreV1().Secrets(ns).Update(context.Background(), tlsSecret("a", a, nil), metav1.UpdateOptions{})
		require.NoError(t, err)
		_, err = client.CoreV1().Secrets(ns).Update(context.Background(), tlsSecret("b", b, map[string]string{"serve": "yes"}), metav1.UpdateOptions{})
		require.NoError(t, err)
		eventually(t, &store, "b.test", b, "after labelling b")
		require.Eventually(t, func() bool { return store.Get("web/a") == nil }, 10*time.Second, 5*time.Millisecond,
			"after unlabelling a its certificate is withdrawn")
		assert.Equal(t, []string{"web/b"}, store.Keys())
	})
}

// Without Options.Default a client without SNI gets the first certificate stored: the initial
// list is stored in one batch, in sorted order, so the Secret whose name sorts first.
func TestSecretsNoDefaultServesFirst(t *testing.T) {
	ca := testcert.NewCA(t)
	a, b := ca.Server(t, "a.test", "127.0.0.1"), ca.Server(t, "b.test")
	client := fake.NewClientset(tlsSecret("b", b, nil), tlsSecret("a", a, nil))
	var store certs.Keyring
	start(t, client, &store, secrets.Options{Namespace: ns})
	assert.Equal(t, []string{"web/a", "web/b"}, store.Keys(), "the initial list is stored in sorted order")

	cfg, err := certs.ServerConfig(&store, certs.ServerOptions{})
	require.NoError(t, err)
	ln, err := tls.Listen("tcp", "127.0.0.1:0", cfg)
	require.NoError(t, err)
	defer ln.Close()
	go func() {
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			_ = conn.(*tls.Conn).Handshake()
			conn.Close()
		}
	}()
	// Dialing an IP sends no SNI; the client verifies the IP, which a names.
	conn, err := tls.Dial("tcp", ln.Addr().String(), &tls.Config{RootCAs: ca.Pool})
	require.NoError(t, err, "a client without SNI must be served")
	defer conn.Close()
	assert.Equal(t, a.Leaf.SerialNumber, conn.ConnectionState().PeerCertificates[0].SerialNumber,
		"the first Secret in sorted order is the default")

	// A Secret added later does not take over.
	c := ca.Server(t, "0.test")
	_, err = client.CoreV1().Secrets(ns).Create(context.Background(), tlsSecret("0", c, nil), metav1.CreateOptions{})
	require.NoError(t, err)
	eventually(t, &store, "0.test", c, "after adding 0")
	assert.Equal(t, a.Leaf.SerialNumber, store.Certificate("").Leaf.SerialNumber, "a later Secret does not become the default")
}

func TestSecretsSharedFactoryAndCAs(t *testing.T) {
	ca, ca2 := testcert.NewCA(t), testcert.NewCA(t)
	a := ca.Server(t, "a.test")
	caSecret := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "client-ca"},
		Type: corev1.SecretTypeOpaque, Data: map[string][]byte{"ca.crt": ca.CertPEM}}
	client := fake.NewClientset(tlsSecret("a", a, nil), caSecret)
	factory := informers.NewSharedInformerFactoryWithOptions(client, 0, informers.WithNamespace(ns))
	t.Cleanup(factory.Shutdown)

	var store certs.Keyring
	var pool certs.CAPool
	src, err := secrets.New(nil, &store, secrets.Options{Namespace: ns, Names: []string{"a"}, Factory: factory, CAs: &pool, CASecret: "client-ca", Logger: quietLogger()})
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	factory.Start(ctx.Done()) // the embedder starts its factory after New
	done := make(chan error, 1)
	go func() { done <- src.Run(ctx) }()
	t.Cleanup(func() { cancel(); assert.ErrorIs(t, <-done, context.Canceled) })
	select {
	case <-src.Synced():
	case <-time.After(10 * time.Second):
		t.Fatal("no initial sync within 10s")
	}
	assert.ElementsMatch(t, []string{"web/a"}, store.Keys())
	require.NotNil(t, pool.Pool(), "ca.crt should load")
	assert.True(t, pool.Pool().Equal(ca.Pool))

	caSecret.Data["ca.crt"] = ca2.CertPEM
	_, err = client.CoreV1().Secrets(ns).Update(context.Background(), caSecret, metav1.UpdateOptions{})
	require.NoError(t, err)
	require.Eventually(t, func() bool { return pool.Pool().Equal(ca2.Pool) }, 10*time.Second, 5*time.Millisecond, "the CA pool should follow the secret")
}

func TestNewValidation(t *testing.T) {
	var store certs.Keyring
	client := fake.NewClientset()
	tests := []struct {
		name   string
		client k8s.Interface
		store  *certs.Keyring
		opts   secrets.Options
		want   string
	}{
		{"no store", client, nil, secrets.Options{Namespace: ns}, "keyring is nil"},
		{"no client", nil, &store, secrets.Options{Namespace: ns}, "client is nil"},
		{"no namespace", client, &store, secrets.Options{}, "Namespace is required"},
		{"CAs alone", client, &store, secrets.Options{Namespace: ns, CAs: &certs.CAPool{}}, "must be set together"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := secrets.New(tt.client, tt.store, tt.opts)
			assert.ErrorContains(t, err, tt.want)
		})
	}
}
