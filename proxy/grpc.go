package proxy

import (
	"context"
	"net/http"
	"strconv"
	"time"
)

// isGRPC reports whether r is a gRPC call: its Content-Type is application/grpc or one of
// its subtypes (application/grpc+proto).
func isGRPC(r *http.Request) bool {
	ct := r.Header["Content-Type"]
	return len(ct) > 0 && hasPrefixFold(ct[0], "application/grpc")
}

// gRPC status codes the proxy answers with.
const (
	grpcUnknown           = 2
	grpcDeadlineExceeded  = 4
	grpcResourceExhausted = 8
	grpcInternal          = 13
	grpcUnavailable       = 14
)

// grpcCode maps the status the proxy would send to a gRPC status code, as Envoy maps its
// own replies: a gateway failure is UNAVAILABLE, so that gRPC clients may retry it.
func grpcCode(status int) int {
	switch status {
	case http.StatusBadGateway, http.StatusServiceUnavailable, http.StatusTooManyRequests:
		return grpcUnavailable
	case http.StatusGatewayTimeout, http.StatusRequestTimeout:
		return grpcDeadlineExceeded
	case http.StatusRequestEntityTooLarge:
		return grpcResourceExhausted
	case http.StatusBadRequest, http.StatusInternalServerError:
		return grpcInternal
	}
	return grpcUnknown
}

// writeGRPCError answers a gRPC call that could not be forwarded with a Trailers-Only
// response: HTTP 200, no body, and the gRPC status in the head.
func writeGRPCError(rw http.ResponseWriter, status int) {
	h := rw.Header()
	h.Del("Content-Length")
	h.Set("Content-Type", "application/grpc")
	h.Set("Grpc-Status", strconv.Itoa(grpcCode(status)))
	// The status text is plain ASCII without '%', so it needs no percent-encoding.
	h.Set("Grpc-Message", "sluice: "+http.StatusText(status))
	rw.WriteHeader(http.StatusOK)
}

// grpcDeadline makes the call's grpc-timeout its deadline: the tries, and the response body,
// end when it passes, and a try that was waiting for its head counts as timed out.
func (x *exchange) grpcDeadline() {
	d, ok := parseGRPCTimeout(x.in.Header["Grpc-Timeout"])
	if !ok {
		return
	}
	ctx, cancel := context.WithTimeout(x.in.Context(), d)
	x.clientCtx = x.in.Context()
	x.cancel = cancel
	x.in = x.in.WithContext(ctx)
	if dl := x.start.Add(d); x.deadline.IsZero() || dl.Before(x.deadline) {
		x.deadline = dl
	}
}

// parseGRPCTimeout parses a grpc-timeout field: at most eight ASCII digits and a unit, one
// of H, M, S, m, u and n. It reports false for anything else, which is then ignored, as
// grpc-go ignores it.
func parseGRPCTimeout(lines []string) (time.Duration, bool) {
	if len(lines) != 1 {
		return 0, false
	}
	s := lines[0]
	if len(s) < 2 || len(s) > 9 {
		return 0, false
	}
	var n int64
	for i := 0; i < len(s)-1; i++ {
		c := s[i]
		if c < '0' || c > '9' {
			return 0, false
		}
		n = n*10 + int64(c-'0')
	}
	var unit time.Duration
	switch s[len(s)-1] {
	case 'H':
		unit = time.Hour
	case 'M':
		unit = time.Minute
	case 'S':
		unit = time.Second
	case 'm':
		unit = time.Millisecond
	case 'u':
		unit = time.Microsecond
	case 'n':
		unit = time.Nanosecond
	default:
		return 0, false
	}
	// 99,999,999 hours overflows a Duration: cap at its maximum rather than wrap.
	if n > int64(1<<63-1)/int64(unit) {
		return 1<<63 - 1, true
	}
	return time.Duration(n) * unit, true
}
