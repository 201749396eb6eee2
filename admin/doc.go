// Package admin is a read-only admin interface for a sluice proxy, as Envoy's admin port or
// Traefik's dashboard: JSON describing routes, pools and their endpoints, certificates, the
// cache and the limiters, and an HTML dashboard drawn from it that updates itself every second.
//
// # What it shows, and where it gets it
//
// The packages that hold the state — balancer, healthcheck, tls/certs, cache, ratelimit — each
// report it in their own types, and admin imports none of them: it declares small types of its
// own ([Route], [Pool], [Endpoint], [Certificate], [CacheSummary], [LimiterSummary]) and
// takes them through funcs in [Options], which the embedder writes over whatever it wired. A
// program that serves no dashboard compiles none of this, and the dashboard never holds a
// lock of the proxy's. A nil func leaves its section out:
//
//	h, err := admin.New(admin.Options{
//		Pools: func() []admin.Pool {
//			return []admin.Pool{{Name: "api", Endpoints: endpointsOf(api)}}
//		},
//		Recorder: rec,
//	})
//	go http.Serve(adminListener, h) // a private listener: operators only
//
// [EndpointOf] turns a [sluice.Endpoint] into an Endpoint, state included.
//
// # Request rates, errors and latency
//
// A [Recorder] is told about every request — its route, the endpoint that served it, its
// status and how long it took — and keeps per-second counts for the last few minutes: the
// request rate, the errors (5xx, or no response at all) and the p50 and p99 latency, per route
// and per endpoint. Record is meant for the hot path: one clock read, one atomic map load per
// name and a few atomic adds; no lock, no allocation once a name is known. The latencies go
// into a fixed histogram of 20 buckets (250µs to 10s, about two per doubling) per second, so
// percentiles are estimates to within a bucket, which is what a chart needs. Memory is bounded:
// about 100 bytes per name per second of window (17 KB for three minutes), and at most
// RecorderOptions.MaxRoutes and MaxEndpoints names; beyond them requests are counted under
// [Other], and a name idle for a whole window gives its place up.
//
// A per-request hook feeds the route, and an [sluice.Observer] the endpoint of every try;
// either may leave the other name empty:
//
//	rec.Record(route, "", status, elapsed)                 // per request
//	rec.Record("", ep.Addr, outcome.Status, outcome.Latency) // per try
//
// # Endpoints
//
// Every path answers GET and HEAD only; anything else gets 405. JSON is indented, with
// durations in milliseconds (fields ending in _ms) and times in RFC 3339.
//
//	/                  the dashboard (HTML, with app.js and app.css beside it)
//	/api/snapshot      every configured section and the recorder's whole history: a Snapshot
//	/api/events        server-sent events: a "snapshot" event every Options.Interval, a
//	                   Snapshot whose stats hold only the last completed second
//	/api/routes        []Route
//	/api/pools         []Pool, each with its Endpoints
//	/api/certificates  []Certificate
//	/api/cache         CacheSummary
//	/api/limiters      []LimiterSummary
//	/api/stats         Stats: per-second series per route and per endpoint
//
// A section whose source is nil answers 404.
//
// # The dashboard
//
// The page is three static files embedded in the binary: no build step, nothing fetched from
// a third party. It loads /api/snapshot, then follows /api/events and redraws every second:
// routes, pools with their endpoints coloured by state (ready, terminating, unhealthy,
// ejected), and per route and per endpoint three small SVG charts of up to the last two
// minutes — requests per second, the share of errors, p50 and p99 latency. It works through any server
// that flushes (net/http, h1, h2).
//
// Route names and hosts come from users and are shown as text, never parsed as markup, and
// every response carries a Content-Security-Policy that allows only the Handler's own script
// and style, so a route named like a script is shown, not run. Nothing secret is shown: the
// types have no field for a key or a credential.
//
// Serve the Handler on a listener of its own that only operators reach: addresses, routes and
// health help an attacker map the system, and the event streams cost a snapshot a second each
// (Options.MaxStreams bounds them).
package admin
