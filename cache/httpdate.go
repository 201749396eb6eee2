package cache

import (
	"errors"
	"strings"
	"time"
)

var errBadDate = errors.New("cache: malformed HTTP-date")

var (
	dayNames   = [...]string{"Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"}
	longDays   = [...]string{"Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"}
	monthNames = [...]string{"Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"}
)

// parseHTTPDate parses an HTTP-date (RFC 9110 §5.6.7): the preferred IMF-fixdate
// ("Sun, 06 Nov 1994 08:49:37 GMT") and the two obsolete forms recipients must still accept,
// rfc850-date ("Sunday, 06-Nov-94 08:49:37 GMT") and asctime-date
// ("Sun Nov  6 08:49:37 1994").
//
// It is strict where http.ParseTime is lenient, because RFC 9111 §5.3 makes a cache read an
// invalid Expires as a time in the past: time.Parse accepts one-digit hours and runs of
// spaces, so "Thu, 18 Aug 2050 2:01:18 GMT" would otherwise make a response fresh for
// decades. Only the letter case of day names, month names and "GMT" is forgiven, since no
// reading of such a date is ambiguous.
func parseHTTPDate(s string) (time.Time, error) {
	switch {
	case len(s) == 29 && s[3] == ',':
		// IMF-fixdate: day-name "," SP 2DIGIT SP month SP 4DIGIT SP time SP "GMT"
		if !oneOf(s[:3], dayNames[:]) || s[4] != ' ' || s[7] != ' ' || s[11] != ' ' || s[16] != ' ' ||
			s[25] != ' ' || !strings.EqualFold(s[26:], "GMT") {
			return time.Time{}, errBadDate
		}
		return buildDate(s[12:16], s[8:11], s[5:7], s[17:25])
	case len(s) == 24 && s[3] == ' ':
		// asctime-date: day-name SP month SP ( 2DIGIT / ( SP DIGIT ) ) SP time SP 4DIGIT
		if !oneOf(s[:3], dayNames[:]) || s[7] != ' ' || s[10] != ' ' || s[19] != ' ' {
			return time.Time{}, errBadDate
		}
		day := s[8:10]
		if day[0] == ' ' {
			day = "0" + day[1:]
		}
		return buildDate(s[20:], s[4:7], day, s[11:19])
	}
	// rfc850-date: day-name-l "," SP 2DIGIT "-" month "-" 2DIGIT SP time SP "GMT"
	comma := strings.IndexByte(s, ',')
	if comma < 0 || !oneOf(s[:comma], longDays[:]) {
		return time.Time{}, errBadDate
	}
	r := s[comma:]
	if len(r) != 24 || r[1] != ' ' || r[4] != '-' || r[8] != '-' || r[11] != ' ' || r[20] != ' ' ||
		!strings.EqualFold(r[21:], "GMT") {
		return time.Time{}, errBadDate
	}
	yy, ok := digits(r[9:11])
	if !ok {
		return time.Time{}, errBadDate
	}
	// A two-digit year more than 50 years ahead is the latest past year with those digits
	// (RFC 9110 §5.6.7). The wall clock is right here: the pivot moves once a century.
	year := time.Now().Year()/100*100 + yy
	if year > time.Now().Year()+50 {
		year -= 100
	}
	return buildDate(itoa4(year), r[5:8], r[2:4], r[12:20])
}

func oneOf(s string, names []string) bool {
	for _, n := range names {
		if strings.EqualFold(s, n) {
			return true
		}
	}
	return false
}

// buildDate checks and assembles the parts: a 4-digit year, a month name, a 2-digit day and
// an "HH:MM:SS" time of day, all in UTC.
func buildDate(year, month, day, clock string) (time.Time, error) {
	y, okY := digits(year)
	d, okD := digits(day)
	m := 0
	for i, n := range monthNames {
		if strings.EqualFold(month, n) {
			m = i + 1
		}
	}
	if !okY || len(year) != 4 || !okD || len(day) != 2 || m == 0 || len(clock) != 8 || clock[2] != ':' || clock[5] != ':' {
		return time.Time{}, errBadDate
	}
	hh, okH := digits(clock[0:2])
	mm, okM := digits(clock[3:5])
	ss, okS := digits(clock[6:8])
	if !okH || !okM || !okS || hh > 23 || mm > 59 || ss > 60 { // 60: a leap second
		return time.Time{}, errBadDate
	}
	t := time.Date(y, time.Month(m), d, hh, mm, ss, 0, time.UTC)
	if d < 1 || t.Day() != d && ss != 60 {
		return time.Time{}, errBadDate // 31 Feb and the like
	}
	return t, nil
}

// digits parses a short run of ASCII digits.
func digits(s string) (int, bool) {
	if s == "" {
		return 0, false
	}
	n := 0
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return 0, false
		}
		n = n*10 + int(s[i]-'0')
	}
	return n, true
}

func itoa4(n int) string {
	return string([]byte{byte('0' + n/1000%10), byte('0' + n/100%10), byte('0' + n/10%10), byte('0' + n%10)})
}
