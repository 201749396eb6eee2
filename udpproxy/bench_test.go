package udpproxy_test

import (
	"fmt"
	"net"
	"net/netip"
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
				begin := time.Now()
				b.RunParallel(func(pb *testing.PB) {
					c, err := net.DialUDP("udp", nil, net.UDPAddrFromAddrPort(to))
					require.NoError(b, err)
					defer c.Close()
					msg, buf := make([]byte, size), make([]byte, size+1)
					c.SetReadDeadline(time.Now().Add(time.Minute))
					for pb.Next() {
						if _, err := c.Write(msg); err != nil {
							b.Error(err)
							return
						}
						if n, err := c.Read(buf); err != nil || n != size {
							b.Errorf("read %d bytes, %v", n, err)
							return
						}
					}
				})
				b.ReportMetric(float64(2*b.N)/time.Since(begin).Seconds(), "datagrams/s")
			})
		}
	}
}
