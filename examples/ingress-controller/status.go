package main

import (
	"cmp"
	"context"
	"fmt"
	"net/netip"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
)

// apiTimeout bounds each status write and event, so that a slow API server delays the next
// rebuild by at most this much.
const apiTimeout = 5 * time.Second

// statusState is what the status writer keeps between rebuilds. Its zero value is ready to
// use, without election: the replica writes.
type statusState struct {
	// elector says whether this replica writes status and Events; nil means it always does.
	// main sets it before Run.
	elector *elector

	// The maps below belong to the goroutine running Run. Every replica keeps them, leader
	// or not, so that a replica that becomes leader knows what left the class before.
	ours   map[string]bool   // namespace/name of the Ingresses of our class at the last rebuild
	left   map[string]bool   // namespace/name of Ingresses that left the class, status not yet cleared
	events map[string]string // namespace/name → the error last recorded as an Event
}

// reportInvalid logs why an Ingress was refused, or what was ignored in one served all the
// same (refused false), and, once per distinct error, records a Warning Event on it so that
// `kubectl describe ingress` shows the reason. Only the leader records Events; a replica
// that becomes leader records the current errors once more.
func (c *controller) reportInvalid(ctx context.Context, ing *networkingv1.Ingress, err error, refused bool) {
	key := ing.Namespace + "/" + ing.Name
	msg := err.Error()
	kept := refused && c.lastGood[key] != nil
	if c.lastErr[key] != msg {
		c.lastErr[key] = msg
		if refused {
			c.logger.Error("invalid ingress", "ingress", key, "err", err, "keeping_last_good_config", kept)
		} else {
			c.logger.Warn("ingress served, part of it ignored", "ingress", key, "err", err)
		}
	}
	if c.status.events[key] == msg || !c.status.elector.Leading() {
		return
	}
	if c.status.events == nil {
		c.status.events = make(map[string]string)
	}
	c.status.events[key] = msg
	if kept {
		msg += " (the last valid configuration stays in effect)"
	}
	reason := "InvalidConfiguration"
	if !refused {
		reason = "IgnoredConfiguration"
	}
	now := metav1.NewTime(time.Now())
	ev := &corev1.Event{
		ObjectMeta: metav1.ObjectMeta{GenerateName: ing.Name + ".", Namespace: ing.Namespace},
		InvolvedObject: corev1.ObjectReference{
			Kind: "Ingress", APIVersion: "networking.k8s.io/v1", Namespace: ing.Namespace,
			Name: ing.Name, UID: ing.UID, ResourceVersion: ing.ResourceVersion,
		},
		Reason:         reason,
		Message:        msg,
		Type:           corev1.EventTypeWarning,
		Source:         corev1.EventSource{Component: "sluice-ingress-controller"},
		FirstTimestamp: now,
		LastTimestamp:  now,
		Count:          1,
	}
	ctx, cancel := context.WithTimeout(ctx, apiTimeout)
	defer cancel()
	if _, err := c.client.CoreV1().Events(ing.Namespace).Create(ctx, ev, metav1.CreateOptions{}); err != nil {
		c.logger.Warn("record event", "ingress", key, "err", err)
	}
}

// writeStatus sets status.loadBalancer.ingress of every served Ingress to the addresses this
// controller is reached at, and clears it on the Ingresses that left the class, writing only
// what differs. Only the leader writes: every replica tracks which Ingresses left the class,
// but a follower only forgets those whose status is already clear.
//
// Writing only what differs is what keeps a change of leader quiet: the new leader publishes
// the same addresses, finds them in place, and writes nothing.
func (c *controller) writeStatus(ctx context.Context, ics []*ingressConfig) {
	s := &c.status
	c.trackClass()
	for key := range s.events {
		if _, ok := c.lastErr[key]; !ok {
			delete(s.events, key) // valid again, or gone: a new error deserves a new Event
		}
	}
	want, err := c.publishAddresses()
	if err != nil {
		c.logger.Warn("publish address", "err", err)
		return
	}
	c.clearLeft(ctx, want)
	if want == nil {
		return // nothing to publish: leave statuses to whoever set them
	}
	for _, ic := range ics {
		if equality.Semantic.DeepEqual(ic.ing.Status.LoadBalancer.Ingress, want) {
			continue
		}
		if !s.elector.Leading() {
			return
		}
		c.updateStatus(ctx, ic.ing, want)
	}
}

// trackClass records which Ingresses are of our class and which of those seen at the last
// rebuild no longer are: their class changed, or their legacy annotation went.
func (c *controller) trackClass() {
	s := &c.status
	all, err := c.ingresses.List(labels.Everything())
	if err != nil {
		c.logger.Error("list ingresses", "err", err)
		return
	}
	ours := make(map[string]bool, len(s.ours))
	for _, ing := range all {
		key := ing.Namespace + "/" + ing.Name
		switch {
		case c.ours(ing):
			ours[key] = true
			delete(s.left, key)
		case s.ours[key]:
			if s.left == nil {
				s.left = make(map[string]bool)
			}
			s.left[key] = true
		}
	}
	s.ours = ours
}

// clearLeft clears the status of the Ingresses that left the class, if it is still the one
// this controller publishes (want): an Ingress another controller took over may carry that
// controller's status already, which is not ours to clear. It forgets the Ingresses that are
// gone, clear, or carry another status; a follower clears none itself.
func (c *controller) clearLeft(ctx context.Context, want []networkingv1.IngressLoadBalancerIngress) {
	s := &c.status
	for key := range s.left {
		ns, name, _ := strings.Cut(key, "/")
		ing, err := c.ingresses.Ingresses(ns).Get(name)
		if err != nil { // deleted
			delete(s.left, key)
			continue
		}
		cur := ing.Status.LoadBalancer.Ingress
		if len(cur) == 0 || want == nil || !equality.Semantic.DeepEqual(cur, want) {
			delete(s.left, key)
			continue
		}
		if !s.elector.Leading() {
			continue
		}
		if c.updateStatus(ctx, ing, nil) {
			c.logger.Info("cleared the status of an Ingress that left the class", "ingress", key)
			delete(s.left, key)
		}
	}
}

// updateStatus writes lb as the status.loadBalancer.ingress of ing and reports whether the
// write succeeded.
func (c *controller) updateStatus(ctx context.Context, ing *networkingv1.Ingress, lb []networkingv1.IngressLoadBalancerIngress) bool {
	ing = ing.DeepCopy()
	ing.Status.LoadBalancer.Ingress = lb
	uctx, cancel := context.WithTimeout(ctx, apiTimeout)
	defer cancel()
	opts := metav1.UpdateOptions{FieldManager: c.status.elector.fieldManager()}
	if _, err := c.client.NetworkingV1().Ingresses(ing.Namespace).UpdateStatus(uctx, ing, opts); err != nil {
		// A conflict means a newer version is on its way to the informer, and with it
		// another rebuild that retries.
		c.logger.Warn("update ingress status", "ingress", ing.Namespace+"/"+ing.Name, "err", err)
		return false
	}
	return true
}

// publishAddresses returns the addresses to publish: -publish-address, else the load
// balancer addresses, external IPs or cluster IP of -publish-service; nil when neither is set.
func (c *controller) publishAddresses() ([]networkingv1.IngressLoadBalancerIngress, error) {
	var addrs []string
	switch {
	case c.cfg.PublishAddress != "":
		addrs = strings.Split(c.cfg.PublishAddress, ",")
	case c.cfg.PublishService != "":
		ns, name, ok := strings.Cut(c.cfg.PublishService, "/")
		if !ok {
			return nil, fmt.Errorf("-publish-service %q: want namespace/name", c.cfg.PublishService)
		}
		svc, err := c.services.Services(ns).Get(name)
		if err != nil {
			return nil, fmt.Errorf("-publish-service %s: %w", c.cfg.PublishService, err)
		}
		for _, lb := range svc.Status.LoadBalancer.Ingress {
			addrs = append(addrs, cmp.Or(lb.IP, lb.Hostname))
		}
		if len(addrs) == 0 {
			addrs = svc.Spec.ExternalIPs
		}
		if len(addrs) == 0 && svc.Spec.ClusterIP != "" && svc.Spec.ClusterIP != corev1.ClusterIPNone {
			addrs = []string{svc.Spec.ClusterIP}
		}
	default:
		return nil, nil
	}
	out := make([]networkingv1.IngressLoadBalancerIngress, 0, len(addrs))
	for _, a := range addrs {
		a = strings.TrimSpace(a)
		if a == "" {
			continue
		}
		if _, err := netip.ParseAddr(a); err == nil {
			out = append(out, networkingv1.IngressLoadBalancerIngress{IP: a})
		} else {
			out = append(out, networkingv1.IngressLoadBalancerIngress{Hostname: a})
		}
	}
	return out, nil
}
