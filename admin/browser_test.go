package admin_test

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/sluiceproxy/sluice"
	"github.com/sluiceproxy/sluice/admin"
	"github.com/sluiceproxy/sluice/balancer"
	"github.com/sluiceproxy/sluice/healthcheck"
	"github.com/sluiceproxy/sluice/proxy"
)

// chromium returns the path of a Chromium (or Chrome) to drive: $SLUICE_CHROMIUM, or the
// first of Debian's and the usual names on $PATH. Without one the test is skipped, except
// under CI, where the dashboard must be tested: `make test` installs Debian's chromium.
func chromium(t *testing.T) string {
	t.Helper()
	if p := os.Getenv("SLUICE_CHROMIUM"); p != "" {
		return p
	}
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome", "google-chrome-stable"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	if ci := os.Getenv("CI"); ci != "" && ci != "false" && ci != "0" {
		t.Fatal("chromium not found and CI is set: the dashboard must be tested in a browser; " +
			"run `make chromium` (apt-get install chromium) or set SLUICE_CHROMIUM")
	}
	t.Skip("chromium not found: run `make chromium` (apt-get install chromium) or set SLUICE_CHROMIUM to test the dashboard in a browser")
	return ""
}

// artifactDir is where the test keeps its screenshot: $SLUICE_ARTIFACTS when set, else the
// test's artifact directory, which `go test -artifacts -outputdir DIR` keeps under DIR.
func artifactDir(t *testing.T) string {
	t.Helper()
	if dir := os.Getenv("SLUICE_ARTIFACTS"); dir != "" {
		require.NoError(t, os.MkdirAll(dir, 0o755))
		return dir
	}
	return t.ArtifactDir()
}

// poolView is the small adapter an embedder writes today between a pool's parts and the
// dashboard: it keeps the endpoint set the health checker last pushed to the balancer, the
// checker's health changes as ejections, and a latency estimate from every try's outcome.
type poolView struct {
	mu        sync.Mutex // mu protects the fields below
	eps       []sluice.Endpoint
	ejections map[string][]admin.Ejection
	ejected   map[string]bool          // taken out by outlier detection, not by probes
	latency   map[string]time.Duration // an EWMA of each endpoint's latency
}

func newPoolView() *poolView {
	return &poolView{ejections: map[string][]admin.Ejection{}, ejected: map[string]bool{}, latency: map[string]time.Duration{}}
}

// push stands where the checker pushes its marked sets: it keeps the set, then passes it on.
func (v *poolView) push(bal *balancer.Balancer) func([]sluice.Endpoint) {
	return func(eps []sluice.Endpoint) {
		v.mu.Lock()
		v.eps = slices.Clone(eps)
		v.mu.Unlock()
		bal.Update(eps)
	}
}

// change is the checker's Hooks.Change.
func (v *poolView) change(ev healthcheck.ChangeEvent) {
	v.mu.Lock()
	defer v.mu.Unlock()
	addr := ev.Endpoint.Addr
	v.ejected[addr] = ev.Reason.Ejection()
	if ev.To == sluice.Unhealthy {
		list := append(v.ejections[addr], admin.Ejection{At: time.Now(), Reason: ev.Reason.String(), For: ev.EjectionTime})
		if len(list) > 5 {
			list = list[len(list)-5:]
		}
		v.ejections[addr] = list
	}
}

// Observe is a sluice.Observer: it feeds the latency estimate and the Recorder.
func (v *poolView) observer(rec *admin.Recorder) sluice.Observer {
	return observerFunc(func(ep sluice.Endpoint, o sluice.Outcome) {
		status := o.Status
		if o.Failure == sluice.Canceled {
			return
		}
		rec.Record("", ep.Addr, status, o.Latency)
		v.mu.Lock()
		old := v.latency[ep.Addr]
		v.latency[ep.Addr] = old + (o.Latency-old)/8
		v.mu.Unlock()
	})
}

type observerFunc func(sluice.Endpoint, sluice.Outcome)

func (f observerFunc) Observe(ep sluice.Endpoint, o sluice.Outcome) { f(ep, o) }

func (v *poolView) pool(name string) admin.Pool {
	v.mu.Lock()
	defer v.mu.Unlock()
	p := admin.Pool{Name: name, Policy: "round-robin"}
	for _, e := range v.eps {
		ae := admin.EndpointOf(e)
		if ae.State == admin.StateUnhealthy && v.ejected[e.Addr] {
			ae.State = admin.StateEjected
		}
		ae.Latency = v.latency[e.Addr]
		ae.Ejections = slices.Clone(v.ejections[e.Addr])
		p.Endpoints = append(p.Endpoints, ae)
	}
	return p
}

// statusWriter remembers the status a handler sent.
type statusWriter struct {
	http.ResponseWriter
	status int
}

func (w *statusWriter) WriteHeader(code int) {
	if w.status == 0 {
		w.status = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// recordRoute counts every request of next under route: the per-request hook.
func recordRoute(rec *admin.Recorder, route string, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		sw := &statusWriter{ResponseWriter: w}
		next.ServeHTTP(sw, r)
		if sw.status == 0 {
			sw.status = http.StatusOK
		}
		rec.Record(route, "", sw.status, time.Since(start))
	})
}

// TestDashboardInBrowser runs a proxy over three health-checked backends, opens the dashboard
// in headless Chromium, and kills a backend under load: the page, never reloaded, must show
// it unhealthy within a few seconds.
func TestDashboardInBrowser(t *testing.T) {
	exe := chromium(t)

	// Three backends, each answering requests and health probes.
	var backends []*httptest.Server
	var eps []sluice.Endpoint
	for _, zone := range []string{"zone-a", "zone-b", "zone-c"} {
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			io.WriteString(w, "ok")
		}))
		t.Cleanup(srv.Close)
		backends = append(backends, srv)
		eps = append(eps, sluice.Endpoint{Addr: srv.Listener.Addr().String(), Zone: zone})
	}
	victim := eps[1].Addr

	// The pool: checker → balancer → proxy, each try's outcome back to the checker.
	rec, err := admin.NewRecorder(admin.RecorderOptions{})
	require.NoError(t, err)
	view := newPoolView()
	hc, err := healthcheck.New(healthcheck.Options{
		Probe:              &healthcheck.HTTP{Path: "/healthz"},
		Interval:           100 * time.Millisecond,
		Timeout:            250 * time.Millisecond,
		UnhealthyThreshold: 2,
		Jitter:             -1,
		Hooks:              healthcheck.Hooks{Change: view.change},
		Logger:             slog.New(slog.DiscardHandler),
	})
	require.NoError(t, err)
	bal, err := balancer.New(balancer.RoundRobin{}, balancer.Options{})
	require.NoError(t, err)
	hc.Update(eps)
	ctx, stop := context.WithCancel(t.Context())
	var wg sync.WaitGroup
	t.Cleanup(wg.Wait)
	wg.Go(func() { _ = hc.Run(ctx, view.push(bal)) })

	px := &proxy.Proxy{Picker: bal, Observer: sluice.Observers(hc, view.observer(rec))}
	front := httptest.NewServer(recordRoute(rec, "api", px))
	t.Cleanup(front.Close)

	// A route named like markup: the page must show it as text.
	const evil = `<img src=x onerror="window.__xss=1">`
	h, err := admin.New(admin.Options{
		Routes: func() []admin.Route {
			return []admin.Route{
				{Name: "api", Hosts: []string{"api.example.com"}, Paths: []string{"prefix /"}, Pools: []string{"api"}},
				{Name: evil, Hosts: []string{evil}, Paths: []string{"exact /x"}, Pools: []string{"api"}},
			}
		},
		Pools:    func() []admin.Pool { return []admin.Pool{view.pool("api")} },
		Recorder: rec,
	})
	require.NoError(t, err)
	adm := httptest.NewServer(h)
	t.Cleanup(adm.Close)
	t.Cleanup(stop) // first of all: the load and the checker end before the servers close

	// Load: four clients until the test ends.
	for range 4 {
		wg.Go(func() {
			for ctx.Err() == nil {
				req, _ := http.NewRequestWithContext(ctx, http.MethodGet, front.URL+"/", nil)
				res, err := http.DefaultClient.Do(req)
				if err != nil {
					continue
				}
				io.Copy(io.Discard, res.Body)
				res.Body.Close()
			}
		})
	}

	// The browser.
	allocCtx, cancelAlloc := chromedp.NewExecAllocator(t.Context(), append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(exe),
		chromedp.NoSandbox, // tests run as root in CI containers, where Chromium's sandbox cannot start
		chromedp.Flag("disable-gpu", true),
		chromedp.WindowSize(1400, 1000),
	)...)
	defer cancelAlloc()
	browser, cancelBrowser := chromedp.NewContext(allocCtx, chromedp.WithLogf(t.Logf))
	defer cancelBrowser()
	require.NoError(t, chromedp.Do(browser, chromedp.Navigate(adm.URL+"/")), "opening the dashboard")

	// run runs one step with a deadline; the browser's own context has none, as chromedp asks.
	run := func(what string, steps ...chromedp.Action[chromedp.Void]) {
		t.Helper()
		stepCtx, cancel := context.WithTimeout(browser, 20*time.Second)
		defer cancel()
		require.NoError(t, chromedp.Do(stepCtx, steps...), what)
	}
	eval := func(expr string, v any) {
		t.Helper()
		stepCtx, cancel := context.WithTimeout(browser, 10*time.Second)
		defer cancel()
		raw, err := chromedp.Run(stepCtx, chromedp.Evaluate[[]byte](expr))
		require.NoError(t, err, "evaluating %s", expr)
		require.NoError(t, json.Unmarshal(raw, v), "the result of %s: %s", expr, raw)
	}
	js := func(s string) string { b, _ := json.Marshal(s); return string(b) }
	stateOf := func(addr string) string {
		return `document.querySelector('tr[data-endpoint=' + JSON.stringify(` + js(addr) + `) + ']')?.dataset.state`
	}

	run("waiting for the endpoints", chromedp.WaitVisible(chromedp.CSS(`tr[data-endpoint]`)))
	run("waiting for every endpoint to be shown ready", chromedp.Poll[chromedp.Void](
		`document.querySelectorAll('tr[data-endpoint][data-state="ready"]').length === 3`,
		chromedp.WithPollingTimeout(10*time.Second)))

	var shown []string
	eval(`Array.from(document.querySelectorAll('tr[data-endpoint]'), r => r.dataset.endpoint)`, &shown)
	assert.ElementsMatch(t, []string{eps[0].Addr, eps[1].Addr, eps[2].Addr}, shown, "the pool's endpoints are on the page")
	var routes []struct{ Attr, Text string }
	eval(`Array.from(document.querySelectorAll('tr[data-route]'), r => ({attr: r.dataset.route, text: r.cells[0].textContent}))`, &routes)
	require.Len(t, routes, 2, "both routes are on the page")
	assert.Equal(t, "api", routes[0].Text)
	assert.Equal(t, evil, routes[1].Text, "a route named like markup is shown as its text")
	assert.Equal(t, evil, routes[1].Attr)
	var injected struct {
		Images int
		XSS    bool
	}
	eval(`({images: document.querySelectorAll('main img').length, xss: window.__xss === 1})`, &injected)
	assert.Zero(t, injected.Images, "no element was made from a route's name")
	assert.False(t, injected.XSS, "no script ran from a route's name")

	run("waiting for the route's request rate to show", chromedp.Poll[chromedp.Void](
		`Number(document.querySelector('tr[data-route="api"] td[data-rate]')?.dataset.rate) > 0`,
		chromedp.WithPollingTimeout(10*time.Second)))

	// A mark the page keeps only if it is never reloaded.
	run("marking the page", chromedp.Evaluate[chromedp.Void](`window.__sluiceMark = 42`))

	killed := time.Now()
	backends[1].CloseClientConnections()
	backends[1].Close()
	run("waiting for the killed endpoint to be shown unhealthy", chromedp.Poll[chromedp.Void](
		stateOf(victim)+` === 'unhealthy'`, chromedp.WithPollingTimeout(5*time.Second)))
	t.Logf("the dashboard showed %s unhealthy %v after it was killed", victim, time.Since(killed).Round(10*time.Millisecond))

	var mark int
	eval(`window.__sluiceMark ?? 0`, &mark)
	assert.Equal(t, 42, mark, "the page updated itself: it was not reloaded")
	var states map[string]string
	eval(`Object.fromEntries(Array.from(document.querySelectorAll('tr[data-endpoint]'), r => [r.dataset.endpoint, r.dataset.state]))`, &states)
	assert.Equal(t, map[string]string{eps[0].Addr: "ready", eps[1].Addr: "unhealthy", eps[2].Addr: "ready"}, states)
	var reason string
	eval(`document.querySelector('tr[data-endpoint=' + JSON.stringify(`+js(victim)+`) + '] td.ejections').textContent`, &reason)
	assert.Contains(t, reason, healthcheck.ProbeFailed.String(), "the killed endpoint's row says why it is out")

	// Let a few more seconds of load be drawn, then keep a picture of the page.
	run("waiting for the charts to show traffic on the others", chromedp.Poll[chromedp.Void](
		`Number(document.querySelector('tr[data-endpoint=' + JSON.stringify(`+js(eps[0].Addr)+`) + '] td[data-rate]')?.dataset.rate) > 0`,
		chromedp.WithPollingTimeout(10*time.Second)))
	stepCtx, cancel := context.WithTimeout(browser, 20*time.Second)
	defer cancel()
	png, err := chromedp.Run(stepCtx, chromedp.FullScreenshot(100))
	require.NoError(t, err, "taking a screenshot")
	path := filepath.Join(artifactDir(t), "dashboard.png")
	require.NoError(t, os.WriteFile(path, png, 0o644))
	t.Logf("screenshot of the dashboard: %s", path)
}
