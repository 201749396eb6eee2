// Package h1 is an HTTP/1.1 server for any http.Handler: a front end that takes the
// place of net/http's HTTP/1 server where its cost per request matters, and hands HTTP/2
// connections (h2c with prior knowledge, and h2 negotiated over TLS) to the http.Server it
// was made from.
package h1
