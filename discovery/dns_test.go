package discovery_test

import (
	"log/slog"
	"net"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/net/dns/dnsmessage"

	"github.com/sluiceproxy/sluice"
	"github.com/sluiceproxy/sluice/discovery"
	"github.com/sluiceproxy/sluice/internal/dnstest"
	"github.com/sluiceproxy/sluice/internal/logbuf"
)

// The tests below run DNS against a real DNS server on loopback (internal/dnstest); time in
// the synctest bubble advances only while DNS waits on its timer, never during a query.

func TestDNSRefreshFollowsSmallestTTL(t *testing.T) {
	srv := dnstest.Start(t)
	srv.Set(dnstest.Addr("api.test.", "10.0.0.1", 7), dnstest.Addr("api.test.", "fd00::1", 3))
	synctest.Test(t, func(t *testing.T) {
		sets, stop := watch(t, discovery.DNS{Name: "api.test", Port: 8080, Zone: "z1", Servers: []string{srv.Addr}, Logger: quiet})
		require.Equal(t, [][]sluice.Endpoint{{{Addr: "10.0.0.1:8080", Zone: "z1"}, {Addr: "[fd00::1]:8080", Zone: "z1"}}}, sets(),
			"the first answer should be pushed at once")
		require.Equal(t, 1, srv.Count("udp A api.test."), "one A query so far")
		require.Equal(t, 1, srv.Count("udp AAAA api.test."), "one AAAA query so far")

		srv.Set(dnstest.Addr("api.test.", "10.0.0.2", 20))
		time.Sleep(3*time.Second - time.Millisecond)
		sets()
		assert.Equal(t, 1, srv.Count("udp A api.test."), "no query before the smallest TTL (3s, of AAAA) expires")
		time.Sleep(time.Millisecond)
		got := sets()
		assert.Equal(t, 2, srv.Count("udp A api.test."), "a query when the smallest TTL expires")
		require.Len(t, got, 2, "the changed answer should be pushed")
		assert.Equal(t, []sluice.Endpoint{{Addr: "10.0.0.2:8080", Zone: "z1"}}, got[1])

		time.Sleep(20*time.Second - time.Millisecond)
		sets()
		assert.Equal(t, 2, srv.Count("udp A api.test."), "the next refresh follows the new TTL of 20s")
		time.Sleep(time.Millisecond)
		assert.Len(t, sets(), 2, "an unchanged answer must not be pushed again")
		assert.Equal(t, 3, srv.Count("udp A api.test."), "a query when the 20s TTL expires")
		stop()
	})
}

func TestDNSRefreshIsClampedToMinAndMaxRefresh(t *testing.T) {
	for _, tc := range []struct {
		name     string
		ttl      uint32
		min, max time.Duration
		want     time.Duration
	}{
		{"zero TTL, default floor", 0, 0, 0, time.Second},
		{"zero TTL, floor", 0, 2 * time.Second, 0, 2 * time.Second},
		{"TTL within", 45, 2 * time.Second, time.Minute, 45 * time.Second},
		{"day TTL, default ceiling", 86400, 0, 0, 5 * time.Minute},
		{"day TTL, ceiling", 86400, 0, time.Minute, time.Minute},
		{"top bit set means zero", 1 << 31, 3 * time.Second, 0, 3 * time.Second},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := dnstest.Start(t)
			srv.Set(dnstest.Addr("x.test.", "10.0.0.1", tc.ttl))
			synctest.Test(t, func(t *testing.T) {
				_, stop := watch(t, discovery.DNS{Name: "x.test.", Port: 80, MinRefresh: tc.min, MaxRefresh: tc.max, Servers: []string{srv.Addr}, Logger: quiet})
				time.Sleep(tc.want - time.Millisecond)
				synctest.Wait()
				assert.Equal(t, 1, srv.Count("udp A x.test."), "no refresh before %v", tc.want)
				time.Sleep(time.Millisecond)
				synctest.Wait()
				assert.Equal(t, 2, srv.Count("udp A x.test."), "a refresh at %v", tc.want)
				stop()
			})
		})
	}
}

func TestDNSServerFailureKeepsLastGoodSet(t *testing.T) {
	srv := dnstest.Start(t)
	srv.Set(dnstest.Addr("api.test.", "10.0.0.1", 10))
	synctest.Test(t, func(t *testing.T) {
		t0 := time.Now()
		var logs logbuf.Buffer
		log := slog.New(slog.NewTextHandler(&logs, nil))
		sets, stop := watch(t, discovery.DNS{Name: "api.test.", Port: 80, Servers: []string{srv.Addr}, Logger: log})
		require.Len(t, sets(), 1, "the first answer should be pushed")

		srv.SetRCode(dnsmessage.RCodeServerFailure)
		// Lookups at 10s (fails), then retries after 1s, 2s, 4s: at 11s, 13s, 17s.
		for _, step := range []struct {
			at      time.Duration
			queries int
		}{{10 * time.Second, 2}, {11 * time.Second, 3}, {13 * time.Second, 4}, {17 * time.Second, 5}} {
			time.Sleep(step.at - time.Since(t0) - time.Millisecond)
			sets()
			assert.Equal(t, step.queries-1, srv.Count("udp A api.test."), "no query just before %v", step.at)
			time.Sleep(time.Millisecond)
			assert.Len(t, sets(), 1, "a failing server must not change the set")
			assert.Equal(t, step.queries, srv.Count("udp A api.test."), "a retry at %v (backoff from MinRefresh, doubling)", step.at)
		}

		assert.Contains(t, logs.String(), "discovery: DNS server "+srv.Addr+" answered A api.test. with ServerFailure",
			"the log should say which server failed which question how")

		srv.Set(dnstest.Addr("api.test.", "10.0.0.2", 10))
		srv.SetRCode(dnsmessage.RCodeSuccess)
		time.Sleep(8 * time.Second) // the next retry, at 25s
		got := sets()
		require.Len(t, got, 2, "the first good answer after the failures should be pushed")
		assert.Equal(t, []sluice.Endpoint{{Addr: "10.0.0.2:80"}}, got[1])
		stop()
	})
}

func TestDNSAsksTheNextServerWhenOneFails(t *testing.T) {
	// A UDP port with nothing behind it: the kernel answers "port unreachable".
	dead, err := net.ListenPacket("udp", "127.0.0.1:0")
	require.NoError(t, err)
	deadAddr := dead.LocalAddr().String()
	dead.Close()
	refusing := dnstest.Start(t)
	refusing.SetRCode(dnsmessage.RCodeRefused)
	srv := dnstest.Start(t)
	srv.Set(dnstest.Addr("api.test.", "10.0.0.1", 10))
	synctest.Test(t, func(t *testing.T) {
		sets, stop := watch(t, discovery.DNS{Name: "api.test.", Port: 80, Servers: []string{deadAddr, refusing.Addr, srv.Addr}, Logger: quiet})
		assert.Equal(t, [][]sluice.Endpoint{{{Addr: "10.0.0.1:80"}}}, sets(), "the third server's answer should be used")
		assert.Equal(t, 1, refusing.Count("udp A api.test."), "the refusing server should have been asked first")
		stop()
	})
}

func TestDNSRetriesTruncatedAnswersOverTCP(t *testing.T) {
	srv := dnstest.Start(t)
	srv.Set(dnstest.Addr("api.test.", "10.0.0.1", 10))
	srv.SetTruncate(true)
	synctest.Test(t, func(t *testing.T) {
		sets, stop := watch(t, discovery.DNS{Name: "api.test.", Port: 80, Servers: []string{srv.Addr}, Logger: quiet})
		assert.Equal(t, [][]sluice.Endpoint{{{Addr: "10.0.0.1:80"}}}, sets(), "the TCP answer should be pushed")
		assert.Equal(t, []string{"udp A api.test.", "tcp A api.test.", "udp AAAA api.test.", "tcp AAAA api.test."}, srv.Log(),
			"each truncated UDP answer should be asked again over TCP")
		stop()
	})
}

func TestDNSSRVResolvesTargets(t *testing.T) {
	srv := dnstest.Start(t)
	srv.Set(
		dnstest.SRV("_http._tcp.svc.test.", "a.svc.test.", 8080, 10, 5, 60),
		dnstest.SRV("_http._tcp.svc.test.", "B.svc.test.", 8081, 10, 0, 60),
		dnstest.SRV("_http._tcp.svc.test.", "backup.svc.test.", 9000, 20, 100, 60),
		dnstest.SRV("_http._tcp.svc.test.", ".", 80, 0, 1, 60),
		dnstest.Addr("a.svc.test.", "10.0.0.1", 30),
		dnstest.Addr("a.svc.test.", "10.0.0.2", 30),
		dnstest.Addr("b.svc.test.", "fd00::2", 4),
		dnstest.Addr("backup.svc.test.", "10.9.9.9", 1),
	)
	synctest.Test(t, func(t *testing.T) {
		sets, stop := watch(t, discovery.DNS{Name: "svc.test", Service: "http", Zone: "z", Servers: []string{srv.Addr}, Logger: quiet})
		assert.Equal(t, [][]sluice.Endpoint{{
			{Addr: "10.0.0.1:8080", Weight: 5, Zone: "z"},
			{Addr: "10.0.0.2:8080", Weight: 5, Zone: "z"},
			{Addr: "[fd00::2]:8081", Weight: 1, Zone: "z"},
		}}, sets(), "each address of each lowest-priority target, with the target's port and weight (0 becomes 1)")
		assert.Zero(t, srv.Count("udp A backup.svc.test."), "a higher-priority target need not be resolved")

		time.Sleep(4*time.Second - time.Millisecond)
		sets()
		assert.Equal(t, 1, srv.Count("udp SRV _http._tcp.svc.test."), "no refresh before the smallest TTL (4s, of b's AAAA)")
		time.Sleep(time.Millisecond)
		sets()
		assert.Equal(t, 2, srv.Count("udp SRV _http._tcp.svc.test."), "a refresh when a target's address expires")
		stop()
	})
}

func TestDNSFollowsCNAME(t *testing.T) {
	srv := dnstest.Start(t)
	srv.Set(dnstest.CNAME("www.test.", "api.test.", 2), dnstest.Addr("api.test.", "10.0.0.1", 50))
	synctest.Test(t, func(t *testing.T) {
		sets, stop := watch(t, discovery.DNS{Name: "www.test.", Port: 80, Servers: []string{srv.Addr}, Logger: quiet})
		assert.Equal(t, [][]sluice.Endpoint{{{Addr: "10.0.0.1:80"}}}, sets(), "the alias's address should be used")
		time.Sleep(2 * time.Second)
		sets()
		assert.Equal(t, 2, srv.Count("udp A www.test."), "the alias's TTL (2s) counts toward the refresh")
		stop()
	})
}
