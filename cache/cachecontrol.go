package cache

import (
	"iter"
	"net/http"
	"strings"
)

// maxDelta is the value a cache must use for a delta-seconds value too large to represent
// (RFC 9111 §1.2.2).
const maxDelta = 2147483648

// ccFlag records which Cache-Control directives were present.
type ccFlag uint32

const (
	ccNoStore ccFlag = 1 << iota
	ccNoCache
	ccPrivate
	ccPublic
	ccMustRevalidate
	ccProxyRevalidate
	ccMustUnderstand
	ccOnlyIfCached
	ccMaxAge
	ccSMaxAge
	ccMaxStale
	ccMaxStaleAny // max-stale without a value: any staleness is acceptable
	ccMinFresh
	ccStaleWhileRevalidate
	ccStaleIfError
	ccNoCacheFields // no-cache="field, ...": those fields are not stored
	ccPrivateFields // private="field, ...": those fields are not stored by a shared cache
)

// cacheControl is a parsed Cache-Control field (RFC 9111 §5.2), for a request or a response.
// Durations are in seconds and meaningful only when their flag is set.
type cacheControl struct {
	flags                               ccFlag
	maxAge, sMaxAge, maxStale, minFresh int64
	staleWhileRevalidate, staleIfError  int64
	// noCacheFields and privateFields are the field lists of the qualified forms.
	noCacheFields, privateFields string
}

func (cc cacheControl) has(f ccFlag) bool { return cc.flags&f != 0 }

// parseCacheControl parses every line of a Cache-Control field. It never fails: unknown
// directives are ignored, as §5.2 requires, and malformed ones are read conservatively:
//   - the first occurrence of a repeated directive wins (§4.2.1);
//   - max-age and s-maxage with an invalid argument count as 0, so the response is stale
//     rather than fresh for an unknown time;
//   - invalid max-stale, min-fresh, stale-while-revalidate and stale-if-error arguments are
//     ignored, since ignoring them is the stricter reading;
//   - whitespace around "=" is not allowed, so "max-age = 5" is an invalid max-age;
//   - the qualified forms of no-cache and private (no-cache="Set-Cookie") do not set the
//     unqualified flags: the response may be reused, but the listed fields are not stored
//     (RFC 9111 §5.2.2.4 and §5.2.2.7).
//
// Arguments may be tokens or quoted strings (§5.2: recipients accept both).
func parseCacheControl(lines []string) cacheControl {
	var cc cacheControl
	for _, s := range lines {
		for len(s) > 0 {
			var name, arg string
			var hasArg bool
			name, arg, hasArg, s = nextDirective(s)
			if name == "" {
				continue
			}
			cc.apply(name, arg, hasArg)
		}
	}
	return cc
}

// nextDirective splits the first directive off s. It returns an empty name for an empty or
// malformed element, which the caller skips.
func nextDirective(s string) (name, arg string, hasArg bool, rest string) {
	s = trimOWSLeft(s)
	i := 0
	for i < len(s) && s[i] != '=' && s[i] != ',' && s[i] != ' ' && s[i] != '\t' {
		i++
	}
	// The grammar allows no whitespace around "=": "max-age = 5" leaves max-age without a
	// valid argument, which reads as stale rather than fresh.
	name, s = s[:i], s[i:]
	if len(s) > 0 && s[0] == '=' {
		hasArg = true
		s = s[1:]
		if len(s) > 0 && s[0] == '"' {
			// quoted-string: read to the closing quote, undoing quoted-pairs.
			var b strings.Builder
			j := 1
			closed := false
			for j < len(s) {
				c := s[j]
				if c == '\\' && j+1 < len(s) {
					b.WriteByte(s[j+1])
					j += 2
					continue
				}
				if c == '"' {
					closed = true
					j++
					break
				}
				b.WriteByte(c)
				j++
			}
			arg, s = b.String(), s[j:]
			if !closed {
				arg = ""
			}
		} else {
			j := 0
			for j < len(s) && s[j] != ',' && s[j] != ' ' && s[j] != '\t' {
				j++
			}
			arg, s = s[:j], s[j:]
		}
	}
	// Skip anything up to the next comma (garbage after a directive).
	if k := strings.IndexByte(s, ','); k >= 0 {
		s = s[k+1:]
	} else {
		s = ""
	}
	return name, arg, hasArg, s
}

// trimOWSLeft skips whitespace and empty list elements.
func trimOWSLeft(s string) string {
	for len(s) > 0 && (s[0] == ' ' || s[0] == '\t' || s[0] == ',') {
		s = s[1:]
	}
	return s
}

func (cc *cacheControl) apply(name, arg string, hasArg bool) {
	switch {
	case strings.EqualFold(name, "no-store"):
		cc.flags |= ccNoStore
	case strings.EqualFold(name, "no-cache"):
		if hasArg && strings.TrimSpace(arg) != "" {
			cc.flags |= ccNoCacheFields
			cc.noCacheFields = joinList(cc.noCacheFields, arg)
		} else {
			cc.flags |= ccNoCache
		}
	case strings.EqualFold(name, "private"):
		if hasArg && strings.TrimSpace(arg) != "" {
			cc.flags |= ccPrivateFields
			cc.privateFields = joinList(cc.privateFields, arg)
		} else {
			cc.flags |= ccPrivate
		}
	case strings.EqualFold(name, "public"):
		cc.flags |= ccPublic
	case strings.EqualFold(name, "must-revalidate"):
		cc.flags |= ccMustRevalidate
	case strings.EqualFold(name, "proxy-revalidate"):
		cc.flags |= ccProxyRevalidate
	case strings.EqualFold(name, "must-understand"):
		cc.flags |= ccMustUnderstand
	case strings.EqualFold(name, "only-if-cached"):
		cc.flags |= ccOnlyIfCached
	case strings.EqualFold(name, "max-age"):
		if cc.has(ccMaxAge) {
			return
		}
		cc.flags |= ccMaxAge
		cc.maxAge, _ = parseDelta(arg, hasArg) // invalid: 0, that is stale
	case strings.EqualFold(name, "s-maxage"):
		if cc.has(ccSMaxAge) {
			return
		}
		cc.flags |= ccSMaxAge
		cc.sMaxAge, _ = parseDelta(arg, hasArg)
	case strings.EqualFold(name, "max-stale"):
		if cc.has(ccMaxStale) {
			return
		}
		if !hasArg {
			cc.flags |= ccMaxStale | ccMaxStaleAny
			return
		}
		if v, ok := parseDelta(arg, hasArg); ok {
			cc.flags |= ccMaxStale
			cc.maxStale = v
		}
	case strings.EqualFold(name, "min-fresh"):
		if v, ok := parseDelta(arg, hasArg); ok && !cc.has(ccMinFresh) {
			cc.flags |= ccMinFresh
			cc.minFresh = v
		}
	case strings.EqualFold(name, "stale-while-revalidate"):
		if v, ok := parseDelta(arg, hasArg); ok && !cc.has(ccStaleWhileRevalidate) {
			cc.flags |= ccStaleWhileRevalidate
			cc.staleWhileRevalidate = v
		}
	case strings.EqualFold(name, "stale-if-error"):
		if v, ok := parseDelta(arg, hasArg); ok && !cc.has(ccStaleIfError) {
			cc.flags |= ccStaleIfError
			cc.staleIfError = v
		}
	}
}

// omitted yields the field names that the qualified no-cache and private directives list,
// which a shared cache stores the response without (RFC 9111 §5.2.2.4 and §5.2.2.7).
func (cc cacheControl) omitted() iter.Seq[string] {
	return func(yield func(string) bool) {
		if !cc.has(ccNoCacheFields | ccPrivateFields) {
			return
		}
		for _, list := range []string{cc.noCacheFields, cc.privateFields} {
			for f := range strings.SplitSeq(list, ",") {
				if f = strings.TrimSpace(f); f != "" && !yield(f) {
					return
				}
			}
		}
	}
}

// omits reports whether the qualified no-cache or private directives list the field name.
// It compares as storedHeader deletes, so a field it reports is never stored.
func (cc cacheControl) omits(name string) bool {
	for f := range cc.omitted() {
		if fieldNameEqual(f, name) {
			return true
		}
	}
	return false
}

// fieldNameEqual compares field names case-insensitively in ASCII only, as field names are
// tokens. Unicode folding (strings.EqualFold matches the Kelvin sign with "k") would let
// omits report a listed name that no stored field matches.
func fieldNameEqual(a, b string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := 0; i < len(a); i++ {
		x, y := a[i], b[i]
		if 'A' <= x && x <= 'Z' {
			x += 'a' - 'A'
		}
		if 'A' <= y && y <= 'Z' {
			y += 'a' - 'A'
		}
		if x != y {
			return false
		}
	}
	return true
}

func joinList(a, b string) string {
	if a == "" {
		return b
	}
	return a + "," + b
}

// parseDelta parses delta-seconds (RFC 9111 §1.2.2): one or more digits, saturating at
// maxDelta. It reports false for anything else.
func parseDelta(s string, present bool) (int64, bool) {
	if !present || s == "" {
		return 0, false
	}
	var v int64
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c < '0' || c > '9' {
			return 0, false
		}
		if v < maxDelta {
			v = v*10 + int64(c-'0')
		}
	}
	return min(v, maxDelta), true
}

// requestCacheControl reads the request directives, honouring Pragma: no-cache only when the
// request has no Cache-Control field (RFC 9111 §5.4). It does not allocate when neither
// field is present, which keeps the hit path cheap.
func requestCacheControl(h http.Header) cacheControl {
	if v, ok := h["Cache-Control"]; ok {
		return parseCacheControl(v)
	}
	if v, ok := h["Pragma"]; ok {
		for _, line := range v {
			for len(line) > 0 {
				var name string
				name, _, _, line = nextDirective(line)
				if strings.EqualFold(name, "no-cache") {
					return cacheControl{flags: ccNoCache}
				}
			}
		}
	}
	return cacheControl{}
}
