package discovery

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/sluiceproxy/sluice"
)

// Resolver is the part of [*net.Resolver] that [DNS] uses. Tests and embedders with their own
// DNS client can supply another implementation. Both methods must be safe for concurrent use.
type Resolver interface {
	LookupIPAddr(ctx context.Context, host string) ([]net.IPAddr, error)
	LookupSRV(ctx context.Context, service, proto, name string) (cname string, addrs []*net.SRV, err error)
}

var _ Resolver = (*net.Resolver)(nil)

// DNS is a Source that resolves a name and re-resolves it periodically.
//
// With Service empty, DNS looks up the A and AAAA records of Name and pairs every address
// with Port. With Service set, it looks up the SRV records _Service._Proto.Name and makes one
// endpoint per target of the lowest priority present (RFC 2782: higher priorities are
// fallbacks, and sluice's health checking and panic threshold already cover failure), with
// the SRV weight as the endpoint weight (weight 0 becomes 1, so that every target can receive
// traffic).
//
// # Refreshing
//
// Go's resolver does not report record TTLs, so DNS cannot follow them. It re-resolves every
// Refresh instead — set it to the TTL the records are published with — clamped to
// [MinRefresh, MaxRefresh] so that a typo can neither hammer the resolver nor freeze the
// pool. When a lookup fails (or returns no usable record), DNS keeps the last good set, logs,
// and retries after MinRefresh, doubling the wait up to the refresh interval.
//
// A zero DNS is not usable: Name is required.
type DNS struct {
	// Name is the host name to resolve. Required.
	Name string
	// Port is the port of A/AAAA endpoints. Required when Service is empty; ignored with SRV,
	// whose records carry their own ports.
	Port int
	// Service and Proto select an SRV lookup of _Service._Proto.Name. Proto defaults to "tcp".
	Service, Proto string

	// Zone is copied to every endpoint, for zone-aware balancing; empty by default.
	Zone string

	// Refresh is how often to re-resolve. Zero means 30 seconds.
	Refresh time.Duration
	// MinRefresh is the shortest refresh interval and the first retry delay after a failure.
	// Zero means 1 second.
	MinRefresh time.Duration
	// MaxRefresh is the longest refresh interval. Zero means 5 minutes.
	MaxRefresh time.Duration

	// Resolver performs lookups. Nil means net.DefaultResolver.
	Resolver Resolver
	// Logger receives lookup failures. Nil means slog.Default().
	Logger *slog.Logger
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
	interval, floor := d.intervals()
	log := d.Logger
	if log == nil {
		log = slog.Default()
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
		eps, err := d.lookup(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			log.Warn("discovery: DNS lookup failed; keeping the last good set",
				"name", d.Name, "service", d.Service, "endpoints", len(last), "retry", backoff, "err", err)
			timer.Reset(backoff)
			backoff = min(2*backoff, interval)
			continue
		}
		backoff = floor
		if !pushed || !slices.Equal(eps, last) {
			last, pushed = eps, true
			update(eps)
		}
		timer.Reset(interval)
	}
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

// intervals returns the refresh interval, clamped, and the floor.
func (d DNS) intervals() (interval, floor time.Duration) {
	floor, ceiling := d.bounds()
	interval = d.Refresh
	if interval == 0 {
		interval = 30 * time.Second
	}
	return min(max(interval, floor), ceiling), floor
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

// srvEndpoints turns the lowest-priority SRV records into endpoints. Records that cannot be
// dialled are left out before the lowest priority is chosen: a target of "." (the service is
// decidedly not available, RFC 2782), port 0, and targets that are not host names, which
// only a broken or hostile DNS server sends (Go's resolver drops them itself; another
// Resolver may not).
func srvEndpoints(srvs []*net.SRV, zone string) []sluice.Endpoint {
	lowest := -1
	for _, s := range srvs {
		if usable(s) && (lowest < 0 || int(s.Priority) < lowest) {
			lowest = int(s.Priority)
		}
	}
	var eps []sluice.Endpoint
	for _, s := range srvs {
		if !usable(s) || int(s.Priority) != lowest {
			continue
		}
		w := uint32(s.Weight)
		if w == 0 {
			w = 1
		}
		host := strings.TrimSuffix(s.Target, ".")
		eps = append(eps, sluice.Endpoint{
			Addr:   net.JoinHostPort(host, strconv.Itoa(int(s.Port))),
			Weight: w,
			Zone:   zone,
		})
	}
	return eps
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
