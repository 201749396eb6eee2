package cache

import (
	"bytes"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

func FuzzParseCacheControl(f *testing.F) {
	for _, s := range []string{
		"max-age=60", "public, max-age=60", `private="Set-Cookie, X", max-age=5`, "no-store,no-cache",
		`max-age="3600"`, "max-age=99999999999999999999", "max-stale", "max-stale=10, min-fresh=3",
		"s-maxage=0, must-revalidate", "stale-while-revalidate=30, stale-if-error=600",
		`, ,, max-age = 5 ,`, `no-cache="a\"b", public`, "must-understand, no-store", "MAX-AGE=1",
		`max-age="`, "=,=", "max-age=-1",
		`no-cache="Set-Cookie"`, `private="set-cookie", max-age=60`, `no-cache="X-Foo, SET-COOKIE"`,
		`private=Set-Cookie`, `private="Set-Cookie2"`, "no-cache=\"Set-\u212aookie\"", `private="Set-Cookie,"`,
		`private=" Set-Cookie "`, `no-cache="Set-Cookie\", private`, `private="Set-Cookie, X-Foo", no-cache="A"`,
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		cc := parseCacheControl([]string{s})
		for _, d := range []int64{cc.maxAge, cc.sMaxAge, cc.maxStale, cc.minFresh, cc.staleWhileRevalidate, cc.staleIfError} {
			if d < 0 || d > maxDelta {
				t.Fatalf("%q: duration %d out of [0, %d]", s, d, maxDelta)
			}
		}
		if again := parseCacheControl([]string{s}); again != cc {
			t.Fatalf("%q: parsing is not deterministic", s)
		}
		// A field that omits reports is never stored, nor is any field it does not report
		// removed; both must hold for Set-Cookie, whatever its spelling in the map.
		for _, key := range []string{"Set-Cookie", "set-cookie", "X-Foo"} {
			name := http.CanonicalHeaderKey(key)
			h := http.Header{"Cache-Control": {s}, key: {"v"}}
			_, kept := storedHeader(h)[key]
			if cc.omits(name) == kept {
				t.Fatalf("%q: omits(%s) is %v, but storedHeader kept it: %v", s, name, cc.omits(name), kept)
			}
		}
		// A bare no-store or private element, outside any quoted string, must be seen. Only
		// spaces and tabs surround it (OWS): net/http rejects other controls in a field
		// value, and "private\v" is another, unknown, directive.
		if !strings.Contains(s, `"`) {
			for el := range strings.SplitSeq(s, ",") {
				el = strings.ToLower(strings.Trim(el, " \t"))
				if el == "no-store" && !cc.has(ccNoStore) {
					t.Fatalf("%q: missed no-store", s)
				}
				if el == "private" && !cc.has(ccPrivate) {
					t.Fatalf("%q: missed private", s)
				}
			}
		}
	})
}

func FuzzEntryUnmarshal(f *testing.F) {
	e := &Entry{Status: 200, Header: http.Header{"A": {"1", "2"}}, Body: []byte("body"),
		RequestTime: time.Unix(1, 0), ResponseTime: time.Unix(2, 0), Vary: []string{"Accept"}, VaryKey: "k",
		Tags: []string{"t"}}
	b, _ := e.MarshalBinary()
	f.Add(b)
	f.Add([]byte{1, 0, 0, 0, 0, 0, 0, 0, 0})
	f.Add([]byte{2})
	f.Fuzz(func(t *testing.T, data []byte) {
		var e Entry
		if err := e.UnmarshalBinary(data); err != nil {
			return
		}
		e.prepare() // derived fields from arbitrary headers must not panic either
		b, err := e.MarshalBinary()
		if err != nil {
			t.Fatal(err)
		}
		var again Entry
		if err := again.UnmarshalBinary(b); err != nil {
			t.Fatalf("re-decoding an encoded entry: %v", err)
		}
		b2, _ := again.MarshalBinary()
		if !bytes.Equal(b, b2) {
			t.Fatal("encoding is not stable")
		}
	})
}

// FuzzMiddleware drives the whole middleware with random origin headers. Client A asks first,
// sometimes with credentials; client B asks for the same URL after a random time. B must
// never receive a response that was private or no-store (without must-understand), nor
// the cookie the origin set for A (when the top bit of status asks it to set cookies), and
// nothing may panic.
func FuzzMiddleware(f *testing.F) {
	f.Add("max-age=60", "", "", uint16(200), false, "", int64(10), "")
	f.Add("private, max-age=60", "", "", uint16(200), true, "", int64(1), "")
	f.Add("no-store", "Accept", "", uint16(200), false, "", int64(0), "")
	f.Add("must-understand, no-store, max-age=5", "", "", uint16(299), false, "", int64(0), "")
	f.Add("public, s-maxage=10, stale-while-revalidate=5", "*", "0", uint16(404), true, `"e"`, int64(12), "bytes=0-1")
	f.Add("max-age=1, stale-if-error=100", "X-Foo, Accept-Encoding", "Thu, 01 Jan 2099 00:00:00 GMT", uint16(503), false, `W/"x"`, int64(50), "")
	f.Add("max-age=60", "", "", uint16(0x8000), false, "", int64(10), "")
	f.Add(`max-age=60, private="Set-Cookie"`, "", "", uint16(0x8000), false, "", int64(10), "")
	f.Add(`max-age=1, no-cache="set-cookie"`, "", "", uint16(0x8000), false, `"e"`, int64(5), "")
	f.Add("public, s-maxage=60", "Cookie", "", uint16(0x8000), true, "", int64(1), "")
	f.Fuzz(func(t *testing.T, cc, vary, expires string, status uint16, credentials bool, etag string, advance int64, rng string) {
		code := 200 + int(status)%400
		cookies := status&0x8000 != 0
		clock := newClock()
		c, err := New(Options{Now: clock.Now, MaxBodyBytes: 64})
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		n := 0
		origin := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			n++
			h := w.Header()
			set := func(k, v string) {
				if v != "" && validValue(v) {
					h.Set(k, v)
				}
			}
			set("Cache-Control", cc)
			set("Vary", vary)
			set("Expires", expires)
			set("ETag", etag)
			if cookies {
				h.Set("Set-Cookie", "session=secret-"+strconv.Itoa(n))
			}
			h.Set("Date", clock.Now().Format(http.TimeFormat))
			w.WriteHeader(code)
			_, _ = w.Write([]byte("secret-" + strconv.Itoa(n)))
		})
		handler := c.Handler(origin)
		do := func(cred bool) *httptest.ResponseRecorder {
			req := httptest.NewRequest(http.MethodGet, "http://example.com/x", nil)
			if cred {
				req.Header.Set("Authorization", "Bearer a")
				req.Header.Set("Cookie", "id=a")
			}
			if rng != "" && validValue(rng) {
				req.Header.Set("Range", rng)
			}
			rec := httptest.NewRecorder()
			handler.ServeHTTP(rec, req)
			if rec.Header().Get("Cache-Status") == "" {
				t.Fatal("response without Cache-Status")
			}
			return rec
		}
		a := do(credentials)
		clock.Advance(time.Duration(advance%100_000) * time.Second)
		b := do(false)
		c.wg.Wait()

		// Only unambiguous cases: no quoted strings, and the bare directive as an element.
		var private, noStore, mustUnderstand bool
		if !strings.Contains(cc, `"`) {
			for el := range strings.SplitSeq(strings.ToLower(cc), ",") {
				switch strings.Trim(el, " \t") {
				case "private":
					private = true
				case "no-store":
					noStore = true
				case "must-understand":
					mustUnderstand = true
				}
			}
		}
		noStore = noStore && !mustUnderstand
		if (private || noStore) && strings.Contains(a.Body.String(), "secret-1") &&
			strings.Contains(b.Body.String(), "secret-1") {
			t.Fatalf("Cache-Control %q: client B got client A's response", cc)
		}
		if slices.Contains(b.Header().Values("Set-Cookie"), "session=secret-1") {
			t.Fatalf("Cache-Control %q: client B got client A's cookie", cc)
		}
	})
}

// validValue reports whether net/http would accept v as a header value.
func validValue(v string) bool {
	for i := 0; i < len(v); i++ {
		if c := v[i]; c < 0x20 && c != '\t' || c == 0x7f {
			return false
		}
	}
	return true
}

// FuzzParseHTTPDate checks the strict HTTP-date parser: it never panics, what it accepts
// survives a round trip through IMF-fixdate, and where net/http's lenient parser reads an
// IMF-fixdate too, both read the same instant.
func FuzzParseHTTPDate(f *testing.F) {
	for _, s := range []string{
		"Sun, 06 Nov 1994 08:49:37 GMT", "Sunday, 06-Nov-94 08:49:37 GMT", "Sun Nov  6 08:49:37 1994",
		"Thu, 18 Aug 2050 2:01:18 GMT", "Thu, 18  Aug  2050 02:01:18 GMT", "0", "", "Thu, 31 Feb 2050 02:01:18 GMT",
		"thu, 18 aug 2050 02:01:18 gmt", "Sat, 31 Dec 2016 23:59:60 GMT",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		got, err := parseHTTPDate(s)
		if err != nil {
			return
		}
		if got.Location() != time.UTC {
			t.Fatalf("%q: parsed into %v, want UTC", s, got.Location())
		}
		again, err := parseHTTPDate(got.Format(http.TimeFormat))
		if err != nil || !again.Equal(got) {
			t.Fatalf("%q: %v does not survive formatting (%v, %v)", s, got, again, err)
		}
		if len(s) == 29 && strings.HasSuffix(s, "GMT") {
			if std, err := http.ParseTime(s); err == nil && !std.Equal(got) {
				t.Fatalf("%q: read as %v, net/http reads %v", s, got, std)
			}
		}
	})
}
