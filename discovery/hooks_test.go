package discovery_test

import (
	"context"
	"errors"
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

// updates collects UpdateEvents from a Watch goroutine.
type updates struct {
	mu  sync.Mutex
	got []discovery.UpdateEvent
}

func (u *updates) hook(e discovery.UpdateEvent) { u.mu.Lock(); u.got = append(u.got, e); u.mu.Unlock() }

func (u *updates) events() []discovery.UpdateEvent {
	synctest.Wait()
	u.mu.Lock()
	defer u.mu.Unlock()
	return append([]discovery.UpdateEvent(nil), u.got...)
}

func TestHooks_UpdateStatic(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var u updates
		_, stop := watch(t, discovery.Static{Hooks: discovery.Hooks{Update: u.hook}, Endpoints: []sluice.Endpoint{
			{Addr: "10.0.0.1:80"}, {Addr: "10.0.0.2:80", State: sluice.Terminating}, {Addr: "10.0.0.3:80", State: sluice.Unhealthy},
			{Addr: "10.0.0.1:80"}, // a duplicate, dropped
		}})
		assert.Equal(t, []discovery.UpdateEvent{{Source: "static", Ready: 1, Terminating: 1, Unhealthy: 1, Changed: true, Synced: true}},
			u.events(), "one update, counting the set pushed")
		stop()
	})
}

func TestHooks_UpdateDNS(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r := &fakeResolver{}
		r.set(nil, nil, errors.New("SERVFAIL"))
		var u updates
		_, stop := watch(t, discovery.DNS{Name: "api.internal", Port: 8080, Refresh: 10 * time.Second, Resolver: r, Logger: quiet,
			Hooks: discovery.Hooks{Update: u.hook}})
		got := u.events()
		require.Len(t, got, 1)
		assert.Equal(t, "dns", got[0].Source)
		assert.Equal(t, "api.internal", got[0].Name)
		assert.False(t, got[0].Synced, "nothing pushed yet")
		assert.EqualError(t, got[0].Err, "SERVFAIL")

		r.set([]net.IPAddr{ip("10.0.0.1"), ip("10.0.0.2")}, nil, nil)
		time.Sleep(time.Second) // the retry after MinRefresh
		got = u.events()
		require.Len(t, got, 2)
		assert.Equal(t, discovery.UpdateEvent{Source: "dns", Name: "api.internal", Ready: 2, Changed: true, Synced: true}, got[1])

		time.Sleep(10 * time.Second)
		got = u.events()
		require.Len(t, got, 3)
		assert.False(t, got[2].Changed, "the same answer is not pushed again")
		assert.Equal(t, 2, got[2].Ready)

		r.set(nil, nil, errors.New("SERVFAIL"))
		time.Sleep(10 * time.Second)
		got = u.events()
		require.Len(t, got, 4)
		assert.True(t, got[3].Synced, "the last good set stays")
		assert.Equal(t, 2, got[3].Ready, "and is what the event counts")
		assert.Error(t, got[3].Err)
		assert.ErrorIs(t, stop(), context.Canceled)
	})
}

func TestHooks_DNSNameOfSRV(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r := &fakeResolver{}
		r.set(nil, []*net.SRV{{Target: "a.internal.", Port: 80, Weight: 1}}, nil)
		var u updates
		_, stop := watch(t, discovery.DNS{Name: "api.internal", Service: "http", Resolver: r, Logger: quiet,
			Hooks: discovery.Hooks{Update: u.hook}})
		got := u.events()
		require.NotEmpty(t, got)
		assert.Equal(t, "_http._tcp.api.internal", got[0].Name)
		stop()
	})
}

func TestJoinHooks(t *testing.T) {
	var order []string
	h := discovery.JoinHooks(
		discovery.Hooks{Update: func(discovery.UpdateEvent) { order = append(order, "a") }},
		discovery.Hooks{},
		discovery.Hooks{Update: func(discovery.UpdateEvent) { order = append(order, "b") }},
	)
	h.Update(discovery.UpdateEvent{})
	assert.Equal(t, []string{"a", "b"}, order, "every func, in order")
	assert.Nil(t, discovery.JoinHooks(discovery.Hooks{}).Update, "nothing to call stays nil")
}
