package h2

import (
	"sync"
	"time"
)

// deadline calls fire once the moment it is set to passes. Handlers move their deadlines
// forward on every read and write (proxy.NewServer's guard does), so moving one later costs
// no timer operation: a timer that fires before the moment re-arms itself for what is left.
type deadline struct {
	fire func()

	mu      sync.Mutex
	at      time.Time // zero: none
	armed   time.Time // when the timer fires; zero if it is not armed
	timer   *time.Timer
	stopped bool
}

// set moves the deadline to t; zero means none.
func (d *deadline) set(t time.Time) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.stopped {
		return
	}
	d.at = t
	switch {
	case t.IsZero():
	case d.timer == nil:
		d.timer = time.AfterFunc(time.Until(t), d.expire)
		d.armed = t
	case d.armed.IsZero() || t.Before(d.armed):
		d.timer.Reset(time.Until(t))
		d.armed = t
	}
}

// passed reports whether the deadline is set and not after now.
func (d *deadline) passed(now time.Time) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	return !d.at.IsZero() && !now.Before(d.at)
}

func (d *deadline) expire() {
	d.mu.Lock()
	d.armed = time.Time{}
	if d.stopped || d.at.IsZero() {
		d.mu.Unlock()
		return
	}
	if left := time.Until(d.at); left > 0 {
		d.timer.Reset(left)
		d.armed = d.at
		d.mu.Unlock()
		return
	}
	d.mu.Unlock()
	d.fire()
}

// stop ends the deadline for good.
func (d *deadline) stop() {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.stopped = true
	if d.timer != nil {
		d.timer.Stop()
	}
}
