package discovery_test

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/sluiceproxy/sluice"
	"github.com/sluiceproxy/sluice/discovery"
)

func TestStaticPushesOnceAndBlocks(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		eps := []sluice.Endpoint{
			{Addr: "10.0.0.2:80", Weight: 3, Zone: "b"},
			{Addr: "10.0.0.1:80", Zone: "a"},
			{Addr: "10.0.0.2:80", Weight: 9},
		}
		ctx, cancel := context.WithCancel(t.Context())
		var got [][]sluice.Endpoint
		done := make(chan error)
		go func() {
			done <- discovery.Static{Endpoints: eps}.Watch(ctx, func(s []sluice.Endpoint) { got = append(got, s) })
		}()
		synctest.Wait()
		require.Len(t, got, 1, "Static should push exactly one set")
		assert.Equal(t, []sluice.Endpoint{{Addr: "10.0.0.1:80", Zone: "a"}, {Addr: "10.0.0.2:80", Weight: 3, Zone: "b"}}, got[0],
			"the set should be sorted by Addr with the first duplicate kept")
		assert.Equal(t, "10.0.0.2:80", eps[0].Addr, "Watch must not reorder the caller's slice")
		cancel()
		assert.ErrorIs(t, <-done, context.Canceled)
	})
}

// fakeResolver answers from fields that the test changes between refreshes.
type fakeResolver struct {
	mu    sync.Mutex
	ips   []net.IPAddr
	srvs  []*net.SRV
	err   error
	calls int
}

func (r *fakeResolver) set(ips []net.IPAddr, srvs []*net.SRV, err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.ips, r.srvs, r.err = ips, srvs, err
}

func (r *fakeResolver) LookupIPAddr(_ context.Context, host string) ([]net.IPAddr, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.calls++
	return r.ips, r.err
}

func (r *fakeResolver) LookupSRV(_ context.Context, service, proto, name string) (string, []*net.SRV, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.calls++
	return "", r.srvs, r.err
}

func ip(s string) net.IPAddr { return net.IPAddr{IP: net.ParseIP(s)} }

// watch runs src.Watch in the bubble and returns a function that reports the sets pushed
// so far, and a stop function.
func watch(t *testing.T, src discovery.Source) (sets func() [][]sluice.Endpoint, stop func() error) {
	ctx, cancel := context.WithCancel(t.Context())
	var mu sync.Mutex
	var got [][]sluice.Endpoint
	done := make(chan error, 1)
	go func() {
		done <- src.Watch(ctx, func(s []sluice.Endpoint) {
			mu.Lock()
			got = append(got, s)
			mu.Unlock()
		})
	}()
	return func() [][]sluice.Endpoint {
			synctest.Wait()
			mu.Lock()
			defer mu.Unlock()
			return append([][]sluice.Endpoint(nil), got...)
		}, func() error {
			cancel()
			return <-done
		}
}

func TestDNSFollowsRecordsAndKeepsLastGoodSet(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r := &fakeResolver{}
		r.set([]net.IPAddr{ip("10.0.0.2"), ip("fd00::1"), ip("10.0.0.1")}, nil, nil)
		sets, stop := watch(t, discovery.DNS{Name: "api.internal", Port: 8080, Zone: "z1", Refresh: 10 * time.Second, Resolver: r, Logger: quiet})

		want1 := []sluice.Endpoint{{Addr: "10.0.0.1:8080", Zone: "z1"}, {Addr: "10.0.0.2:8080", Zone: "z1"}, {Addr: "[fd00::1]:8080", Zone: "z1"}}
		require.Equal(t, [][]sluice.Endpoint{want1}, sets(), "the first lookup should be pushed at once")

		// An unchanged answer is not pushed again.
		time.Sleep(10 * time.Second)
		assert.Len(t, sets(), 1, "an unchanged set must not be pushed again")

		// A failing resolver keeps the last good set and retries after MinRefresh (1s).
		r.set(nil, nil, errors.New("SERVFAIL"))
		time.Sleep(10 * time.Second)
		assert.Len(t, sets(), 1, "a failed lookup must not push anything")
		r.set([]net.IPAddr{ip("10.0.0.3")}, nil, nil)
		time.Sleep(time.Second)
		assert.Equal(t, []sluice.Endpoint{{Addr: "10.0.0.3:8080", Zone: "z1"}}, sets()[1],
			"after a failure the next lookup should come after MinRefresh, not a full Refresh")

		// An empty answer counts as a failure: the pool is not emptied by a broken zone.
		r.set(nil, nil, nil)
		time.Sleep(20 * time.Second)
		assert.Len(t, sets(), 2, "an empty answer must keep the last good set")
		assert.ErrorIs(t, stop(), context.Canceled)
	})
}

func TestDNSRefreshIsClamped(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r := &fakeResolver{}
		r.set([]net.IPAddr{ip("10.0.0.1")}, nil, nil)
		_, stop := watch(t, discovery.DNS{Name: "x", Port: 1, Refresh: time.Millisecond, MinRefresh: 2 * time.Second, Resolver: r, Logger: quiet})
		time.Sleep(10*time.Second + time.Millisecond)
		synctest.Wait()
		r.mu.Lock()
		calls := r.calls
		r.mu.Unlock()
		assert.Equal(t, 6, calls, "a 1ms Refresh should be raised to MinRefresh=2s: lookups at 0,2,4,6,8,10s")
		stop()
	})
}

func TestDNSSRV(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r := &fakeResolver{}
		r.set(nil, []*net.SRV{
			{Target: "b.example.", Port: 81, Priority: 10, Weight: 0},
			{Target: "a.example.", Port: 80, Priority: 10, Weight: 60},
			{Target: "backup.example.", Port: 80, Priority: 20, Weight: 100},
			{Target: ".", Port: 80, Priority: 0},
		}, nil)
		sets, stop := watch(t, discovery.DNS{Name: "example", Service: "http", Resolver: r})
		assert.Equal(t, [][]sluice.Endpoint{{
			{Addr: "a.example:80", Weight: 60},
			{Addr: "b.example:81", Weight: 1},
		}}, sets(), "only the lowest priority with a real target is used; weight 0 becomes 1")
		stop()
	})
}

func TestDNSValidation(t *testing.T) {
	for name, d := range map[string]discovery.DNS{
		"no name":       {Port: 80},
		"no port":       {Name: "x"},
		"port too big":  {Name: "x", Port: 70000},
		"negative":      {Name: "x", Port: 80, Refresh: -1},
		"floor>ceiling": {Name: "x", Port: 80, MinRefresh: time.Hour, MaxRefresh: time.Minute},
		"bad server":    {Name: "x", Port: 80, Servers: []string{"10.0.0.53", "dns.example"}},
		"server port 0": {Name: "x", Port: 80, Servers: []string{"10.0.0.53:0"}},
		"both":          {Name: "x", Port: 80, Servers: []string{"10.0.0.53"}, Resolver: &fakeResolver{}},
	} {
		t.Run(name, func(t *testing.T) {
			err := d.Watch(t.Context(), func([]sluice.Endpoint) { t.Error("update must not be called") })
			require.Error(t, err)
			assert.Contains(t, err.Error(), "discovery: DNS.", "the error should name the field")
		})
	}
}

var quiet = slog.New(slog.DiscardHandler)

// TestDNSDropsRecordsThatCannotBeDialled feeds answers a broken or hostile DNS server could
// send through a custom Resolver: only records that make a dialable host:port survive.
func TestDNSDropsRecordsThatCannotBeDialled(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r := &fakeResolver{}
		r.set([]net.IPAddr{
			{IP: net.IP{1, 2, 3}},                          // neither 4 nor 16 bytes
			{IP: net.ParseIP("192.0.2.1"), Zone: "eth0"},   // a zone on IPv4 means nothing
			{IP: net.ParseIP("fe80::1"), Zone: "eth0]:80"}, // a zone that would end the address
			{IP: net.ParseIP("fe80::2"), Zone: "eth0"},
			{IP: net.ParseIP("::ffff:192.0.2.2")}, // IPv4 in IPv6 form is IPv4
		}, nil, nil)
		sets, stop := watch(t, discovery.DNS{Name: "x", Port: 80, Resolver: r})
		assert.Equal(t, [][]sluice.Endpoint{{{Addr: "192.0.2.1:80"}, {Addr: "192.0.2.2:80"}, {Addr: "[fe80::2%eth0]:80"}}},
			sets(), "bad addresses and zones are dropped, good ones kept")
		stop()

		r.set(nil, []*net.SRV{
			{Target: "[::1]", Port: 80},        // not a host name
			{Target: "a b.example.", Port: 80}, // not a host name
			{Target: "-x.example.", Port: 80},  // label starts with a hyphen
			{Target: "ok.example.", Port: 0},   // port 0 cannot be dialled
			{Target: "good.example.", Port: 443, Priority: 5},
		}, nil)
		sets, stop = watch(t, discovery.DNS{Name: "x", Service: "https", Resolver: r})
		assert.Equal(t, [][]sluice.Endpoint{{{Addr: "good.example:443", Weight: 1}}}, sets(),
			"undiallable targets are dropped before the lowest priority is chosen")
		stop()
	})
}
