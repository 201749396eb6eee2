package discovery_test

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/sluiceproxy/sluice"
	"github.com/sluiceproxy/sluice/discovery"
)

func TestParseStatic(t *testing.T) {
	s, err := discovery.ParseStatic("10.0.0.1:8080, backend.local:80,[2001:db8::1]:443")
	require.NoError(t, err)
	assert.Equal(t, []sluice.Endpoint{{Addr: "10.0.0.1:8080"}, {Addr: "backend.local:80"},
		{Addr: "[2001:db8::1]:443"}}, s.Endpoints)

	for _, tt := range []struct{ in, want string }{
		{"", `address 1 ""`},
		{"10.0.0.1:80,", `address 2 ""`},
		{"10.0.0.1", `address 1 "10.0.0.1" is not host:port`},
		{"10.0.0.1:http", "port must be a number"},
		{"10.0.0.1:0", "port must be a number from 1 to 65535"},
		{"10.0.0.1:65536", "port must be a number from 1 to 65535"},
		{":80", "has no host"},
		{"2001:db8::1:443", "is not host:port"},
	} {
		_, err := discovery.ParseStatic(tt.in)
		if assert.Error(t, err, "%q", tt.in) {
			assert.Contains(t, err.Error(), tt.want, "%q", tt.in)
		}
	}
}

func FuzzParseStatic(f *testing.F) {
	for _, s := range []string{"10.0.0.1:8080", "a:1, b:2", "[::1]:443", ",", "x:0", "x:99999", ""} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, list string) {
		s, err := discovery.ParseStatic(list)
		if err != nil {
			return
		}
		if len(s.Endpoints) != strings.Count(list, ",")+1 {
			t.Fatalf("%q gave %d endpoints", list, len(s.Endpoints))
		}
		for _, ep := range s.Endpoints {
			if ep.Addr == "" || strings.ContainsAny(ep.Addr, ", ") {
				t.Fatalf("%q gave address %q", list, ep.Addr)
			}
		}
	})
}
