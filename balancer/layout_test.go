package balancer

import (
	"testing"
	"unsafe"

	"github.com/stretchr/testify/assert"
)

// TestStateLayout checks the layout endpointState's comment promises: the hot fields in the
// first 64 bytes, and a size the allocator rounds to 128 bytes, so that every state starts on
// a cache line and no two endpoints' counters share one.
func TestStateLayout(t *testing.T) {
	var st endpointState
	assert.LessOrEqual(t, unsafe.Offsetof(st.done)+unsafe.Sizeof(st.done), uintptr(64), "hot fields must fit the first cache line")
	assert.Equal(t, uintptr(64), unsafe.Offsetof(st.addr), "cold fields must start on the second cache line")
	assert.Greater(t, unsafe.Sizeof(st), uintptr(96), "size class must be 128, not smaller")
	assert.LessOrEqual(t, unsafe.Sizeof(st), uintptr(128), "size class must be 128, not larger")
}
