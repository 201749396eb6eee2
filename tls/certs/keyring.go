package certs

import (
	"cmp"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
)

// ErrNoCertificate is returned (wrapped) by [Keyring.GetCertificate] when no certificate matches
// the server name and the keyring has no default.
var ErrNoCertificate = errors.New("certs: no certificate")

// maxNameLen is the longest DNS name (RFC 1035 §2.3.4); longer SNI values cannot match.
const maxNameLen = 253

// Keyring holds server certificates under caller-chosen keys and picks one per handshake by the
// client's server name (SNI).
//
// A certificate serves every DNS name in its subject alternative names (its common name only when
// it has none). Names match case-insensitively, and a trailing dot on the server name is
// ignored. A wildcard name "*.example.com" matches exactly one extra label: "a.example.com", not
// "example.com" or "a.b.example.com". An exact name wins over a wildcard. When several
// certificates claim one name, the one that expires last wins, then the smaller key, so that
// during a rotation the fresher certificate is served whatever order the sources report in.
// When the server name is missing or matches nothing, the default certificate is served: the
// one named by [Keyring.SetDefault] or, until that is called, the certificate stored first, as
// crypto/tls serves the first of Config.Certificates. So a keyring filled by one source serves
// clients without SNI with no further setup.
//
// Writers (Set, Update, Delete, SetDefault) rebuild an immutable index and swap it in
// atomically; [Keyring.Certificate] and [Keyring.GetCertificate] read it without locks or
// allocation, so a rotation takes effect on the next handshake and never blocks one.
//
// The zero value is an empty keyring ready to use. A Keyring must not be copied after first use.
type Keyring struct {
	// Hooks receive the keyring's events (see [Hooks]). Set them before the keyring is first
	// used; [ServerConfig] reads Hooks.Handshake when it builds a config.
	Hooks Hooks

	index atomic.Pointer[index]

	// mu serializes writers and protects the fields below.
	mu      sync.Mutex
	entries map[string]*entry
	next    uint64 // the seq of the next key stored
	// chosen records that SetDefault was called; defaultKey is then the default's key, and
	// "" means none. Otherwise the entry with the lowest seq is the default.
	chosen     bool
	defaultKey string
}

// entry is one stored certificate with the names it serves, lower-cased.
type entry struct {
	key   string
	cert  *tls.Certificate
	names []string
	seq   uint64 // when key was stored: kept when its certificate is replaced
}

// index is the immutable lookup structure the handshake path reads.
type index struct {
	exact    map[string]*tls.Certificate
	wildcard map[string]*tls.Certificate // "*.example.com" is stored under "example.com"
	def      *tls.Certificate
}

// Set stores cert under key, replacing any certificate stored there. The certificate must have
// a private key and a leaf; if cert.Leaf is nil it is parsed from cert.Certificate[0] (and
// cert is modified to keep it).
func (s *Keyring) Set(key string, cert *tls.Certificate) error {
	return s.Update(map[string]*tls.Certificate{key: cert})
}

// Delete removes the certificate stored under key, if any.
func (s *Keyring) Delete(key string) {
	_ = s.Update(map[string]*tls.Certificate{key: nil})
}

// Update applies several changes at once and rebuilds the index once: each key is set to its
// certificate, or deleted when the certificate is nil. Sources that report many certificates
// (an informer's initial list) use it so that n certificates cost one rebuild, not n.
//
// Keys new to the keyring are stored in sorted order, which decides which of them becomes the
// default when none has been chosen (see [Keyring.SetDefault]).
//
// If any certificate is unusable, Update returns an error naming its key and applies the other
// changes; the key keeps its previous certificate.
func (s *Keyring) Update(changes map[string]*tls.Certificate) error {
	return s.update(slices.Sorted(maps.Keys(changes)), changes)
}

// update is Update storing the keys of changes in the given order, which lists each key of
// changes at least once.
func (s *Keyring) update(order []string, changes map[string]*tls.Certificate) error {
	var errs []error
	var events []LoadEvent                            // reported after the lock is released
	prepared := make(map[string]*entry, len(changes)) // nil: delete; absent: unusable
	for key, cert := range changes {
		if cert == nil {
			prepared[key] = nil
			continue
		}
		e, err := newEntry(key, cert)
		if err != nil {
			errs = append(errs, err)
			if s.Hooks.Load != nil {
				events = append(events, LoadEvent{Key: key, Err: err})
			}
			continue
		}
		prepared[key] = e
	}

	s.mu.Lock()
	defer func() {
		s.mu.Unlock()
		for _, ev := range events {
			s.Hooks.Load(ev)
		}
	}()
	if s.entries == nil {
		s.entries = make(map[string]*entry)
	}
	for _, key := range order {
		e, ok := prepared[key]
		switch {
		case !ok:
		case e == nil:
			if _, held := s.entries[key]; held && s.Hooks.Load != nil {
				events = append(events, LoadEvent{Key: key, Removed: true})
			}
			delete(s.entries, key)
		default:
			if s.Hooks.Load != nil {
				events = append(events, LoadEvent{Key: key, Names: e.names, NotAfter: e.cert.Leaf.NotAfter})
			}
			if old := s.entries[key]; old != nil {
				e.seq = old.seq
			} else {
				e.seq = s.next
				s.next++
			}
			s.entries[key] = e
		}
	}
	s.rebuildLocked()
	return errors.Join(errs...)
}

// SetDefault names the key whose certificate is served when the client sends no server name
// or one that no certificate matches.
//
// Until SetDefault is called, the default is the certificate stored first: the key that has
// been in the keyring longest, which keeps its place when its certificate is replaced. When
// that key is deleted, the next oldest takes over, so there is a default as long as the
// keyring holds a certificate. Keys new to the keyring in one [Keyring.Update] are stored in
// sorted order; [Files] stores its KeyPairs in their order, so its first pair that loads is the
// default.
//
// Once SetDefault is called, its key alone is the default. The key need not be stored yet: a
// default can be named before its source has loaded it. While no certificate is stored under
// it, and always when the key is empty, there is no default: handshakes without a server name
// or for unknown names fail with [ErrNoCertificate].
func (s *Keyring) SetDefault(key string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.chosen = true
	s.defaultKey = key
	s.rebuildLocked()
}

// Keys returns the keys stored, in the order they were stored: unless SetDefault has been
// called, the first is the default's.
func (s *Keyring) Keys() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	es := slices.SortedFunc(maps.Values(s.entries), func(a, b *entry) int { return cmp.Compare(a.seq, b.seq) })
	keys := make([]string, len(es))
	for i, e := range es {
		keys[i] = e.key
	}
	return keys
}

// Get returns the certificate stored under key, or nil.
func (s *Keyring) Get(key string) *tls.Certificate {
	s.mu.Lock()
	defer s.mu.Unlock()
	if e := s.entries[key]; e != nil {
		return e.cert
	}
	return nil
}

// Certificate returns the certificate for serverName: an exact match, else a wildcard match,
// else the default certificate, else nil. It takes no lock and does not allocate.
func (s *Keyring) Certificate(serverName string) *tls.Certificate {
	idx := s.index.Load()
	if idx == nil {
		return nil
	}
	if c := idx.lookup(serverName); c != nil {
		return c
	}
	return idx.def
}

// GetCertificate picks the certificate for a handshake by its server name. It has the
// signature of [crypto/tls.Config.GetCertificate]; [ServerConfig] installs it.
//
// It returns an error wrapping [ErrNoCertificate] when nothing matches and there is no default
// (the keyring is empty, or SetDefault named a key not stored), so that the handshake fails
// with an alert.
func (s *Keyring) GetCertificate(hello *tls.ClientHelloInfo) (*tls.Certificate, error) {
	if c := s.Certificate(hello.ServerName); c != nil {
		return c, nil
	}
	err := fmt.Errorf("%w for server name %q", ErrNoCertificate, hello.ServerName)
	if s.Hooks.Handshake != nil {
		s.Hooks.Handshake(HandshakeEvent{ServerName: hello.ServerName, Err: err})
	}
	return nil, err
}

// lookup finds name among exact and wildcard names. It lower-cases into a stack buffer and
// indexes the maps with string(buf[:n]), which the compiler turns into a lookup without
// allocating.
func (idx *index) lookup(name string) *tls.Certificate {
	for len(name) > 0 && name[len(name)-1] == '.' {
		name = name[:len(name)-1]
	}
	if name == "" || len(name) > maxNameLen {
		return nil
	}
	var buf [maxNameLen]byte
	b := buf[:len(name)]
	for i := 0; i < len(name); i++ {
		c := name[i]
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		b[i] = c
	}
	if c := idx.exact[string(b)]; c != nil {
		return c
	}
	// A wildcard covers one whole label: the part before the first dot must be non-empty and
	// what follows must itself be a name.
	for i, c := range b {
		if c == '.' {
			if i == 0 || i == len(b)-1 {
				return nil
			}
			return idx.wildcard[string(b[i+1:])]
		}
	}
	return nil
}

// rebuildLocked builds a fresh index from s.entries and publishes it. s.mu must be held.
func (s *Keyring) rebuildLocked() {
	idx := &index{
		exact:    make(map[string]*tls.Certificate),
		wildcard: make(map[string]*tls.Certificate),
	}
	winner := make(map[string]*entry) // which entry holds each name
	var first *entry                  // the oldest entry
	for _, e := range s.entries {
		if first == nil || e.seq < first.seq {
			first = e
		}
		for _, name := range e.names {
			if prev := winner[name]; prev != nil && !better(e, prev) {
				continue
			}
			winner[name] = e
			if rest, ok := strings.CutPrefix(name, "*."); ok {
				idx.wildcard[rest] = e.cert
			} else {
				idx.exact[name] = e.cert
			}
		}
	}
	switch {
	case s.chosen:
		if e := s.entries[s.defaultKey]; e != nil {
			idx.def = e.cert
		}
	case first != nil:
		idx.def = first.cert
	}
	s.index.Store(idx)
}

// replaceIf stores next under key only if key still holds prev, so that a staple fetched for
// a certificate never overwrites a rotation that happened meanwhile.
func (s *Keyring) replaceIf(key string, prev, next *tls.Certificate) bool {
	e, err := newEntry(key, next)
	if err != nil {
		return false
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	cur := s.entries[key]
	if cur == nil || cur.cert != prev {
		return false
	}
	e.seq = cur.seq
	s.entries[key] = e
	s.rebuildLocked()
	return true
}

// better reports whether a should serve a name that b also claims: the later expiry wins, then
// the smaller key, so the choice does not depend on map order.
func better(a, b *entry) bool {
	an, bn := a.cert.Leaf.NotAfter, b.cert.Leaf.NotAfter
	if !an.Equal(bn) {
		return an.After(bn)
	}
	return a.key < b.key
}

func newEntry(key string, cert *tls.Certificate) (*entry, error) {
	if len(cert.Certificate) == 0 {
		return nil, fmt.Errorf("certs: certificate %q: no certificate data", key)
	}
	if cert.PrivateKey == nil {
		return nil, fmt.Errorf("certs: certificate %q: no private key", key)
	}
	if cert.Leaf == nil {
		leaf, err := x509.ParseCertificate(cert.Certificate[0])
		if err != nil {
			return nil, fmt.Errorf("certs: certificate %q: %w", key, err)
		}
		cert.Leaf = leaf
	}
	names := cert.Leaf.DNSNames
	if len(names) == 0 && cert.Leaf.Subject.CommonName != "" {
		names = []string{cert.Leaf.Subject.CommonName}
	}
	e := &entry{key: key, cert: cert}
	for _, n := range names {
		if n, ok := normalizeName(n); ok {
			e.names = append(e.names, n)
		}
	}
	return e, nil
}

// normalizeName lower-cases a certificate name. It rejects names no client would accept
// (crypto/x509 agrees): empty ones, ones with a trailing dot or an empty label, and wildcards
// other than a whole first label.
func normalizeName(n string) (string, bool) {
	n = strings.ToLower(n)
	if n == "" || len(n) > maxNameLen || strings.HasSuffix(n, ".") || strings.Contains(n, "..") {
		return "", false
	}
	if rest, ok := strings.CutPrefix(n, "*."); ok {
		return n, rest != "" && !strings.Contains(rest, "*") && !strings.HasPrefix(rest, ".")
	}
	return n, !strings.Contains(n, "*")
}
