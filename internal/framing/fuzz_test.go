package framing

import (
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// FuzzRequestHeads sends raw bytes (request heads, short bodies, pipelines) through the
// whole proxy and checks that it never frames a request differently from the upstream: every
// request the upstream parsed completely matches one the proxy's handler served (method,
// target, body length), so the upstream never sees more requests than the handler served,
// and no forwarded head carries framing a next hop could read differently.
func FuzzRequestHeads(f *testing.F) {
	for _, c := range allCases() {
		if c.side == "request" && len(c.send) < 4<<10 {
			f.Add([]byte(c.send))
		}
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		for _, front := range fronts {
			up := startUpstream(t, "127.0.0.1:0")
			sl := startSluice(t, up.addr(), front)
			up.begin("fuzz", nil)
			conn, err := net.DialTimeout("tcp", sl.addr, time.Second)
			require.NoError(t, err, "dial the proxy")
			conn.SetWriteDeadline(time.Now().Add(time.Second))
			conn.Write(data) // the proxy may close early on bad input: not a failure
			drain(conn, sl.view, up)
			conn.Close()
			sl.view.quiet(2 * time.Second)
			up.quiet(time.Second)
			checkBoundaries(t, data, up.requests(), sl.view.snapshot())
		}
	})
}

// drain reads what the proxy answers until it closes the connection or nothing is in flight
// (no handler running, no upstream request half-read) for one read interval, for at most 1s.
func drain(conn net.Conn, v *view, up *upstream) {
	buf := make([]byte, 32<<10)
	end := time.Now().Add(time.Second)
	for time.Now().Before(end) {
		conn.SetReadDeadline(time.Now().Add(20 * time.Millisecond))
		_, err := conn.Read(buf)
		if err == io.EOF || err != nil && !isTimeout(err) {
			return
		}
		if isTimeout(err) && v.active.Load() == 0 && up.pending.Load() == 0 {
			return
		}
	}
}

// checkBoundaries fails t when the upstream parsed a request the proxy's handler did not
// serve, or a head with ambiguous framing.
func checkBoundaries(t *testing.T, data []byte, reqs []upReq, served []served) {
	t.Helper()
	used := make([]bool, len(served))
	for _, u := range reqs {
		for _, fl := range u.Flags {
			// Trailer contents, odd controls and underscored names are the table's to judge;
			// this target is about where requests begin and end.
			if !strings.HasPrefix(fl, "underscored-") && !strings.HasPrefix(fl, "trailer:") &&
				(!strings.HasPrefix(fl, "ctl-") || fl == "ctl-0x00") {
				assert.Fail(t, "ambiguous framing forwarded", "upstream received %s %q with %v\ninput %q\nhead %q",
					u.Method, u.Target, u.Flags, data, u.Head)
				break
			}
		}
		if !u.Complete {
			continue
		}
		match := -1
		for i, s := range served {
			if s.Method == u.Method && s.Target == u.Target && s.BodyLen == int64(u.BodyLen) && !used[i] {
				match = i
				break
			}
		}
		if match < 0 {
			assert.Fail(t, "request boundaries differ", "upstream parsed %s %q with a %d-byte body that the proxy's handler did not serve (it served %s)\ninput %q",
				u.Method, u.Target, u.BodyLen, fmtServed(served), data)
			continue
		}
		used[match] = true
	}
}
