package admin

import (
	"bytes"
	"embed"
	"encoding/json"
	"fmt"
	"io/fs"
	"net/http"
	"sync/atomic"
	"time"
)

// Options says where a Handler reads what it shows. Every source is a func the Handler calls
// on each request (and each second of each event stream), from the request's goroutine, so
// it must be safe for concurrent use, return quickly and return values the Handler may keep:
// fresh slices, not ones the caller goes on modifying. A nil source leaves its section out of
// the dashboard, and its JSON endpoint answers 404.
type Options struct {
	// Routes lists the routing rules.
	Routes func() []Route

	// Pools lists the backend services with their endpoints.
	Pools func() []Pool

	// Certificates lists the certificates being served.
	Certificates func() []Certificate

	// Cache summarises the response cache.
	Cache func() CacheSummary

	// Limiters summarises the rate and concurrency limiters.
	Limiters func() []LimiterSummary

	// Recorder holds the request rate, error rate and latency history drawn as charts, per
	// route and per endpoint. Nil leaves the charts out.
	Recorder *Recorder

	// Interval is the time between two snapshots of an event stream. Zero means 1s.
	Interval time.Duration

	// MaxStreams bounds the event streams open at once; further ones are answered 503.
	// Zero means 16.
	MaxStreams int
}

// Handler is the admin interface: a read-only net/http.Handler serving the dashboard and
// the JSON it is drawn from. Create it with New.
//
// It answers only GET and HEAD; any other method gets 405. Every response carries a strict
// Content-Security-Policy (scripts and styles from the Handler only, no inline script, no
// framing) and is never cached.
//
// Mount it on a listener of its own that only operators reach, as Envoy's admin port: what it
// shows (addresses, routes, health) helps an attacker map the system. Under a path prefix,
// mount it with http.StripPrefix and a trailing slash ("/admin/"): the page's links are
// relative.
type Handler struct {
	opts    Options
	mux     *http.ServeMux
	streams atomic.Int32 // event streams open now
}

//go:embed ui
var ui embed.FS

// csp is the Content-Security-Policy of every response: nothing but the Handler's own
// scripts, styles and event stream, no inline script or style attribute, no plugins, forms
// or framing. The page builds its DOM from text nodes, so even a route named like a script
// would be shown, not run; the policy makes that hold should a bug creep in.
const csp = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; " +
	"connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"

// New returns a Handler for opts. The error names the field that is wrong.
func New(opts Options) (*Handler, error) {
	if opts.Interval < 0 {
		return nil, fmt.Errorf("admin: Interval must be ≥ 0, got %v", opts.Interval)
	}
	if opts.Interval == 0 {
		opts.Interval = time.Second
	}
	if opts.MaxStreams < 0 {
		return nil, fmt.Errorf("admin: MaxStreams must be ≥ 0, got %d", opts.MaxStreams)
	}
	if opts.MaxStreams == 0 {
		opts.MaxStreams = 16
	}
	h := &Handler{opts: opts, mux: http.NewServeMux()}
	static, err := fs.Sub(ui, "ui")
	if err != nil {
		return nil, err
	}
	files := http.FileServerFS(static)
	h.mux.Handle("GET /{$}", files)
	h.mux.Handle("GET /app.js", files)
	h.mux.Handle("GET /app.css", files)
	h.mux.HandleFunc("GET /api/snapshot", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, h.snapshot(h.opts.Recorder.Stats))
	})
	h.mux.HandleFunc("GET /api/events", h.events)
	section := func(path string, present bool, get func() any) {
		h.mux.HandleFunc("GET "+path, func(w http.ResponseWriter, r *http.Request) {
			if !present {
				http.Error(w, "admin: this section is not configured", http.StatusNotFound)
				return
			}
			writeJSON(w, get())
		})
	}
	section("/api/routes", opts.Routes != nil, func() any { return nonNil(opts.Routes()) })
	section("/api/pools", opts.Pools != nil, func() any { return nonNil(opts.Pools()) })
	section("/api/certificates", opts.Certificates != nil, func() any { return nonNil(opts.Certificates()) })
	section("/api/cache", opts.Cache != nil, func() any { return opts.Cache() })
	section("/api/limiters", opts.Limiters != nil, func() any { return nonNil(opts.Limiters()) })
	section("/api/stats", opts.Recorder != nil, func() any { return opts.Recorder.Stats() })
	return h, nil
}

// ServeHTTP serves the dashboard and its JSON; see the package documentation for the paths.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	hdr := w.Header()
	hdr.Set("Content-Security-Policy", csp)
	hdr.Set("X-Content-Type-Options", "nosniff")
	hdr.Set("X-Frame-Options", "DENY")
	hdr.Set("Referrer-Policy", "no-referrer")
	hdr.Set("Cache-Control", "no-store")
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		hdr.Set("Allow", "GET, HEAD")
		http.Error(w, "admin: read-only: only GET and HEAD are allowed", http.StatusMethodNotAllowed)
		return
	}
	h.mux.ServeHTTP(w, r)
}

// Snapshot is everything the dashboard shows at one moment: the body of /api/snapshot and of
// every event of /api/events. A section whose source is nil is left out.
type Snapshot struct {
	// Time is when the snapshot was taken.
	Time time.Time `json:"time"`
	// IntervalMS is the time between two events of a stream, in milliseconds.
	IntervalMS int64 `json:"interval_ms"`

	// Routes, Pools, Certificates, Cache and Limiters are what the sources of Options
	// returned.
	Routes       []Route          `json:"routes,omitempty"`
	Pools        []Pool           `json:"pools,omitempty"`
	Certificates []Certificate    `json:"certificates,omitempty"`
	Cache        *CacheSummary    `json:"cache,omitempty"`
	Limiters     []LimiterSummary `json:"limiters,omitempty"`

	// Stats holds the Recorder's history: all of it in /api/snapshot, the last completed
	// second in an event.
	Stats *Stats `json:"stats,omitempty"`

	// Sections names the sections configured, so that the page can tell an empty section
	// from an absent one.
	Sections []string `json:"sections"`
}

// snapshot gathers every configured section, with stats from the given func.
func (h *Handler) snapshot(stats func() Stats) Snapshot {
	o := &h.opts
	s := Snapshot{Time: time.Now(), IntervalMS: o.Interval.Milliseconds(), Sections: []string{}}
	if o.Routes != nil {
		s.Routes = nonNil(o.Routes())
		s.Sections = append(s.Sections, "routes")
	}
	if o.Pools != nil {
		s.Pools = nonNil(o.Pools())
		s.Sections = append(s.Sections, "pools")
	}
	if o.Certificates != nil {
		s.Certificates = nonNil(o.Certificates())
		s.Sections = append(s.Sections, "certificates")
	}
	if o.Cache != nil {
		c := o.Cache()
		s.Cache = &c
		s.Sections = append(s.Sections, "cache")
	}
	if o.Limiters != nil {
		s.Limiters = nonNil(o.Limiters())
		s.Sections = append(s.Sections, "limiters")
	}
	if o.Recorder != nil {
		st := stats()
		s.Stats = &st
		s.Sections = append(s.Sections, "stats")
	}
	return s
}

// events streams a snapshot every Interval as server-sent events, each with the last second
// of stats, until the client goes away.
func (h *Handler) events(w http.ResponseWriter, r *http.Request) {
	if n := h.streams.Add(1); int(n) > h.opts.MaxStreams {
		h.streams.Add(-1)
		http.Error(w, "admin: too many event streams open", http.StatusServiceUnavailable)
		return
	}
	defer h.streams.Add(-1)
	rc := http.NewResponseController(w)
	hdr := w.Header()
	hdr.Set("Content-Type", "text/event-stream")
	hdr.Set("X-Accel-Buffering", "no") // so that a buffering proxy in front passes events on
	w.WriteHeader(http.StatusOK)
	if r.Method == http.MethodHead {
		return
	}
	last := func() Stats { return h.opts.Recorder.stats(1) }
	// retry tells EventSource how soon to reconnect when the stream breaks.
	if _, err := fmt.Fprintf(w, "retry: %d\n\n", 2*h.opts.Interval.Milliseconds()); err != nil {
		return
	}
	tick := time.NewTicker(h.opts.Interval)
	defer tick.Stop()
	var buf bytes.Buffer
	for {
		buf.Reset()
		buf.WriteString("event: snapshot\ndata: ")
		if err := json.NewEncoder(&buf).Encode(h.snapshot(last)); err != nil {
			return
		}
		buf.WriteString("\n") // Encode ended the data line; this blank line ends the event
		// A server with a WriteTimeout would cut the stream: each event gets its own.
		_ = rc.SetWriteDeadline(time.Now().Add(h.opts.Interval + 10*time.Second))
		if _, err := w.Write(buf.Bytes()); err != nil {
			return
		}
		if err := rc.Flush(); err != nil {
			return
		}
		select {
		case <-r.Context().Done():
			return
		case <-tick.C:
		}
	}
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v) // a failed write means the client went away; nothing more to tell it
}

// nonNil returns s, or an empty slice for nil, so that JSON shows [] rather than null.
func nonNil[T any](s []T) []T {
	if s == nil {
		return []T{}
	}
	return s
}
