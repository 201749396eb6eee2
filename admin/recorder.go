package admin

import (
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Other is the name under which a Recorder counts the requests of routes or endpoints it has
// no room left to track apart (see RecorderOptions.MaxRoutes), so that totals stay right when
// names are many.
const Other = "(other)"

// latencyBounds are the upper bounds of the latency histogram's buckets, in microseconds; a
// last bucket takes everything slower. Roughly two buckets per doubling from 250µs to 10s:
// coarse, but a dashboard's p50 and p99 need the order of magnitude and the trend, not the
// third digit, and a fixed histogram is what keeps Record free of allocation and locks.
var latencyBounds = [...]int64{
	250, 500, 1_000, 2_000, 3_000, 5_000, 7_500, 10_000, 15_000, 25_000, 50_000, 75_000,
	100_000, 250_000, 500_000, 1_000_000, 2_500_000, 5_000_000, 10_000_000,
}

const numBuckets = len(latencyBounds) + 1

// RecorderOptions configures a Recorder. The zero value is usable: three minutes of history,
// at most 64 routes and 256 endpoints tracked apart.
type RecorderOptions struct {
	// Window is how much history is kept, in whole seconds. Zero means 3 minutes; it must
	// not be under 2s nor over 1h.
	Window time.Duration

	// MaxRoutes bounds the routes tracked apart. Requests of further routes are counted
	// under Other, until a tracked route has seen no request for a whole Window and makes
	// room. Zero means 64.
	MaxRoutes int

	// MaxEndpoints bounds the endpoints tracked apart, as MaxRoutes does routes. Zero means
	// 256.
	MaxEndpoints int

	// Now tells the time. Nil means time.Now. Tests set it to a fake clock.
	Now func() time.Time
}

// Recorder keeps rolling per-second counts of the requests it is told about: request rate,
// error rate (responses with a 5xx status) and latency percentiles (p50, p99), per route and
// per endpoint, for the last Window. Its memory is bounded: each tracked name holds one
// fixed-size slot per second of the window (about 100 bytes), and the number of names is
// capped.
//
// Record is meant for the hot path of every request: it takes no lock and allocates nothing
// once a name is known. A Recorder is safe for concurrent use; create it with NewRecorder.
type Recorder struct {
	window       int64 // seconds of history, the length of every series' ring
	maxRoutes    int
	maxEndpoints int
	now          func() time.Time

	routes, endpoints table
}

// table is one dimension of a Recorder: the series of routes or those of endpoints.
type table struct {
	max int

	// series is an immutable map, replaced whole (copy on write) when a name is added or
	// evicted, so that Record reads it with one atomic load and no lock.
	series atomic.Pointer[map[string]*series]

	mu        sync.Mutex // mu serializes the writers of series
	lastSweep int64      // the second of the last eviction scan, under mu
}

// series is the ring of one name's per-second slots.
type series struct {
	last  atomic.Int64 // the last second a request was recorded, for eviction
	mu    sync.Mutex   // mu serializes the reset of a slot when a new second begins in it
	slots []slot
}

// slot holds one second's counts. sec says which second: a slot whose sec is not the one
// asked about holds stale counts from a lap ago and reads as empty.
type slot struct {
	sec      atomic.Int64
	requests atomic.Uint32
	errors   atomic.Uint32
	latency  [numBuckets]atomic.Uint32
}

// NewRecorder returns a Recorder for opts. The error names the field that is wrong.
func NewRecorder(opts RecorderOptions) (*Recorder, error) {
	r := &Recorder{window: 180, maxRoutes: 64, maxEndpoints: 256, now: time.Now}
	if opts.Window != 0 {
		if opts.Window < 2*time.Second || opts.Window > time.Hour {
			return nil, fmt.Errorf("admin: Window must be between 2s and 1h, got %v", opts.Window)
		}
		r.window = int64(opts.Window / time.Second)
	}
	switch {
	case opts.MaxRoutes < 0:
		return nil, fmt.Errorf("admin: MaxRoutes must be ≥ 0, got %d", opts.MaxRoutes)
	case opts.MaxRoutes > 0:
		r.maxRoutes = opts.MaxRoutes
	}
	switch {
	case opts.MaxEndpoints < 0:
		return nil, fmt.Errorf("admin: MaxEndpoints must be ≥ 0, got %d", opts.MaxEndpoints)
	case opts.MaxEndpoints > 0:
		r.maxEndpoints = opts.MaxEndpoints
	}
	if opts.Now != nil {
		r.now = opts.Now
	}
	r.routes.max, r.endpoints.max = r.maxRoutes, r.maxEndpoints
	return r, nil
}

// Record counts one request: its route, the endpoint that answered it, its status and how long
// it took. An empty route or endpoint leaves that dimension out, so a per-request hook that
// knows only the route and a per-try Observer that knows only the endpoint can both feed one
// Recorder. A status of 500 to 599 counts as an error, and so does 0, which stands for a
// request that got no response at all. Safe for concurrent use; allocation-free once route and
// endpoint have been seen.
func (r *Recorder) Record(route, endpoint string, status int, d time.Duration) {
	sec := r.now().Unix()
	failed := status == 0 || (status >= 500 && status < 600)
	bucket := latencyBucket(d)
	if route != "" {
		r.routes.get(r, route, sec).add(r.window, sec, failed, bucket)
	}
	if endpoint != "" {
		r.endpoints.get(r, endpoint, sec).add(r.window, sec, failed, bucket)
	}
}

// latencyBucket returns the index of d's histogram bucket.
func latencyBucket(d time.Duration) int {
	us := d.Microseconds()
	for i, b := range latencyBounds {
		if us <= b {
			return i
		}
	}
	return len(latencyBounds)
}

// get returns the series of name, adding it when there is room and counting under Other when
// there is not.
func (t *table) get(r *Recorder, name string, sec int64) *series {
	if m := t.series.Load(); m != nil {
		if s, ok := (*m)[name]; ok {
			return s
		}
	}
	return t.add(r, name, sec)
}

// add is get's slow path: it copies the map with name added, evicting an idle name first when
// the table is full. A full table with nothing idle sends name to Other, and rescans at most
// once a second, so that a flood of new names costs a map lookup each, not a scan.
func (t *table) add(r *Recorder, name string, sec int64) *series {
	t.mu.Lock()
	defer t.mu.Unlock()
	var old map[string]*series
	if m := t.series.Load(); m != nil {
		old = *m
	}
	if s, ok := old[name]; ok {
		return s
	}
	named := len(old)
	if _, ok := old[Other]; ok {
		named--
	}
	var evict string
	if named >= t.max {
		if t.lastSweep == sec {
			return t.other(r, old)
		}
		t.lastSweep = sec
		for n, s := range old {
			if n != Other && sec-s.last.Load() >= r.window {
				evict = n
				break
			}
		}
		if evict == "" {
			return t.other(r, old)
		}
	}
	m := make(map[string]*series, len(old)+1)
	for n, s := range old {
		if n != evict {
			m[n] = s
		}
	}
	s := newSeries(r.window)
	m[name] = s
	t.series.Store(&m)
	return s
}

// other returns the Other series, adding it. t.mu is held.
func (t *table) other(r *Recorder, old map[string]*series) *series {
	if s, ok := old[Other]; ok {
		return s
	}
	m := make(map[string]*series, len(old)+1)
	for n, s := range old {
		m[n] = s
	}
	s := newSeries(r.window)
	m[Other] = s
	t.series.Store(&m)
	return s
}

func newSeries(window int64) *series {
	s := &series{slots: make([]slot, window)}
	for i := range s.slots {
		s.slots[i].sec.Store(-1)
	}
	return s
}

// add counts one request in second sec.
func (s *series) add(window, sec int64, failed bool, bucket int) {
	sl := &s.slots[sec%window]
	if cur := sl.sec.Load(); cur != sec {
		if cur > sec {
			return // a request that took so long to report that its slot was reused: drop it
		}
		// The first request of a new second clears what the slot held a lap ago. The lock
		// is taken once per second per name, not per request, and the second is published
		// only after the counts are zero, so a request that sees it counts from zero.
		s.mu.Lock()
		if sl.sec.Load() < sec {
			sl.requests.Store(0)
			sl.errors.Store(0)
			for i := range sl.latency {
				sl.latency[i].Store(0)
			}
			sl.sec.Store(sec)
		}
		s.mu.Unlock()
	}
	sl.requests.Add(1)
	if failed {
		sl.errors.Add(1)
	}
	sl.latency[bucket].Add(1)
	if s.last.Load() < sec {
		s.last.Store(sec)
	}
}

// Stats is a Recorder's history: one Series per tracked route and endpoint.
type Stats struct {
	// Routes and Endpoints are sorted by Name.
	Routes    []Series `json:"routes"`
	Endpoints []Series `json:"endpoints"`
}

// Series is the per-second history of one route or endpoint, as columns: element i of each
// slice is second Start+i, oldest first. The current second, still counting, is left out.
type Series struct {
	// Name is the route's name or the endpoint's address, or Other.
	Name string `json:"name"`
	// Start is the first second, in seconds since the Unix epoch.
	Start int64 `json:"start"`
	// Requests is the number of requests that ended in each second: the request rate.
	Requests []uint32 `json:"requests"`
	// Errors is the number of those that failed (5xx or no response).
	Errors []uint32 `json:"errors"`
	// P50 and P99 are the median and 99th-percentile latency of each second, in
	// milliseconds, estimated from a fixed histogram; 0 in a second without requests.
	P50 []float64 `json:"p50_ms"`
	P99 []float64 `json:"p99_ms"`
}

// Stats returns the full history: every completed second of the window.
func (r *Recorder) Stats() Stats {
	return r.stats(r.window - 1)
}

// stats returns the last n completed seconds of every series.
func (r *Recorder) stats(n int64) Stats {
	now := r.now().Unix()
	return Stats{
		Routes:    r.routes.stats(r.window, now, n),
		Endpoints: r.endpoints.stats(r.window, now, n),
	}
}

func (t *table) stats(window, now, n int64) []Series {
	m := t.series.Load()
	if m == nil {
		return []Series{}
	}
	out := make([]Series, 0, len(*m))
	for name, s := range *m {
		out = append(out, s.read(name, window, now, n))
	}
	slices.SortFunc(out, func(a, b Series) int { return strings.Compare(a.Name, b.Name) })
	return out
}

// read returns the n seconds before now.
func (s *series) read(name string, window, now, n int64) Series {
	if n > window-1 {
		n = window - 1
	}
	out := Series{
		Name:     name,
		Start:    now - n,
		Requests: make([]uint32, n),
		Errors:   make([]uint32, n),
		P50:      make([]float64, n),
		P99:      make([]float64, n),
	}
	var hist [numBuckets]uint32
	for i := range n {
		sec := now - n + i
		sl := &s.slots[sec%window]
		if sl.sec.Load() != sec {
			continue
		}
		out.Requests[i] = sl.requests.Load()
		out.Errors[i] = sl.errors.Load()
		for b := range hist {
			hist[b] = sl.latency[b].Load()
		}
		out.P50[i] = quantile(&hist, 0.50)
		out.P99[i] = quantile(&hist, 0.99)
	}
	return out
}

// quantile estimates the q-quantile of a histogram in milliseconds, interpolating linearly
// within the bucket it falls in. The last, unbounded bucket reads as its lower bound.
func quantile(hist *[numBuckets]uint32, q float64) float64 {
	var total uint64
	for _, c := range hist {
		total += uint64(c)
	}
	if total == 0 {
		return 0
	}
	rank := q * float64(total)
	var seen float64
	for b, c := range hist {
		if c == 0 {
			continue
		}
		if seen+float64(c) >= rank {
			if b == len(latencyBounds) {
				return float64(latencyBounds[b-1]) / 1000
			}
			lo := int64(0)
			if b > 0 {
				lo = latencyBounds[b-1]
			}
			hi := latencyBounds[b]
			frac := (rank - seen) / float64(c)
			return (float64(lo) + frac*float64(hi-lo)) / 1000
		}
		seen += float64(c)
	}
	return float64(latencyBounds[len(latencyBounds)-1]) / 1000
}
