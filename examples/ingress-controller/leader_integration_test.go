//go:build integration

package main

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	coordinationv1 "k8s.io/api/coordination/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/sluiceproxy/sluice/internal/kubetest"
)

// Short Lease timings, so that a lost leader is replaced in seconds; the renew deadline
// leaves room for a slow API server on a loaded machine.
const (
	testLeaseDuration = 3 * time.Second
	testRenewDeadline = 2 * time.Second
	testRetryPeriod   = 250 * time.Millisecond
)

// TestIntegrationLeaderElection runs three replicas of the controller in one process against
// one API server, as the ServiceAccount of deploy/rbac.yaml (so its Lease rule is proven
// enough), and checks that only the holder of the Lease writes status and Events, that
// another replica takes over when the leader stops or is cut off, that the new leader
// rewrites nothing already right, and that an Ingress leaving the class has its status
// cleared.
func TestIntegrationLeaderElection(t *testing.T) {
	cluster := kubetest.Start(t)
	admin := cluster.Client
	for _, f := range []string{"deploy/namespace.yaml", "deploy/rbac.yaml"} {
		b, err := os.ReadFile(f)
		require.NoError(t, err)
		apply(t, admin, string(b))
	}
	apply(t, admin, ingressClass+"\n---\napiVersion: v1\nkind: Namespace\nmetadata: {name: a}\n---\napiVersion: v1\nkind: Namespace\nmetadata: {name: b}\n")
	pods := &kubetest.AddrMap{}
	backend(t, pods, "web", "10.244.9.1:8080")
	apply(t, admin, service("a", "web", 8080, "10.244.9.1"))
	apply(t, admin, service("b", "web", 8080, "10.244.9.1"))
	sa := rest.CopyConfig(cluster.Config)
	sa.Impersonate = rest.ImpersonationConfig{UserName: "system:serviceaccount:sluice-system:sluice-ingress"}

	t.Run("only the leader writes, and another takes over", func(t *testing.T) {
		// Each replica publishes its own address, so the status names its writer, and a
		// follower that wrote would show.
		ids := []string{"a-0", "a-1", "a-2"}
		addr := map[string]string{"a-0": "203.0.113.10", "a-1": "203.0.113.11", "a-2": "203.0.113.12"}
		owner := map[string]string{}
		for id, a := range addr {
			owner[a] = id
		}
		ctx, stop := context.WithCancel(context.Background())
		defer stop()
		h := watchHistory(t, ctx, admin, "a", "a-leader")
		apply(t, admin, leaderIngress("a", "shop", "sluice", false, "a.test"))
		rigs, _ := startReplicas(t, sa, pods, "a", "a-leader", ids, func(id string) string { return addr[id] })

		leader := waitLeader(t, admin, "a-leader", "")
		waitStatus(t, admin, "a", "shop", addr[leader])

		// Every replica rebuilds with a refused Ingress and a new host; only the leader may
		// record the Event and write status.
		apply(t, admin, `apiVersion: networking.k8s.io/v1
kind: Ingress
metadata:
  name: broken
  namespace: a
  annotations: {sluiceproxy.io/retries: "9"}
spec:
  ingressClassName: sluice
  rules:
  - host: broken.a.test
    http:
      paths:
      - {path: /, pathType: Prefix, backend: {service: {name: web, port: {number: 80}}}}
`)
		apply(t, admin, leaderIngress("a", "shop", "sluice", false, "a.test", "a2.test"))
		for _, id := range ids {
			rigs[id].waitBody(t, "a2.test", "/", "web")
		}
		require.Eventually(t, func() bool { return len(events(t, admin, "a", "broken")) > 0 },
			20*time.Second, 10*time.Millisecond, "the leader should record a Warning Event on the refused Ingress")

		start := time.Now()
		rigs[leader].cancel()
		next := waitLeader(t, admin, "a-leader", leader)
		waitStatus(t, admin, "a", "shop", addr[next])
		t.Logf("%s stopped; %s leads and wrote the status %v later (lease %v)", leader, next, time.Since(start), testLeaseDuration)

		apply(t, admin, leaderIngress("a", "shop", "sluice", false, "a.test", "a2.test", "a3.test"))
		for _, id := range ids {
			if id != leader {
				rigs[id].waitBody(t, "a3.test", "/", "web")
			}
		}
		// The new leader records the Event once more, as it cannot know the old one did; the
		// followers record none.
		assert.LessOrEqual(t, len(events(t, admin, "a", "broken")), 2, "only leaders record Events: one per term")

		writes := h.statusWrites(t, admin, "a", "shop", "a-leader")
		require.NotEmpty(t, writes, "the status writes should have been watched")
		for _, w := range writes {
			assert.Equal(t, w.holder, owner[w.status],
				"status %s was written at resourceVersion %d while %q held the Lease: a follower wrote", w.status, w.rv, w.holder)
		}
		assert.Equal(t, addr[next], writes[len(writes)-1].status, "the last status is the new leader's")
	})

	t.Run("a new leader rewrites nothing; leaving the class clears the status; a cut-off leader is replaced", func(t *testing.T) {
		// All replicas publish the same address, as the replicas of one Deployment do.
		const lb = "203.0.113.20"
		ids := []string{"b-0", "b-1", "b-2"}
		apply(t, admin, leaderIngress("b", "shop", "sluice", false, "b.test"))
		rigs, puts := startReplicas(t, sa, pods, "b", "b-leader", ids, func(string) string { return lb })
		leader := waitLeader(t, admin, "b-leader", "")
		shop := waitStatus(t, admin, "b", "shop", lb)
		assert.Equal(t, leader, statusManager(shop), "the status should be written with the leader's identity as field manager")

		rigs[leader].cancel()
		next := waitLeader(t, admin, "b-leader", leader)
		// Once the new leader wrote a new Ingress's status, it has compared the older ones.
		apply(t, admin, leaderIngress("b", "probe", "sluice", false, "probe.b.test"))
		probe := waitStatus(t, admin, "b", "probe", lb)
		assert.Equal(t, next, statusManager(probe), "the new leader should write the new Ingress's status")
		// The API server would make a write of the same status a no-op, so count requests.
		for _, id := range ids {
			if id != leader {
				assert.Zero(t, puts.count(id, "b/shop"), "%s must not write a status that is already right", id)
			}
		}

		// An Ingress of another controller carrying the same address was never ours: it
		// must keep its status while ours are cleared.
		apply(t, admin, leaderIngress("b", "foreign", "other", false, "foreign.b.test"))
		foreign, err := admin.NetworkingV1().Ingresses("b").Get(context.Background(), "foreign", metav1.GetOptions{})
		require.NoError(t, err)
		foreign.Status.LoadBalancer.Ingress = []networkingv1.IngressLoadBalancerIngress{{IP: lb}}
		_, err = admin.NetworkingV1().Ingresses("b").UpdateStatus(context.Background(), foreign, metav1.UpdateOptions{})
		require.NoError(t, err)

		apply(t, admin, leaderIngress("b", "legacy", "", true, "legacy.b.test"))
		waitStatus(t, admin, "b", "legacy", lb)

		apply(t, admin, leaderIngress("b", "shop", "other", false, "b.test"))
		waitStatus(t, admin, "b", "shop", "")
		apply(t, admin, leaderIngress("b", "legacy", "", false, "legacy.b.test"))
		waitStatus(t, admin, "b", "legacy", "")

		foreign, err = admin.NetworkingV1().Ingresses("b").Get(context.Background(), "foreign", metav1.GetOptions{})
		require.NoError(t, err)
		assert.Equal(t, lb, statusString(foreign), "the status of an Ingress that was never of the class is not ours to clear")

		// A leader cut off from the API server cannot release the Lease: the last replica
		// takes it once it expires.
		start := time.Now()
		puts.cutOff(next)
		last := waitLeader(t, admin, "b-leader", next)
		t.Logf("%s cut off; %s leads %v later (lease %v)", next, last, time.Since(start), testLeaseDuration)
		apply(t, admin, leaderIngress("b", "probe2", "sluice", false, "probe2.b.test"))
		assert.Equal(t, last, statusManager(waitStatus(t, admin, "b", "probe2", lb)), "the last replica should write status")
	})
}

// startReplicas starts one controller per identity, each with its own client on rc, watching
// namespace ns, campaigning for the Lease sluice-system/lease and publishing publish(identity).
// It counts the status writes each sends.
func startReplicas(t *testing.T, rc *rest.Config, pods *kubetest.AddrMap, ns, lease string, ids []string, publish func(string) string) (map[string]*rig, *statusPuts) {
	t.Helper()
	rigs := make(map[string]*rig, len(ids))
	puts := &statusPuts{n: make(map[string]int), cut: make(map[string]bool)}
	for _, id := range ids {
		rc := rest.CopyConfig(rc)
		rc.WrapTransport = func(rt http.RoundTripper) http.RoundTripper {
			return roundTripFunc(func(req *http.Request) (*http.Response, error) {
				if puts.isCut(id) {
					return nil, fmt.Errorf("test: %s is cut off from the API server", id)
				}
				// PUT /apis/networking.k8s.io/v1/namespaces/NS/ingresses/NAME/status
				p := strings.Split(req.URL.Path, "/")
				if req.Method == http.MethodPut && len(p) == 9 && p[6] == "ingresses" && p[8] == "status" {
					puts.add(id, p[5]+"/"+p[7])
				}
				return rt.RoundTrip(req)
			})
		}
		client, err := kubernetes.NewForConfig(rc)
		require.NoError(t, err)
		rigs[id] = startRig(t, client, pods, func(c *config) {
			c.Namespace, c.HTTPSAddr, c.PublishAddress = ns, "", publish(id)
			c.Election, c.ElectionNamespace, c.ElectionID, c.ElectionIdentity = true, "sluice-system", lease, id
			c.LeaseDuration, c.RenewDeadline, c.RetryPeriod = testLeaseDuration, testRenewDeadline, testRetryPeriod
		})
	}
	return rigs, puts
}

// statusPuts counts status writes by replica and Ingress, and cuts replicas off the API
// server.
type statusPuts struct {
	mu  sync.Mutex
	n   map[string]int  // by identity and namespace/name
	cut map[string]bool // by identity
}

func (p *statusPuts) cutOff(id string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.cut[id] = true
}

func (p *statusPuts) isCut(id string) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.cut[id]
}

func (p *statusPuts) add(id, key string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.n[id+" "+key]++
}

func (p *statusPuts) count(id, key string) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.n[id+" "+key]
}

type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(req *http.Request) (*http.Response, error) { return f(req) }

// leaderIngress returns an Ingress of class (none if empty; legacy adds the
// kubernetes.io/ingress.class: sluice annotation) that sends the hosts to the Service web.
func leaderIngress(ns, name, class string, legacy bool, hosts ...string) string {
	s := fmt.Sprintf("apiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata:\n  name: %s\n  namespace: %s\n", name, ns)
	if legacy {
		s += "  annotations: {kubernetes.io/ingress.class: sluice}\n"
	}
	s += "spec:\n"
	if class != "" {
		s += "  ingressClassName: " + class + "\n"
	}
	s += "  rules:\n"
	for _, h := range hosts {
		s += fmt.Sprintf("  - host: %s\n    http:\n      paths:\n      - {path: /, pathType: Prefix, backend: {service: {name: web, port: {number: 80}}}}\n", h)
	}
	return s
}

// waitLeader waits until the Lease sluice-system/name is held by someone other than not (and
// not released) and returns the holder.
func waitLeader(t *testing.T, client kubernetes.Interface, name, not string) string {
	t.Helper()
	var holder string
	require.Eventually(t, func() bool {
		l, err := client.CoordinationV1().Leases("sluice-system").Get(context.Background(), name, metav1.GetOptions{})
		if err != nil || l.Spec.HolderIdentity == nil {
			return false
		}
		holder = *l.Spec.HolderIdentity
		return holder != "" && holder != not
	}, 20*time.Second, 10*time.Millisecond, "a replica other than %q should hold the Lease %s", not, name)
	return holder
}

// waitStatus waits until the status of Ingress ns/name is want ("" for none) and returns it.
func waitStatus(t *testing.T, client kubernetes.Interface, ns, name, want string) *networkingv1.Ingress {
	t.Helper()
	var ing *networkingv1.Ingress
	var got string
	ok := assert.Eventually(t, func() bool {
		var err error
		ing, err = client.NetworkingV1().Ingresses(ns).Get(context.Background(), name, metav1.GetOptions{})
		got = ""
		if err == nil {
			got = statusString(ing)
		}
		return err == nil && got == want
	}, 20*time.Second, 10*time.Millisecond)
	require.True(t, ok, "the status of Ingress %s/%s should become %q (last: %q)", ns, name, want, got)
	return ing
}

// statusString is the status.loadBalancer.ingress of ing, as "IP-or-host,...".
func statusString(ing *networkingv1.Ingress) string {
	var s string
	for i, lb := range ing.Status.LoadBalancer.Ingress {
		if i > 0 {
			s += ","
		}
		s += lb.IP + lb.Hostname
	}
	return s
}

// statusManager returns the field manager of ing's status subresource.
func statusManager(ing *networkingv1.Ingress) string {
	for _, mf := range ing.ManagedFields {
		if mf.Subresource == "status" {
			return mf.Manager
		}
	}
	return ""
}

// events returns the Events recorded on the Ingress ns/name.
func events(t *testing.T, client kubernetes.Interface, ns, name string) []string {
	t.Helper()
	evs, err := client.CoreV1().Events(ns).List(context.Background(), metav1.ListOptions{FieldSelector: "involvedObject.name=" + name})
	require.NoError(t, err)
	var msgs []string
	for _, ev := range evs.Items {
		msgs = append(msgs, ev.Message)
	}
	return msgs
}

// history records, from two watches, every version of a Lease and of the Ingresses of a
// namespace. With one etcd, resourceVersions are its global revisions, so they order the
// Lease's changes of holder and the status writes against each other.
type history struct {
	mu             sync.Mutex
	leases         []version // the holder of each version of the Lease
	ingresses      []version // the status of each version of each Ingress
	leaseRV, ingRV int64     // the newest resourceVersion seen of each
}

// version is one version of an object: its resourceVersion, namespace/name and value.
type version struct {
	rv         int64
	key, value string
}

// statusWrite is one change of an Ingress's status and who held the Lease when it was made.
type statusWrite struct {
	rv             int64
	status, holder string
}

// watchHistory watches the Lease sluice-system/lease and the Ingresses of ns until ctx ends.
func watchHistory(t *testing.T, ctx context.Context, client kubernetes.Interface, ns, lease string) *history {
	t.Helper()
	// ResourceVersion "0" starts from the API server's cache as it is: without it, the server
	// waits for its cache to reach etcd's newest revision, which a fresh cluster that has
	// written no object of the kind may not report in time.
	lw, err := client.CoordinationV1().Leases("sluice-system").Watch(ctx, metav1.ListOptions{FieldSelector: "metadata.name=" + lease, ResourceVersion: "0"})
	require.NoError(t, err)
	iw, err := client.NetworkingV1().Ingresses(ns).Watch(ctx, metav1.ListOptions{ResourceVersion: "0"})
	require.NoError(t, err)
	t.Cleanup(lw.Stop)
	t.Cleanup(iw.Stop)
	h := &history{}
	go func() {
		for ev := range lw.ResultChan() {
			l, ok := ev.Object.(*coordinationv1.Lease)
			if !ok {
				continue
			}
			rv, _ := strconv.ParseInt(l.ResourceVersion, 10, 64)
			holder := ""
			if l.Spec.HolderIdentity != nil {
				holder = *l.Spec.HolderIdentity
			}
			h.mu.Lock()
			h.leases = append(h.leases, version{rv, lease, holder})
			h.leaseRV = max(h.leaseRV, rv)
			h.mu.Unlock()
		}
	}()
	go func() {
		for ev := range iw.ResultChan() {
			ing, ok := ev.Object.(*networkingv1.Ingress)
			if !ok {
				continue
			}
			rv, _ := strconv.ParseInt(ing.ResourceVersion, 10, 64)
			h.mu.Lock()
			h.ingresses = append(h.ingresses, version{rv, ing.Namespace + "/" + ing.Name, statusString(ing)})
			h.ingRV = max(h.ingRV, rv)
			h.mu.Unlock()
		}
	}()
	return h
}

// statusWrites waits until the watches have caught up with the API server, then returns each
// change of the status of Ingress ns/name to a non-empty value, with the holder of the Lease
// at that resourceVersion.
func (h *history) statusWrites(t *testing.T, client kubernetes.Interface, ns, name, lease string) []statusWrite {
	t.Helper()
	ctx := context.Background()
	l, err := client.CoordinationV1().Leases("sluice-system").Get(ctx, lease, metav1.GetOptions{})
	require.NoError(t, err)
	ing, err := client.NetworkingV1().Ingresses(ns).Get(ctx, name, metav1.GetOptions{})
	require.NoError(t, err)
	lrv, _ := strconv.ParseInt(l.ResourceVersion, 10, 64)
	irv, _ := strconv.ParseInt(ing.ResourceVersion, 10, 64)
	var seen string
	caught := assert.Eventually(t, func() bool {
		h.mu.Lock()
		defer h.mu.Unlock()
		seen = fmt.Sprintf("%d and %d", h.leaseRV, h.ingRV)
		return h.leaseRV >= lrv && h.ingRV >= irv
	}, 20*time.Second, 10*time.Millisecond)
	require.True(t, caught, "the watches should catch up with resourceVersions %d and %d (seen: %s)", lrv, irv, seen)

	h.mu.Lock()
	leases, ings := slices.Clone(h.leases), slices.Clone(h.ingresses)
	h.mu.Unlock()
	byRV := func(a, b version) int { return int(a.rv - b.rv) }
	slices.SortFunc(leases, byRV)
	slices.SortFunc(ings, byRV)
	var writes []statusWrite
	prev := ""
	for _, v := range ings {
		if v.key != ns+"/"+name || v.value == prev {
			continue
		}
		prev = v.value
		if v.value == "" {
			continue
		}
		holder := ""
		for _, l := range leases {
			if l.rv < v.rv {
				holder = l.value
			}
		}
		writes = append(writes, statusWrite{v.rv, v.value, holder})
	}
	return writes
}
