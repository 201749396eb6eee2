package main

import (
	"bufio"
	"context"
	"crypto/tls"
	"io"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/sluiceproxy/sluice/internal/testcert"
)

// proxyRun is one run of the command.
type proxyRun struct {
	addr   string
	cancel context.CancelFunc
	done   chan error
}

// startProxy runs the command with args plus -listen on a free port, until the test ends.
func startProxy(t *testing.T, args ...string) *proxyRun {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	pr, pw := io.Pipe()
	r := &proxyRun{cancel: cancel, done: make(chan error, 1)}
	go func() {
		r.done <- run(ctx, append([]string{"-listen", "127.0.0.1:0"}, args...), pw)
		pw.Close()
	}()
	addrs := make(chan string, 1)
	go func() {
		s := bufio.NewScanner(pr)
		for s.Scan() {
			if m := regexp.MustCompile(`^tcp-proxy listening on (\S+)`).FindStringSubmatch(s.Text()); m != nil {
				addrs <- m[1]
			}
		}
	}()
	select {
	case r.addr = <-addrs:
	case err := <-r.done:
		t.Fatalf("run ended before serving: %v", err)
	case <-time.After(10 * time.Second):
		t.Fatal("run printed no address")
	}
	t.Cleanup(func() {
		cancel()
		<-r.done
	})
	return r
}

// backend runs handle for every connection to a loopback listener and returns its address.
func backend(t *testing.T, handle func(net.Conn)) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				handle(c)
			}()
		}
	}()
	return ln.Addr().String()
}

// named greets each connection with name, then echoes.
func named(name string) func(net.Conn) {
	return func(c net.Conn) {
		io.WriteString(c, name+"\n")
		io.Copy(c, c)
	}
}

func readLine(t *testing.T, r io.Reader) string {
	t.Helper()
	line, err := bufio.NewReader(r).ReadString('\n')
	require.NoError(t, err)
	return strings.TrimSpace(line)
}

func dial(t *testing.T, addr string) net.Conn {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	require.NoError(t, err)
	c.SetDeadline(time.Now().Add(10 * time.Second))
	t.Cleanup(func() { c.Close() })
	return c
}

func TestRoutes(t *testing.T) {
	ca := testcert.NewCA(t)
	cfg := &tls.Config{Certificates: []tls.Certificate{ca.Server(t, "api.example.com", "x.example.com").TLS}}
	api := backend(t, func(c net.Conn) {
		tc := tls.Server(c, cfg)
		io.WriteString(tc, "api "+func() string { tc.Handshake(); return tc.ConnectionState().ServerName }()+"\n")
	})
	wild := backend(t, func(c net.Conn) {
		tc := tls.Server(c, cfg)
		io.WriteString(tc, "wild\n")
	})
	a, b := backend(t, named("a")), backend(t, named("b"))
	r := startProxy(t, "-route", "api.example.com="+api, "-route", "*.example.com="+wild,
		"-default", a+", "+b, "-policy", "round-robin")

	for name, want := range map[string]string{"api.example.com": "api api.example.com", "x.example.com": "wild"} {
		tc := tls.Client(dial(t, r.addr), &tls.Config{ServerName: name, RootCAs: ca.Pool})
		assert.Equal(t, want, readLine(t, tc), "passthrough by SNI for %s", name)
	}
	seen := map[string]bool{}
	for range 2 {
		c := dial(t, r.addr)
		io.WriteString(c, "hi\n") // a client that speaks first is routed at once, not after -hello-timeout
		seen[readLine(t, c)] = true
	}
	assert.Equal(t, map[string]bool{"a": true, "b": true}, seen, "plain connections go round the default pool")
}

func TestTermination(t *testing.T) {
	ca := testcert.NewCA(t)
	cert := ca.Server(t, "secure.example.com")
	dir := t.TempDir()
	certFile, keyFile := filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key")
	require.NoError(t, os.WriteFile(certFile, cert.CertPEM, 0o600))
	require.NoError(t, os.WriteFile(keyFile, cert.KeyPEM, 0o600))
	echo := backend(t, func(c net.Conn) { io.Copy(c, c) })
	r := startProxy(t, "-default", echo, "-cert", certFile, "-key", keyFile)
	tc := tls.Client(dial(t, r.addr), &tls.Config{ServerName: "secure.example.com", RootCAs: ca.Pool})
	_, err := io.WriteString(tc, "over tls\n")
	require.NoError(t, err)
	assert.Equal(t, "over tls", readLine(t, tc), "the proxy terminates TLS and the backend echoes plain text")
}

func TestDrain(t *testing.T) {
	r := startProxy(t, "-default", backend(t, named("a")), "-drain", "10s")
	c := dial(t, r.addr)
	assert.Equal(t, "a", readLine(t, c))
	r.cancel() // SIGTERM
	select {
	case err := <-r.done:
		t.Fatalf("run returned %v with a connection open", err)
	case <-time.After(100 * time.Millisecond):
	}
	_, err := io.WriteString(c, "still here\n")
	require.NoError(t, err)
	assert.Equal(t, "still here", readLine(t, c), "an open connection works while draining")
	c.Close()
	select {
	case err := <-r.done:
		assert.NoError(t, err, "run returns once the last connection ends")
		r.done <- err // for the cleanup
	case <-time.After(10 * time.Second):
		t.Fatal("run did not return after the last connection ended")
	}
}

func TestFlagErrors(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{nil, "nothing to forward to"},
		{[]string{"-route", "nohost"}, `"nohost" is not name=host:port`},
		{[]string{"-route", "a.test=127.0.0.1"}, "127.0.0.1"},
		{[]string{"-default", "127.0.0.1:1", "-policy", "best"}, `-policy "best"`},
		{[]string{"-default", "127.0.0.1:1", "-cert", "x.crt"}, "-cert and -key go together"},
		{[]string{"-route", "a:1=127.0.0.1:1"}, "must be a host name"},
		{[]string{"-default", "127.0.0.1:1", "-proxy-protocol", "3"}, "ProxyProtocol must be 0, 1 or 2"},
	} {
		err := run(context.Background(), append([]string{"-listen", "127.0.0.1:0"}, tc.args...), io.Discard)
		if assert.Error(t, err, "%v", tc.args) {
			assert.Contains(t, err.Error(), tc.want)
		}
	}
}
