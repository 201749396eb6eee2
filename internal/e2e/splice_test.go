package e2e

import (
	"bufio"
	"crypto/rand"
	"fmt"
	"hash/crc32"
	"io"
	"net"
	"net/http"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/sluiceproxy/sluice"
	"github.com/sluiceproxy/sluice/h1"
	"github.com/sluiceproxy/sluice/proxy"
)

// spliceRig is a proxy behind each front end (h1, whose ResponseWriter splices, and
// net/http's, whose does too) in front of one backend, with what the proxy reported of each
// request.
type spliceRig struct {
	addr     string
	accepted *atomic.Int64           // connections the backend accepted
	done     chan proxy.RequestEvent // what the proxy reported of each request, in order
}

// last waits for the proxy's report of the next request to end.
func (r *spliceRig) last(t *testing.T) proxy.RequestEvent {
	t.Helper()
	select {
	case s := <-r.done:
		return s
	case <-time.After(5 * time.Second):
		t.Fatal("the proxy reported no request")
		return proxy.RequestEvent{}
	}
}

func startSplice(t *testing.T, front string, backend http.Handler) *spliceRig {
	t.Helper()
	bln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	rig := &spliceRig{accepted: new(atomic.Int64), done: make(chan proxy.RequestEvent, 16)}
	bsrv := &http.Server{Handler: backend, ConnState: func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			rig.accepted.Add(1)
		}
	}}
	go bsrv.Serve(bln)
	t.Cleanup(func() { bsrv.Close() })
	ep := sluice.Endpoint{Addr: bln.Addr().String()}
	p := &proxy.Proxy{
		Picker: sluice.PickerFunc(func(sluice.PickInfo) (sluice.PickResult, error) {
			return sluice.PickResult{Endpoint: ep}, nil
		}),
		Hooks: proxy.Hooks{RequestDone: func(_ *http.Request, e proxy.RequestEvent) { rig.done <- e }},
	}
	t.Cleanup(p.CloseIdleConnections)
	srv := proxy.NewServer(p, proxy.ServerOptions{})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	var s interface {
		Serve(net.Listener) error
		Close() error
	} = srv
	if front == "h1" {
		s = h1.New(srv)
	}
	go s.Serve(ln)
	t.Cleanup(func() { s.Close() })
	rig.addr = ln.Addr().String()
	return rig
}

// TestSpliceBody checks bodies that the proxy splices from socket to socket: every byte
// arrives in order, at sizes around the splice threshold, and the upstream connection is
// reused afterwards, since a spliced body ends exactly at its Content-Length.
func TestSpliceBody(t *testing.T) {
	body := make([]byte, 3<<20+17)
	rand.Read(body)
	backend := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n, _ := strconv.Atoi(r.URL.Query().Get("n"))
		w.Header().Set("Content-Length", strconv.Itoa(n))
		w.Write(body[:n])
	})
	for _, front := range []string{"h1", "net/http"} {
		t.Run(front, func(t *testing.T) {
			rig := startSplice(t, front, backend)
			c := &http.Client{Transport: &http.Transport{DisableCompression: true}}
			defer c.CloseIdleConnections()
			for _, n := range []int{64<<10 - 1, 64 << 10, 1 << 20, len(body), 100 << 10} {
				res, err := c.Get(fmt.Sprintf("http://%s/?n=%d", rig.addr, n))
				require.NoError(t, err)
				got, err := io.ReadAll(res.Body)
				res.Body.Close()
				require.NoError(t, err, "body of %d bytes", n)
				require.Equal(t, n, len(got))
				assert.Equal(t, crc32.ChecksumIEEE(body[:n]), crc32.ChecksumIEEE(got), "body of %d bytes", n)
				assert.Equal(t, int64(n), rig.last(t).Bytes)
			}
			assert.Equal(t, int64(1), rig.accepted.Load(), "one upstream connection, reused after every body")
		})
	}
}

// TestSpliceUpstreamBreaks checks an upstream that closes its connection mid-body: the client
// does not take the part for the whole (its connection is cut), and the failure is the
// upstream's, not the client's.
func TestSpliceUpstreamBreaks(t *testing.T) {
	backend := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", strconv.Itoa(1<<20))
		w.Write(make([]byte, 200<<10))
		w.(http.Flusher).Flush()
		conn, _, err := http.NewResponseController(w).Hijack()
		if err == nil {
			conn.Close()
		}
	})
	for _, front := range []string{"h1", "net/http"} {
		t.Run(front, func(t *testing.T) {
			rig := startSplice(t, front, backend)
			res, err := http.Get("http://" + rig.addr + "/")
			require.NoError(t, err)
			got, err := io.ReadAll(res.Body)
			res.Body.Close()
			assert.Error(t, err, "a body cut short must not look whole")
			assert.Less(t, len(got), 1<<20)
			s := rig.last(t)
			assert.NotEqual(t, sluice.Canceled, s.Failure, "the upstream broke off, not the client")
			assert.NotEqual(t, sluice.NoFailure, s.Failure)
		})
	}
}

// TestSpliceClientLeaves checks a client that goes away mid-body: the failure is the client's
// (Canceled), which charges the upstream nothing.
func TestSpliceClientLeaves(t *testing.T) {
	body := make([]byte, 8<<20)
	backend := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", strconv.Itoa(len(body)))
		w.Write(body)
	})
	for _, front := range []string{"h1", "net/http"} {
		t.Run(front, func(t *testing.T) {
			rig := startSplice(t, front, backend)
			conn, err := net.Dial("tcp", rig.addr)
			require.NoError(t, err)
			_, err = io.WriteString(conn, "GET / HTTP/1.1\r\nHost: splice.test\r\n\r\n")
			require.NoError(t, err)
			br := bufio.NewReader(conn)
			res, err := http.ReadResponse(br, nil)
			require.NoError(t, err)
			_, err = io.CopyN(io.Discard, res.Body, 256<<10)
			require.NoError(t, err)
			// A reset, not a FIN: the proxy's next write fails at once.
			conn.(*net.TCPConn).SetLinger(0)
			conn.Close()
			s := rig.last(t)
			assert.Equal(t, sluice.Canceled, s.Failure, "the client went away; the upstream did nothing wrong")
			assert.Less(t, s.Bytes, int64(len(body)))
		})
	}
}
