package serving

import (
	"net"
	"sync/atomic"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestTracker checks what Shutdown relies on: Close closes the listeners and refuses what
// comes after, and its channel is closed when the last connection leaves.
func TestTracker(t *testing.T) {
	tr := NewTracker[int]()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	require.True(t, tr.AddListener(&ln))
	require.True(t, tr.AddConn(1))
	require.True(t, tr.AddConn(2))
	var seen []int
	stopped, err := tr.Close(func(c int) { seen = append(seen, c) })
	require.NoError(t, err)
	assert.ElementsMatch(t, []int{1, 2}, seen)
	assert.True(t, tr.Closing())
	_, err = ln.Accept()
	assert.ErrorIs(t, err, net.ErrClosed, "the listener is closed")
	assert.False(t, tr.AddConn(3), "no connection is taken once closing")
	assert.False(t, tr.AddListener(&ln))
	tr.RemoveConn(1)
	select {
	case <-stopped:
		t.Fatal("stopped with a connection left")
	default:
	}
	tr.RemoveConn(2)
	<-stopped
	again, _ := tr.Close(nil)
	assert.Nil(t, again, "nothing left to wait for")
}

// TestWorkers checks that jobs run, on reused goroutines, and that Stop lets later jobs run
// too.
func TestWorkers(t *testing.T) {
	var ran atomic.Int32
	done := make(chan struct{}, 100)
	w := NewWorkers(func(n int) { ran.Add(int32(n)); done <- struct{}{} })
	for range 10 {
		w.Go(1)
		<-done
	}
	w.Stop()
	w.Go(5)
	<-done
	assert.Equal(t, int32(15), ran.Load())
}
