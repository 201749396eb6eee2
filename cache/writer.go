package cache

import (
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"
)

// passWriter adds this cache's Cache-Status member to a response it does not otherwise
// touch, and lets forwardMethod see the status and header before they are sent.
type passWriter struct {
	http.ResponseWriter
	c           *Cache
	reason      string
	detail      string
	onHeader    func(status int, h http.Header)
	wroteHeader bool
	status      int   // the final status, for Hooks.Lookup
	written     int64 // body bytes, for Hooks.Lookup
}

func (p *passWriter) WriteHeader(code int) {
	if p.wroteHeader {
		return
	}
	if code >= 200 {
		p.wroteHeader = true
		p.status = code
		h := p.ResponseWriter.Header()
		h.Add("Cache-Status", p.c.forwardValue(p.reason, code, false, p.detail))
		if p.onHeader != nil {
			p.onHeader(code, h)
		}
	}
	p.ResponseWriter.WriteHeader(code)
}

func (p *passWriter) Write(b []byte) (int, error) {
	if !p.wroteHeader {
		p.WriteHeader(http.StatusOK)
	}
	n, err := p.ResponseWriter.Write(b)
	p.written += int64(n)
	return n, err
}

func (p *passWriter) Flush() {
	if !p.wroteHeader {
		p.WriteHeader(http.StatusOK)
	}
	_ = http.NewResponseController(p.ResponseWriter).Flush()
}

// Unwrap lets http.ResponseController reach the client's writer.
func (p *passWriter) Unwrap() http.ResponseWriter { return p.ResponseWriter }

// fetchMode is what a fetchWriter does with the response it receives.
type fetchMode int

const (
	modePass        fetchMode = iota // stream it to the client, storing it if it may be stored
	modeNotModified                  // a 304 to our validation: update the stored response
	modeStaleError                   // an error that stale-if-error covers: serve the stale one
)

// fetchWriter is the ResponseWriter the next handler sees on a miss or a validation. It holds
// the response header until WriteHeader, decides there what to do with the response, then
// streams the body to the client while copying it into a buffer bounded by MaxBodyBytes.
type fetchWriter struct {
	c      *Cache
	client http.ResponseWriter
	req    *http.Request // the client's request
	out    *http.Request // the request sent upstream
	key    string
	stale  *Entry
	reason string
	reqCC  cacheControl
	flight *flight

	reqTime, respTime time.Time
	header            http.Header
	wroteHeader       bool
	status            int
	mode              fetchMode

	toClient  bool
	buffering bool
	buf       []byte
	// stored is the header to store, taken when the response was judged storable: fields
	// the handler sets later are trailers, which that judgement never saw.
	stored    http.Header
	clientErr error
	why       string // why the response is not stored, for Hooks.Lookup
	written   int64  // body bytes from upstream, for Hooks.Lookup
}

func (fw *fetchWriter) Header() http.Header { return fw.header }

func (fw *fetchWriter) WriteHeader(code int) {
	if fw.wroteHeader {
		return
	}
	if code < 200 {
		if code >= 100 && code != http.StatusSwitchingProtocols {
			h := fw.client.Header()
			for k, v := range fw.header {
				h[k] = v
			}
			fw.client.WriteHeader(code)
			for k := range h {
				delete(h, k)
			}
		}
		return
	}
	fw.wroteHeader = true
	fw.status = code
	fw.respTime = fw.c.now()

	if fw.stale != nil {
		if code == http.StatusNotModified {
			fw.mode = modeNotModified
			return
		}
		if isServerError(code) && staleIfError(fw.stale, fw.reqCC, fw.respTime) {
			fw.mode = modeStaleError
			return
		}
	}
	fw.mode = modePass

	cc := parseCacheControl(fw.header["Cache-Control"])
	why := storable(fw.out, fw.reqCC, code, fw.header, cc, fw.c.setCookie)
	var length int64 = -1
	if cl := fw.header.Get("Content-Length"); cl != "" {
		if n, err := strconv.ParseInt(cl, 10, 64); err == nil {
			length = n
		}
	}
	if why == "" && length > fw.c.maxObject {
		why = "too-large"
	}
	if why == "" && !worthStoring(code, fw.header, cc, fw.reqTime, fw.respTime) {
		why = "stale-on-arrival"
	}
	fw.why = why
	if why == "" {
		fw.buffering = true
		fw.stored = storedHeader(fw.header)
		switch {
		case length >= 0:
			fw.buf = make([]byte, 0, length)
		default:
			fw.buf = make([]byte, 0, min(4096, fw.c.maxObject))
		}
	} else {
		fw.c.flights.finish(fw.key, fw.flight, fw.failure())
		if fw.stale != nil && code < 500 && why != "too-large" && why != "request-no-store" && why != "authorization" {
			// The origin replaced the stored response with one that may not be stored (now
			// no-store or private, say): the old one must not outlive it.
			fw.c.delete(fw.out.Context(), fw.key)
		}
	}

	h := fw.client.Header()
	for k, v := range fw.header {
		h[k] = v
	}
	detail := why
	if why == "no-freshness" || why == "method" {
		detail = ""
	}
	h.Add("Cache-Status", fw.c.forwardValue(fw.reason, code, why == "", detail))

	fw.toClient = fw.req.Method != http.MethodHead
	if code == http.StatusOK && hasValidators(fw.req) {
		lm, err := parseHTTPDate(fw.header.Get("Last-Modified"))
		if err != nil {
			lm = time.Time{}
		}
		if notModified(fw.req, fw.header.Get("Etag"), lm) {
			fw.toClient = false
			writeNotModified(fw.client)
			return
		}
	}
	fw.client.WriteHeader(code)
}

// failure is how followers should take a response that was not stored: if the leader's own
// client went away, the response (typically a 502 from the proxy) says nothing about the
// resource, and a follower should fetch again collapsed; otherwise it is uncacheable.
func (fw *fetchWriter) failure() flightResult {
	if fw.out.Context().Err() != nil {
		return flightIncomplete
	}
	if fw.flight != nil {
		fw.c.passes.mark(fw.key, fw.respTime)
	}
	return flightUncacheable
}

func hasValidators(r *http.Request) bool {
	_, inm := r.Header["If-None-Match"]
	_, ims := r.Header["If-Modified-Since"]
	return inm || ims
}

func (fw *fetchWriter) Write(p []byte) (int, error) {
	if !fw.wroteHeader {
		fw.WriteHeader(http.StatusOK)
	}
	if fw.mode != modePass {
		return len(p), nil
	}
	fw.written += int64(len(p))
	if fw.buffering {
		if int64(len(fw.buf)+len(p)) > fw.c.maxObject {
			// Too large after all: give up storing, and keep streaming.
			fw.buffering, fw.buf, fw.stored, fw.why = false, nil, nil, "too-large"
			fw.c.flights.finish(fw.key, fw.flight, flightUncacheable)
		} else {
			fw.buf = append(fw.buf, p...)
		}
	}
	if fw.toClient && fw.clientErr == nil {
		if _, err := fw.client.Write(p); err != nil {
			fw.clientErr = err
		}
	}
	if fw.clientErr != nil && !fw.buffering {
		// Nobody is reading and nothing will be stored: let the upstream copy stop.
		return 0, fw.clientErr
	}
	return len(p), nil
}

func (fw *fetchWriter) Flush() {
	if !fw.wroteHeader {
		fw.WriteHeader(http.StatusOK)
	}
	if fw.mode == modePass && fw.toClient && fw.clientErr == nil {
		_ = http.NewResponseController(fw.client).Flush()
	}
}

// Unwrap lets http.ResponseController reach the client's writer (deadlines, for example).
func (fw *fetchWriter) Unwrap() http.ResponseWriter { return fw.client }

// updated builds the prepared entry for the stale response updated to header h by a 304.
func (fw *fetchWriter) updated(h http.Header) *Entry {
	e := &Entry{
		Status: fw.stale.Status, Header: h, Body: fw.stale.Body,
		RequestTime: fw.reqTime, ResponseTime: fw.respTime,
		Tags: tags(h[fw.c.tagHeader]),
	}
	if names := varyNames(h); len(names) > 0 {
		e.Vary = names
		e.VaryKey = varyKey(names, fw.out.Header)
	}
	e.prepare()
	return e
}

// finish completes the exchange after the next handler returned. It reports false when the
// request must be sent again without validators: a 304 whose validator does not match the
// stored response cannot update it (RFC 9111 §4.3.4).
func (fw *fetchWriter) finish() bool {
	if !fw.wroteHeader {
		fw.WriteHeader(http.StatusOK)
	}
	c := fw.c
	switch fw.mode {
	case modeNotModified:
		s := fw.stale
		if et := fw.header.Get("Etag"); et != "" && strings.TrimPrefix(et, "W/") != strings.TrimPrefix(s.m.etag, "W/") {
			return false
		}
		h := updateHeader(s.Header, fw.header, fw.respTime)
		e := fw.updated(storedHeader(h))
		// The client that asked also gets the fields kept out of the store, such as its own
		// Set-Cookie under private="Set-Cookie". storedHeader only removes fields, so equal
		// lengths mean it removed none.
		served := e
		if len(h) != len(e.Header) {
			served = fw.updated(h)
		}
		why := storable(fw.out, fw.reqCC, e.Status, e.Header, e.m.cc, c.setCookie)
		var err error
		switch why {
		case "":
			err = c.store304(fw, e)
			if err != nil {
				why = "store-error"
			}
		case "no-store", "private", "must-understand", "vary-star":
			// The 304 made the response one that may not be stored: serve it this once and
			// drop the stored one, which it replaces.
			c.delete(fw.out.Context(), fw.key)
			c.flights.finish(fw.key, fw.flight, fw.failure())
		default:
			// The exchange itself may not be stored (a request with Authorization, say, or
			// a 304 that sets this client's cookie): the stored response stays as it was.
			c.flights.finish(fw.key, fw.flight, fw.failure())
		}
		age := served.currentAge(c.now())
		c.serveEntry(fw.client, fw.req, served, age, []string{c.statusValue(served, age, "fwd="+fw.reason, "304", "")})
		if c.hooks.Lookup != nil {
			fw.report(Revalidated, served.Status, why == "", why, int64(len(served.Body)), err)
		}
	case modeStaleError:
		c.flights.finish(fw.key, fw.flight, flightUncacheable)
		age := fw.stale.currentAge(c.now())
		c.serveEntry(fw.client, fw.req, fw.stale, age,
			[]string{c.statusValue(fw.stale, age, "fwd="+fw.reason, strconv.Itoa(fw.status), "stale-if-error")})
		if c.hooks.Lookup != nil {
			fw.report(StaleHit, fw.stale.Status, false, "stale-if-error", int64(len(fw.stale.Body)), nil)
		}
	case modePass:
		if !fw.buffering {
			c.flights.finish(fw.key, fw.flight, fw.failure())
			if c.hooks.Lookup != nil {
				fw.report(Miss, fw.status, false, fw.why, fw.written, nil)
			}
			return true
		}
		if cl := fw.header.Get("Content-Length"); cl != "" && cl != strconv.Itoa(len(fw.buf)) {
			c.flights.finish(fw.key, fw.flight, flightIncomplete) // truncated: never store it
			if c.hooks.Lookup != nil {
				fw.report(Miss, fw.status, false, "incomplete", fw.written, nil)
			}
			return true
		}
		body := fw.buf
		if cap(body)-len(body) > 512 {
			body = slices.Clone(body) // do not hold the slack of a buffer grown by appends
		}
		e := c.newEntry(fw.out, fw.status, fw.stored, body, fw.reqTime, fw.respTime)
		if err := c.put(fw.out.Context(), fw.key, e); err != nil {
			fw.storeFailed(err)
			if c.hooks.Lookup != nil {
				fw.report(Miss, fw.status, false, "store-error", fw.written, err)
			}
			return true
		}
		c.passes.forget(fw.key)
		c.flights.finish(fw.key, fw.flight, flightStored)
		if c.hooks.Lookup != nil {
			fw.report(Miss, fw.status, true, "", fw.written, nil)
		}
	}
	return true
}

// report calls Hooks.Lookup, which the caller has checked is set, for the exchange.
func (fw *fetchWriter) report(o Outcome, status int, stored bool, detail string, n int64, err error) {
	_, background := fw.client.(*discardWriter)
	fw.c.hooks.Lookup(LookupEvent{
		Outcome: o, Key: fw.key, Fwd: fw.reason, FwdStatus: fw.status, Status: status,
		Stored: stored, Detail: detail, Bytes: n, Err: err, Background: background,
	})
}

// store304 stores the response a 304 updated. If the store fails, the client is still
// served the updated response; the stored one stays as it was, stale; the error is returned.
func (c *Cache) store304(fw *fetchWriter, e *Entry) error {
	if err := c.put(fw.out.Context(), fw.key, e); err != nil {
		fw.storeFailed(err)
		return err
	}
	c.flights.finish(fw.key, fw.flight, flightStored)
	return nil
}

// storeFailed handles a response the store would not take: it has been (or is being) served,
// and the requests waiting for it go to the origin themselves rather than look it up. The
// URL is not marked hit-for-pass: its responses are storable, the store is what failed.
func (fw *fetchWriter) storeFailed(err error) {
	fw.c.storeFailed(fw.out.Context(), "set", fw.key, err)
	fw.c.flights.finish(fw.key, fw.flight, flightUncacheable)
}
