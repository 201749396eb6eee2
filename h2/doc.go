// Package h2 is an HTTP/2 server for any http.Handler: sluice's own, in place of net/http's
// where the cost of each request matters.
package h2
