package proxy

import (
	"errors"
	"io"
	"math/rand/v2"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// Retry configures how a Proxy retries failed tries and how long it waits for upstreams. The
// zero value means: up to 3 tries, 60 seconds for each try's response head, no overall
// timeout, 25ms–250ms jittered backoff, request bodies up to 64 KiB replayable, no retries on
// response statuses, and a budget of 20% of the requests in flight with a minimum of 3
// concurrent retries.
//
// A try is retried on another endpoint only when it is safe to send the request again:
//
//   - when the connection to the endpoint could not be opened, the request never left, so any
//     method is retried;
//   - otherwise only idempotent methods (GET, HEAD, OPTIONS, TRACE, PUT, DELETE, or any
//     request carrying an Idempotency-Key) are retried, after a broken connection, a per-try
//     timeout, or a status listed in RetryOn.
//
// In both cases the request body must be replayable: either nothing of it was read yet, or
// all that was read fits in MaxBodyBytes. Larger bodies stream to the first endpoint and are
// never retried, so a 1 GiB upload is never held in memory. Nothing is retried once an
// informational (1xx) response reached the client, nor when the client's own body was at
// fault.
type Retry struct {
	// MaxTries is the most tries per request, the first included. Zero means 3; 1 disables
	// retries.
	MaxTries int

	// PerTryTimeout bounds the wait for one endpoint's response headers. Zero means 60
	// seconds, NGINX's proxy_read_timeout; negative means no limit. A try that times out
	// answers 504 and, for idempotent requests, is retried.
	PerTryTimeout time.Duration

	// Timeout bounds the wait for response headers across all tries and backoffs. Zero means
	// no limit. Neither timeout limits a response body once it streams: long-lived streams
	// (server-sent events, gRPC) are the client's to end, and Proxy.ResponseBodyTimeout
	// bounds the silence between two of their reads.
	Timeout time.Duration

	// Backoff is the base of the exponential backoff between tries: before retry n the proxy
	// waits a uniformly random time in [0, min(MaxBackoff, Backoff·2ⁿ⁻¹)] ("full jitter").
	// Zero means 25ms; negative means no wait.
	Backoff time.Duration

	// MaxBackoff caps the backoff. Zero means 10 × Backoff.
	MaxBackoff time.Duration

	// MaxBodyBytes is how many bytes of a request body are kept so it can be sent again. Zero
	// means 64 KiB; negative means none (only a body nothing was read of can be retried).
	MaxBodyBytes int64

	// RetryOn lists response statuses that make an idempotent request retriable. Empty means
	// none: like NGINX's proxy_next_upstream and unlike a naive proxy, statuses are not
	// retried unless asked, since retrying an overloaded service's 503 multiplies its load.
	// []int{502, 503, 504} is the usual choice. The last try's response is forwarded
	// whatever its status.
	RetryOn []int

	// BudgetRatio caps retries in flight at this fraction of requests in flight, as Envoy's
	// retry_budget does, so that retries cannot multiply the load on a failing service.
	// Zero means 0.2.
	BudgetRatio float64

	// BudgetMin is the number of concurrent retries always allowed, whatever the ratio
	// says. Zero means 3.
	BudgetMin int
}

// retryConfig is Retry with its defaults applied, computed once per Proxy.
type retryConfig struct {
	maxTries    int
	perTry      time.Duration
	timeout     time.Duration
	base, max   time.Duration
	bodyLimit   int64
	retryStatus [3]int // the common case without a slice; zero entries are unused
	retryList   []int  // used when RetryOn has more than three entries
	budgetRatio float64
	budgetMin   int64
}

func (r Retry) resolve() retryConfig {
	c := retryConfig{
		maxTries: r.MaxTries, perTry: r.PerTryTimeout, timeout: r.Timeout,
		base: r.Backoff, max: r.MaxBackoff, bodyLimit: r.MaxBodyBytes,
		budgetRatio: r.BudgetRatio, budgetMin: int64(r.BudgetMin),
	}
	if c.maxTries <= 0 {
		c.maxTries = 3
	}
	switch {
	case c.perTry == 0:
		c.perTry = defaultReadTimeout
	case c.perTry < 0:
		c.perTry = 0
	}
	if c.base == 0 {
		c.base = 25 * time.Millisecond
	}
	if c.max == 0 {
		c.max = 10 * c.base
	}
	if c.bodyLimit == 0 {
		c.bodyLimit = 64 << 10
	} else if c.bodyLimit < 0 {
		c.bodyLimit = 0
	}
	switch {
	case len(r.RetryOn) <= len(c.retryStatus):
		copy(c.retryStatus[:], r.RetryOn)
	default:
		c.retryList = slices.Clone(r.RetryOn)
	}
	if c.budgetRatio <= 0 {
		c.budgetRatio = 0.2
	}
	if c.budgetMin <= 0 {
		c.budgetMin = 3
	}
	return c
}

func (c *retryConfig) retryOn(status int) bool {
	if c.maxTries <= 1 {
		return false
	}
	if c.retryList != nil {
		return slices.Contains(c.retryList, status)
	}
	return status == c.retryStatus[0] || status == c.retryStatus[1] || status == c.retryStatus[2]
}

// backoff returns the wait before retry number try (the first retry follows try 1), drawing
// the jitter from r.
func (c *retryConfig) backoff(try int, r uint64) time.Duration {
	if c.base <= 0 {
		return 0
	}
	ceil := c.base
	for i := 1; i < try && ceil < c.max; i++ {
		ceil *= 2
	}
	ceil = min(ceil, c.max)
	return time.Duration(r % uint64(ceil+1))
}

func randUint64() uint64 { return rand.Uint64() }

// errRetired is what a superseded try's transport reads from the request body.
var errRetired = errors.New("proxy: request body was handed to a later try")

// replayBody lets a request body be sent again on a retry without reading it ahead: it keeps
// what the transport reads, up to limit bytes, and a later try reads that record before going
// on with the client's stream. Once more than limit bytes were read the record is dropped and
// the body cannot be replayed.
//
// Each try reads through its own view; a new view retires the previous one, so a transport
// still winding down an abandoned try cannot steal bytes from the next.
type replayBody struct {
	mu       sync.Mutex // mu guards every field below, and serialises reads of src
	src      io.Reader
	limit    int64
	rec      []byte
	overflow bool  // more than limit bytes were read: rec is gone
	err      error // the error src returned, io.EOF at the end
	gen      int
	atEOF    func() // when not nil, called once src ends cleanly

	failed  atomic.Pointer[error] // the error src failed with, other than io.EOF
	spilled atomic.Bool           // overflow, readable without mu
	read    atomic.Int64          // bytes read from src, for RequestEvent.RequestBytes
}

func newReplayBody(src io.Reader, limit int64) *replayBody {
	return &replayBody{src: src, limit: limit}
}

// clientErr returns the error the client's body failed with, or nil when it has not failed
// (or ended cleanly). It takes no lock: mu is held across reads of src, which block for as
// long as the client sends nothing (a bidirectional gRPC stream's request side).
func (b *replayBody) clientErr() error {
	if e := b.failed.Load(); e != nil {
		return *e
	}
	return nil
}

// replayable reports whether a new view would see the whole body. Like clientErr it takes no
// lock, so that deciding on a retry never waits on a read of the client's body.
func (b *replayBody) replayable() bool { return !b.spilled.Load() }

// next retires the current view and returns a new one that starts from the beginning.
func (b *replayBody) next() io.ReadCloser {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.gen++
	return &bodyView{b: b, gen: b.gen}
}

// getBody is the Request.GetBody of outgoing requests, so that net/http's own transparent
// retries (a stale keep-alive connection, an HTTP/2 GOAWAY) can replay the body too.
func (b *replayBody) getBody() (io.ReadCloser, error) {
	if !b.replayable() {
		return nil, errors.New("proxy: request body is too large to replay")
	}
	return b.next(), nil
}

type bodyView struct {
	b   *replayBody
	gen int
	off int
}

func (v *bodyView) Read(p []byte) (int, error) {
	b := v.b
	b.mu.Lock()
	defer b.mu.Unlock()
	if v.gen != b.gen {
		return 0, errRetired
	}
	if !b.overflow && v.off < len(b.rec) {
		n := copy(p, b.rec[v.off:])
		v.off += n
		return n, nil
	}
	if b.err != nil {
		return 0, b.err
	}
	n, err := b.src.Read(p)
	b.read.Add(int64(n))
	if n > 0 && !b.overflow {
		if int64(len(b.rec)+n) <= b.limit {
			b.rec = append(b.rec, p[:n]...)
			v.off += n
		} else {
			b.overflow = true
			b.spilled.Store(true)
			b.rec = nil
		}
	}
	if err != nil {
		b.err = err
		if err != io.EOF {
			b.failed.Store(&err)
		}
		if err == io.EOF && b.atEOF != nil {
			b.atEOF()
			b.atEOF = nil
		}
	}
	return n, err
}

// Close does not close the client's body: a later try may still need it, and net/http's
// server closes it when the handler returns.
func (v *bodyView) Close() error { return nil }
