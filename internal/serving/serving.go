// Package serving holds what sluice's HTTP servers, h1 and h2, share with each other and with
// net/http's Server.Serve: the accept loop and the context each connection is served with.
package serving

import (
	"context"
	"errors"
	"fmt"
	"log"
	"net"
	"net/http"
	"time"
)

// Serve accepts connections on ln and hands each to handle with its context, built as
// net/http's Server.Serve builds it: srv's BaseContext (once), http.ServerContextKey,
// http.LocalAddrContextKey and srv's ConnContext. wrap, when not nil, replaces each connection
// first (with a TLS server connection, say), so that ConnContext sees what is served.
//
// A temporary accept error (out of descriptors, most often) is retried after a pause that
// doubles from 5 ms to 1 s, as net/http does, and logged with logf. After any other error,
// Serve returns http.ErrServerClosed if closing reports true, else the error. handle returns
// false to stop the loop (the server is closing): Serve then returns http.ErrServerClosed.
// name prefixes panics and log lines.
func Serve(ln net.Listener, srv *http.Server, name string, closing func() bool,
	logf func(format string, args ...any), wrap func(net.Conn) net.Conn,
	handle func(ctx context.Context, nc net.Conn) bool) error {
	base := context.Background()
	if srv.BaseContext != nil {
		base = srv.BaseContext(ln)
		if base == nil {
			panic(name + ": BaseContext returned a nil context")
		}
	}
	base = context.WithValue(base, http.ServerContextKey, srv)
	var delay time.Duration // how long to sleep on accept failure
	for {
		nc, err := ln.Accept()
		if err != nil {
			if closing() {
				return http.ErrServerClosed
			}
			var te interface{ Temporary() bool }
			if errors.As(err, &te) && te.Temporary() {
				delay = min(max(2*delay, 5*time.Millisecond), time.Second)
				logf("%s: Accept error: %v; retrying in %v", name, err, delay)
				time.Sleep(delay)
				continue
			}
			return err
		}
		delay = 0
		if wrap != nil {
			nc = wrap(nc)
		}
		ctx := context.WithValue(base, http.LocalAddrContextKey, nc.LocalAddr())
		if cc := srv.ConnContext; cc != nil {
			if ctx = cc(ctx, nc); ctx == nil {
				panic(fmt.Sprintf("%s: ConnContext returned nil", name))
			}
		}
		if !handle(ctx, nc) {
			return http.ErrServerClosed
		}
	}
}

// Logf reports an error through srv.ErrorLog, or the log package's standard logger, as
// net/http's server does.
func Logf(srv *http.Server, format string, args ...any) {
	if l := srv.ErrorLog; l != nil {
		l.Printf(format, args...)
	} else {
		log.Printf(format, args...)
	}
}
