package serving

import (
	"net"
	"sync"
	"sync/atomic"
)

// Tracker holds what a server's Shutdown and Close act on: its listeners, its connections,
// and whether it is closing. Create it with NewTracker.
type Tracker[C comparable] struct {
	closing atomic.Bool

	mu        sync.Mutex
	listeners map[*net.Listener]struct{}
	conns     map[C]struct{}
	stopped   chan struct{} // closed when the last connection is removed, once closing
}

// NewTracker returns an empty Tracker.
func NewTracker[C comparable]() *Tracker[C] {
	return &Tracker[C]{listeners: make(map[*net.Listener]struct{}), conns: make(map[C]struct{})}
}

// Closing reports whether Close was called.
func (t *Tracker[C]) Closing() bool { return t.closing.Load() }

// AddListener adds ln, unless the server is closing: then it reports false.
func (t *Tracker[C]) AddListener(ln *net.Listener) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closing.Load() {
		return false
	}
	t.listeners[ln] = struct{}{}
	return true
}

// RemoveListener removes ln.
func (t *Tracker[C]) RemoveListener(ln *net.Listener) {
	t.mu.Lock()
	defer t.mu.Unlock()
	delete(t.listeners, ln)
}

// AddConn adds c, unless the server is closing: then it reports false.
func (t *Tracker[C]) AddConn(c C) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closing.Load() {
		return false
	}
	t.conns[c] = struct{}{}
	return true
}

// RemoveConn removes c; the last one removed after Close ends the wait Close returned.
func (t *Tracker[C]) RemoveConn(c C) {
	t.mu.Lock()
	defer t.mu.Unlock()
	delete(t.conns, c)
	if len(t.conns) == 0 && t.stopped != nil {
		close(t.stopped)
		t.stopped = nil
	}
}

// Each calls f for every connection, holding the Tracker's lock: f must not call it back.
func (t *Tracker[C]) Each(f func(C)) {
	t.mu.Lock()
	defer t.mu.Unlock()
	for c := range t.conns {
		f(c)
	}
}

// Close marks the server closing, closes its listeners and calls each, if not nil, for every
// connection, holding the lock. It returns a channel closed once the last connection is
// removed (nil when none is left) and the first error closing a listener.
func (t *Tracker[C]) Close(each func(C)) (stopped <-chan struct{}, err error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.closing.Store(true)
	for ln := range t.listeners {
		if e := (*ln).Close(); e != nil && err == nil {
			err = e
		}
	}
	if each != nil {
		for c := range t.conns {
			each(c)
		}
	}
	if len(t.conns) > 0 {
		if t.stopped == nil {
			t.stopped = make(chan struct{})
		}
		return t.stopped, err
	}
	return nil, err
}
