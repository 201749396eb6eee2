package discovery

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"time"

	"golang.org/x/net/dns/dnsmessage"

	"github.com/sluiceproxy/sluice"
)

// Resolver is the part of [*net.Resolver] that [DNS] can use in place of its own client, for
// embedders with their own DNS client. It reports no TTLs, so DNS then refreshes on a fixed
// interval. Both methods must be safe for concurrent use.
type Resolver interface {
	LookupIPAddr(ctx context.Context, host string) ([]net.IPAddr, error)
	LookupSRV(ctx context.Context, service, proto, name string) (cname string, addrs []*net.SRV, err error)
}

var _ Resolver = (*net.Resolver)(nil)

// DNS is a Source that resolves a name and re-resolves it when the answer goes stale.
//
// With Service empty, DNS looks up the A and AAAA records of Name and pairs every address
// with Port. With Service set, it looks up the SRV records _Service._Proto.Name and makes
// endpoints of the targets of the lowest priority present (RFC 2782: higher priorities are
// fallbacks, and sluice's health checking and panic threshold already cover failure), with
// the SRV weight as the endpoint weight (weight 0 becomes 1, so that every target can receive
// traffic). DNS resolves each target's A and AAAA records and makes one endpoint per address
// with the target's port and weight; with a custom Resolver, the endpoint is the target's
// host name and port instead, and the dialer resolves it.
//
// # Refreshing
//
// DNS asks the name servers itself, over UDP and again over TCP when an answer is
// truncated, and re-resolves when the smallest TTL among the records it used expires (CNAME
// aliases and, for SRV, the targets' addresses included). The wait is clamped to
// [MinRefresh, MaxRefresh] so that a TTL of zero cannot hammer the servers and a TTL of a
// week cannot freeze the pool. With a custom Resolver, which does not report TTLs, it
// re-resolves every Refresh instead, clamped the same way.
//
// When a lookup fails (or returns no usable record), DNS keeps the last good set, logs, and
// retries after MinRefresh, doubling the wait up to Refresh (clamped). It never pushes a set
// equal to the last one pushed.
//
// A zero DNS is not usable: Name is required.
type DNS struct {
	// Name is the host name to resolve. Required. A name ending in "." is absolute; others
	// go through the search list of /etc/resolv.conf (unless Servers is set), as the C
	// library's resolver does.
	Name string
	// Port is the port of A/AAAA endpoints. Required when Service is empty; ignored with SRV,
	// whose records carry their own ports.
	Port int
	// Service and Proto select an SRV lookup of _Service._Proto.Name. Proto defaults to "tcp".
	Service, Proto string

	// Zone is copied to every endpoint, for zone-aware balancing; empty by default.
	Zone string

	// Refresh is the refresh interval when TTLs are unknown (with a custom Resolver), and the
	// longest wait between retries after failed lookups. Zero means 30 seconds.
	Refresh time.Duration
	// MinRefresh is the shortest refresh interval and the first retry delay after a failure.
	// Zero means 1 second.
	MinRefresh time.Duration
	// MaxRefresh is the longest refresh interval. Zero means 5 minutes.
	MaxRefresh time.Duration

	// Servers are the name servers to ask, in order, as IP addresses with an optional port
	// (53 by default): "10.0.0.53" or "[fd00::53]:5353". With Servers set, Name is taken as
	// absolute. Nil means the nameserver, search and ndots lines of /etc/resolv.conf, read
	// at every lookup so that edits take effect.
	Servers []string
	// Resolver, if set, performs lookups instead of DNS's own client; it cannot be combined
	// with Servers. Since it does not report TTLs, DNS then re-resolves every Refresh.
	// [*net.Resolver] is one.
	Resolver Resolver
	// Logger receives lookup failures. Nil means slog.Default().
	Logger *slog.Logger
	// Hooks receive an update after every lookup, successful or not (see [Hooks]).
	Hooks Hooks
}

var _ Source = DNS{}

// errNoRecords reports a lookup that succeeded but produced no endpoint.
var errNoRecords = errors.New("no usable records")

// Watch resolves the name, pushes the set, and re-resolves until ctx ends. The first set is
// pushed after the first successful lookup; until then update is not called. It returns an
// error at once if the configuration is invalid, and otherwise ctx.Err().
func (d DNS) Watch(ctx context.Context, update func([]sluice.Endpoint)) error {
	if err := d.validate(); err != nil {
		return err
	}
	servers, err := d.servers()
	if err != nil {
		return err
	}
	interval, floor, ceiling := d.intervals()
	log := d.Logger
	if log == nil {
		log = slog.Default()
	}
	// lookup returns a set and how long it stays fresh, or -1 when that is unknown.
	lookup := func(ctx context.Context) ([]sluice.Endpoint, time.Duration, error) {
		eps, err := d.lookup(ctx)
		return eps, -1, err
	}
	if d.Resolver == nil {
		lookup = func(ctx context.Context) ([]sluice.Endpoint, time.Duration, error) {
			c := &dnsClient{conf: resolvConf{servers: servers}}
			if servers == nil {
				c.conf = readResolvConf("/etc/resolv.conf")
			}
			return d.lookupTTL(ctx, c)
		}
	}

	var last []sluice.Endpoint
	pushed := false
	backoff := floor
	timer := time.NewTimer(0)
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-timer.C:
		}
		eps, ttl, err := lookup(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			log.Warn("discovery: DNS lookup failed; keeping the last good set",
				"name", d.Name, "service", d.Service, "endpoints", len(last), "retry", backoff, "err", err)
			if d.Hooks.Update != nil {
				d.Hooks.Update(UpdateEvent{Source: "dns", Name: d.hookName(), Synced: pushed, Err: err}.Count(last))
			}
			timer.Reset(backoff)
			backoff = min(2*backoff, interval)
			continue
		}
		backoff = floor
		changed := !pushed || !slices.Equal(eps, last)
		if changed {
			last, pushed = eps, true
			update(eps)
		}
		if d.Hooks.Update != nil {
			d.Hooks.Update(UpdateEvent{Source: "dns", Name: d.hookName(), Changed: changed, Synced: true}.Count(last))
		}
		if ttl >= 0 {
			timer.Reset(min(max(ttl, floor), ceiling))
		} else {
			timer.Reset(interval)
		}
	}
}

// hookName is the name UpdateEvents carry: Name, or the SRV name looked up.
func (d DNS) hookName() string {
	if d.Service == "" {
		return d.Name
	}
	return "_" + d.Service + "._" + cmp.Or(d.Proto, "tcp") + "." + d.Name
}

func (d DNS) validate() error {
	switch {
	case d.Name == "":
		return errors.New("discovery: DNS.Name is required")
	case d.Service == "" && (d.Port < 1 || d.Port > 65535):
		return fmt.Errorf("discovery: DNS.Port must be in 1..65535 for A/AAAA lookups, got %d", d.Port)
	case d.Refresh < 0:
		return fmt.Errorf("discovery: DNS.Refresh must not be negative, got %v", d.Refresh)
	case d.MinRefresh < 0:
		return fmt.Errorf("discovery: DNS.MinRefresh must not be negative, got %v", d.MinRefresh)
	case d.MaxRefresh < 0:
		return fmt.Errorf("discovery: DNS.MaxRefresh must not be negative, got %v", d.MaxRefresh)
	}
	floor, ceiling := d.bounds()
	if floor > ceiling {
		return fmt.Errorf("discovery: DNS.MinRefresh (%v) must not exceed DNS.MaxRefresh (%v)", floor, ceiling)
	}
	return nil
}

func (d DNS) bounds() (floor, ceiling time.Duration) {
	floor, ceiling = d.MinRefresh, d.MaxRefresh
	if floor == 0 {
		floor = time.Second
	}
	if ceiling == 0 {
		ceiling = 5 * time.Minute
	}
	return floor, ceiling
}

// intervals returns the refresh interval, clamped, and the clamp.
func (d DNS) intervals() (interval, floor, ceiling time.Duration) {
	floor, ceiling = d.bounds()
	interval = d.Refresh
	if interval == 0 {
		interval = 30 * time.Second
	}
	return min(max(interval, floor), ceiling), floor, ceiling
}

// servers returns Servers as "ip:port" strings, or nil when Servers is empty.
func (d DNS) servers() ([]string, error) {
	if len(d.Servers) > 0 && d.Resolver != nil {
		return nil, errors.New("discovery: DNS.Servers and DNS.Resolver cannot both be set")
	}
	var out []string
	for i, s := range d.Servers {
		ap, err := netip.ParseAddrPort(s)
		if err != nil {
			ip, err2 := netip.ParseAddr(s)
			if err2 != nil {
				return nil, fmt.Errorf("discovery: DNS.Servers[%d] must be an IP address with an optional port, got %q", i, s)
			}
			ap = netip.AddrPortFrom(ip, 53)
		}
		if ap.Port() == 0 {
			return nil, fmt.Errorf("discovery: DNS.Servers[%d] has port 0: %q", i, s)
		}
		out = append(out, ap.String())
	}
	return out, nil
}

func (d DNS) resolver() Resolver {
	if d.Resolver != nil {
		return d.Resolver
	}
	return net.DefaultResolver
}

// lookup resolves once and returns a normalized, non-empty set.
func (d DNS) lookup(ctx context.Context) ([]sluice.Endpoint, error) {
	var eps []sluice.Endpoint
	if d.Service == "" {
		addrs, err := d.resolver().LookupIPAddr(ctx, d.Name)
		if err != nil {
			return nil, err
		}
		for _, a := range addrs {
			ip, ok := netip.AddrFromSlice(a.IP)
			if !ok || ip.IsUnspecified() {
				continue // not 4 or 16 bytes: nothing to dial
			}
			ip = ip.Unmap()
			if a.Zone != "" && ip.Is6() {
				if !validZone(a.Zone) {
					continue
				}
				ip = ip.WithZone(a.Zone)
			}
			addr := netip.AddrPortFrom(ip, uint16(d.Port)).String()
			eps = append(eps, sluice.Endpoint{Addr: addr, Zone: d.Zone})
		}
	} else {
		proto := d.Proto
		if proto == "" {
			proto = "tcp"
		}
		_, srvs, err := d.resolver().LookupSRV(ctx, d.Service, proto, d.Name)
		if err != nil {
			return nil, err
		}
		eps = srvEndpoints(srvs, d.Zone)
	}
	if len(eps) == 0 {
		return nil, errNoRecords
	}
	return Normalize(eps), nil
}

// srvEndpoints turns the lowest-priority SRV records into endpoints named by host.
func srvEndpoints(srvs []*net.SRV, zone string) []sluice.Endpoint {
	var eps []sluice.Endpoint
	for _, s := range lowestPriority(srvs) {
		host := strings.TrimSuffix(s.Target, ".")
		eps = append(eps, sluice.Endpoint{
			Addr:   net.JoinHostPort(host, strconv.Itoa(int(s.Port))),
			Weight: srvWeight(s),
			Zone:   zone,
		})
	}
	return eps
}

// lowestPriority returns the usable records of the lowest priority present. Records that
// cannot be dialled are left out before the lowest priority is chosen: a target of "." (the
// service is decidedly not available, RFC 2782), port 0, and targets that are not host
// names, which only a broken or hostile DNS server sends (Go's resolver drops them itself;
// another Resolver may not).
func lowestPriority(srvs []*net.SRV) []*net.SRV {
	lowest := -1
	for _, s := range srvs {
		if usable(s) && (lowest < 0 || int(s.Priority) < lowest) {
			lowest = int(s.Priority)
		}
	}
	var out []*net.SRV
	for _, s := range srvs {
		if usable(s) && int(s.Priority) == lowest {
			out = append(out, s)
		}
	}
	return out
}

func srvWeight(s *net.SRV) uint32 {
	return max(uint32(s.Weight), 1)
}

// lookupTTL resolves once with c and returns a normalized, non-empty set and how long it
// stays fresh: the smallest TTL of the records used.
func (d DNS) lookupTTL(ctx context.Context, c *dnsClient) ([]sluice.Endpoint, time.Duration, error) {
	name := d.Name
	if d.Service != "" {
		proto := d.Proto
		if proto == "" {
			proto = "tcp"
		}
		name = "_" + d.Service + "._" + proto + "." + name
	}
	var eps []sluice.Endpoint
	ttl := uint32(math.MaxUint32)
	for _, n := range c.conf.names(name) {
		if d.Service == "" {
			addrs, t, err := c.lookupAddrs(ctx, n)
			if err != nil {
				return nil, 0, err
			}
			ttl = min(ttl, t)
			for _, a := range addrs {
				eps = append(eps, sluice.Endpoint{Addr: netip.AddrPortFrom(a, uint16(d.Port)).String(), Zone: d.Zone})
			}
		} else {
			resp, err := c.exchange(ctx, n, dnsmessage.TypeSRV)
			if err != nil {
				return nil, 0, err
			}
			srvs := lowestPriority(resp.srvs)
			if len(srvs) > 0 {
				ttl = min(ttl, resp.ttl)
			}
			for _, s := range srvs {
				addrs, t, err := c.lookupAddrs(ctx, s.Target)
				if err != nil {
					return nil, 0, err
				}
				ttl = min(ttl, t)
				for _, a := range addrs {
					eps = append(eps, sluice.Endpoint{Addr: netip.AddrPortFrom(a, s.Port).String(), Weight: srvWeight(s), Zone: d.Zone})
				}
			}
		}
		if len(eps) > 0 {
			return Normalize(eps), time.Duration(ttl) * time.Second, nil
		}
	}
	return nil, 0, errNoRecords
}

// lookupAddrs returns the dialable A and AAAA addresses of the absolute name n and their
// smallest TTL.
func (c *dnsClient) lookupAddrs(ctx context.Context, n string) ([]netip.Addr, uint32, error) {
	var addrs []netip.Addr
	ttl := uint32(math.MaxUint32)
	for _, t := range []dnsmessage.Type{dnsmessage.TypeA, dnsmessage.TypeAAAA} {
		resp, err := c.exchange(ctx, n, t)
		if err != nil {
			return nil, 0, err
		}
		for _, a := range resp.addrs {
			if a = a.Unmap(); !a.IsUnspecified() {
				addrs = append(addrs, a)
			}
		}
		if len(resp.addrs) > 0 {
			ttl = min(ttl, resp.ttl)
		}
	}
	return addrs, ttl, nil
}

func usable(s *net.SRV) bool {
	return s != nil && s.Port != 0 && validHost(strings.TrimSuffix(s.Target, "."))
}

// validHost reports whether h is a host name a dialer can use: dot-separated labels of 1 to
// 63 letters, digits, hyphens and underscores (SRV owner names use them), no label starting
// or ending with a hyphen, 253 bytes in all.
func validHost(h string) bool {
	if h == "" || len(h) > 253 {
		return false
	}
	for label := range strings.SplitSeq(h, ".") {
		if label == "" || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return false
		}
		for i := 0; i < len(label); i++ {
			c := label[i]
			if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-' || c == '_') {
				return false
			}
		}
	}
	return true
}

// validZone reports whether z can be an IPv6 zone (an interface name or index) in an
// address: letters, digits and ".-_", nothing that would end the address early.
func validZone(z string) bool {
	if len(z) > 64 {
		return false
	}
	for i := 0; i < len(z); i++ {
		c := z[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-' || c == '_' || c == '.') {
			return false
		}
	}
	return true
}
