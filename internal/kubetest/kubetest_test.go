//go:build integration

package kubetest_test

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/sluiceproxy/sluice/internal/kubetest"
)

func TestStartAndRestart(t *testing.T) {
	c := kubetest.Start(t)
	ctx := context.Background()
	ns, err := c.Client.CoreV1().Namespaces().Get(ctx, "default", metav1.GetOptions{})
	require.NoError(t, err, "the default namespace should exist on a ready API server")
	assert.Equal(t, "default", ns.Name)

	c.RestartAPIServer(t)
	_, err = c.Client.CoreV1().Namespaces().Get(ctx, "default", metav1.GetOptions{})
	assert.NoError(t, err, "the API server should answer after a restart")
}

func TestAddrMap(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		io.WriteString(w, "ok")
	}))
	defer srv.Close()
	var m kubetest.AddrMap
	m.Set("10.244.0.1:80", srv.Listener.Addr().String())
	client := &http.Client{Transport: &http.Transport{DialContext: m.DialContext}}
	resp, err := client.Get("http://10.244.0.1:80/")
	require.NoError(t, err)
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	assert.Equal(t, "ok", string(body))

	_, err = client.Get("http://10.244.0.2:80/")
	assert.ErrorIs(t, err, kubetest.ErrUnmapped, "unmapped addresses must not be dialled")
}
