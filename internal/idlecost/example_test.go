package idlecost_test

import (
	"fmt"

	"github.com/sluiceproxy/sluice/internal/idlecost"
)

// What a thousand held buffers of 4 KiB cost, measured as the idle-connection tests measure
// their connections: the memory in use before and after.
func Example() {
	before := idlecost.InUse()
	held := make([][]byte, 1000)
	for i := range held {
		held[i] = make([]byte, 4096)
	}
	per := float64(idlecost.InUse()-before) / float64(len(held))
	fmt.Println(per >= 4096 && per < 8192, len(held[999]))
	// Output: true 4096
}
