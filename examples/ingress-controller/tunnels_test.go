package main

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"k8s.io/client-go/kubernetes/fake"

	"github.com/sluiceproxy/sluice/internal/kubetest"
)

// wsPod is a real upstream that accepts "Upgrade: websocket", sends its name on a line and
// then echoes lines until the connection ends. ended is closed once its tunnel has ended.
type wsPod struct {
	name  string
	ended chan struct{}
}

func newWSPod(t *testing.T, pods *kubetest.AddrMap, name, pod string) *wsPod {
	w := &wsPod{name: name, ended: make(chan struct{})}
	pods.Set(pod, newServer(t, http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		if !strings.EqualFold(r.Header.Get("Upgrade"), "websocket") {
			fmt.Fprint(rw, name)
			return
		}
		conn, brw, err := http.NewResponseController(rw).Hijack()
		if err != nil {
			return
		}
		defer close(w.ended)
		defer conn.Close()
		fmt.Fprintf(brw, "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n%s\n", name)
		brw.Flush()
		for {
			line, err := brw.ReadString('\n')
			if err != nil {
				return
			}
			brw.WriteString(line)
			brw.Flush()
		}
	})))
	return w
}

// wsConn is the client end of a tunnel through the controller.
type wsConn struct {
	net.Conn
	br   *bufio.Reader
	name string // the pod it reached
}

// dialWS opens a tunnel for host through the controller's HTTP listener.
func (r *rig) dialWS(t *testing.T, host string) *wsConn {
	t.Helper()
	conn, err := net.Dial("tcp", r.http)
	require.NoError(t, err)
	t.Cleanup(func() { conn.Close() })
	conn.SetDeadline(time.Now().Add(30 * time.Second))
	fmt.Fprintf(conn, "GET /ws HTTP/1.1\r\nHost: %s\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"+
		"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n", host)
	br := bufio.NewReader(conn)
	res, err := http.ReadResponse(br, nil)
	require.NoError(t, err)
	require.Equal(t, http.StatusSwitchingProtocols, res.StatusCode, "the upgrade reaches a pod")
	name, err := br.ReadString('\n')
	require.NoError(t, err)
	return &wsConn{conn, br, strings.TrimSpace(name)}
}

// echo sends msg and returns what comes back.
func (c *wsConn) echo(msg string) (string, error) {
	if _, err := fmt.Fprintf(c, "%s\n", msg); err != nil {
		return "", err
	}
	line, err := c.br.ReadString('\n')
	return strings.TrimSpace(line), err
}

// A route change retires the proxy that carries a WebSocket; the tunnel stays open, and
// SIGTERM's drain still closes it: run returns only after it has.
func TestDrainClosesTunnelsOfRetiredProxies(t *testing.T) {
	client := fake.NewClientset()
	pods := &kubetest.AddrMap{}
	chat := newWSPod(t, pods, "chat", "10.244.1.1:8080")
	backend(t, pods, "web", "10.244.2.1:8080")
	apply(t, client, ingressClass+"---"+service("default", "chat", 8080, "10.244.1.1")+"\n---"+
		service("default", "web", 8080, "10.244.2.1")+"\n---\n"+defaultIngress("chat"))
	r := startRig(t, client, pods, nil)
	ws := r.dialWS(t, "any.test")
	require.Equal(t, "chat", ws.name)

	// The Ingress now sends everything to web: chat's proxy is out of the table.
	apply(t, client, strings.Replace(defaultIngress("chat"), "{name: chat, port", "{name: web, port", 1))
	r.waitBody(t, "any.test", "/", "web")
	got, err := ws.echo("still here")
	require.NoError(t, err, "a route change leaves established WebSockets alone")
	require.Equal(t, "still here", got)

	r.cancel() // what SIGTERM does in main
	var runErr error
	select {
	case runErr = <-r.done:
	case <-time.After(20 * time.Second):
		t.Fatal("run did not return within 20s of cancel")
	}
	r.done <- runErr // for the rig's cleanup
	// The proxy closed both ends before run returned, so the client reads to the end at once
	// (a close frame, then EOF) rather than waiting for a deadline, and the pod sees its end.
	ws.SetReadDeadline(time.Now().Add(5 * time.Second))
	_, err = io.Copy(io.Discard, ws.br)
	assert.NoError(t, err, "the WebSocket through the retired proxy was closed by the drain, before run returned")
	select {
	case <-chat.ended:
	case <-time.After(5 * time.Second):
		t.Error("the pod's end of the WebSocket was left open")
	}
}

// A WebSocket to a pod that leaves its Service's EndpointSlice, while still running, is closed
// once -tunnel-grace has passed; the WebSockets to the pods still in the Service stay.
func TestTunnelsCloseWhenTheirEndpointLeaves(t *testing.T) {
	client := fake.NewClientset()
	pods := &kubetest.AddrMap{}
	newWSPod(t, pods, "pod-1", "10.244.1.1:8080")
	leaving := newWSPod(t, pods, "pod-2", "10.244.1.2:8080")
	apply(t, client, ingressClass+"---"+service("default", "chat", 8080, "10.244.1.1", "10.244.1.2")+"\n---\n"+
		defaultIngress("chat"))
	const grace = 300 * time.Millisecond
	r := startRig(t, client, pods, func(c *config) { c.TunnelGrace = grace })
	conns := map[string]*wsConn{}
	for range 2 { // round robin: one tunnel to each pod
		ws := r.dialWS(t, "any.test")
		conns[ws.name] = ws
	}
	require.Len(t, conns, 2, "the two tunnels reach the two pods")

	left := time.Now()
	apply(t, client, service("default", "chat", 8080, "10.244.1.1"))
	select {
	case <-leaving.ended:
	case <-time.After(20 * time.Second):
		t.Fatal("the WebSocket to the pod that left the Service was not closed")
	}
	assert.GreaterOrEqual(t, time.Since(left), grace, "the WebSocket is kept for -tunnel-grace first")
	_, err := io.Copy(io.Discard, conns["pod-2"].br)
	assert.NoError(t, err, "its client's connection is closed, not timed out")
	got, err := conns["pod-1"].echo("still here")
	assert.NoError(t, err, "the WebSocket to the pod still in the Service stays")
	assert.Equal(t, "still here", got)
}
