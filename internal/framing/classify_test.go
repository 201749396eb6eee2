package framing

import (
	"fmt"
	"strings"
	"time"
)

// class is a case's outcome.
type class int

const (
	ok class = iota
	questionable
	unsafe
)

func (c class) String() string {
	return [...]string{"ok", "questionable", "UNSAFE"}[c]
}

// expectation is what a careful proxy does with a case's message, as NGINX does.
type expectation int

const (
	either expectation = iota // both forwarding and refusing are reasonable
	accept                    // a valid message: refusing it is questionable
	reject                    // NGINX refuses it (400/501 for requests, 502 for responses): accepting it is questionable
)

// kase is one framing case. Request cases send odd bytes from the client and answer with the
// upstream's echo; response cases send an ordinary request and answer by script.
type kase struct {
	name    string
	side    string // "request" or "response"
	send    string // the bytes the client writes, in one write
	rest    string // written after a 100 Continue (or when no answer came by the deadline)
	nresp   int    // final responses the client waits for; 0 means 1
	methods []string
	targets []string // what each response must answer, when the case pins it
	expect  expectation

	mustClose  bool // RFC 9112 §6.1: the client connection must not carry another request
	mustReject bool // RFC 9112 §6.1: faulty framing, never to be forwarded or answered 2xx
	incomplete bool // the client never finishes the request: no 2xx, no complete request upstream
	mayWait    bool // the proxy may rightly wait for bytes that never come
	halfClose  bool // the client shuts its write side after sending
	noParse    bool // the answer is not HTTP/1 (an HTTP/2 preface): read raw bytes only
	upgrade    bool // the client asked for a protocol switch

	up       *script       // the upstream's answer; nil means the echo
	fullBody int           // response cases: the body length the upstream announced
	timeout  time.Duration // the case's deadline; 0 means 1.5s

	// check, when not nil, adds a case-specific rule.
	check func(*result, *verdict)

	// knownDefect marks an UNSAFE outcome that another branch is fixing ("issue 14 #N"): it is
	// logged instead of failing the test. Remove the mark when the fix lands.
	knownDefect string
}

// served is one request as the proxy's handler saw it.
type served struct {
	Method, Target string
	BodyLen        int64
}

// result is everything observed in one case against one proxy.
type result struct {
	c      *kase
	x      *exchange
	up     []upReq  // what the upstream parsed during the case
	served []served // what sluice's handler served; nil for other proxies
	view   bool     // served is known
}

// verdict is a case's class and the rules that set it.
type verdict struct {
	class   class
	reasons []string
}

func (v *verdict) add(c class, format string, a ...any) {
	if c > v.class {
		v.class = c
	}
	v.reasons = append(v.reasons, c.String()+": "+fmt.Sprintf(format, a...))
}

// classify applies the rules. UNSAFE is reserved for what can hurt someone other than the
// sender of the odd bytes, or lie to them:
//
//	U1 boundaries: the upstream parsed a request the proxy did not forward as one: for sluice,
//	   a request its handler never served (method, target, body length); for any proxy, a
//	   request whose answer never reached the client and that is no retry of one that did.
//	U2 misdelivery: a response carries the answer to another request (the echo names it), or
//	   bytes the upstream sent after a complete response ("STRAY") reach any client. (A probe
//	   answered with a request the proxy found in the client's own bytes, and forwarded as a
//	   request, is questionable: lenient, but proxy and upstream agree.)
//	U3 false success: a 2xx for a request the client never finished, or the upstream seeing
//	   such a request complete. (A 2xx relayed from an upstream that answered before the
//	   body was complete is questionable: see the rule's code.)
//	U4 truncation: a 2xx whose body is shorter than the upstream announced, framed as complete.
//	U5 trailers: a forbidden field (framing, routing, authentication, cookies, content or cache
//	   control; RFC 9110 §6.5.1) forwarded in trailers, either direction.
//	U6 hang: no response and no close by the deadline, when the request was complete and the
//	   upstream answered at once (when the upstream's script leaves the proxy waiting on it,
//	   that is questionable).
//	U7 ambiguous framing forwarded: the upstream received a head another parser could frame
//	   differently (CL and TE, duplicate CL, TE other than chunked, bare CR or LF, obs-fold,
//	   controls, an underscored Content_Length, TE in HTTP/1.0).
//	U8 RFC 9112 §6.1 MUSTs: a connection kept after a request with both CL and TE; a message
//	   with TE in HTTP/1.0 forwarded or answered with a success.
//	U9 resending: a request sent again after the upstream answered it completely, or a POST
//	   sent twice.
//	U10 a 101 to a client that asked for no upgrade; a response with both CL and TE.
//
// Questionable: accepting what a strict proxy (modern NGINX) rejects, forwarding control
// characters other than NUL or underscored framing field names, refusing a valid message, relaying a malformed
// response instead of 502, retrying after a malformed response (NGINX does not by default),
// a connection that hangs on its next request, a later request on a new connection failing.
func classify(r *result) verdict {
	var v verdict
	c, x := r.c, r.x
	var main []upReq // complete requests of the main exchange
	for _, u := range r.up {
		var hard []string
		for _, f := range u.Flags {
			switch {
			case strings.HasPrefix(f, "trailer:"):
				v.add(unsafe, "U5 upstream received the forbidden trailer field %s", f[len("trailer:"):])
			case strings.HasPrefix(f, "ctl-") && f != "ctl-0x00":
				// RFC 9110 §5.5 requires rejecting or replacing CR, LF and NUL; other
				// controls are invalid but not named.
				v.add(questionable, "forwarded a control character (%s) in a field", f)
			case strings.HasPrefix(f, "underscored-"):
				// Some backends (CGI-style environments) read an underscore as a dash;
				// NGINX drops such fields by default.
				v.add(questionable, "forwarded a field named like %s with underscores", f[len("underscored-"):])
			default:
				hard = append(hard, f)
			}
		}
		if len(hard) > 0 {
			v.add(unsafe, "U7 upstream received %s %q with %v", u.Method, u.Target, hard)
		}
		if u.Complete && !strings.HasPrefix(u.Target, "/probe") {
			main = append(main, u)
		}
	}

	// U1, sluice's own view: every complete upstream request was served by the handler.
	if r.view {
		used := make([]bool, len(r.served))
		for _, u := range r.up {
			if !u.Complete {
				continue
			}
			found := -1
			for i, s := range r.served {
				if s.Method == u.Method && s.Target == u.Target && s.BodyLen == int64(u.BodyLen) {
					if found < 0 || (used[found] && !used[i]) {
						found = i
					}
				}
			}
			if found < 0 {
				v.add(unsafe, "U1 upstream parsed %s %q with a %d-byte body; the proxy served %s",
					u.Method, u.Target, u.BodyLen, fmtServed(r.served))
				continue
			}
			used[found] = true
		}
	}
	all := append([]*response(nil), x.Responses...)
	all = append(all, x.ProbeSame, x.ProbeNew)
	delivered := map[int]bool{}
	if i := strings.Index(x.Raw, "echo "); i >= 0 {
		// An HTTP/0.9 answer: the body alone.
		if e := (&response{Body: x.Raw[i:]}).echo(); e != nil && e.Case == c.name {
			delivered[e.Seq] = true
		}
	}
	for _, resp := range all {
		if e := resp.echo(); e != nil && e.Case == c.name {
			delivered[e.Seq] = true
		}
	}
	// U1 for any proxy, and U9.
	retried := map[string]bool{}
	for i, u := range main {
		// Only the echo names the request it answers; scripted answers cannot be traced.
		echoed := c.up == nil || c.up.raw == ""
		if c.side == "request" && echoed && !delivered[u.Seq] {
			retry := false
			for _, o := range main {
				if o.Seq != u.Seq && delivered[o.Seq] && o.Method == u.Method && o.Target == u.Target && o.BodyLen == u.BodyLen {
					retry = true
				}
			}
			if !retry {
				v.add(unsafe, "U1 upstream answered %s %q (%d-byte body) but that answer never reached the client", u.Method, u.Target, u.BodyLen)
			}
		}
		for _, o := range main[:i] {
			if o.Method == u.Method && o.Target == u.Target && o.BodyLen == u.BodyLen {
				if o.Answered {
					v.add(unsafe, "U9 %s %q sent again after the upstream answered it completely", u.Method, u.Target)
				} else if u.Method == "POST" {
					v.add(unsafe, "U9 POST %q sent twice", u.Target)
				} else if c.side == "response" && !retried[u.Method+u.Target] {
					retried[u.Method+u.Target] = true
					v.add(questionable, "retried %s %q after a failed or malformed response", u.Method, u.Target)
				}
				break
			}
		}
	}

	// U2.
	for i, resp := range x.Responses {
		if e := resp.echo(); e != nil {
			if e.Case != c.name {
				v.add(unsafe, "U2 response %d answers a request of case %q", i+1, e.Case)
			} else if i < len(c.targets) && originForm(e.Target) != c.targets[i] {
				v.add(unsafe, "U2 response %d answers %q, not %q", i+1, e.Target, c.targets[i])
			}
		}
	}
	for _, p := range []struct {
		name string
		r    *response
	}{{"/probe-same", x.ProbeSame}, {"/probe-new", x.ProbeNew}} {
		if p.r == nil {
			continue
		}
		if e := p.r.echo(); e != nil && (e.Target != p.name || e.Case != c.name) {
			if c.side == "request" && e.Case == c.name && !strings.HasPrefix(e.Target, "/probe") && !answeredTwice(x, e.Seq) {
				// The client's own bytes held a second request and the proxy forwarded it as
				// one, in agreement with the upstream: lenient, not smuggling.
				v.add(questionable, "%s got the answer to %s %q, a request the proxy found in the client's bytes", p.name, e.Method, e.Target)
			} else {
				v.add(unsafe, "U2 the answer to %s is the answer to %s %q of case %q", p.name, e.Method, e.Target, e.Case)
			}
		} else if e == nil && p.r.Status >= 200 && p.r.Status < 300 {
			v.add(unsafe, "U2 %s got a %q that is not its answer: %q", p.name, p.r.StatusLine, clip(p.r.Body))
		}
	}
	for _, resp := range all {
		if resp != nil && strings.Contains(resp.Body, "STRAY") {
			v.add(unsafe, "U2 bytes the upstream sent after a complete response reached a client (%q)", resp.StatusLine)
			break
		}
	}

	// U3. An upstream that answers before the body is complete races the client's break:
	// a proxy that streams bodies (as gRPC's bidirectional streams need) may relay that
	// answer before it learns the client stopped short. The proxy answers the client's fault
	// when it knows in time and aborts the connection when it learns mid-response, so a
	// relayed early 2xx is only questionable; any other 2xx is the proxy's own false success.
	if c.incomplete {
		for _, resp := range x.Responses {
			if resp.Status >= 200 && resp.Status < 300 {
				if c.up != nil && c.up.early {
					v.add(questionable, "U3 relayed the upstream's early %q for a request the client never finished", resp.StatusLine)
					continue
				}
				v.add(unsafe, "U3 %q for a request the client never finished", resp.StatusLine)
			}
		}
		if len(main) > 0 {
			v.add(unsafe, "U3 upstream received %s %q complete (%d-byte body) though the client never finished it",
				main[0].Method, main[0].Target, main[0].BodyLen)
		}
	}
	// U4.
	if c.fullBody > 0 && len(x.Responses) > 0 {
		r0 := x.Responses[0]
		if r0.Status >= 200 && r0.Status < 300 && r0.Complete && len(r0.Body) < c.fullBody {
			v.add(unsafe, "U4 %q with %d of %d body bytes, framed (%s) as complete", r0.StatusLine, len(r0.Body), c.fullBody, r0.Framing)
		}
	}
	// U5 (responses) and U10.
	for _, resp := range x.Responses {
		for k := range resp.Trailer {
			if forbiddenTrailer[k] {
				v.add(unsafe, "U5 the client received the forbidden trailer field %s", k)
			}
		}
		if len(resp.Header["content-length"]) > 0 && len(resp.Header["transfer-encoding"]) > 0 {
			v.add(unsafe, "U10 the client received both Content-Length and Transfer-Encoding")
		}
	}
	if x.Switched && !c.upgrade {
		v.add(unsafe, "U10 the client got 101 Switching Protocols without asking for an upgrade")
	}
	// U6.
	if x.TimedOut && len(x.Responses) == 0 && !c.mayWait {
		if c.side == "request" && (c.up == nil || c.up.raw == "") {
			v.add(unsafe, "U6 no response and no close within the deadline")
		} else {
			// The proxy is waiting on an upstream that holds its connection open; its
			// upstream read timeout (NGINX's proxy_read_timeout) ends that.
			v.add(questionable, "no response within the deadline: still waiting on the upstream")
		}
	}
	// U8.
	if c.mustClose && x.ProbeSame != nil {
		v.add(unsafe, "U8 the connection carried another request after a message with both Content-Length and Transfer-Encoding")
	}
	if c.mustReject {
		if len(x.Responses) > 0 && x.Responses[0].Status < 400 {
			v.add(unsafe, "U8 %q for a message with Transfer-Encoding in HTTP/1.0 (faulty framing)", x.Responses[0].StatusLine)
		}
		if len(main) > 0 {
			v.add(unsafe, "U8 a message with Transfer-Encoding in HTTP/1.0 was forwarded")
		}
	}

	// Questionable.
	status := 0
	if len(x.Responses) > 0 {
		status = x.Responses[0].Status
	} else if x.Switched {
		status = 101
	}
	switch c.expect {
	case reject:
		if c.side == "request" && (len(main) > 0 || status >= 200 && status < 400) {
			v.add(questionable, "accepted what a strict proxy rejects (status %d, %d forwarded)", status, len(main))
		}
		if c.side == "response" && status >= 200 && status < 500 {
			v.add(questionable, "relayed a malformed upstream response as %d instead of 502", status)
		}
	case accept:
		if (status < 200 && !(status == 101 && c.upgrade)) || status >= 400 && !(c.side == "response" && status == upstreamStatus(c)) {
			v.add(questionable, "refused or failed a valid message (status %d)", status)
		}
	}
	if x.ProbeSameErr == "timeout" {
		v.add(questionable, "the connection hung on its next request")
	}
	if x.ProbeNew == nil {
		v.add(questionable, "a request on a new connection afterwards failed: %s", x.ProbeNewErr)
	} else if x.ProbeNew.Status != 200 {
		v.add(questionable, "a request on a new connection afterwards got %q", x.ProbeNew.StatusLine)
	}
	if c.check != nil {
		c.check(r, &v)
	}
	return v
}

// answeredTwice reports whether the echo of seq reached the client more than once.
func answeredTwice(x *exchange, seq int) bool {
	n := 0
	for _, r := range append(append([]*response(nil), x.Responses...), x.ProbeSame, x.ProbeNew) {
		if e := r.echo(); e != nil && e.Seq == seq {
			n++
		}
	}
	return n > 1
}

// originForm turns an absolute-form target into its origin form: a proxy may forward either
// (RFC 9112 §3.2.2 requires servers to accept both).
func originForm(target string) string {
	for _, scheme := range []string{"http://", "https://"} {
		if rest, ok := strings.CutPrefix(target, scheme); ok {
			if i := strings.IndexByte(rest, '/'); i >= 0 {
				return rest[i:]
			}
			return "/"
		}
	}
	return target
}

// upstreamStatus is the status of a response case's scripted answer.
func upstreamStatus(c *kase) int {
	if c.up == nil || len(c.up.raw) < 12 {
		return 200
	}
	var n int
	fmt.Sscanf(c.up.raw[9:12], "%d", &n)
	return n
}

func fmtServed(s []served) string {
	if len(s) == 0 {
		return "nothing"
	}
	var b strings.Builder
	for i, r := range s {
		if i > 0 {
			b.WriteString(", ")
		}
		fmt.Fprintf(&b, "%s %q (%d)", r.Method, r.Target, r.BodyLen)
	}
	return b.String()
}

func clip(s string) string {
	if len(s) > 80 {
		return s[:80] + "…"
	}
	return s
}

// describe renders what was observed, for logs.
func describe(r *result) string {
	var b strings.Builder
	x := r.x
	fmt.Fprintf(&b, "  client: %d final responses, %d 1xx", len(x.Responses), x.Info)
	if x.Closed {
		b.WriteString(", closed")
	}
	if x.TimedOut {
		b.WriteString(", timed out")
	}
	if x.Switched {
		b.WriteString(", switched")
	}
	if x.Raw != "" {
		fmt.Fprintf(&b, ", raw %q", clip(x.Raw))
	}
	b.WriteString("\n")
	for _, resp := range x.Responses {
		fmt.Fprintf(&b, "    %s body %q", resp, clip(resp.Body))
		if len(resp.Trailer) > 0 {
			fmt.Fprintf(&b, " trailers %v", resp.Trailer)
		}
		b.WriteString("\n")
	}
	fmt.Fprintf(&b, "  probe-same: %s %s; probe-new: %s %s\n", x.ProbeSame, x.ProbeSameErr, x.ProbeNew, x.ProbeNewErr)
	fmt.Fprintf(&b, "  upstream parsed %d:\n", len(r.up))
	for _, u := range r.up {
		fmt.Fprintf(&b, "    #%d %s %q body=%d complete=%v flags=%v head=%q\n", u.Seq, u.Method, u.Target, u.BodyLen, u.Complete, u.Flags, clip(u.Head))
	}
	if r.view {
		fmt.Fprintf(&b, "  handler served: %s\n", fmtServed(r.served))
	}
	return b.String()
}
