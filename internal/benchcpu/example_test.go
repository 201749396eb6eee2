package benchcpu_test

import (
	"fmt"
	"testing"

	"github.com/sluiceproxy/sluice/internal/benchcpu"
)

func Example() {
	sink := 0
	r := testing.Benchmark(func(b *testing.B) {
		defer benchcpu.Start(b)()
		for i := 0; b.Loop(); i++ {
			sink += i * i
		}
	})
	fmt.Println("cpu-ns/op reported:", r.Extra["cpu-ns/op"] > 0)
	// Output:
	// cpu-ns/op reported: true
}
