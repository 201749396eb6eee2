package fdlimit_test

import (
	"fmt"

	"github.com/sluiceproxy/sluice/internal/fdlimit"
)

// A test that needs two descriptors per connection asks for room for 10,000 connections and
// scales down to what it got.
func Example() {
	got, err := fdlimit.Raise(20_200)
	if err != nil {
		fmt.Println(err)
		return
	}
	conns := min(10_000, (int(got)-200)/2)
	fmt.Println(conns > 0)
	// Output: true
}
