package hookset_test

import (
	"fmt"
	"testing"

	"github.com/stretchr/testify/assert"

	"github.com/sluiceproxy/sluice/internal/hookset"
)

type hooks struct{ Event func(int) }

func field(h hooks) func(int) { return h.Event }

func TestJoin(t *testing.T) {
	assert.Nil(t, hookset.Join([]hooks{{}, {}}, field), "no listener: nil, a nil check for the caller")
	var got []string
	one := func(n int) { got = append(got, fmt.Sprint("one ", n)) }
	two := func(n int) { got = append(got, fmt.Sprint("two ", n)) }
	hookset.Join([]hooks{{}, {Event: one}}, field)(1)
	assert.Equal(t, []string{"one 1"}, got, "one listener: its func itself")
	got = nil
	hookset.Join([]hooks{{Event: one}, {}, {Event: two}}, field)(2)
	assert.Equal(t, []string{"one 2", "two 2"}, got, "in order, nil fields skipped")
}

func Example() {
	type Hooks struct{ Update func(string) }
	joined := hookset.Join([]Hooks{
		{Update: func(s string) { fmt.Println("metrics:", s) }},
		{},
		{Update: func(s string) { fmt.Println("log:", s) }},
	}, func(h Hooks) func(string) { return h.Update })
	joined("changed")
	// Output:
	// metrics: changed
	// log: changed
}
