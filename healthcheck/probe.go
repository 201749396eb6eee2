package healthcheck

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"regexp"
	"strconv"
	"sync"
	"time"

	"github.com/sluiceproxy/sluice"
)

// Probe is an active health check.
//
// Check probes ep once and returns nil when it is healthy. It must be safe for concurrent use
// (the Checker probes many endpoints at once), must return soon after ctx is done — the
// context carries Options.Timeout and is canceled when the endpoint is removed — and must
// release every resource it took (connections, goroutines) before returning.
type Probe interface {
	Check(ctx context.Context, ep sluice.Endpoint) error
}

// ProbeFunc adapts an ordinary function to the Probe interface.
type ProbeFunc func(ctx context.Context, ep sluice.Endpoint) error

// Check returns f(ctx, ep).
func (f ProbeFunc) Check(ctx context.Context, ep sluice.Endpoint) error { return f(ctx, ep) }

var (
	_ Probe = (*HTTP)(nil)
	_ Probe = (*TCP)(nil)
	_ Probe = (*GRPC)(nil)
)

// probeAddr is the address to probe: ep.Addr, or its host with port when port is set.
func probeAddr(ep sluice.Endpoint, port int) (string, error) {
	if port == 0 {
		return ep.Addr, nil
	}
	host, _, err := net.SplitHostPort(ep.Addr)
	if err != nil {
		return "", fmt.Errorf("healthcheck: endpoint address %q: %w", ep.Addr, err)
	}
	return net.JoinHostPort(host, strconv.Itoa(port)), nil
}

func validPort(port int) error {
	if port < 0 || port > 65535 {
		return fmt.Errorf("healthcheck: Port must be in [0, 65535], got %d", port)
	}
	return nil
}

// TCP is a probe that passes when a TCP connection to the endpoint can be opened. It sends
// nothing and closes the connection at once.
type TCP struct {
	// Port, when not zero, is probed instead of the endpoint's own port.
	Port int
}

// Check dials ep and closes the connection.
func (p *TCP) Check(ctx context.Context, ep sluice.Endpoint) error {
	if err := validPort(p.Port); err != nil {
		return err
	}
	addr, err := probeAddr(ep, p.Port)
	if err != nil {
		return err
	}
	var d net.Dialer
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return err
	}
	return c.Close()
}

// StatusRange is an inclusive range of HTTP status codes.
type StatusRange struct {
	Min, Max int
}

// DefaultStatus is what an HTTP probe accepts when HTTP.Status is empty: any 2xx or 3xx, as
// Kubernetes' httpGet probes do.
var DefaultStatus = []StatusRange{{200, 399}}

// maxBodyBytes bounds how much of a probe response is read for HTTP.Body.
const maxBodyBytes = 64 << 10

// HTTP is a probe that passes when an HTTP request to the endpoint is answered with an
// expected status (and, optionally, a body that matches) and the first 64 KiB of the body
// arrive whole within the timeout: a body that stalls or breaks off fails the probe, whether
// or not Body checks it. Redirects are not followed: a 3xx is judged by its status. Each probe uses a fresh connection, as Kubernetes' probes do, so
// that it exercises the accept path and leaves nothing open behind.
type HTTP struct {
	// Method is the request method. Empty means GET.
	Method string

	// Path is the request path, with an optional query. Empty means "/".
	Path string

	// Host is the Host header. Empty means the probed address.
	Host string

	// Header holds extra request headers.
	Header http.Header

	// HTTPS probes over TLS. Unless Transport or TLSConfig says otherwise the certificate is
	// not verified, as Kubernetes' HTTPS probes do: a pod's certificate rarely names its IP,
	// and the probe sends nothing secret.
	HTTPS bool

	// TLSConfig configures TLS when HTTPS is set and Transport is nil.
	TLSConfig *tls.Config

	// Port, when not zero, is probed instead of the endpoint's own port.
	Port int

	// Status lists the accepted status codes. Empty means DefaultStatus.
	Status []StatusRange

	// Body, when not nil, must match the first 64 KiB of the response body.
	Body *regexp.Regexp

	// Transport sends the probe. Nil means a transport of this package's with keep-alives off.
	Transport http.RoundTripper

	once      sync.Once
	transport http.RoundTripper
}

var defaultTransport = sync.OnceValue(func() http.RoundTripper {
	return newTransport(nil)
})

func newTransport(cfg *tls.Config) http.RoundTripper {
	if cfg == nil {
		cfg = &tls.Config{InsecureSkipVerify: true}
	}
	return &http.Transport{
		Proxy:               nil,
		DialContext:         (&net.Dialer{KeepAlive: -1}).DialContext,
		TLSClientConfig:     cfg,
		TLSHandshakeTimeout: 0, // the probe's context bounds the whole exchange
		DisableKeepAlives:   true,
		DisableCompression:  true,
		MaxIdleConns:        -1,
		// A health answer's head is small; net/http's 10 MiB default would let every
		// endpoint make each probe in flight buffer that much.
		MaxResponseHeaderBytes: 64 << 10,
	}
}

func (p *HTTP) roundTripper() http.RoundTripper {
	p.once.Do(func() {
		switch {
		case p.Transport != nil:
			p.transport = p.Transport
		case p.TLSConfig != nil:
			p.transport = newTransport(p.TLSConfig)
		default:
			p.transport = defaultTransport()
		}
	})
	return p.transport
}

// StatusError is the error of an HTTP probe that got an unexpected status.
type StatusError struct {
	// Status is the status the endpoint answered with.
	Status int
}

// Error says which status the probe got.
func (e *StatusError) Error() string {
	return fmt.Sprintf("healthcheck: unexpected status %d", e.Status)
}

// errBodyMismatch is the error of an HTTP probe whose body did not match HTTP.Body.
var errBodyMismatch = errors.New("healthcheck: response body does not match")

// Check sends one request to ep and judges the response.
func (p *HTTP) Check(ctx context.Context, ep sluice.Endpoint) error {
	if err := validPort(p.Port); err != nil {
		return err
	}
	addr, err := probeAddr(ep, p.Port)
	if err != nil {
		return err
	}
	scheme := "http"
	if p.HTTPS {
		scheme = "https"
	}
	path := p.Path
	if path == "" {
		path = "/"
	}
	method := p.Method
	if method == "" {
		method = http.MethodGet
	}
	req, err := http.NewRequestWithContext(ctx, method, scheme+"://"+addr+path, nil)
	if err != nil {
		return fmt.Errorf("healthcheck: bad HTTP probe: %w", err)
	}
	for k, vs := range p.Header {
		req.Header[k] = vs
	}
	if req.Header.Get("User-Agent") == "" {
		req.Header.Set("User-Agent", "sluice-healthcheck")
	}
	if p.Host != "" {
		req.Host = p.Host
	}
	res, err := p.roundTripper().RoundTrip(req)
	if err != nil {
		return err
	}
	defer res.Body.Close()
	if !statusOK(p.Status, res.StatusCode) {
		return &StatusError{Status: res.StatusCode}
	}
	// The body is read even when nothing matches it: an endpoint that sends a good head and
	// then stalls or breaks off its body would do the same to real requests, and must fail
	// (within Timeout) as one that never answers does. Kubernetes' probes read it too.
	body := io.LimitReader(res.Body, maxBodyBytes)
	if p.Body == nil {
		if _, err := io.Copy(io.Discard, body); err != nil {
			return fmt.Errorf("healthcheck: reading probe response: %w", err)
		}
		return nil
	}
	b, err := io.ReadAll(body)
	if err != nil {
		return fmt.Errorf("healthcheck: reading probe response: %w", err)
	}
	if !p.Body.Match(b) {
		return errBodyMismatch
	}
	return nil
}

func statusOK(ranges []StatusRange, code int) bool {
	if len(ranges) == 0 {
		ranges = DefaultStatus
	}
	for _, r := range ranges {
		if code >= r.Min && code <= r.Max {
			return true
		}
	}
	return false
}

// deadlineHeader formats the time left before ctx's deadline for a grpc-timeout header, or
// returns "" when ctx has none.
func deadlineHeader(ctx context.Context) string {
	dl, ok := ctx.Deadline()
	if !ok {
		return ""
	}
	left := time.Until(dl)
	if left <= 0 {
		left = time.Millisecond
	}
	ms := min((left+time.Millisecond-1)/time.Millisecond, 99999999) // grpc-timeout takes ≤ 8 digits
	return strconv.FormatInt(int64(ms), 10) + "m"
}
