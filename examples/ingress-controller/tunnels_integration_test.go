//go:build integration

package main

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/sluiceproxy/sluice/internal/kubetest"
	"github.com/sluiceproxy/sluice/internal/testcert"
)

// livePod is a real upstream with long-lived streams: a WebSocket echo (RFC 6455 frames) on
// any path asked to upgrade, server-sent events numbered 1, 2, 3... on /events, and its name
// on any other request.
func livePod(t *testing.T, pods *kubetest.AddrMap, name, pod string) {
	pods.Set(pod, newServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch {
		case strings.EqualFold(r.Header.Get("Upgrade"), "websocket"):
			conn, brw, err := http.NewResponseController(w).Hijack()
			if err != nil {
				return
			}
			defer conn.Close()
			brw.WriteString("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n")
			brw.Flush()
			for {
				op, payload, err := readWSFrame(brw)
				if err != nil || op == 0x8 {
					return
				}
				if writeWSFrame(conn, op, payload, false) != nil {
					return
				}
			}
		case r.URL.Path == "/events":
			w.Header().Set("Content-Type", "text/event-stream")
			rc := http.NewResponseController(w)
			tick := time.NewTicker(5 * time.Millisecond)
			defer tick.Stop()
			for n := 1; ; n++ {
				if _, err := fmt.Fprintf(w, "data: %d\n\n", n); err != nil || rc.Flush() != nil {
					return
				}
				select {
				case <-r.Context().Done():
					return
				case <-tick.C:
				}
			}
		default:
			fmt.Fprint(w, name)
		}
	})))
}

// writeWSFrame writes one unfragmented frame with a payload shorter than 126 bytes, masked
// as a client's must be (RFC 6455 §5.3).
func writeWSFrame(w io.Writer, op byte, payload []byte, masked bool) error {
	if len(payload) > 125 {
		return errors.New("payload too long for this test")
	}
	f := []byte{0x80 | op, byte(len(payload))}
	if masked {
		key := [4]byte{1, 2, 3, 4}
		f[1] |= 0x80
		f = append(f, key[:]...)
		for i, b := range payload {
			f = append(f, b^key[i%4])
		}
	} else {
		f = append(f, payload...)
	}
	_, err := w.Write(f)
	return err
}

// readWSFrame reads one frame, unmasking it.
func readWSFrame(r io.Reader) (op byte, payload []byte, err error) {
	var h [2]byte
	if _, err = io.ReadFull(r, h[:]); err != nil {
		return 0, nil, err
	}
	n := uint64(h[1] & 0x7f)
	switch n {
	case 126:
		var b [2]byte
		_, err = io.ReadFull(r, b[:])
		n = uint64(binary.BigEndian.Uint16(b[:]))
	case 127:
		var b [8]byte
		_, err = io.ReadFull(r, b[:])
		n = binary.BigEndian.Uint64(b[:])
	}
	if err != nil || n > 1<<20 {
		return 0, nil, errors.Join(err, errors.New("bad frame length"))
	}
	var key [4]byte
	if h[1]&0x80 != 0 {
		if _, err = io.ReadFull(r, key[:]); err != nil {
			return 0, nil, err
		}
	}
	payload = make([]byte, n)
	if _, err = io.ReadFull(r, payload); err != nil {
		return 0, nil, err
	}
	if h[1]&0x80 != 0 {
		for i := range payload {
			payload[i] ^= key[i%4]
		}
	}
	return h[0] & 0x0f, payload, nil
}

// stream is one long-lived client connection whose messages the test counts: got is the
// number received in order; err is set by the first message lost, late or out of order.
type stream struct {
	name string
	got  atomic.Int64
	mu   sync.Mutex
	err  error
}

func (s *stream) fail(err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.err == nil {
		s.err = err
	}
}

func (s *stream) failed() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.err
}

// Established WebSockets and server-sent event streams, over HTTP and HTTPS, keep flowing
// without losing a message while Ingresses are edited (the proxies carrying them are retired),
// the Service is scaled up and down (their pod stays), and the TLS certificate is rotated.
func TestIntegrationTunnelsSurviveChanges(t *testing.T) {
	cluster := kubetest.Start(t)
	client := cluster.Client
	pods := &kubetest.AddrMap{}
	livePod(t, pods, "live-0", "10.244.5.1:8080")
	backend(t, pods, "other", "10.244.6.1:8080")
	ca := testcert.NewCA(t)
	ingress := func(retries int, other string) string {
		return fmt.Sprintf(`
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata:
  name: live
  namespace: live
  annotations: {sluiceproxy.io/retries: "%d", sluiceproxy.io/ssl-redirect: "false"}
spec:
  ingressClassName: sluice
  tls:
  - {hosts: [live.test], secretName: live-tls}
  rules:
  - host: live.test
    http:
      paths:
      - {path: /, pathType: Prefix, backend: {service: {name: live, port: {number: 80}}}}
      - {path: /other, pathType: Prefix, backend: {service: {name: %s, port: {number: 80}}}}
`, retries, other)
	}
	apply(t, client, "apiVersion: v1\nkind: Namespace\nmetadata: {name: live}\n---"+ingressClass+"---"+
		service("live", "live", 8080, "10.244.5.1")+"\n---"+service("live", "other", 8080, "10.244.6.1")+"\n---"+
		tlsSecret("live", "live-tls", ca.Server(t, "live.test"))+"---"+ingress(2, "other"))
	r := startRig(t, client, pods, nil)
	r.waitBody(t, "live.test", "/other", "other")

	ctx, stop := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	t.Cleanup(func() { stop(); wg.Wait() })
	var streams []*stream
	dialTLS := func() (net.Conn, error) {
		return tls.Dial("tcp", r.https, &tls.Config{ServerName: "live.test", InsecureSkipVerify: true})
	}
	dialPlain := func() (net.Conn, error) { return net.Dial("tcp", r.http) }

	// WebSockets: each sends a numbered message every 2ms and waits for its echo.
	for i, dial := range []func() (net.Conn, error){dialPlain, dialPlain, dialTLS, dialTLS} {
		s := &stream{name: fmt.Sprintf("websocket %d (tls %v)", i, i >= 2)}
		streams = append(streams, s)
		conn, err := dial()
		require.NoError(t, err)
		fmt.Fprint(conn, "GET /chat HTTP/1.1\r\nHost: live.test\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"+
			"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n")
		br := bufio.NewReader(conn)
		res, err := http.ReadResponse(br, nil)
		require.NoError(t, err)
		require.Equal(t, http.StatusSwitchingProtocols, res.StatusCode, s.name)
		wg.Go(func() {
			defer conn.Close()
			go func() { <-ctx.Done(); conn.Close() }()
			tick := time.NewTicker(2 * time.Millisecond) // pacing, so the loop leaves CPU to the rest
			defer tick.Stop()
			for n := 1; ctx.Err() == nil; n++ {
				msg := strconv.Itoa(n)
				conn.SetDeadline(time.Now().Add(10 * time.Second))
				err := writeWSFrame(conn, 0x1, []byte(msg), true)
				var got []byte
				if err == nil {
					_, got, err = readWSFrame(br)
				}
				if ctx.Err() != nil {
					return
				}
				if err != nil || string(got) != msg {
					s.fail(fmt.Errorf("%s: message %d: echo %q, %v", s.name, n, got, err))
					return
				}
				s.got.Add(1)
				select {
				case <-ctx.Done():
				case <-tick.C:
				}
			}
		})
	}
	// Server-sent events: each must arrive, in order.
	for i, c := range []*http.Client{{}, {Transport: httpsClient(r.https, nil).Transport}} {
		s := &stream{name: fmt.Sprintf("SSE %d (tls %v)", i, i == 1)}
		streams = append(streams, s)
		url := "http://" + r.http + "/events"
		if i == 1 {
			url = "https://live.test/events"
		}
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		require.NoError(t, err)
		req.Host = "live.test"
		resp, err := c.Do(req)
		require.NoError(t, err)
		require.Equal(t, http.StatusOK, resp.StatusCode, s.name)
		wg.Go(func() {
			defer resp.Body.Close()
			sc := bufio.NewScanner(resp.Body)
			want := int64(1)
			for sc.Scan() {
				v, ok := strings.CutPrefix(sc.Text(), "data: ")
				if !ok {
					continue
				}
				if n, err := strconv.ParseInt(v, 10, 64); err != nil || n != want {
					s.fail(fmt.Errorf("%s: event %q, want %d", s.name, v, want))
					return
				}
				want++
				s.got.Add(1)
			}
			if ctx.Err() == nil {
				s.fail(fmt.Errorf("%s: stream ended after %d events: %v", s.name, want-1, sc.Err()))
			}
		})
	}
	// progress waits until every stream has received more messages than it had.
	progress := func(what string) {
		t.Helper()
		before := make([]int64, len(streams))
		for i, s := range streams {
			before[i] = s.got.Load()
		}
		require.Eventually(t, func() bool {
			for i, s := range streams {
				if s.failed() != nil || s.got.Load() < before[i]+10 {
					return false
				}
			}
			return true
		}, 20*time.Second, 5*time.Millisecond, "every stream should keep flowing after %s", what)
	}
	progress("opening")

	// Ingress edits: the retries setting is part of the proxy's identity, so every edit
	// retires the proxy that carries the streams; /other moves between two Services.
	for i := range 10 {
		other := []string{"live", "other"}[i%2]
		apply(t, client, ingress(1+i%2, other))
		r.waitBody(t, "live.test", "/other", map[string]string{"live": "live-0", "other": "other"}[other])
	}
	progress("Ingress edits")

	// EndpointSlice scaling: up to six pods, then back to the first, which carries the streams.
	ips := []string{"10.244.5.1"}
	for i := 1; i <= 5; i++ {
		ip := fmt.Sprintf("10.244.5.%d", 1+i)
		livePod(t, pods, fmt.Sprintf("live-%d", i), ip+":8080")
		ips = append(ips, ip)
		apply(t, client, service("live", "live", 8080, ips...))
		waitAny(t, r, "live.test", "/", fmt.Sprintf("live-%d", i))
	}
	apply(t, client, service("live", "live", 8080, "10.244.5.1"))
	require.Eventually(t, func() bool {
		for range 6 { // round robin over one pod: six answers in a row from it
			if _, body, err := r.get(&http.Client{Timeout: 5 * time.Second}, "live.test", "/"); err != nil || body != "live-0" {
				return false
			}
		}
		return true
	}, 20*time.Second, 5*time.Millisecond, "the Service should be back to its first pod")
	progress("scaling")

	// Certificate rotation.
	rotated := ca.Server(t, "live.test")
	apply(t, client, tlsSecret("live", "live-tls", rotated))
	require.Eventually(t, func() bool {
		conn, err := dialTLS()
		if err != nil {
			return false
		}
		defer conn.Close()
		return conn.(*tls.Conn).ConnectionState().PeerCertificates[0].SerialNumber.Cmp(rotated.Leaf.SerialNumber) == 0
	}, 20*time.Second, 5*time.Millisecond, "the rotated certificate should be served")
	progress("certificate rotation")

	stop()
	wg.Wait()
	for _, s := range streams {
		assert.NoError(t, s.failed(), "no message may be lost")
		t.Logf("%s: %d messages in order", s.name, s.got.Load())
	}
}
