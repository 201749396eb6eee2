// Command stdproxy is the baseline that scripts/bench-process.sh measures sluice against: a
// plain net/http/httputil.ReverseProxy, round robin over -backends, with the flags of
// examples/quickstart. Its transport keeps as many idle connections per backend as sluice's
// default does, so neither proxy waits on dialing. It serves HTTP/1.1 and h2c, or with
// -tls-cert and -tls-key HTTPS with HTTP/2 and HTTP/1.1 by ALPN.
//
//	go run ./internal/cmd/stdproxy -backends 127.0.0.1:9001,127.0.0.1:9002
package main

import (
	"context"
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"os/signal"
	"strings"
	"sync/atomic"
	"syscall"
	"time"
)

func main() {
	listen := flag.String("listen", "127.0.0.1:8080", "`host:port` the proxy listens on")
	backends := flag.String("backends", "", "comma-separated `host:port` list of backends (required)")
	accessLog := flag.Bool("access-log", true, "log one line per request")
	tlsCert := flag.String("tls-cert", "", "serve HTTPS with the PEM certificate chain in `file`")
	tlsKey := flag.String("tls-key", "", "PEM private key of -tls-cert")
	flag.Parse()
	if err := run(*listen, *backends, *accessLog, *tlsCert, *tlsKey); err != nil {
		fmt.Fprintln(os.Stderr, "stdproxy:", err)
		os.Exit(1)
	}
}

func run(listen, backends string, accessLog bool, tlsCert, tlsKey string) error {
	if backends == "" {
		return errors.New("-backends is required")
	}
	var tlsConfig *tls.Config
	if tlsCert != "" || tlsKey != "" {
		if tlsCert == "" || tlsKey == "" {
			return errors.New("-tls-cert and -tls-key: give both or neither")
		}
		cert, err := tls.LoadX509KeyPair(tlsCert, tlsKey)
		if err != nil {
			return fmt.Errorf("-tls-cert, -tls-key: %w", err)
		}
		tlsConfig = &tls.Config{Certificates: []tls.Certificate{cert}}
	}
	var targets []*url.URL
	for _, addr := range strings.Split(backends, ",") {
		if _, _, err := net.SplitHostPort(addr); err != nil {
			return fmt.Errorf("-backends: %q is not host:port: %w", addr, err)
		}
		targets = append(targets, &url.URL{Scheme: "http", Host: addr})
	}
	var next atomic.Uint64
	rp := &httputil.ReverseProxy{
		Rewrite: func(r *httputil.ProxyRequest) {
			r.SetURL(targets[(next.Add(1)-1)%uint64(len(targets))])
			r.SetXForwarded()
		},
		Transport: &http.Transport{MaxIdleConnsPerHost: 256, DisableCompression: true},
	}
	var h http.Handler = rp
	if accessLog {
		h = logged(rp, slog.New(slog.NewTextHandler(os.Stdout, nil)))
	}

	ln, err := net.Listen("tcp", listen)
	if err != nil {
		return fmt.Errorf("-listen: %w", err)
	}
	var protos http.Protocols
	protos.SetHTTP1(true)
	protos.SetHTTP2(true)
	protos.SetUnencryptedHTTP2(true)
	srv := &http.Server{Handler: h, Protocols: &protos, ReadHeaderTimeout: 10 * time.Second, TLSConfig: tlsConfig}
	scheme := "http"
	if tlsConfig != nil {
		scheme = "https"
	}
	fmt.Printf("stdproxy is proxying %s://%s to %d backends, round robin\n", scheme, ln.Addr(), len(targets))

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	go func() {
		<-ctx.Done()
		shutdownCtx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		srv.Shutdown(shutdownCtx)
	}()
	if tlsConfig != nil {
		err = srv.ServeTLS(ln, "", "")
	} else {
		err = srv.Serve(ln)
	}
	if !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

// logged writes one access-log line per request, like the quickstart's.
func logged(h http.Handler, log *slog.Logger) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		sw := &statusWriter{ResponseWriter: w, status: http.StatusOK}
		h.ServeHTTP(sw, r)
		log.LogAttrs(r.Context(), slog.LevelInfo, "proxy",
			slog.String("method", r.Method), slog.String("host", r.Host),
			slog.String("path", r.URL.Path), slog.Int("status", sw.status),
			slog.Int64("bytes", sw.bytes), slog.Duration("duration", time.Since(start)))
	})
}

type statusWriter struct {
	http.ResponseWriter
	status int
	bytes  int64
}

func (w *statusWriter) WriteHeader(code int) {
	w.status = code
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(p []byte) (int, error) {
	n, err := w.ResponseWriter.Write(p)
	w.bytes += int64(n)
	return n, err
}

func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }
