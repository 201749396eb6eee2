//go:build integration

package main

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/discovery/cached/memory"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/restmapper"

	"github.com/sluiceproxy/sluice/internal/kubetest"
)

// warnings records the Warning headers of API responses: deprecated APIs, and the Pod
// Security Standard a pod template would violate.
type warnings struct {
	mu   sync.Mutex
	msgs []string
}

func (w *warnings) HandleWarningHeaderWithContext(_ context.Context, _ int, _ string, msg string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.msgs = append(w.msgs, msg)
}

func (w *warnings) take() []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	m := w.msgs
	w.msgs = nil
	return m
}

// TestIntegrationDeploy applies what `kubectl apply --server-side -k deploy` applies, in the
// kustomization's order, to a real kube-apiserver: every object must be accepted without a
// warning (the namespace warns about, and enforces, the restricted Pod Security Standard), a
// pod made from the Deployment's template must be admitted, and the controller must become
// ready and take its Lease with only the permissions of the ServiceAccount the pods run as.
func TestIntegrationDeploy(t *testing.T) {
	cluster := kubetest.Start(t)
	warned := &warnings{}
	rc := rest.CopyConfig(cluster.Config)
	rc.WarningHandlerWithContext = warned
	dyn, err := dynamic.NewForConfig(rc)
	require.NoError(t, err)
	disco, err := discovery.NewDiscoveryClientForConfig(rc)
	require.NoError(t, err)
	mapper := restmapper.NewDeferredDiscoveryRESTMapper(memory.NewMemCacheClient(disco))
	ctx := t.Context()

	ms := deployManifests(t)
	for _, m := range ms {
		u := &unstructured.Unstructured{}
		require.NoError(t, u.UnmarshalJSON(m.json))
		gvk := u.GroupVersionKind()
		what := m.file + ": " + gvk.Kind + " " + u.GetName()
		mapping, err := mapper.RESTMapping(gvk.GroupKind(), gvk.Version)
		require.NoError(t, err, "%s: the API server should serve %s", what, gvk)
		var res dynamic.ResourceInterface = dyn.Resource(mapping.Resource)
		if mapping.Scope.Name() == meta.RESTScopeNameNamespace {
			res = dyn.Resource(mapping.Resource).Namespace(u.GetNamespace())
		}
		// Server-side apply, as kubectl apply --server-side sends it: the server validates
		// the whole object and refuses unknown fields.
		_, err = res.Patch(ctx, u.GetName(), types.ApplyPatchType, m.json, metav1.PatchOptions{
			FieldManager: "kubectl", Force: new(true), FieldValidation: "Strict"})
		require.NoError(t, err, "%s should be accepted", what)
		assert.Empty(t, warned.take(), "%s should draw no warning", what)
	}

	d := only[*appsv1.Deployment](t, ms)
	t.Run("a pod of the Deployment is admitted", func(t *testing.T) {
		// No controller manager runs, so create the pod the ReplicaSet would, as a dry run:
		// the namespace enforces the restricted standard, and admission sees the real
		// ServiceAccount.
		client, err := kubernetes.NewForConfig(rc)
		require.NoError(t, err)
		pod := &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Name: d.Name + "-test", Namespace: d.Namespace, Labels: d.Spec.Template.Labels},
			Spec:       d.Spec.Template.Spec,
		}
		pod.Spec.Containers[0].Image = "registry.example.com/sluice-ingress-controller:dev"
		_, err = client.CoreV1().Pods(d.Namespace).Create(ctx, pod, metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}})
		require.NoError(t, err, "the pod should be admitted in its namespace")
		assert.Empty(t, warned.take(), "the pod should draw no warning")
	})

	t.Run("the ServiceAccount's permissions suffice", func(t *testing.T) {
		sa := rest.CopyConfig(cluster.Config)
		sa.Impersonate = rest.ImpersonationConfig{UserName: "system:serviceaccount:" + d.Namespace + ":" + d.Spec.Template.Spec.ServiceAccountName}
		saClient, err := kubernetes.NewForConfig(sa)
		require.NoError(t, err)
		// startRig waits for /readyz: every informer listed and watched as the ServiceAccount.
		svc := only[*corev1.Service](t, ms)
		startRig(t, saClient, &kubetest.AddrMap{}, func(c *config) {
			c.PublishService = svc.Namespace + "/" + svc.Name
			// As the pods run it: elected, with the flags' defaults, in the pod's namespace.
			c.Election, c.ElectionNamespace, c.ElectionIdentity = true, d.Namespace, "deploy-test"
			c.LeaseDuration, c.RenewDeadline, c.RetryPeriod = 15*time.Second, 10*time.Second, 2*time.Second
		})
		require.Eventually(t, func() bool {
			l, err := cluster.Client.CoordinationV1().Leases(d.Namespace).Get(ctx, "sluice-ingress-sluice", metav1.GetOptions{})
			return err == nil && l.Spec.HolderIdentity != nil && *l.Spec.HolderIdentity == "deploy-test"
		}, 20*time.Second, 10*time.Millisecond, "the replica should take the Lease in %s", d.Namespace)
	})
}
