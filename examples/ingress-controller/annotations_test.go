package main

import (
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/sluiceproxy/sluice/proxy"
)

func TestParseAnnotations(t *testing.T) {
	const p = annotationPrefix
	for _, tc := range []struct {
		name    string
		ann     map[string]string
		check   func(t *testing.T, o options)
		wantErr string // substring; empty means no error
	}{
		{name: "none", check: func(t *testing.T, o options) {
			assert.Equal(t, "round-robin", o.policyName)
			assert.Zero(t, o.rateRPS)
			assert.Zero(t, o.maxTries, "retries default to the proxy's")
		}},
		{name: "foreign annotations are ignored", ann: map[string]string{"nginx.ingress.kubernetes.io/rewrite-target": "/"}},
		{name: "everything", ann: map[string]string{
			p + "load-balance": "maglev", p + "hash-key": "header:X-User", p + "rate-limit-rps": "2.5",
			p + "rate-limit-burst": "10", p + "cache": "true", p + "timeout": "30s", p + "try-timeout": "2s",
			p + "retries": "0", p + "ssl-redirect": "true", p + "backend-protocol": "grpc",
		}, check: func(t *testing.T, o options) {
			assert.True(t, strings.HasPrefix(o.policyName, "maglev/"), "the pool key names the policy and key, got %q", o.policyName)
			assert.Contains(t, o.policyName, "X-User")
			assert.Equal(t, 2.5, o.rateRPS)
			assert.Equal(t, 10, o.rateBurst)
			assert.True(t, o.cache)
			assert.True(t, o.sslRedirect)
			assert.Equal(t, 30*time.Second, o.timeout)
			assert.Equal(t, 2*time.Second, o.tryTimeout)
			assert.Equal(t, 1, o.maxTries, "retries 0 means one try")
			assert.Equal(t, proxy.H2C, o.protocol, "GRPC is h2c to the pod")
		}},
		{name: "burst defaults to the rate", ann: map[string]string{p + "rate-limit-rps": "2.5"}, check: func(t *testing.T, o options) {
			assert.Equal(t, 3, o.rateBurst)
		}},
		{name: "canary", ann: map[string]string{p + "canary": "true", p + "canary-by-header": "X-Canary",
			p + "canary-by-header-value": "yes", p + "canary-by-cookie": "beta", p + "canary-weight": "5"},
			check: func(t *testing.T, o options) {
				assert.True(t, o.canary)
				assert.Equal(t, 5, o.canaryWeight)
				assert.Equal(t, "yes", o.canaryHeaderValue)
			}},
		{name: "unknown", ann: map[string]string{p + "rewrite-target": "/"}, wantErr: "annotation sluiceproxy.io/rewrite-target: unknown"},
		{name: "bad policy", ann: map[string]string{p + "load-balance": "fastest"}, wantErr: "sluiceproxy.io/load-balance"},
		{name: "hash key without maglev", ann: map[string]string{p + "hash-key": "path"}, wantErr: "sluiceproxy.io/hash-key: needs"},
		{name: "bad hash key", ann: map[string]string{p + "load-balance": "maglev", p + "hash-key": "header:"}, wantErr: "sluiceproxy.io/hash-key"},
		{name: "zero rps", ann: map[string]string{p + "rate-limit-rps": "0"}, wantErr: "sluiceproxy.io/rate-limit-rps"},
		{name: "NaN rps", ann: map[string]string{p + "rate-limit-rps": "NaN"}, wantErr: "sluiceproxy.io/rate-limit-rps"},
		{name: "burst alone", ann: map[string]string{p + "rate-limit-burst": "3"}, wantErr: "sluiceproxy.io/rate-limit-burst: needs"},
		{name: "bool", ann: map[string]string{p + "cache": "yes"}, wantErr: "sluiceproxy.io/cache"},
		{name: "negative timeout", ann: map[string]string{p + "timeout": "-1s"}, wantErr: "sluiceproxy.io/timeout"},
		{name: "timeout over an hour", ann: map[string]string{p + "try-timeout": "2h"}, wantErr: "sluiceproxy.io/try-timeout"},
		{name: "retries", ann: map[string]string{p + "retries": "6"}, wantErr: "sluiceproxy.io/retries"},
		{name: "protocol", ann: map[string]string{p + "backend-protocol": "FTP"}, wantErr: "sluiceproxy.io/backend-protocol"},
		{name: "canary option without canary", ann: map[string]string{p + "canary-weight": "5"}, wantErr: "sluiceproxy.io/canary-weight: needs"},
		{name: "canary weight", ann: map[string]string{p + "canary": "true", p + "canary-weight": "101"}, wantErr: "sluiceproxy.io/canary-weight"},
		{name: "header value without header", ann: map[string]string{p + "canary": "true", p + "canary-by-header-value": "x"}, wantErr: "sluiceproxy.io/canary-by-header-value"},
		{name: "bad header name", ann: map[string]string{p + "canary": "true", p + "canary-by-header": "X Canary"}, wantErr: "sluiceproxy.io/canary-by-header"},
		{name: "ssl-passthrough", ann: map[string]string{p + "ssl-passthrough": "true"}, check: func(t *testing.T, o options) {
			assert.True(t, o.sslPassthrough)
		}},
		{name: "ssl-passthrough false", ann: map[string]string{p + "ssl-passthrough": "false"}, check: func(t *testing.T, o options) {
			assert.False(t, o.sslPassthrough)
		}},
		{name: "ssl-passthrough hashing the client IP", ann: map[string]string{p + "ssl-passthrough": "true", p + "load-balance": "maglev", p + "hash-key": "client-ip"},
			check: func(t *testing.T, o options) {
				assert.True(t, o.sslPassthrough)
				assert.Equal(t, "maglev/client IP", o.policyName)
			}},
		{name: "ssl-passthrough not a bool", ann: map[string]string{p + "ssl-passthrough": "yes"}, wantErr: "sluiceproxy.io/ssl-passthrough"},
		{name: "ssl-passthrough canary", ann: map[string]string{p + "ssl-passthrough": "true", p + "canary": "true"}, wantErr: "sluiceproxy.io/ssl-passthrough: does not go with"},
		{name: "ssl-passthrough hashing a header", ann: map[string]string{p + "ssl-passthrough": "true", p + "load-balance": "maglev", p + "hash-key": "header:X-User"},
			wantErr: "sluiceproxy.io/hash-key: with sluiceproxy.io/ssl-passthrough only client-ip"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			o, err := parseAnnotations(tc.ann)
			if tc.wantErr != "" {
				require.Error(t, err)
				assert.Contains(t, err.Error(), tc.wantErr, "the error should name the annotation")
				return
			}
			require.NoError(t, err)
			if tc.check != nil {
				tc.check(t, o)
			}
		})
	}
}

// FuzzParseAnnotations feeds arbitrary values to every annotation: parsing must never panic,
// and whatever it accepts must be within the documented ranges.
func FuzzParseAnnotations(f *testing.F) {
	f.Add("load-balance", "maglev", "hash-key", "cookie:session")
	f.Add("rate-limit-rps", "1e6", "rate-limit-burst", "1000000")
	f.Add("timeout", "1h", "try-timeout", "1ns")
	f.Add("canary", "true", "canary-weight", "-0")
	f.Add("canary-by-header", "X-Canary", "canary-by-header-value", "\x00")
	f.Add("retries", "+5", "backend-protocol", "h2c")
	f.Add("rate-limit-rps", "Inf", "cache", "TRUE")
	f.Add("unknown", "", "hash-key", "query:")
	f.Add("ssl-passthrough", "true", "hash-key", "path")
	f.Fuzz(func(t *testing.T, k1, v1, k2, v2 string) {
		ann := map[string]string{annotationPrefix + k1: v1, annotationPrefix + k2: v2}
		if k1 == "canary-weight" || k2 == "canary-weight" || strings.HasPrefix(k1, "canary-") || strings.HasPrefix(k2, "canary-") {
			ann[annotationPrefix+"canary"] = "true"
		}
		o, err := parseAnnotations(ann)
		if err != nil {
			if !strings.Contains(err.Error(), "annotation "+annotationPrefix) {
				t.Fatalf("error %q does not name an annotation", err)
			}
			return
		}
		if o.timeout < 0 || o.timeout > time.Hour || o.tryTimeout < 0 || o.tryTimeout > time.Hour {
			t.Fatalf("timeouts out of range: %v %v", o.timeout, o.tryTimeout)
		}
		if o.maxTries < 0 || o.maxTries > 6 || o.canaryWeight < 0 || o.canaryWeight > 100 {
			t.Fatalf("counts out of range: tries %d weight %d", o.maxTries, o.canaryWeight)
		}
		if o.rateRPS < 0 || (o.rateRPS > 0 && o.rateBurst < 1) {
			t.Fatalf("rate limit out of range: %v/%d", o.rateRPS, o.rateBurst)
		}
		if o.policy == nil {
			t.Fatal("no policy")
		}
	})
}
