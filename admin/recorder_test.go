package admin_test

import (
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/sluiceproxy/sluice/admin"
)

// clock is a fake clock: it moves only when told.
type clock struct{ ns atomic.Int64 }

func newClock(sec int64) *clock {
	c := &clock{}
	c.ns.Store(sec * int64(time.Second))
	return c
}

func (c *clock) Now() time.Time          { return time.Unix(0, c.ns.Load()) }
func (c *clock) Advance(d time.Duration) { c.ns.Add(int64(d)) }

func newRecorder(t *testing.T, c *clock, opts admin.RecorderOptions) *admin.Recorder {
	t.Helper()
	opts.Now = c.Now
	r, err := admin.NewRecorder(opts)
	require.NoError(t, err)
	return r
}

// find returns the series called name.
func find(t *testing.T, series []admin.Series, name string) admin.Series {
	t.Helper()
	for _, s := range series {
		if s.Name == name {
			return s
		}
	}
	t.Fatalf("no series %q in %v", name, series)
	return admin.Series{}
}

// at returns the requests, errors, p50 and p99 of second sec.
func at(t *testing.T, s admin.Series, sec int64) (req, errs uint32, p50, p99 float64) {
	t.Helper()
	i := sec - s.Start
	require.True(t, i >= 0 && i < int64(len(s.Requests)), "second %d within the series [%d, %d)", sec, s.Start, s.Start+int64(len(s.Requests)))
	return s.Requests[i], s.Errors[i], s.P50[i], s.P99[i]
}

func TestRecorderCountsPerSecond(t *testing.T) {
	c := newClock(1000)
	r := newRecorder(t, c, admin.RecorderOptions{Window: 10 * time.Second})

	r.Record("api", "10.0.0.1:80", 200, time.Millisecond)
	r.Record("api", "10.0.0.1:80", 503, time.Millisecond)
	r.Record("api", "10.0.0.2:80", 0, time.Millisecond) // no response: an error
	r.Record("api", "", 404, time.Millisecond)          // a 4xx is not the proxy's error
	c.Advance(time.Second)
	r.Record("", "10.0.0.2:80", 200, time.Millisecond) // a try: the endpoint only

	c.Advance(time.Second) // second 1001 is complete now
	st := r.Stats()
	require.Len(t, st.Routes, 1)
	require.Len(t, st.Endpoints, 2)

	api := find(t, st.Routes, "api")
	assert.Len(t, api.Requests, 9, "a 10s window holds 9 completed seconds")
	assert.Equal(t, int64(1002-9), api.Start, "ending with the last completed second")
	req, errs, _, _ := at(t, api, 1000)
	assert.Equal(t, uint32(4), req, "route requests in second 1000")
	assert.Equal(t, uint32(2), errs, "a 503 and a request with no response are errors; a 404 is not")
	req, _, _, _ = at(t, api, 1001)
	assert.Zero(t, req, "the try recorded without a route is not counted for one")

	ep2 := find(t, st.Endpoints, "10.0.0.2:80")
	req, errs, _, _ = at(t, ep2, 1000)
	assert.Equal(t, [2]uint32{1, 1}, [2]uint32{req, errs})
	req, errs, _, _ = at(t, ep2, 1001)
	assert.Equal(t, [2]uint32{1, 0}, [2]uint32{req, errs})
	req, _, _, _ = at(t, ep2, 999)
	assert.Zero(t, req, "nothing before the first request")
}

// TestRecorderWindowRolls checks that a slot reused a window later starts from zero, and that
// seconds older than the window are gone.
func TestRecorderWindowRolls(t *testing.T) {
	c := newClock(1000)
	r := newRecorder(t, c, admin.RecorderOptions{Window: 10 * time.Second})
	for range 5 {
		r.Record("api", "", 200, time.Millisecond)
	}
	c.Advance(5 * time.Second)
	s := find(t, r.Stats().Routes, "api")
	req, _, _, _ := at(t, s, 1000)
	assert.Equal(t, uint32(5), req)

	c.Advance(5 * time.Second) // second 1010 uses second 1000's slot
	r.Record("api", "", 500, time.Millisecond)
	c.Advance(time.Second)
	s = find(t, r.Stats().Routes, "api")
	assert.Equal(t, int64(1002), s.Start, "second 1000 has left the window")
	req, errs, _, _ := at(t, s, 1010)
	assert.Equal(t, [2]uint32{1, 1}, [2]uint32{req, errs}, "the reused slot counts from zero")
	for sec := int64(1002); sec < 1010; sec++ {
		req, _, _, _ := at(t, s, sec)
		assert.Zero(t, req, "second %d saw no request", sec)
	}

	c.Advance(time.Hour) // long idle: every slot is stale
	s = find(t, r.Stats().Routes, "api")
	for i, n := range s.Requests {
		assert.Zero(t, n, "second %d after an hour's idleness", s.Start+int64(i))
	}
}

func TestRecorderLatencyPercentiles(t *testing.T) {
	tests := []struct {
		name           string
		fast, slow     int
		p50Min, p50Max float64 // milliseconds
		p99Min, p99Max float64
		fastD, slowD   time.Duration
	}{
		{name: "all fast", fast: 100, fastD: 800 * time.Microsecond, p50Min: 0.5, p50Max: 1, p99Min: 0.5, p99Max: 1},
		{name: "1% slow", fast: 99, slow: 1, fastD: 800 * time.Microsecond, slowD: 4 * time.Second,
			p50Min: 0.5, p50Max: 1, p99Min: 0.5, p99Max: 1},
		{name: "2% slow", fast: 98, slow: 2, fastD: 800 * time.Microsecond, slowD: 4 * time.Second,
			p50Min: 0.5, p50Max: 1, p99Min: 2500, p99Max: 5000},
		{name: "half slow", fast: 50, slow: 50, fastD: 20 * time.Millisecond, slowD: 200 * time.Millisecond,
			p50Min: 15, p50Max: 25, p99Min: 100, p99Max: 250},
		{name: "beyond the last bound", slow: 10, slowD: time.Minute, p50Min: 10000, p50Max: 10000, p99Min: 10000, p99Max: 10000},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := newClock(1000)
			r := newRecorder(t, c, admin.RecorderOptions{})
			for range tt.fast {
				r.Record("api", "", 200, tt.fastD)
			}
			for range tt.slow {
				r.Record("api", "", 200, tt.slowD)
			}
			c.Advance(time.Second)
			_, _, p50, p99 := at(t, find(t, r.Stats().Routes, "api"), 1000)
			assert.GreaterOrEqual(t, p50, tt.p50Min, "p50")
			assert.LessOrEqual(t, p50, tt.p50Max, "p50")
			assert.GreaterOrEqual(t, p99, tt.p99Min, "p99")
			assert.LessOrEqual(t, p99, tt.p99Max, "p99")
		})
	}
}

// TestRecorderBounds checks that names past MaxRoutes are counted under Other, without
// losing requests, and that a name idle for a window gives its place up.
func TestRecorderBounds(t *testing.T) {
	c := newClock(1000)
	r := newRecorder(t, c, admin.RecorderOptions{Window: 10 * time.Second, MaxRoutes: 2, MaxEndpoints: 3})
	for i := range 100 {
		r.Record(fmt.Sprintf("route-%d", i), fmt.Sprintf("10.0.0.%d:80", i), 200, time.Millisecond)
	}
	c.Advance(time.Second)
	st := r.Stats()
	names := func(series []admin.Series) []string {
		var out []string
		for _, s := range series {
			out = append(out, s.Name)
		}
		return out
	}
	assert.Equal(t, []string{admin.Other, "route-0", "route-1"}, names(st.Routes))
	assert.Equal(t, []string{admin.Other, "10.0.0.0:80", "10.0.0.1:80", "10.0.0.2:80"}, names(st.Endpoints))
	req, _, _, _ := at(t, find(t, st.Routes, admin.Other), 1000)
	assert.Equal(t, uint32(98), req, "the routes past the bound are counted together")
	req, _, _, _ = at(t, find(t, st.Endpoints, admin.Other), 1000)
	assert.Equal(t, uint32(97), req)

	// route-1 keeps busy; route-0 idles for a whole window and makes room for route-new.
	for range 10 {
		c.Advance(time.Second)
		r.Record("route-1", "", 200, time.Millisecond)
	}
	r.Record("route-new", "", 200, time.Millisecond)
	c.Advance(time.Second)
	assert.Equal(t, []string{admin.Other, "route-1", "route-new"}, names(r.Stats().Routes))
}

// TestRecordAllocs checks that Record allocates nothing once its names are known: it runs on
// every request.
func TestRecordAllocs(t *testing.T) {
	c := newClock(1000)
	r := newRecorder(t, c, admin.RecorderOptions{MaxRoutes: 1, MaxEndpoints: 1})
	r.Record("api", "10.0.0.1:80", 200, time.Millisecond)
	r.Record("full", "10.0.0.2:80", 200, time.Millisecond) // adds Other to both
	allocs := testing.AllocsPerRun(1000, func() {
		c.Advance(10 * time.Millisecond) // crossing seconds resets slots: that too is free
		r.Record("api", "10.0.0.1:80", 503, time.Millisecond)
		r.Record("another", "10.0.0.3:80", 200, time.Second) // under Other
	})
	assert.Zero(t, allocs, "allocations per Record")
}

// TestRecorderConcurrent records from many goroutines across second boundaries and checks
// that no request is lost or counted twice.
func TestRecorderConcurrent(t *testing.T) {
	c := newClock(1000)
	r := newRecorder(t, c, admin.RecorderOptions{Window: 30 * time.Second})
	const goroutines, each = 8, 2000
	var wg sync.WaitGroup
	for g := range goroutines {
		wg.Go(func() {
			for i := range each {
				if g == 0 && i%500 == 0 {
					c.Advance(time.Second)
				}
				r.Record("api", fmt.Sprintf("ep-%d", g%2), 200, time.Millisecond)
			}
		})
	}
	wg.Wait()
	c.Advance(time.Second)
	var total uint32
	for _, n := range find(t, r.Stats().Routes, "api").Requests {
		total += n
	}
	assert.Equal(t, uint32(goroutines*each), total, "every request counted once")
}

func TestNewRecorderErrors(t *testing.T) {
	tests := []struct {
		opts admin.RecorderOptions
		want string
	}{
		{admin.RecorderOptions{Window: time.Second}, "admin: Window must be between 2s and 1h, got 1s"},
		{admin.RecorderOptions{Window: 2 * time.Hour}, "admin: Window must be between 2s and 1h, got 2h0m0s"},
		{admin.RecorderOptions{MaxRoutes: -1}, "admin: MaxRoutes must be ≥ 0, got -1"},
		{admin.RecorderOptions{MaxEndpoints: -2}, "admin: MaxEndpoints must be ≥ 0, got -2"},
	}
	for _, tt := range tests {
		_, err := admin.NewRecorder(tt.opts)
		assert.EqualError(t, err, tt.want)
	}
}
