package tcpproxy_test

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/sluiceproxy/sluice/balancer"
	"github.com/sluiceproxy/sluice/internal/idlecost"
	"github.com/sluiceproxy/sluice/tcpproxy"
)

// TestIdleConnectionMemory holds thousands of proxied connections idle and measures what the
// proxy keeps for each, both sides together: heap and goroutine stacks after collection, and
// file descriptors. The splice path holds no pipe and no buffer while a connection is idle,
// so an idle connection costs its two goroutines' stacks, its two sockets and its state;
// io.Copy's splice holds a pipe per direction, four more descriptors per connection.
func TestIdleConnectionMemory(t *testing.T) {
	if testing.Short() {
		t.Skip("opens thousands of connections")
	}
	// 10,000 connections as the issue asks, or as many as the file limit allows: the proxy
	// holds two sockets per connection (six with io.Copy's pipes).
	for _, tc := range []struct {
		mode  string
		fds   int     // descriptors per connection
		limit float64 // bytes per idle connection; 0: measured for comparison only
	}{
		{"splice", 2, 16 << 10},
		{"io.Copy", 6, 0},
	} {
		t.Run(tc.mode, func(t *testing.T) {
			conns := (int(idlecost.RaiseFileLimit(t, uint64(10000*tc.fds+200))) - 200) / tc.fds
			if conns < 1000 {
				t.Skipf("the open-file limit allows %d connections; the figure needs 1,000 or more", conns)
			}
			conns = min(conns, 10000)
			if raceEnabled {
				// The detector slows each connection tenfold and tracks every goroutine: a
				// smaller crowd checks the same path in reasonable time.
				conns = min(conns, 2000)
			}
			limit := tc.limit
			if raceEnabled && limit > 0 {
				// The detector's larger frames keep idle goroutines' stacks at 8 KiB where
				// they are otherwise shrunk to 2 or 4 KiB.
				limit += 8 << 10
			}
			per, fds := idleCost(t, tc.mode, conns)
			t.Logf("%s: %.0f bytes and %.1f descriptors per idle proxied connection (%d connections)", tc.mode, per, fds, conns)
			if limit > 0 {
				require.Less(t, per, limit, "memory per idle connection")
				require.Less(t, fds, 2.1, "descriptors per idle connection: its two sockets, no pipe")
			}
		})
	}
}

// idleCost returns the heap and stack, and the file descriptors, that the proxy holds per
// idle connection. The clients and the backend run in another process (this test binary,
// re-run as TestIdleClients), so that only the proxy's sides are in this process's figures.
func idleCost(t *testing.T, mode string, conns int) (bytes, fds float64) {
	cmd := exec.Command(os.Args[0], "-test.run=^TestIdleClients$")
	cmd.Env = append(os.Environ(), "TCPPROXY_IDLE_CONNS="+strconv.Itoa(conns))
	stdin, err := cmd.StdinPipe()
	require.NoError(t, err)
	stdout, err := cmd.StdoutPipe()
	require.NoError(t, err)
	cmd.Stderr = os.Stderr
	require.NoError(t, cmd.Start())
	defer func() {
		stdin.Close() // the clients close their connections and exit
		cmd.Wait()
	}()
	sc := bufio.NewScanner(stdout)
	line := func(prefix string) string {
		for sc.Scan() {
			if s, ok := strings.CutPrefix(sc.Text(), prefix); ok {
				return s
			}
			t.Log("client process: ", sc.Text())
		}
		t.Fatalf("the client process did not say %q", prefix)
		return ""
	}
	backend := line("backend ")
	_, addr := start(t, []tcpproxy.Route{{Name: "idle", Picker: pool(t, balancer.RoundRobin{}, backend)}}, tcpproxy.Options{}, mode)
	before := idlecost.InUse()
	fdsBefore := openFiles(t)
	fmt.Fprintln(stdin, addr)
	line("idle")
	after := idlecost.InUse()
	fdsAfter := openFiles(t)
	return float64(after-before) / float64(conns), float64(fdsAfter-fdsBefore) / float64(conns)
}

// TestIdleClients is the other process of TestIdleConnectionMemory: it serves a backend that
// echoes one byte per connection, prints "backend ADDR", reads the proxy's address from its
// standard input, opens TCPPROXY_IDLE_CONNS connections through it and exchanges one byte on
// each, prints "idle", and holds them until its standard input closes.
func TestIdleClients(t *testing.T) {
	n, err := strconv.Atoi(os.Getenv("TCPPROXY_IDLE_CONNS"))
	if err != nil {
		t.Skip("the client process of TestIdleConnectionMemory")
	}
	require.GreaterOrEqual(t, idlecost.RaiseFileLimit(t, uint64(2*n+100)), uint64(2*n+100), "open-file limit of the client process")
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer ln.Close()
	var held []net.Conn
	accepted := make(chan struct{})
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				close(accepted)
				return
			}
			held = append(held, c)
			go func() {
				b := make([]byte, 1)
				if _, err := c.Read(b); err == nil {
					c.Write(b)
				}
			}()
		}
	}()
	fmt.Println("backend", ln.Addr())
	in := bufio.NewReader(os.Stdin)
	addr, err := in.ReadString('\n')
	require.NoError(t, err)
	addr = strings.TrimSpace(addr)
	conns := make([]net.Conn, n)
	b := []byte{'x'}
	for i := range conns {
		c, err := net.Dial("tcp", addr)
		require.NoError(t, err)
		conns[i] = c
		_, err = c.Write(b)
		require.NoError(t, err)
		_, err = io.ReadFull(c, b)
		require.NoError(t, err, "connection %d", i)
	}
	fmt.Println("idle")
	io.Copy(io.Discard, in)
	for _, c := range conns {
		c.Close()
	}
	ln.Close()
	<-accepted
	for _, c := range held {
		c.Close()
	}
}

// openFiles counts this process's open file descriptors.
func openFiles(t *testing.T) int {
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Skipf("cannot count descriptors: %v", err)
	}
	return len(ents)
}
