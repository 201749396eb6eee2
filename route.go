package sluice

import "net/http"

// RouteRecorder is implemented by a ResponseWriter that wants the name of the route a request
// matched, when the matching happens inside the handler it was given: an edge access log
// (package accesslog) wraps the router and so never sees the request contexts the router
// makes for its routes. Contexts flow inward only; the ResponseWriter is what reaches back
// out, and it costs nothing when nobody listens.
type RouteRecorder interface {
	// RecordRoute is told the route's name. It is called on the request's goroutine,
	// before the route's handler runs.
	RecordRoute(name string)
}

// RecordRoute tells the first RouteRecorder among w and the writers it wraps the route name.
// It looks through Unwrap() http.ResponseWriter, the way [net/http.ResponseController] does,
// so middlewares between the recorder and the router need only implement Unwrap. Routers
// call it when they match a request (package proxy/route's Router does); it does nothing
// when no writer records routes.
func RecordRoute(w http.ResponseWriter, name string) {
	for w != nil {
		if r, ok := w.(RouteRecorder); ok {
			r.RecordRoute(name)
			return
		}
		u, ok := w.(interface{ Unwrap() http.ResponseWriter })
		if !ok {
			return
		}
		w = u.Unwrap()
	}
}
