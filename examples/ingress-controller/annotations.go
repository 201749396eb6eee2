package main

import (
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"

	"github.com/sluiceproxy/sluice/balancer"
	"github.com/sluiceproxy/sluice/proxy"
)

// annotationPrefix starts every annotation this controller reads. An annotation with the prefix
// that it does not know is an error, so that a typo is reported rather than ignored.
const annotationPrefix = "sluiceproxy.io/"

// options are the per-Ingress settings read from annotations. The zero value is what an
// Ingress without annotations gets.
type options struct {
	// policy is the load-balancing policy; policyName says it in words, for keys and logs.
	policy     balancer.Policy
	policyName string

	// rateRPS and rateBurst limit requests per client IP; rateRPS 0 means no limit.
	rateRPS   float64
	rateBurst int

	cache bool
	// sslRedirect sends plain HTTP to HTTPS; when the annotation is absent (sslRedirectSet
	// false), the hosts the Ingress has TLS for are redirected and others are not, as
	// ingress-nginx's ssl-redirect does.
	sslRedirect, sslRedirectSet bool

	// timeout and tryTimeout bound the wait for response headers (proxy.Retry.Timeout and
	// PerTryTimeout); maxTries is retries+1, 0 meaning the proxy's default.
	timeout, tryTimeout time.Duration
	maxTries            int

	protocol proxy.Protocol
	// protocolSet says the backend-protocol annotation chose protocol; without it the Service
	// port's appProtocol does.
	protocolSet bool

	// canary marks an Ingress whose backends join the main Ingress's routes for the same
	// host and path, as ingress-nginx's canary annotations do.
	canary              bool
	canaryHeader        string
	canaryHeaderValue   string
	canaryCookie        string
	canaryWeight        int
	canaryWeightPresent bool

	// sslPassthrough passes the TLS connections for the Ingress's hosts, undecrypted, to the
	// backend of each host's path "/", as ingress-nginx's ssl-passthrough does; it takes
	// effect only when the controller runs with -enable-ssl-passthrough.
	sslPassthrough bool
}

// parseAnnotations reads the sluiceproxy.io/ annotations of one Ingress. The error names
// the first annotation that is wrong; annotations without the prefix are ignored.
func parseAnnotations(ann map[string]string) (options, error) {
	o := options{policy: balancer.RoundRobin{}, policyName: "round-robin"}
	get := func(name string) (string, bool) {
		v, ok := ann[annotationPrefix+name]
		return strings.TrimSpace(v), ok
	}
	bad := func(name, format string, args ...any) error {
		return fmt.Errorf("annotation %s%s: %s", annotationPrefix, name, fmt.Sprintf(format, args...))
	}
	for k := range ann {
		if name, ok := strings.CutPrefix(k, annotationPrefix); ok && !known[name] {
			return o, fmt.Errorf("annotation %s: unknown (known: %s)", k, knownList)
		}
	}

	var hashKey *balancer.HashKey
	if v, ok := get("hash-key"); ok {
		k, err := parseHashKey(v)
		if err != nil {
			return o, bad("hash-key", "%v", err)
		}
		hashKey = &k
	}
	if v, ok := get("load-balance"); ok {
		switch v {
		case "round-robin":
		case "random":
			o.policy = balancer.Random{}
		case "least-request":
			o.policy = balancer.LeastRequest{}
		case "peak-ewma":
			o.policy = balancer.PeakEWMA{}
		case "maglev":
			m := balancer.Maglev{Epsilon: 0.25}
			if hashKey != nil {
				m.Key = *hashKey
			}
			o.policy = m
		default:
			return o, bad("load-balance", "%q is not one of round-robin, random, least-request, peak-ewma, maglev", v)
		}
		o.policyName = v
	}
	if hashKey != nil {
		if o.policyName != "maglev" {
			return o, bad("hash-key", "needs %sload-balance: maglev", annotationPrefix)
		}
		o.policyName += "/" + hashKey.String()
	}

	if v, ok := get("rate-limit-rps"); ok {
		f, err := strconv.ParseFloat(v, 64)
		if err != nil || math.IsNaN(f) || f <= 0 || f > 1e6 {
			return o, bad("rate-limit-rps", "want a number in (0, 1e6], got %q", v)
		}
		o.rateRPS = f
		o.rateBurst = max(1, int(math.Ceil(f)))
	}
	if v, ok := get("rate-limit-burst"); ok {
		if o.rateRPS == 0 {
			return o, bad("rate-limit-burst", "needs %srate-limit-rps", annotationPrefix)
		}
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > 1e6 {
			return o, bad("rate-limit-burst", "want an integer in [1, 1000000], got %q", v)
		}
		o.rateBurst = n
	}
	var err error
	if o.cache, err = parseBool(get("cache")); err != nil {
		return o, bad("cache", "%v", err)
	}
	v, present := get("ssl-redirect")
	o.sslRedirectSet = present
	if o.sslRedirect, err = parseBool(v, present); err != nil {
		return o, bad("ssl-redirect", "%v", err)
	}
	for _, d := range []struct {
		name string
		dst  *time.Duration
	}{{"timeout", &o.timeout}, {"try-timeout", &o.tryTimeout}} {
		if v, ok := get(d.name); ok {
			t, err := time.ParseDuration(v)
			if err != nil || t <= 0 || t > time.Hour {
				return o, bad(d.name, "want a duration in (0, 1h] such as 5s, got %q", v)
			}
			*d.dst = t
		}
	}
	if v, ok := get("retries"); ok {
		n, err := strconv.Atoi(v)
		if err != nil || n < 0 || n > 5 {
			return o, bad("retries", "want an integer in [0, 5], got %q", v)
		}
		o.maxTries = n + 1
	}
	if v, ok := get("backend-protocol"); ok {
		o.protocolSet = true
		switch strings.ToUpper(v) {
		case "HTTP":
			o.protocol = proxy.HTTP1
		case "H2C", "GRPC":
			o.protocol = proxy.H2C
		case "HTTPS":
			o.protocol = proxy.HTTPS
		default:
			return o, bad("backend-protocol", "%q is not one of HTTP, H2C, HTTPS, GRPC", v)
		}
	}

	if o.canary, err = parseBool(get("canary")); err != nil {
		return o, bad("canary", "%v", err)
	}
	canaryOnly := func(name string) (string, bool, error) {
		v, ok := get(name)
		if ok && !o.canary {
			return "", false, bad(name, "needs %scanary: \"true\"", annotationPrefix)
		}
		return v, ok, nil
	}
	var ok bool
	if o.canaryHeader, ok, err = canaryOnly("canary-by-header"); err != nil {
		return o, err
	} else if ok && !validHeaderName(o.canaryHeader) {
		return o, bad("canary-by-header", "%q is not a header name", o.canaryHeader)
	}
	if o.canaryHeaderValue, ok, err = canaryOnly("canary-by-header-value"); err != nil {
		return o, err
	} else if ok && (o.canaryHeader == "" || o.canaryHeaderValue == "") {
		return o, bad("canary-by-header-value", "needs a non-empty value and %scanary-by-header", annotationPrefix)
	}
	if o.canaryCookie, ok, err = canaryOnly("canary-by-cookie"); err != nil {
		return o, err
	} else if ok && !validCookieName(o.canaryCookie) {
		return o, bad("canary-by-cookie", "%q is not a cookie name", o.canaryCookie)
	}
	var w string
	if w, o.canaryWeightPresent, err = canaryOnly("canary-weight"); err != nil {
		return o, err
	} else if o.canaryWeightPresent {
		if o.canaryWeight, err = strconv.Atoi(w); err != nil || o.canaryWeight < 0 || o.canaryWeight > 100 {
			return o, bad("canary-weight", "want an integer in [0, 100], got %q", w)
		}
	}

	if o.sslPassthrough, err = parseBool(get("ssl-passthrough")); err != nil {
		return o, bad("ssl-passthrough", "%v", err)
	}
	if o.sslPassthrough {
		// A passed-through connection is one stream to one pod: there is no request to weigh
		// a canary by, nor a header, cookie, query or path to hash.
		if o.canary {
			return o, bad("ssl-passthrough", "does not go with %scanary: a connection passed through has no request to send to a canary", annotationPrefix)
		}
		if hashKey != nil && *hashKey != balancer.ClientIPKey() {
			return o, bad("hash-key", "with %sssl-passthrough only client-ip can be hashed: a connection passed through has no request", annotationPrefix)
		}
	}
	return o, nil
}

// known lists the annotation names after the prefix.
var known = map[string]bool{
	"load-balance": true, "hash-key": true, "rate-limit-rps": true, "rate-limit-burst": true,
	"cache": true, "timeout": true, "try-timeout": true, "retries": true, "ssl-redirect": true,
	"backend-protocol": true, "canary": true, "canary-by-header": true,
	"canary-by-header-value": true, "canary-by-cookie": true, "canary-weight": true,
	"ssl-passthrough": true,
}

const knownList = "load-balance, hash-key, rate-limit-rps, rate-limit-burst, cache, timeout, " +
	"try-timeout, retries, ssl-redirect, backend-protocol, canary, canary-by-header, " +
	"canary-by-header-value, canary-by-cookie, canary-weight, ssl-passthrough"

// parseHashKey reads header:NAME, cookie:NAME, query:NAME, path or client-ip.
func parseHashKey(v string) (balancer.HashKey, error) {
	switch v {
	case "path":
		return balancer.PathKey(), nil
	case "client-ip":
		return balancer.ClientIPKey(), nil
	}
	kind, name, ok := strings.Cut(v, ":")
	if !ok || name == "" {
		return balancer.HashKey{}, fmt.Errorf("want header:NAME, cookie:NAME, query:NAME, path or client-ip, got %q", v)
	}
	switch kind {
	case "header":
		if !validHeaderName(name) {
			return balancer.HashKey{}, fmt.Errorf("%q is not a header name", name)
		}
		return balancer.HeaderKey(name), nil
	case "cookie":
		if !validCookieName(name) {
			return balancer.HashKey{}, fmt.Errorf("%q is not a cookie name", name)
		}
		return balancer.CookieKey(name), nil
	case "query":
		return balancer.QueryKey(name), nil
	}
	return balancer.HashKey{}, fmt.Errorf("want header:NAME, cookie:NAME, query:NAME, path or client-ip, got %q", v)
}

// parseBool reads "true" or "false"; an absent annotation is false.
func parseBool(v string, present bool) (bool, error) {
	if !present {
		return false, nil
	}
	switch v {
	case "true":
		return true, nil
	case "false":
		return false, nil
	}
	return false, fmt.Errorf("want \"true\" or \"false\", got %q", v)
}

// validHeaderName reports whether s is an RFC 9110 token, as header and cookie names are.
func validHeaderName(s string) bool {
	if s == "" || len(s) > 256 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c <= ' ' || c >= 0x7f || strings.IndexByte(`"(),/:;<=>?@[\]{}`, c) >= 0 {
			return false
		}
	}
	return true
}

func validCookieName(s string) bool { return validHeaderName(s) }
