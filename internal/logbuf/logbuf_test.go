package logbuf_test

import (
	"fmt"
	"sync"
	"testing"

	"github.com/stretchr/testify/assert"

	"github.com/sluiceproxy/sluice/internal/logbuf"
)

func Example() {
	var logs logbuf.Buffer
	logs.Logger().Info("endpoint ejected", "addr", "10.0.0.7:80")
	fmt.Print(len(logs.String()) > 0)
	// Output: true
}

// TestConcurrentWritesAndLines checks that loggers on many goroutines can write while the
// test reads, and that every record comes back whole.
func TestConcurrentWritesAndLines(t *testing.T) {
	var logs logbuf.Buffer
	log := logs.Logger()
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Go(func() {
			for j := range 50 {
				log.Info("tick", "worker", i, "n", j)
				_ = logs.String()
			}
		})
	}
	wg.Wait()
	lines := logs.Lines(t)
	assert.Len(t, lines, 400)
	for _, l := range lines {
		assert.Equal(t, "tick", l["msg"])
	}
}
