package proxy

import (
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
)

func TestRetryDefaults(t *testing.T) {
	c := Retry{}.resolve()
	assert.Equal(t, 3, c.maxTries)
	assert.Equal(t, 25*time.Millisecond, c.base)
	assert.Equal(t, 250*time.Millisecond, c.max)
	assert.EqualValues(t, 64<<10, c.bodyLimit)
	assert.Equal(t, 0.2, c.budgetRatio)
	assert.EqualValues(t, 3, c.budgetMin)
	assert.Equal(t, 60*time.Second, c.perTry, "a try waits 60s for its head by default")
	assert.Equal(t, time.Duration(0), Retry{PerTryTimeout: -1}.resolve().perTry, "negative: no limit")
	for _, s := range []int{500, 502, 503, 504} {
		assert.False(t, c.retryOn(s), "%d is not retried by default: status retries are opt-in", s)
	}

	gw := Retry{RetryOn: []int{502, 503, 504}}.resolve()
	assert.True(t, gw.retryOn(503))
	assert.False(t, gw.retryOn(500))
	many := Retry{RetryOn: []int{500, 502, 503, 504, 429}}.resolve()
	assert.True(t, many.retryOn(429))
	assert.False(t, many.retryOn(404))
	one := Retry{MaxTries: 1}.resolve()
	assert.False(t, one.retryOn(503), "MaxTries 1 never retries")
	assert.EqualValues(t, 0, Retry{MaxBodyBytes: -1}.resolve().bodyLimit)
}

// The backoff before retry n is drawn uniformly from [0, min(max, base·2ⁿ⁻¹)].
func TestBackoff(t *testing.T) {
	c := Retry{Backoff: 10 * time.Millisecond, MaxBackoff: 35 * time.Millisecond}.resolve()
	ceilings := []time.Duration{10 * time.Millisecond, 20 * time.Millisecond, 35 * time.Millisecond, 35 * time.Millisecond}
	for i, ceil := range ceilings {
		try := i + 1
		assert.Equal(t, ceil, c.backoff(try, uint64(ceil)), "the largest draw before retry %d", try)
		assert.Zero(t, c.backoff(try, uint64(ceil)+1), "the smallest draw before retry %d", try)
		lo, hi := ceil, time.Duration(0)
		for range 2000 {
			d := c.backoff(try, randUint64())
			assert.True(t, d >= 0 && d <= ceil, "draw %v out of [0, %v]", d, ceil)
			lo, hi = min(lo, d), max(hi, d)
		}
		assert.Less(t, lo, ceil/10, "full jitter reaches near zero")
		assert.Greater(t, hi, ceil*9/10, "full jitter reaches near the ceiling")
	}
	noWait := Retry{Backoff: -1}.resolve()
	assert.Zero(t, noWait.backoff(3, randUint64()), "negative Backoff means no wait")
}

// replayBody hands a later try the bytes an earlier try read, then the rest of the stream.
func TestReplayBody(t *testing.T) {
	b := newReplayBody(strings.NewReader("hello, world"), 8)
	v1 := b.next()
	buf := make([]byte, 5)
	n, err := v1.Read(buf)
	assert.NoError(t, err)
	assert.Equal(t, "hello", string(buf[:n]))
	assert.True(t, b.replayable())

	v2 := b.next()
	_, err = v1.Read(buf)
	assert.ErrorIs(t, err, errRetired, "a superseded try cannot steal bytes from the next")
	all := readAll(t, v2)
	assert.Equal(t, "hello, world", all, "the replay starts from the beginning")
	assert.False(t, b.replayable(), "12 bytes exceed the 8-byte limit")
	_, err = b.getBody()
	assert.Error(t, err)
}

func readAll(t *testing.T, r interface{ Read([]byte) (int, error) }) string {
	var sb strings.Builder
	buf := make([]byte, 3)
	for {
		n, err := r.Read(buf)
		sb.Write(buf[:n])
		if err != nil {
			return sb.String()
		}
	}
}

func TestIdempotent(t *testing.T) {
	for m, want := range map[string]bool{"GET": true, "HEAD": true, "PUT": true, "DELETE": true,
		"OPTIONS": true, "POST": false, "PATCH": false} {
		assert.Equal(t, want, idempotent(&http.Request{Method: m, Header: http.Header{}}), m)
	}
	assert.True(t, idempotent(&http.Request{Method: "POST", Header: http.Header{"Idempotency-Key": {"k"}}}))
}
