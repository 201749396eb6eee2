package route

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/sluiceproxy/sluice"
	"github.com/sluiceproxy/sluice/proxy"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// statsLog passes on every RequestEvent of a proxy.Hooks. The proxy calls
// it after the response is written, so the client may see the response first.
type statsLog chan proxy.RequestEvent

func (l statsLog) hooks() proxy.Hooks {
	return proxy.Hooks{RequestDone: func(_ *http.Request, e proxy.RequestEvent) { l <- e }}
}

func (l statsLog) next(t *testing.T) proxy.RequestEvent {
	t.Helper()
	select {
	case s := <-l:
		return s
	case <-time.After(5 * time.Second):
		t.Fatal("the proxy reported no finished request within 5s")
		return proxy.RequestEvent{}
	}
}

// TestBackendIsProxy routes to real *proxy.Proxy backends in front of real
// upstream servers and checks that the proxy learns which route it serves.
func TestBackendIsProxy(t *testing.T) {
	upstream := func(name string) *proxy.Proxy {
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			io.WriteString(w, name+" "+r.URL.Path)
		}))
		t.Cleanup(srv.Close)
		ep := sluice.Endpoint{Addr: strings.TrimPrefix(srv.URL, "http://")}
		return &proxy.Proxy{Picker: sluice.PickerFunc(func(sluice.PickInfo) (sluice.PickResult, error) {
			return sluice.PickResult{Endpoint: ep}, nil
		})}
	}
	log := make(statsLog, 2)
	shop, api := upstream("shop"), upstream("api")
	shop.Hooks, api.Hooks = log.hooks(), log.hooks()
	tab, err := New([]Route{
		{Name: "shop", Hosts: []string{"shop.test"}, Backends: []Backend{{Handler: shop}}},
		{Name: "api", Hosts: []string{"api.test"}, Path: "/v1", Backends: []Backend{{Handler: api}}},
	}, Options{})
	require.NoError(t, err)
	front := httptest.NewServer(NewRouter(tab, RouterOptions{}))
	defer front.Close()

	for _, c := range []struct{ host, path, body, route string }{
		{"shop.test", "/cart", "shop /cart", "shop"},
		{"api.test", "/v1/x/../orders", "api /v1/orders", "api"},
	} {
		req, err := http.NewRequest("GET", front.URL+c.path, nil)
		require.NoError(t, err)
		req.Host = c.host
		resp, err := front.Client().Do(req)
		require.NoError(t, err)
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		assert.Equal(t, 200, resp.StatusCode, c.host)
		assert.Equal(t, c.body, string(b), "upstream of %s", c.host)
		assert.Equal(t, c.route, log.next(t).Route, "RequestEvent.Route carries the matched route")
	}
}

func TestStride(t *testing.T) {
	for total := uint64(1); total <= 1000; total++ {
		s := stride(total)
		seen := make([]bool, total)
		for n := range total {
			seen[n*s%total] = true
		}
		for slot, ok := range seen {
			if !ok {
				t.Fatalf("total %d stride %d never visits slot %d", total, s, slot)
			}
		}
	}
}
