// Package secrets serves certificates from Kubernetes Secrets of type kubernetes.io/tls,
// kept current through a client-go informer.
//
// A [Watcher] watches one namespace, selects Secrets by name or label, parses each one's
// tls.crt and tls.key, and writes them into a [certs.Keyring] under the key
// "namespace/name". When cert-manager (or anyone) renews a Secret, the informer delivers the
// update and the renewed certificate is served on the next handshake. A Secret that no longer
// parses is reported and its previous certificate keeps serving; a deleted Secret, or one that
// stops matching the selection, is removed from the keyring.
//
// Events are coalesced: the informer's handlers only record what changed, and Run applies the
// pending changes to the keyring in one batch, so the initial list of thousands of Secrets costs
// one index rebuild rather than one per Secret.
//
// RBAC: the embedder's service account needs get, list and watch on secrets in the namespace.
package secrets

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"sync"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/informers"
	k8s "k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"

	"github.com/sluiceproxy/sluice/tls/certs"
)

// Options configures [New].
type Options struct {
	// Namespace is the namespace whose Secrets are served. Required.
	Namespace string

	// Names, if not empty, lists the Secrets to serve; others are ignored. Empty means every
	// kubernetes.io/tls Secret that matches Selector.
	Names []string

	// Selector, if not nil, restricts the Secrets served to those whose labels match.
	Selector labels.Selector

	// Default, if not empty, names the Secret whose certificate is served to clients that send
	// no server name or an unknown one (see [certs.Keyring.SetDefault]). Empty leaves the
	// keyring's own choice, the certificate stored first: Run stores the initial list in one
	// batch, in sorted order, so on a keyring no other source fills that is the Secret whose
	// name sorts first.
	Default string

	// CAs and CASecret, if both set, keep CAs loaded from the ca.crt key of the named Secret
	// (cert-manager fills it in), for client-certificate or upstream verification. The
	// Secret need not be of type kubernetes.io/tls nor match Names or Selector.
	CAs      *certs.CAPool
	CASecret string

	// Factory, if not nil, is the embedder's informer factory to take the Secret informer
	// from, so that one watch serves every consumer. It must cover Namespace. New registers
	// the Secret informer with it, so start the factory after New, as usual; Run starts the
	// informer itself, bound to Run's context, only if nobody has. Run never shuts the
	// factory down. If nil, Run builds its own factory, scoped to Namespace and to Selector
	// or the single name, and shuts it down on return.
	Factory informers.SharedInformerFactory

	// OnError, if not nil, is called with every Secret that cannot be served, without any
	// lock held. If nil, errors are logged to Logger.
	OnError func(error)
	// Logger receives errors and rotations. Nil means slog.Default().
	Logger *slog.Logger
}

// Watcher keeps a Keyring filled from Kubernetes Secrets. Create it with [New] and call Run once.
type Watcher struct {
	client k8s.Interface
	ring   *certs.Keyring
	opts   Options
	names  map[string]bool

	signal chan struct{} // capacity 1: "pending has changes"
	synced chan struct{} // closed once the initial list is in the keyring

	// mu protects pending and served.
	mu sync.Mutex
	// pending maps keyring keys to their new certificate, nil meaning delete.
	pending map[string]*tls.Certificate
	// served holds the keys this source has put in the keyring, so that a Secret that stops
	// matching is removed and a foreign key is never touched.
	served map[string]bool
}

// New returns a Watcher that writes certificates into ring. client may be nil when
// opts.Factory is set.
func New(client k8s.Interface, ring *certs.Keyring, opts Options) (*Watcher, error) {
	switch {
	case ring == nil:
		return nil, errors.New("secrets: keyring is nil")
	case client == nil && opts.Factory == nil:
		return nil, errors.New("secrets: client is nil and Options.Factory is not set")
	case opts.Namespace == "":
		return nil, errors.New("secrets: Options.Namespace is required")
	case (opts.CAs == nil) != (opts.CASecret == ""):
		return nil, errors.New("secrets: Options.CAs and Options.CASecret must be set together")
	}
	s := &Watcher{
		client:  client,
		ring:    ring,
		opts:    opts,
		signal:  make(chan struct{}, 1),
		synced:  make(chan struct{}),
		pending: make(map[string]*tls.Certificate),
		served:  make(map[string]bool),
	}
	if len(opts.Names) > 0 {
		s.names = make(map[string]bool, len(opts.Names))
		for _, n := range opts.Names {
			s.names[n] = true
		}
	}
	if opts.Default != "" {
		ring.SetDefault(opts.Namespace + "/" + opts.Default)
	}
	if opts.Factory != nil {
		// Register the informer now (this starts nothing) so the embedder's Start covers it.
		opts.Factory.Core().V1().Secrets().Informer()
	}
	return s, nil
}

// Synced returns a channel that is closed once Run has applied the initial list of Secrets to
// the keyring. Servers wait on it so that the first clients are not refused for lack of a
// certificate.
func (s *Watcher) Synced() <-chan struct{} { return s.synced }

// HasSynced reports whether Run has applied the initial list of Secrets to the keyring.
func (s *Watcher) HasSynced() bool {
	select {
	case <-s.synced:
		return true
	default:
		return false
	}
}

// Run watches Secrets and applies changes to the keyring until ctx is done, then returns
// ctx.Err(). Changes seen before the informer's initial list completes are applied together.
func (s *Watcher) Run(ctx context.Context) error {
	factory := s.opts.Factory
	if factory == nil {
		factory = informers.NewSharedInformerFactoryWithOptions(s.client, 0,
			informers.WithNamespace(s.opts.Namespace),
			informers.WithTweakListOptions(s.tweak))
		defer factory.Shutdown()
	}
	informer := factory.Core().V1().Secrets().Informer()
	reg, err := informer.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc: s.onAdd,
		UpdateFunc: func(oldObj, newObj any) {
			o, ok1 := oldObj.(*corev1.Secret)
			n, ok2 := newObj.(*corev1.Secret)
			if ok1 && ok2 && o.ResourceVersion != "" && o.ResourceVersion == n.ResourceVersion {
				return // a resync: nothing changed
			}
			s.onAdd(newObj)
		},
		DeleteFunc: s.onDelete,
	})
	if err != nil {
		return fmt.Errorf("secrets: add event handler: %w", err)
	}
	defer func() { _ = informer.RemoveEventHandler(reg) }()

	factory.Start(ctx.Done())
	if !cache.WaitForCacheSync(ctx.Done(), reg.HasSynced) {
		return ctx.Err()
	}
	s.flush()
	if !s.HasSynced() {
		close(s.synced)
	}
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-s.signal:
			s.flush()
		}
	}
}

// tweak narrows the list and watch of a factory Run owns.
func (s *Watcher) tweak(o *metav1.ListOptions) {
	if s.opts.Selector != nil && s.opts.CASecret == "" {
		o.LabelSelector = s.opts.Selector.String()
	}
	if len(s.opts.Names) == 1 && s.opts.CASecret == "" {
		o.FieldSelector = fields.OneTermEqualSelector("metadata.name", s.opts.Names[0]).String()
	}
}

// wanted reports whether sec should be served as a certificate.
func (s *Watcher) wanted(sec *corev1.Secret) bool {
	if sec.Namespace != s.opts.Namespace {
		return false
	}
	if s.names != nil && !s.names[sec.Name] {
		return false
	}
	if s.opts.Selector != nil && !s.opts.Selector.Matches(labels.Set(sec.Labels)) {
		return false
	}
	return true
}

func (s *Watcher) onAdd(obj any) {
	sec, ok := obj.(*corev1.Secret)
	if !ok {
		return
	}
	if s.opts.CASecret != "" && sec.Namespace == s.opts.Namespace && sec.Name == s.opts.CASecret {
		s.loadCAs(sec)
	}
	key := sec.Namespace + "/" + sec.Name
	if !s.wanted(sec) {
		s.queue(key, nil) // it may have matched before a label change
		return
	}
	if sec.Type != corev1.SecretTypeTLS {
		s.report(fmt.Errorf("secrets: secret %s has type %q, want %q", key, sec.Type, corev1.SecretTypeTLS))
		return
	}
	cert, err := certs.ParseKeyPair(sec.Data[corev1.TLSCertKey], sec.Data[corev1.TLSPrivateKeyKey])
	if err != nil {
		s.report(fmt.Errorf("secrets: secret %s (keeping the previous certificate): %w", key, err))
		return
	}
	s.logger().Info("secrets: certificate from secret", "secret", key,
		"names", cert.Leaf.DNSNames, "not_after", cert.Leaf.NotAfter)
	s.queue(key, cert)
}

func (s *Watcher) onDelete(obj any) {
	if d, ok := obj.(cache.DeletedFinalStateUnknown); ok {
		obj = d.Obj
	}
	sec, ok := obj.(*corev1.Secret)
	if !ok {
		return
	}
	s.queue(sec.Namespace+"/"+sec.Name, nil)
}

func (s *Watcher) loadCAs(sec *corev1.Secret) {
	pool, err := certs.ParseCertPool(sec.Data["ca.crt"])
	if err != nil {
		s.report(fmt.Errorf("secrets: ca.crt of secret %s/%s (keeping the previous pool): %w", sec.Namespace, sec.Name, err))
		return
	}
	s.opts.CAs.Set(pool)
}

// queue records a change for the next flush and wakes Run.
func (s *Watcher) queue(key string, cert *tls.Certificate) {
	s.mu.Lock()
	if cert == nil && !s.served[key] {
		delete(s.pending, key) // never served, or its addition is still pending
		s.mu.Unlock()
		return
	}
	s.pending[key] = cert
	s.mu.Unlock()
	select {
	case s.signal <- struct{}{}:
	default: // Run is already due to flush
	}
}

// flush applies pending changes to the keyring in one batch.
func (s *Watcher) flush() {
	s.mu.Lock()
	changes := s.pending
	s.pending = make(map[string]*tls.Certificate)
	for key, cert := range changes {
		if cert == nil {
			delete(s.served, key)
		} else {
			s.served[key] = true
		}
	}
	s.mu.Unlock()
	if len(changes) == 0 {
		return
	}
	if err := s.ring.Update(changes); err != nil {
		s.report(err)
	}
}

func (s *Watcher) report(err error) {
	if s.opts.OnError != nil {
		s.opts.OnError(err)
		return
	}
	s.logger().Error("secrets: cannot serve secret", "err", err)
}

func (s *Watcher) logger() *slog.Logger {
	if s.opts.Logger != nil {
		return s.opts.Logger
	}
	return slog.Default()
}
