package framing

import (
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/sluiceproxy/sluice"
	"github.com/sluiceproxy/sluice/h1"
	"github.com/sluiceproxy/sluice/proxy"
)

// The front ends every case runs through: net/http's server, and sluice's own HTTP/1.1
// server (package h1) in front of the same http.Server.
const (
	frontNetHTTP = "sluice"
	frontH1      = "sluice-h1"
)

var fronts = []string{frontNetHTTP, frontH1}

// server is what a front end serves with: *http.Server or *h1.Server.
type server interface {
	Serve(net.Listener) error
	Close() error
}

// newProxyServer is the one place the proxy under test is wired, as the root doc.go shows:
// proxy.NewServer with its defaults, but for a body read timeout short enough that a case
// whose client never finishes its body ends within the case's deadline; front picks who
// serves HTTP/1.1.
func newProxyServer(h http.Handler, front string) server {
	srv := proxy.NewServer(h, proxy.ServerOptions{BodyReadTimeout: time.Second})
	srv.ErrorLog = log.New(io.Discard, "", 0)
	if front == frontH1 {
		return h1.New(srv)
	}
	return srv
}

// sluiceTarget is a proxy.Proxy in front of one upstream, served on 127.0.0.1.
type sluiceTarget struct {
	addr string
	view *view
}

// startSluice serves a proxy.Proxy whose only endpoint is upstream until the test ends,
// behind the front end front.
func startSluice(tb testing.TB, upstream, front string) *sluiceTarget {
	tb.Helper()
	ep := sluice.Endpoint{Addr: upstream}
	p := &proxy.Proxy{Picker: sluice.PickerFunc(func(sluice.PickInfo) (sluice.PickResult, error) {
		return sluice.PickResult{Endpoint: ep}, nil
	})}
	v := &view{}
	srv := newProxyServer(v.wrap(p), front)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(tb, err, "listen for the proxy")
	go srv.Serve(ln)
	tb.Cleanup(func() {
		srv.Close()
		p.CloseIdleConnections()
	})
	return &sluiceTarget{addr: ln.Addr().String(), view: v}
}

// view records what the proxy's handler served: the proxy's own idea of request boundaries.
type view struct {
	active atomic.Int64
	mu     sync.Mutex
	served []served // mu protects served
}

func (v *view) wrap(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		v.active.Add(1)
		s := served{Method: r.Method, Target: r.URL.RequestURI()}
		if r.Method == http.MethodConnect && r.URL.Path == "" {
			s.Target = r.URL.Host // what the transport writes for CONNECT
		}
		cb := &countBody{ReadCloser: r.Body}
		if r.Body != nil && r.Body != http.NoBody {
			r.Body = cb
		}
		defer func() {
			s.BodyLen = cb.n.Load()
			v.mu.Lock()
			v.served = append(v.served, s)
			v.mu.Unlock()
			v.active.Add(-1)
		}()
		h.ServeHTTP(w, r)
	})
}

func (v *view) reset() {
	v.mu.Lock()
	v.served = nil
	v.mu.Unlock()
}

func (v *view) snapshot() []served {
	v.mu.Lock()
	defer v.mu.Unlock()
	return append([]served(nil), v.served...)
}

// quiet waits until no handler runs, for at most d.
func (v *view) quiet(d time.Duration) {
	end := time.Now().Add(d)
	for v.active.Load() > 0 && time.Now().Before(end) {
		time.Sleep(2 * time.Millisecond) // polling with a deadline: handlers signal nothing else
	}
}

type countBody struct {
	io.ReadCloser
	n atomic.Int64
}

func (b *countBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	b.n.Add(int64(n))
	return n, err
}

// play runs case c against the proxy at addr in front of up; v is sluice's handler view, or
// nil for another proxy.
func play(c *kase, addr string, up *upstream, v *view) *result {
	up.begin(c.name, c.up)
	if v != nil {
		v.reset()
	}
	x := run(c, addr, func() { up.waitAfter(time.Second) })
	if v != nil {
		v.quiet(2 * time.Second)
	}
	up.quiet(time.Second)
	r := &result{c: c, x: x, up: up.requests()}
	if v != nil {
		r.served, r.view = v.snapshot(), true
	}
	return r
}

// TestFraming runs every case through sluice, each against its own proxy and upstream, and
// fails on any UNSAFE outcome that is not a marked known defect.
func TestFraming(t *testing.T) {
	cases := allCases()
	verdicts := map[string][]verdict{}
	for _, front := range fronts {
		verdicts[front] = make([]verdict, len(cases))
	}
	t.Run("case", func(t *testing.T) {
		for i := range cases {
			c := &cases[i]
			for _, front := range fronts {
				t.Run(front+"/"+c.name, func(t *testing.T) {
					t.Parallel()
					up := startUpstream(t, "127.0.0.1:0")
					sl := startSluice(t, up.addr(), front)
					r := play(c, sl.addr, up, sl.view)
					v := classify(r)
					verdicts[front][i] = v
					judge(t, c, v, r, front)
				})
			}
		}
	})
	t.Log(summary(cases, verdicts, fronts))
}

// judge fails t on an UNSAFE verdict, unless the case marks it a known defect of net/http's
// server (front).
func judge(t *testing.T, c *kase, v verdict, r *result, front string) {
	t.Helper()
	detail := strings.Join(v.reasons, "\n") + "\n" + describe(r)
	known := c.knownDefect != "" && front == frontNetHTTP
	switch {
	case v.class == unsafe && known:
		t.Logf("known defect %s, not failing:\n%s", c.knownDefect, detail)
	case v.class == unsafe:
		assert.Fail(t, "UNSAFE outcome", detail)
	case known:
		t.Logf("marked %s but no longer UNSAFE: remove the mark\n%s", c.knownDefect, detail)
	case v.class == questionable:
		t.Logf("questionable:\n%s", detail)
	}
}

// summary renders one row per case and the totals per target.
func summary(cases []kase, verdicts map[string][]verdict, targets []string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "\n%-44s", "case")
	for _, t := range targets {
		fmt.Fprintf(&b, " %-13s", t)
	}
	b.WriteString("\n")
	for i, c := range cases {
		fmt.Fprintf(&b, "%-44s", c.side[:3]+" "+c.name)
		for _, t := range targets {
			cl := verdicts[t][i].class.String()
			if t == frontNetHTTP && c.knownDefect != "" && verdicts[t][i].class == unsafe {
				cl += "(known)"
			}
			fmt.Fprintf(&b, " %-13s", cl)
		}
		b.WriteString("\n")
	}
	fmt.Fprintf(&b, "%-44s", "UNSAFE marked as known defects")
	for _, t := range targets {
		n := 0
		for i, v := range verdicts[t] {
			if v.class == unsafe && cases[i].knownDefect != "" && t == frontNetHTTP {
				n++
			}
		}
		fmt.Fprintf(&b, " %-13d", n)
	}
	b.WriteString("\n")
	for _, k := range []class{unsafe, questionable, ok} {
		fmt.Fprintf(&b, "%-44s", "total "+k.String())
		for _, t := range targets {
			n := 0
			for _, v := range verdicts[t] {
				if v.class == k {
					n++
				}
			}
			fmt.Fprintf(&b, " %-13d", n)
		}
		b.WriteString("\n")
	}
	fmt.Fprintf(&b, "%d cases (%d request side, %d response side)\n", len(cases), countSide(cases, "request"), countSide(cases, "response"))
	return b.String()
}

func countSide(cases []kase, side string) int {
	n := 0
	for _, c := range cases {
		if c.side == side {
			n++
		}
	}
	return n
}

// TestCompare runs the cases through sluice and the proxies named in FRAMING_TARGETS
// ("nginx=127.0.0.1:18081,haproxy=127.0.0.1:18082"), all in front of one scripted upstream
// listening on FRAMING_UPSTREAM, and prints a side-by-side table. It never fails on a
// verdict: it reports. scripts/framing-compare.sh sets it up.
func TestCompare(t *testing.T) {
	upAddr, spec := os.Getenv("FRAMING_UPSTREAM"), os.Getenv("FRAMING_TARGETS")
	if upAddr == "" || spec == "" {
		t.Skip("FRAMING_UPSTREAM and FRAMING_TARGETS not set: run scripts/framing-compare.sh")
	}
	up := startUpstream(t, upAddr)
	targets := fronts
	addrs := map[string]string{}
	views := map[string]*view{}
	for _, front := range fronts {
		sl := startSluice(t, up.addr(), front)
		addrs[front], views[front] = sl.addr, sl.view
	}
	for _, kv := range strings.Split(spec, ",") {
		name, addr, ok := strings.Cut(kv, "=")
		if !ok {
			t.Fatalf("FRAMING_TARGETS: %q is not name=host:port", kv)
		}
		targets = append(targets, name)
		addrs[name] = addr
	}
	cases := allCases()
	if only := os.Getenv("FRAMING_CASES"); only != "" {
		var keep []kase
		for _, c := range cases {
			if strings.Contains(c.name, only) {
				keep = append(keep, c)
			}
		}
		cases = keep
	}
	verdicts := map[string][]verdict{}
	var details strings.Builder
	for i := range cases {
		c := &cases[i]
		for _, name := range targets {
			r := play(c, addrs[name], up, views[name])
			vd := classify(r)
			verdicts[name] = append(verdicts[name], vd)
			if vd.class != ok {
				fmt.Fprintf(&details, "%s %s: %s\n  %s\n", name, c.name, vd.class, strings.Join(vd.reasons, "\n  "))
				if os.Getenv("FRAMING_VERBOSE") != "" {
					details.WriteString(describe(r))
				}
			}
		}
	}
	t.Log("\n" + details.String())
	t.Log(summary(cases, verdicts, targets))
}
