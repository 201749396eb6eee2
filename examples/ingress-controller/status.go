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
)

// apiTimeout bounds each status write and event, so that a slow API server delays the next
// rebuild by at most this much.
const apiTimeout = 5 * time.Second

// reportInvalid logs why an Ingress was refused and, once per distinct error, records a
// Warning Event on it so that `kubectl describe ingress` shows the reason.
func (c *controller) reportInvalid(ctx context.Context, ing *networkingv1.Ingress, err error) {
	key := ing.Namespace + "/" + ing.Name
	msg := err.Error()
	if c.lastErr[key] == msg {
		return
	}
	c.lastErr[key] = msg
	kept := c.lastGood[key] != nil
	c.logger.Error("invalid ingress", "ingress", key, "err", err, "keeping_last_good_config", kept)
	if kept {
		msg += " (the last valid configuration stays in effect)"
	}
	now := metav1.NewTime(time.Now())
	ev := &corev1.Event{
		ObjectMeta: metav1.ObjectMeta{GenerateName: ing.Name + ".", Namespace: ing.Namespace},
		InvolvedObject: corev1.ObjectReference{
			Kind: "Ingress", APIVersion: "networking.k8s.io/v1", Namespace: ing.Namespace,
			Name: ing.Name, UID: ing.UID, ResourceVersion: ing.ResourceVersion,
		},
		Reason:         "InvalidConfiguration",
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
// controller is reached at, writing only those that differ.
func (c *controller) writeStatus(ctx context.Context, ics []*ingressConfig) {
	want, err := c.publishAddresses()
	if err != nil {
		c.logger.Warn("publish address", "err", err)
		return
	}
	if want == nil {
		return // nothing to publish: leave statuses to whoever set them
	}
	for _, ic := range ics {
		if equality.Semantic.DeepEqual(ic.ing.Status.LoadBalancer.Ingress, want) {
			continue
		}
		ing := ic.ing.DeepCopy()
		ing.Status.LoadBalancer.Ingress = want
		uctx, cancel := context.WithTimeout(ctx, apiTimeout)
		_, err := c.client.NetworkingV1().Ingresses(ing.Namespace).UpdateStatus(uctx, ing, metav1.UpdateOptions{})
		cancel()
		if err != nil {
			// A conflict means a newer version is on its way to the informer, and with it
			// another rebuild that retries.
			c.logger.Warn("update ingress status", "ingress", ic.key(), "err", err)
		}
	}
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
