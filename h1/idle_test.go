package h1_test

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/sluiceproxy/sluice/internal/idlecost"
)

// TestIdleConnectionMemory holds thousands of keep-alive connections idle after one request
// each and measures what the server keeps per connection: heap and goroutine stacks, after
// collection. h1 waits for the next request without a buffer, so an idle connection costs
// its goroutine's stack and its conn; net/http's keeps two 4 KiB buffers as well.
func TestIdleConnectionMemory(t *testing.T) {
	if testing.Short() {
		t.Skip("opens thousands of connections")
	}
	// 10,000 connections as the issue measured, or as many as the file limit allows.
	conns := int(idlecost.RaiseFileLimit(t, 10000+200)) - 200
	if conns < 1000 {
		t.Skipf("the open-file limit allows %d connections; the figure needs 1,000 or more", conns)
	}
	conns = min(conns, 10000)
	for _, tc := range []struct {
		front string
		limit float64 // bytes per idle connection
	}{
		{"h1", 8 << 10},
		{"net/http", 64 << 10}, // measured for comparison, not a target
	} {
		t.Run(tc.front, func(t *testing.T) {
			if raceEnabled {
				// The detector's larger frames keep an idle goroutine's stack at 8 KiB
				// where it is otherwise shrunk to 4 KiB; a held 4 KiB buffer still fails.
				tc.limit += 4 << 10
			}
			per := idleBytes(t, tc.front, conns)
			t.Logf("%s: %.0f bytes per idle keep-alive connection", tc.front, per)
			require.Less(t, per, tc.limit, "memory per idle connection")
		})
	}
}

// idleBytes returns the heap and stack the server holds per idle connection. The clients
// run in another process (this test binary, re-run as idleClients), so that only the
// server's side of each connection is in this process's figures.
func idleBytes(t *testing.T, front string, conns int) float64 {
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Write([]byte("ok"))
	}), IdleTimeout: time.Minute}
	addr := listenFront(t, front, srv)

	before := idlecost.InUse()
	cmd := exec.Command(os.Args[0], "-test.run=^TestIdleClients$")
	cmd.Env = append(os.Environ(), "H1_IDLE_ADDR="+addr, "H1_IDLE_CONNS="+strconv.Itoa(conns))
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
	ready := false
	for sc.Scan() {
		if sc.Text() == "idle" {
			ready = true
			break
		}
	}
	require.True(t, ready, "the client process did not get its connections idle")
	after := idlecost.InUse()
	return float64(after-before) / float64(conns)
}

// TestIdleClients is the client process of TestIdleConnectionMemory: it opens
// H1_IDLE_CONNS connections to H1_IDLE_ADDR, sends one request on each and reads its
// response, prints "idle", and holds them until its standard input closes.
func TestIdleClients(t *testing.T) {
	addr := os.Getenv("H1_IDLE_ADDR")
	if addr == "" {
		t.Skip("the client process of TestIdleConnectionMemory")
	}
	n, err := strconv.Atoi(os.Getenv("H1_IDLE_CONNS"))
	require.NoError(t, err)
	require.GreaterOrEqual(t, idlecost.RaiseFileLimit(t, uint64(n)+100), uint64(n)+100, "open-file limit of the client process")
	req := []byte("GET / HTTP/1.1\r\nHost: idle.test\r\n\r\n")
	conns := make([]net.Conn, n)
	for i := range conns {
		c, err := net.Dial("tcp", addr)
		require.NoError(t, err)
		conns[i] = c
		_, err = c.Write(req)
		require.NoError(t, err)
		res, err := http.ReadResponse(bufio.NewReader(c), nil)
		require.NoError(t, err)
		res.Body.Close()
		require.Equal(t, http.StatusOK, res.StatusCode)
	}
	fmt.Println("idle")
	io.Copy(io.Discard, os.Stdin)
	for _, c := range conns {
		c.Close()
	}
}
