package tcpproxy_test

import (
	"fmt"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/sluiceproxy/sluice"
	"github.com/sluiceproxy/sluice/tcpproxy"
)

// nopPicker stands for a pool in tables that are only looked up.
var nopPicker = sluice.PickerFunc(func(sluice.PickInfo) (sluice.PickResult, error) {
	return sluice.PickResult{}, sluice.ErrNoEndpoint
})

func TestTableLookup(t *testing.T) {
	table, err := tcpproxy.NewTable([]tcpproxy.Route{
		{Name: "api", ServerNames: []string{"api.example.com"}, Picker: nopPicker},
		{Name: "api-h2", ServerNames: []string{"API.example.com"}, ALPN: []string{"h2"}, Picker: nopPicker},
		{Name: "wild", ServerNames: []string{"*.example.com"}, Picker: nopPicker},
		{Name: "acme", ServerNames: []string{"*.example.com", "other.test"}, ALPN: []string{"acme-tls/1"}, Picker: nopPicker},
		{Name: "deep", ServerNames: []string{"*.b.example.com"}, Picker: nopPicker},
		{Name: "h2-anywhere", ALPN: []string{"h2"}, Picker: nopPicker},
		{Name: "default", Picker: nopPicker},
	})
	require.NoError(t, err)
	for _, tc := range []struct {
		name string
		alpn []string
		want string
	}{
		{"api.example.com", nil, "api"},
		{"API.Example.Com", nil, "api"},
		{"api.example.com.", nil, "api"},
		{"api.example.com", []string{"http/1.1", "h2"}, "api-h2"},
		{"api.example.com", []string{"acme-tls/1"}, "api"}, // the exact name's group wins before the wildcard's
		{"x.example.com", nil, "wild"},
		{"x.example.com", []string{"acme-tls/1"}, "acme"},
		{"x.example.com", []string{"h2"}, "wild"}, // a group's route without ALPN beats the default group
		{"example.com", nil, "default"},           // a wildcard covers one more label, not none
		{"a.b.example.com", nil, "deep"},          // nor two: "*.b.example.com" does
		{"a.c.example.com", nil, "default"},
		{"other.test", []string{"acme-tls/1"}, "acme"},
		{"other.test", nil, "default"}, // acme takes other.test only with its ALPN
		{"other.test", []string{"h2"}, "h2-anywhere"},
		{"", nil, "default"}, // plain text, or TLS without SNI
		{"", []string{"h2"}, "h2-anywhere"},
		{"nomatch.test", nil, "default"},
	} {
		r := table.Lookup(tc.name, tc.alpn)
		if assert.NotNil(t, r, "%q %v", tc.name, tc.alpn) {
			assert.Equal(t, tc.want, r.Name, "route for %q %v", tc.name, tc.alpn)
		}
	}

	noDefault, err := tcpproxy.NewTable([]tcpproxy.Route{{Name: "a", ServerNames: []string{"a.test"}, Picker: nopPicker}})
	require.NoError(t, err)
	assert.Nil(t, noDefault.Lookup("b.test", nil), "no route when nothing matches and there is no default")
	assert.Nil(t, noDefault.Lookup("", nil), "no route for plain text without a default")
	assert.Nil(t, noDefault.Lookup(strings.Repeat("a", 300), nil), "an over-long name matches nothing")
}

func TestNewTableErrors(t *testing.T) {
	l := tcpproxy.NewListener(nil)
	for _, tc := range []struct {
		routes []tcpproxy.Route
		want   string
	}{
		{[]tcpproxy.Route{{Picker: nopPicker}}, `routes[0] "": Name is required`},
		{[]tcpproxy.Route{{Name: "a"}}, "exactly one of Picker and Listener"},
		{[]tcpproxy.Route{{Name: "a", Picker: nopPicker, Listener: l}}, "exactly one of Picker and Listener"},
		{[]tcpproxy.Route{{Name: "a", Picker: nopPicker}, {Name: "a", ServerNames: []string{"x.test"}, Picker: nopPicker}}, `routes[1] "a": Name is not unique`},
		{[]tcpproxy.Route{{Name: "a", ServerNames: []string{"x:443"}, Picker: nopPicker}}, `ServerNames[0] "x:443" must be a host name`},
		{[]tcpproxy.Route{{Name: "a", ServerNames: []string{"*"}, Picker: nopPicker}}, `ServerNames[0] "*" must be a host name`},
		{[]tcpproxy.Route{{Name: "a", ServerNames: []string{"a.*.test"}, Picker: nopPicker}}, "must be a host name"},
		{[]tcpproxy.Route{{Name: "a", ALPN: []string{""}, Picker: nopPicker}}, "ALPN[0] must be 1 to 255 bytes"},
		{[]tcpproxy.Route{
			{Name: "a", ServerNames: []string{"x.test"}, Picker: nopPicker},
			{Name: "b", ServerNames: []string{"X.test"}, Picker: nopPicker},
		}, `routes[1] "b": ServerNames[0] "X.test": is routed by "a" already`},
		{[]tcpproxy.Route{{Name: "a", Picker: nopPicker}, {Name: "b", Picker: nopPicker}}, `routes[1] "b": is routed by "a" already`},
	} {
		_, err := tcpproxy.NewTable(tc.routes)
		if assert.Error(t, err, "want %q", tc.want) {
			assert.Contains(t, err.Error(), tc.want)
			assert.True(t, strings.HasPrefix(err.Error(), "tcpproxy: "), "errors name the package: %v", err)
		}
	}
}

// bigTable routes n exact names and n/10 wildcards, as an ingress with many hosts would.
func bigTable(tb testing.TB, n int) *tcpproxy.Table {
	routes := make([]tcpproxy.Route, 0, n+n/10+1)
	for i := range n {
		routes = append(routes, tcpproxy.Route{Name: fmt.Sprint("r", i), ServerNames: []string{fmt.Sprintf("host-%d.tenant-%d.example.com", i, i%100)}, Picker: nopPicker})
	}
	for i := range n / 10 {
		routes = append(routes, tcpproxy.Route{Name: fmt.Sprint("w", i), ServerNames: []string{fmt.Sprintf("*.wild-%d.example.com", i)}, ALPN: []string{"h2"}, Picker: nopPicker})
	}
	routes = append(routes, tcpproxy.Route{Name: "default", Picker: nopPicker})
	table, err := tcpproxy.NewTable(routes)
	require.NoError(tb, err)
	return table
}

func TestTableLookupAllocatesNothing(t *testing.T) {
	table := bigTable(t, 10000)
	alpn := []string{"h2", "http/1.1"}
	for _, name := range []string{"host-7777.tenant-77.example.com", "HOST-7777.Tenant-77.example.com.", "x.wild-500.example.com", "unknown.test", ""} {
		var r *tcpproxy.Route
		allocs := testing.AllocsPerRun(1000, func() { r = table.Lookup(name, alpn) })
		assert.Zero(t, allocs, "Lookup(%q) allocations", name)
		assert.NotNil(t, r, "Lookup(%q)", name)
	}
}

// BenchmarkLookup measures routing by SNI among 10 to 10,000 names, beside a plain map lookup
// (the least a lookup by name can cost).
func BenchmarkLookup(b *testing.B) {
	for _, n := range []int{10, 1000, 10000} {
		table := bigTable(b, n)
		name := fmt.Sprintf("host-%d.tenant-%d.example.com", n/2, (n/2)%100)
		alpn := []string{"h2", "http/1.1"}
		b.Run(fmt.Sprintf("exact/names=%d", n), func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if table.Lookup(name, alpn) == nil {
					b.Fatal("no route")
				}
			}
		})
		b.Run(fmt.Sprintf("wildcard/names=%d", n), func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if table.Lookup("x.wild-0.example.com", alpn) == nil {
					b.Fatal("no route")
				}
			}
		})
		m := map[string]int{}
		for i := range n {
			m[fmt.Sprintf("host-%d.tenant-%d.example.com", i, i%100)] = i
		}
		b.Run(fmt.Sprintf("map-baseline/names=%d", n), func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, ok := m[name]; !ok {
					b.Fatal("no entry")
				}
			}
		})
	}
}
