package endpointslices_test

import (
	"net/netip"
	"testing"

	"github.com/stretchr/testify/assert"

	"github.com/sluiceproxy/sluice/discovery/endpointslices"
)

func TestPublicAddr(t *testing.T) {
	tests := []struct {
		addr string
		want bool
	}{
		{"10.244.0.1", true},
		{"192.168.1.1", true},
		{"fd00::1", true},
		{"203.0.113.7", true},
		{"2001:db8::1", true},
		{"127.0.0.1", false},
		{"127.255.0.9", false},
		{"::1", false},
		{"::ffff:127.0.0.1", false},
		{"169.254.169.254", false},
		{"169.254.0.1", false},
		{"::ffff:169.254.169.254", false},
		{"fe80::1", false},
		{"fe80::1%eth0", false},
		{"febf::1", false},
		{"0.0.0.0", false},
		{"::", false},
		{"224.0.0.1", false},
		{"ff02::1", false},
		{"fd00:ec2::254", false},
		{"100.100.100.200", false},
		{"100.100.100.201", true},
	}
	for _, tt := range tests {
		t.Run(tt.addr, func(t *testing.T) {
			assert.Equal(t, tt.want, endpointslices.PublicAddr(netip.MustParseAddr(tt.addr)), "PublicAddr(%s)", tt.addr)
		})
	}
	assert.False(t, endpointslices.PublicAddr(netip.Addr{}), "the zero Addr is not an address to dial")
}
