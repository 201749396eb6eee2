package cache

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"net/http"
	"slices"
	"strconv"
	"sync/atomic"
	"time"
)

// An Entry is what a [Store] holds under a key: either a stored response or, for a URL whose
// responses carry Vary, a variant index.
//
// A stored response has a non-zero Status. A variant index has Status 0, no Header and no
// Body; its Vary names the selecting header fields of the latest response for the URL and its
// VaryKey is a generation that the variants' keys embed, so that replacing or deleting the
// index makes every older variant unreachable at once.
//
// Entries are immutable once they are handed to a Store: the cache and the store share them
// between goroutines without copying. Fields that a hit needs but that can be derived from the
// exported ones (the parsed Cache-Control, the freshness lifetime, the header map a hit
// copies) are computed once, by the cache when it creates an entry and by
// [Entry.UnmarshalBinary] when it decodes one, and are not encoded: the exported fields are
// the whole of an entry, so a store outside this package can keep one as bytes and give it
// back.
type Entry struct {
	// Status is the response status code, or 0 for a variant index.
	Status int
	// Header is the stored response header: hop-by-hop fields removed, Content-Length set to
	// len(Body).
	Header http.Header
	// Body is the complete response body.
	Body []byte
	// RequestTime and ResponseTime are when the cache sent the request that produced (or last
	// validated) the response and when it received the response headers (RFC 9111 §4.2.3).
	RequestTime, ResponseTime time.Time
	// Vary lists the canonical names of the selecting header fields, in the order of the
	// response's Vary field.
	Vary []string
	// VaryKey is, for a stored variant, the normalised values of the selecting header fields
	// of the request that produced it; for a variant index, its generation.
	VaryKey string
	// Tags are the purge tags the origin assigned (see Options.TagHeader).
	Tags []string

	m meta
}

// meta is what a hit needs, computed once per entry.
type meta struct {
	cc                cacheControl
	lifetime          time.Duration // freshness lifetime, §4.2.1
	correctedInitAge  time.Duration // corrected_initial_age, §4.2.3
	etag              string
	lastModified      time.Time // zero when absent or invalid
	date              time.Time // Date field, or ResponseTime when absent or invalid
	noStaleServe      bool      // must-revalidate, proxy-revalidate, s-maxage or no-cache
	setCookie         bool      // Header has Set-Cookie, which only Options.StoreSetCookie serves
	hitHeader         http.Header
	ownHitHeader      bool   // hitHeader is a copy, not Header itself
	cacheStatusPrefix string // upstream Cache-Status members, then ours up to "hit; ttl="
	hitValues         atomic.Pointer[hitValues]
	prepared          bool
}

// hitValues caches the Age and Cache-Status values for one whole second of an entry's age,
// so that most hits format nothing.
type hitValues struct {
	age         int64
	ageValue    []string
	cacheStatus []string
}

// prepare computes the derived fields. It must be called before the entry is shared: the
// cache prepares the entries it creates, and UnmarshalBinary those it decodes.
func (e *Entry) prepare() {
	if e.m.prepared || e.Status == 0 {
		e.m.prepared = true
		return
	}
	h := e.Header
	e.m.cc = parseCacheControl(h["Cache-Control"])
	e.m.etag = h.Get("Etag")
	if lm, err := parseHTTPDate(h.Get("Last-Modified")); err == nil {
		e.m.lastModified = lm
	}
	e.m.date = e.ResponseTime
	if d, err := parseHTTPDate(h.Get("Date")); err == nil {
		e.m.date = d
	}
	e.m.lifetime = freshnessLifetime(e.Status, h, e.m.cc, e.m.date, e.m.lastModified)
	e.m.correctedInitAge = correctedInitialAge(h, e.m.date, e.RequestTime, e.ResponseTime)
	e.m.noStaleServe = e.m.cc.has(ccMustRevalidate | ccProxyRevalidate | ccSMaxAge | ccNoCache)
	e.m.setCookie = hasField(h, "Set-Cookie")

	// A hit copies hitHeader's slices into the client's map, so they are clipped: a
	// downstream Add then appends to a copy, never into shared memory. When the stored header
	// has no field a hit replaces, hitHeader is the stored header itself.
	_, hasAge := h["Age"]
	_, hasStatus := h["Cache-Status"]
	if hasAge || hasStatus {
		hh := make(http.Header, len(h))
		for k, v := range h {
			if k != "Age" && k != "Cache-Status" {
				hh[k] = slices.Clip(v)
			}
		}
		e.m.hitHeader, e.m.ownHitHeader = hh, true
	} else {
		for k, v := range h {
			h[k] = slices.Clip(v)
		}
		e.m.hitHeader = h
	}
	prefix := ""
	if up := h["Cache-Status"]; len(up) > 0 {
		for _, v := range up {
			prefix += v + ", "
		}
	}
	e.m.cacheStatusPrefix = prefix
	e.m.prepared = true
}

// ready returns e prepared for serving: e itself when the cache or UnmarshalBinary prepared
// it, else a prepared copy (for an entry a Store built field by field, which must not be
// modified in place since the store may share it), or nil when e could never be served.
func (e *Entry) ready() *Entry {
	if e.m.prepared {
		return e
	}
	if !validEntry(e.Status, e.Header, e.Body) {
		return nil
	}
	cp := &Entry{
		Status: e.Status, Header: e.Header.Clone(), Body: e.Body,
		RequestTime: e.RequestTime, ResponseTime: e.ResponseTime,
		Vary: e.Vary, VaryKey: e.VaryKey, Tags: e.Tags,
	}
	cp.prepare()
	return cp
}

// validEntry reports whether an entry with these fields can be served: a variant index
// (status 0) or a final status, and a body as long as the Content-Length the cache stored
// with it, so that no store, however it fails, can make the cache serve part of a body.
func validEntry(status int, h http.Header, body []byte) bool {
	if status == 0 {
		return true
	}
	if status < 200 || status > 999 {
		return false
	}
	if cl, ok := h["Content-Length"]; ok && (len(cl) != 1 || cl[0] != strconv.Itoa(len(body))) {
		return false
	}
	return true
}

// currentAge is current_age of RFC 9111 §4.2.3.
func (e *Entry) currentAge(now time.Time) time.Duration {
	resident := now.Sub(e.ResponseTime)
	if resident < 0 {
		resident = 0
	}
	return e.m.correctedInitAge + resident
}

// hitHeaderValues returns the Age and Cache-Status values for a hit at the given age.
func (e *Entry) hitHeaderValues(name string, age time.Duration) (ageValue, cacheStatus []string) {
	sec := int64(age / time.Second)
	if hv := e.m.hitValues.Load(); hv != nil && hv.age == sec {
		return hv.ageValue, hv.cacheStatus
	}
	ttl := int64(e.m.lifetime/time.Second) - sec // whole seconds, consistent with Age
	hv := &hitValues{
		age:         sec,
		ageValue:    []string{strconv.FormatInt(min(sec, maxDelta), 10)},
		cacheStatus: []string{e.m.cacheStatusPrefix + name + "; hit; ttl=" + strconv.FormatInt(ttl, 10)},
	}
	e.m.hitValues.Store(hv)
	return hv.ageValue, hv.cacheStatus
}

// size is the number of bytes the entry holds, for the memory store's budget.
func (e *Entry) size(key string) int64 {
	n := int64(len(key)+len(e.Body)+len(e.VaryKey)) + 480 // struct, meta, LRU element and map overhead
	for k, v := range e.Header {
		n += int64(len(k)) + 32
		for _, s := range v {
			n += int64(len(s)) + 16
		}
	}
	for _, s := range e.Vary {
		n += int64(len(s)) + 16
	}
	for _, s := range e.Tags {
		n += int64(len(s)) + 16
	}
	if e.m.ownHitHeader {
		n += int64(len(e.Header)) * 48
	}
	return n
}

// entryVersion is the first byte of every encoded entry. Bump it when the layout changes; a
// decoder rejects versions it does not know, so replicas of different releases sharing a
// store treat each other's entries as misses instead of misreading them.
const entryVersion = 1

// ErrBadEntry is returned by [Entry.UnmarshalBinary] for bytes that are not an entry this
// version of the package can read.
var ErrBadEntry = errors.New("cache: malformed entry encoding")

// MarshalBinary encodes the entry for a shared store. The format is version 1:
//
//	version byte (1)
//	uvarint status
//	varint  request time, response time (Unix nanoseconds)
//	strings vary names; string vary key; strings tags
//	uvarint number of header fields, each: string name, strings values
//	string  body
//
// where a string is a uvarint length and the bytes, and strings is a uvarint count and that
// many strings. The derived fields are recomputed on decoding.
func (e *Entry) MarshalBinary() ([]byte, error) {
	n := 64 + len(e.Body) + len(e.VaryKey)
	for k, v := range e.Header {
		n += len(k) + 8
		for _, s := range v {
			n += len(s) + 4
		}
	}
	b := make([]byte, 0, n)
	b = append(b, entryVersion)
	b = binary.AppendUvarint(b, uint64(e.Status))
	b = binary.AppendVarint(b, timeNanos(e.RequestTime))
	b = binary.AppendVarint(b, timeNanos(e.ResponseTime))
	b = appendStrings(b, e.Vary)
	b = appendString(b, e.VaryKey)
	b = appendStrings(b, e.Tags)
	keys := make([]string, 0, len(e.Header))
	for k := range e.Header {
		keys = append(keys, k)
	}
	slices.Sort(keys) // a stable encoding: equal entries encode to equal bytes
	b = binary.AppendUvarint(b, uint64(len(keys)))
	for _, k := range keys {
		b = appendString(b, k)
		b = appendStrings(b, e.Header[k])
	}
	b = binary.AppendUvarint(b, uint64(len(e.Body)))
	b = append(b, e.Body...)
	return b, nil
}

func timeNanos(t time.Time) int64 {
	if t.IsZero() {
		return math.MinInt64
	}
	return t.UnixNano()
}

func nanosTime(n int64) time.Time {
	if n == math.MinInt64 {
		return time.Time{}
	}
	return time.Unix(0, n)
}

func appendString(b []byte, s string) []byte {
	b = binary.AppendUvarint(b, uint64(len(s)))
	return append(b, s...)
}

func appendStrings(b []byte, ss []string) []byte {
	b = binary.AppendUvarint(b, uint64(len(ss)))
	for _, s := range ss {
		b = appendString(b, s)
	}
	return b
}

// decoder reads the encoding; the first error sticks.
type decoder struct {
	b   []byte
	err error
}

func (d *decoder) uvarint() uint64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Uvarint(d.b)
	if n <= 0 {
		d.err = ErrBadEntry
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *decoder) varint() int64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Varint(d.b)
	if n <= 0 {
		d.err = ErrBadEntry
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *decoder) bytes() []byte {
	n := d.uvarint()
	if d.err != nil {
		return nil
	}
	if n > uint64(len(d.b)) {
		d.err = ErrBadEntry
		return nil
	}
	v := d.b[:n:n]
	d.b = d.b[n:]
	return v
}

func (d *decoder) string() string { return string(d.bytes()) }

func (d *decoder) strings() []string {
	n := d.uvarint()
	if d.err != nil {
		return nil
	}
	if n > uint64(len(d.b)) { // every string takes at least one byte
		d.err = ErrBadEntry
		return nil
	}
	if n == 0 {
		return nil
	}
	ss := make([]string, n)
	for i := range ss {
		ss[i] = d.string()
	}
	return ss
}

// UnmarshalBinary decodes an entry written by [Entry.MarshalBinary] and computes its derived
// fields, so that the entry is ready for a Store to return. It returns an error
// wrapping [ErrBadEntry] for unknown versions and malformed input (including a status that
// is not final and a body whose length is not the stored Content-Length), never panics, and
// copies the body so the caller may reuse data.
func (e *Entry) UnmarshalBinary(data []byte) error {
	if len(data) == 0 {
		return ErrBadEntry
	}
	if data[0] != entryVersion {
		return fmt.Errorf("%w: version %d, want %d", ErrBadEntry, data[0], entryVersion)
	}
	d := decoder{b: data[1:]}
	status := d.uvarint()
	var out struct {
		Status                    int
		Header                    http.Header
		Body                      []byte
		RequestTime, ResponseTime time.Time
		Vary                      []string
		VaryKey                   string
		Tags                      []string
	}
	out.RequestTime = nanosTime(d.varint())
	out.ResponseTime = nanosTime(d.varint())
	out.Vary = d.strings()
	out.VaryKey = d.string()
	out.Tags = d.strings()
	nh := d.uvarint()
	if d.err == nil && nh > uint64(len(d.b)) {
		d.err = ErrBadEntry
	}
	if d.err == nil && nh > 0 {
		out.Header = make(http.Header, nh)
		for range nh {
			k := d.string()
			out.Header[k] = d.strings()
		}
	}
	body := d.bytes()
	if d.err != nil {
		return d.err
	}
	if len(d.b) != 0 || status > 999 || !validEntry(int(status), out.Header, body) {
		return ErrBadEntry
	}
	out.Status = int(status)
	if len(body) > 0 {
		out.Body = slices.Clone(body)
	}
	if out.Header == nil && out.Status != 0 {
		out.Header = http.Header{}
	}
	e.Status, e.Header, e.Body = out.Status, out.Header, out.Body
	e.RequestTime, e.ResponseTime = out.RequestTime, out.ResponseTime
	e.Vary, e.VaryKey, e.Tags = out.Vary, out.VaryKey, out.Tags
	e.m = meta{}
	e.prepare()
	return nil
}
