package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/client-go/tools/leaderelection"
	"k8s.io/client-go/tools/leaderelection/resourcelock"
)

// elector runs client-go leader election on a Lease so that, of several replicas that all
// serve traffic, exactly one writes Ingress status and Events: were each to write the address
// it publishes, replicas with different addresses would overwrite each other forever.
//
// A replica that loses the Lease keeps serving and campaigns again. Leading reports false as
// soon as the term ends (the renew deadline passed, or Run's ctx ended), which is before
// another replica can acquire the Lease: a lease outlives the renew deadline.
type elector struct {
	lec      leaderelection.LeaderElectionConfig
	identity string
	onLead   func() // called when a term starts, so that the new leader writes at once
	logger   *slog.Logger

	// mu protects term and lead: lead is the context of term number term, or nil before the
	// first term. Terms are numbered so that a late OnStartedLeading of an ended term cannot
	// overwrite a newer one.
	mu   sync.Mutex
	term int
	lead context.Context
}

// newElector validates the election settings of cfg, naming the flag at fault, and returns
// an elector on the Lease cfg.ElectionID in cfg.ElectionNamespace (or their defaults).
func newElector(cfg *config, client kubernetes.Interface, onLead func()) (*elector, error) {
	var errs []error
	if cfg.LeaseDuration <= 0 || cfg.RenewDeadline <= 0 || cfg.RetryPeriod <= 0 {
		errs = append(errs, fmt.Errorf("-lease-duration (%v), -renew-deadline (%v) and -retry-period (%v) must be > 0",
			cfg.LeaseDuration, cfg.RenewDeadline, cfg.RetryPeriod))
	}
	if cfg.RenewDeadline >= cfg.LeaseDuration {
		errs = append(errs, fmt.Errorf("-renew-deadline (%v) must be shorter than -lease-duration (%v), so that a leader steps down before another can take over",
			cfg.RenewDeadline, cfg.LeaseDuration))
	}
	if limit := time.Duration(leaderelection.JitterFactor * float64(cfg.RetryPeriod)); cfg.RenewDeadline <= limit {
		errs = append(errs, fmt.Errorf("-renew-deadline (%v) must be longer than %v × -retry-period (%v)",
			cfg.RenewDeadline, leaderelection.JitterFactor, cfg.RetryPeriod))
	}
	ns, err := electionNamespace(cfg)
	errs = append(errs, err)
	id, err := electionIdentity(cfg)
	errs = append(errs, err)
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	name := cfg.ElectionID
	if name == "" {
		name = "sluice-ingress-" + cfg.Class
	}
	e := &elector{identity: id, onLead: onLead, logger: cfg.Logger}
	e.lec = leaderelection.LeaderElectionConfig{
		Lock: &resourcelock.LeaseLock{
			LeaseMeta:  metav1.ObjectMeta{Namespace: ns, Name: name},
			Client:     client.CoordinationV1(),
			LockConfig: resourcelock.ResourceLockConfig{Identity: id},
		},
		LeaseDuration: cfg.LeaseDuration,
		RenewDeadline: cfg.RenewDeadline,
		RetryPeriod:   cfg.RetryPeriod,
		// A replica that stops (SIGTERM) hands the Lease over at once rather than after
		// -lease-duration. Run stops the election before anything else, and status writes
		// are idempotent, so a write still in flight writes what the next leader would.
		ReleaseOnCancel: true,
		Name:            ns + "/" + name,
	}
	return e, nil
}

// electionNamespace returns -election-namespace, else the namespace of the kubeconfig's
// context or, in a pod, the pod's own namespace (POD_NAMESPACE, else the ServiceAccount's).
func electionNamespace(cfg *config) (string, error) {
	if cfg.ElectionNamespace != "" {
		return cfg.ElectionNamespace, nil
	}
	rules := &clientcmd.ClientConfigLoadingRules{ExplicitPath: cfg.Kubeconfig}
	ns, _, err := clientcmd.NewNonInteractiveDeferredLoadingClientConfig(rules, &clientcmd.ConfigOverrides{}).Namespace()
	if err != nil || ns == "" {
		return "", fmt.Errorf("-election-namespace is empty and no namespace comes from the kubeconfig or the pod (%v): set it, or -election=false", err)
	}
	return ns, nil
}

// electionIdentity returns -election-identity, else POD_NAME, else the host name (a pod's
// name unless it runs on the host's network, where it is the node's, unique as well).
func electionIdentity(cfg *config) (string, error) {
	if cfg.ElectionIdentity != "" {
		return cfg.ElectionIdentity, nil
	}
	if name := os.Getenv("POD_NAME"); name != "" {
		return name, nil
	}
	name, err := os.Hostname()
	if err != nil || name == "" {
		return "", fmt.Errorf("-election-identity is empty and the host name is unknown (%v): set it", err)
	}
	return name, nil
}

// Run campaigns for the Lease until ctx ends, and campaigns again after each term, since the
// replica keeps serving when it loses the Lease. It returns ctx.Err() after releasing the
// Lease if it held it.
func (e *elector) Run(ctx context.Context) error {
	for {
		e.mu.Lock()
		e.term++
		term := e.term
		e.mu.Unlock()
		lec := e.lec
		lec.Callbacks = leaderelection.LeaderCallbacks{
			OnStartedLeading: func(lead context.Context) {
				e.mu.Lock()
				if term == e.term {
					e.lead = lead
				}
				e.mu.Unlock()
				e.logger.Info("leading: this replica writes Ingress status", "identity", e.identity, "lease", lec.Name)
				e.onLead()
			},
			OnStoppedLeading: func() {},
			OnNewLeader: func(id string) {
				if id != e.identity {
					e.logger.Info("following", "leader", id, "lease", lec.Name)
				}
			},
		}
		le, err := leaderelection.NewLeaderElector(lec)
		if err != nil {
			return err // newElector checked the settings; this is a bug
		}
		// Run returns when ctx ends or the Lease could not be renewed; either way it ends
		// the term's context first, so Leading is false from then on.
		le.Run(ctx)
		if ctx.Err() != nil {
			return ctx.Err()
		}
		e.logger.Warn("lost the Lease; campaigning again", "identity", e.identity, "lease", lec.Name)
	}
}

// Leading reports whether this replica writes Ingress status and Events: true while it holds
// the Lease, and always for a nil elector (no election: a single replica).
func (e *elector) Leading() bool {
	if e == nil {
		return true
	}
	e.mu.Lock()
	lead := e.lead
	e.mu.Unlock()
	return lead != nil && lead.Err() == nil
}

// fieldManager is the field manager of status writes: the identity, so that the
// managedFields of an Ingress show which replica wrote its status; empty (the client's
// default) without election. The API server allows 128 bytes.
func (e *elector) fieldManager() string {
	if e == nil {
		return ""
	}
	return e.identity[:min(len(e.identity), 128)]
}
