package h2

import (
	"net/http"
	"strings"
	"sync/atomic"
	"time"
)

// commonFields are field names common enough that turning them between HTTP/2's lower case
// and net/http's canonical form should not allocate.
var commonFields = []string{
	"Accept", "Accept-Charset", "Accept-Encoding", "Accept-Language", "Accept-Ranges",
	"Access-Control-Allow-Credentials", "Access-Control-Allow-Headers",
	"Access-Control-Allow-Methods", "Access-Control-Allow-Origin", "Access-Control-Expose-Headers",
	"Access-Control-Max-Age", "Access-Control-Request-Headers", "Access-Control-Request-Method",
	"Age", "Allow", "Alt-Svc", "Authorization", "Cache-Control", "Cdn-Cache-Control",
	"Content-Disposition", "Content-Encoding", "Content-Language", "Content-Length",
	"Content-Location", "Content-Range", "Content-Security-Policy", "Content-Type", "Cookie",
	"Date", "Etag", "Expect", "Expires", "Forwarded", "From", "Grpc-Encoding",
	"Grpc-Accept-Encoding", "Grpc-Message", "Grpc-Status", "Grpc-Timeout", "Host",
	"If-Match", "If-Modified-Since", "If-None-Match", "If-Range", "If-Unmodified-Since",
	"Last-Modified", "Link", "Location", "Max-Forwards", "Origin", "Priority",
	"Proxy-Authenticate", "Proxy-Authorization", "Range", "Referer", "Refresh", "Retry-After",
	"Server", "Set-Cookie", "Strict-Transport-Security", "Te", "Trailer", "User-Agent", "Vary",
	"Via", "Www-Authenticate", "X-Content-Type-Options", "X-Forwarded-For",
	"X-Forwarded-Host", "X-Forwarded-Proto", "X-Frame-Options", "X-Real-Ip", "X-Request-Id",
	"X-Xss-Protection", "Traceparent", "Tracestate",
}

var (
	toCanonical = make(map[string]string, len(commonFields)) // lower case → canonical
	toLower     = make(map[string]string, len(commonFields)) // canonical → lower case
)

func init() {
	for _, k := range commonFields {
		l := strings.ToLower(k)
		toCanonical[l] = k
		toLower[k] = l
	}
}

// canonicalKey is http.CanonicalHeaderKey of a lower-case field name off the wire.
func canonicalKey(name string) string {
	if k, ok := toCanonical[name]; ok {
		return k
	}
	return http.CanonicalHeaderKey(name)
}

// lowerKey is the HTTP/2 field name of a header key.
func lowerKey(k string) string {
	if l, ok := toLower[k]; ok {
		return l
	}
	return strings.ToLower(k)
}

// dateCache holds the Date field's value for the current second.
type dateCache struct {
	unix  int64
	value string
}

var date atomic.Pointer[dateCache]

// dateValue is the Date field's value now, formatted once a second.
func dateValue() string {
	now := time.Now()
	if d := date.Load(); d != nil && d.unix == now.Unix() {
		return d.value
	}
	d := &dateCache{unix: now.Unix(), value: now.UTC().Format(http.TimeFormat)}
	date.Store(d)
	return d.value
}
