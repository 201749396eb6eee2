//go:build integration

package secrets_test

import (
	"context"
	"crypto/tls"
	"io"
	"log"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"

	"github.com/sluiceproxy/sluice/internal/kubetest"
	"github.com/sluiceproxy/sluice/internal/testcert"
	"github.com/sluiceproxy/sluice/tls/certs"
	"github.com/sluiceproxy/sluice/tls/secrets"
)

// TestSecretRotationAgainstAPIServer rotates a kubernetes.io/tls Secret in a real
// kube-apiserver, as cert-manager does (an in-place update), while clients handshake without
// pause: no handshake may fail, and the renewed certificate must be served once the watch
// delivers it. A broken update must keep the renewed certificate serving.
func TestSecretRotationAgainstAPIServer(t *testing.T) {
	cluster := kubetest.Start(t)
	ctx := t.Context()
	const ns = "tls-rotation"
	_, err := cluster.Client.CoreV1().Namespaces().Create(ctx,
		&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{})
	require.NoError(t, err)

	ca := testcert.NewCA(t)
	secret := func(c *testcert.Cert) *corev1.Secret {
		return &corev1.Secret{
			ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "site-tls", Labels: map[string]string{"sluice.dev/serve": "true"}},
			Type:       corev1.SecretTypeTLS,
			Data:       map[string][]byte{corev1.TLSCertKey: c.CertPEM, corev1.TLSPrivateKeyKey: c.KeyPEM},
		}
	}
	v1 := ca.Server(t, "site.example.com")
	_, err = cluster.Client.CoreV1().Secrets(ns).Create(ctx, secret(v1), metav1.CreateOptions{})
	require.NoError(t, err)

	var store certs.Keyring
	var errs errorLog
	src, err := secrets.New(cluster.Client, &store, secrets.Options{Namespace: ns, Names: []string{"site-tls"}, OnError: errs.add, Logger: quietLogger()})
	require.NoError(t, err)
	runCtx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- src.Run(runCtx) }()
	defer func() {
		stop()
		assert.ErrorIs(t, <-done, context.Canceled)
	}()
	select {
	case <-src.Synced():
	case <-time.After(30 * time.Second):
		t.Fatal("no initial sync from the apiserver within 30s")
	}

	cfg, err := certs.ServerConfig(&store, certs.ServerOptions{})
	require.NoError(t, err)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	srv := &http.Server{TLSConfig: cfg, Handler: http.NotFoundHandler(), ErrorLog: log.New(io.Discard, "", 0)}
	go func() { _ = srv.ServeTLS(ln, "", "") }()
	defer srv.Close()
	addr := ln.Addr().String()

	served := func() (string, error) {
		conn, err := tls.Dial("tcp", addr, &tls.Config{ServerName: "site.example.com", RootCAs: ca.Pool})
		if err != nil {
			return "", err
		}
		defer conn.Close()
		return conn.ConnectionState().PeerCertificates[0].SerialNumber.String(), nil
	}
	got, err := served()
	require.NoError(t, err)
	require.Equal(t, v1.Leaf.SerialNumber.String(), got, "the Secret's certificate should serve")

	// Clients handshake without pause through the rotation.
	loopCtx, stopLoop := context.WithCancel(ctx)
	var wg sync.WaitGroup
	var handshakes, failures atomic.Int64
	var firstErr atomic.Value
	for range 3 {
		wg.Go(func() {
			for loopCtx.Err() == nil {
				if _, err := served(); err != nil {
					failures.Add(1)
					firstErr.CompareAndSwap(nil, err)
				}
				handshakes.Add(1)
			}
		})
	}

	for i := range 3 {
		// Let traffic build up before each rotation so the swap lands mid-stream.
		floor := handshakes.Load() + 25
		require.Eventually(t, func() bool { return handshakes.Load() >= floor }, 30*time.Second, 5*time.Millisecond)
		next := ca.Server(t, "site.example.com")
		_, err = cluster.Client.CoreV1().Secrets(ns).Update(ctx, secret(next), metav1.UpdateOptions{})
		require.NoError(t, err)
		want := next.Leaf.SerialNumber.String()
		require.Eventually(t, func() bool { got, err := served(); return err == nil && got == want },
			30*time.Second, 20*time.Millisecond, "rotation %d: the renewed certificate should be served", i)
		v1 = next
	}

	// A broken update (key of another certificate) is reported and the last good one stays.
	broken := secret(v1)
	broken.Data[corev1.TLSPrivateKeyKey] = ca.Server(t, "site.example.com").KeyPEM
	_, err = cluster.Client.CoreV1().Secrets(ns).Update(ctx, broken, metav1.UpdateOptions{})
	require.NoError(t, err)
	require.Eventually(t, func() bool { return errs.joined() != nil }, 30*time.Second, 20*time.Millisecond, "the broken Secret should be reported")
	assert.ErrorContains(t, errs.joined(), ns+"/site-tls")
	got, err = served()
	require.NoError(t, err)
	assert.Equal(t, v1.Leaf.SerialNumber.String(), got, "the last good certificate keeps serving")

	stopLoop()
	wg.Wait()
	assert.Zero(t, failures.Load(), "no handshake may fail during rotation; first error: %v", firstErr.Load())
	assert.Greater(t, handshakes.Load(), int64(3))
	t.Logf("%d handshakes through 3 rotations, %d failed", handshakes.Load(), failures.Load())

	// Deleting the Secret withdraws the certificate: with no default, the handshake fails.
	require.NoError(t, cluster.Client.CoreV1().Secrets(ns).Delete(ctx, "site-tls", metav1.DeleteOptions{}))
	require.Eventually(t, func() bool { _, err := served(); return err != nil }, 30*time.Second, 20*time.Millisecond,
		"after deletion the certificate should no longer be served")
}

// TestSecretLabelSelectionAgainstAPIServer checks selection by label through a real watch,
// where the API server reports an object that stops matching the selector as deleted.
func TestSecretLabelSelectionAgainstAPIServer(t *testing.T) {
	cluster := kubetest.Start(t)
	ctx := t.Context()
	const ns = "tls-labels"
	_, err := cluster.Client.CoreV1().Namespaces().Create(ctx,
		&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{})
	require.NoError(t, err)
	ca := testcert.NewCA(t)
	a, b := ca.Server(t, "a.example.com"), ca.Server(t, "b.example.com")
	mk := func(name string, c *testcert.Cert, serve bool) *corev1.Secret {
		sec := &corev1.Secret{
			ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
			Type:       corev1.SecretTypeTLS,
			Data:       map[string][]byte{corev1.TLSCertKey: c.CertPEM, corev1.TLSPrivateKeyKey: c.KeyPEM},
		}
		if serve {
			sec.Labels = map[string]string{"sluice.dev/serve": "true"}
		}
		return sec
	}
	_, err = cluster.Client.CoreV1().Secrets(ns).Create(ctx, mk("a", a, true), metav1.CreateOptions{})
	require.NoError(t, err)
	_, err = cluster.Client.CoreV1().Secrets(ns).Create(ctx, mk("b", b, false), metav1.CreateOptions{})
	require.NoError(t, err)

	var store certs.Keyring
	store.SetDefault("") // no default certificate: an unknown name gets none, so removals show
	sel, err := labels.Parse("sluice.dev/serve=true")
	require.NoError(t, err)
	start(t, cluster.Client, &store, secrets.Options{Namespace: ns, Selector: sel})
	assert.ElementsMatch(t, []string{ns + "/a"}, store.Keys(), "only the labelled Secret is served")

	_, err = cluster.Client.CoreV1().Secrets(ns).Update(ctx, mk("a", a, false), metav1.UpdateOptions{})
	require.NoError(t, err)
	_, err = cluster.Client.CoreV1().Secrets(ns).Update(ctx, mk("b", b, true), metav1.UpdateOptions{})
	require.NoError(t, err)
	eventually(t, &store, "b.example.com", b, "after labelling b")
	eventually(t, &store, "a.example.com", nil, "after unlabelling a")
}
