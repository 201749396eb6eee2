package udpproxy_test

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/sluiceproxy/sluice/udpproxy"
)

// BenchmarkForward measures request-reply exchanges through the proxy, one flow per client
// goroutine, against the same exchanges sent to the echo backend directly (the baseline).
// datagrams/s counts both directions; each op is one exchange.
//
//	go test -run '^$' -bench Forward -benchtime 2s ./udpproxy/
func BenchmarkForward(b *testing.B) {
	for _, size := range []int{64, 1472, 16384} {
		for _, via := range []string{"direct", "proxy"} {
			b.Run(fmt.Sprintf("%s/%dB", via, size), func(b *testing.B) {
				be := newBackend(b, "")
				to := netip.MustParseAddrPort(be.addr)
				if via == "proxy" {
					_, to = start(b, udpproxy.Options{Picker: ordered(be.addr)})
				}
				b.SetBytes(int64(size))
				b.SetParallelism(4) // four flows per core: the proxy's goroutines are never all idle
				b.ReportAllocs()
				var lost atomic.Int64
				begin := time.Now()
				b.RunParallel(func(pb *testing.PB) {
					c, err := net.DialUDP("udp", nil, net.UDPAddrFromAddrPort(to))
					require.NoError(b, err)
					defer c.Close()
					msg, buf := make([]byte, size), make([]byte, size+1)
					for pb.Next() {
						// Loopback drops datagrams too, when the machine's backlog of them
						// overflows: a reply that does not come within 100ms is asked again.
						for {
							if _, err := c.Write(msg); err != nil {
								b.Error(err)
								return
							}
							c.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
							n, err := c.Read(buf)
							if errors.Is(err, os.ErrDeadlineExceeded) {
								lost.Add(1)
								continue
							}
							if err != nil || n != size {
								b.Errorf("read %d bytes, %v", n, err)
								return
							}
							break
						}
					}
				})
				b.ReportMetric(float64(lost.Load()), "lost")
				b.ReportMetric(float64(2*b.N)/time.Since(begin).Seconds(), "datagrams/s")
			})
		}
	}
}
