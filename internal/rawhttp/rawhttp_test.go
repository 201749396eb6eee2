package rawhttp_test

import (
	"bufio"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/sluiceproxy/sluice/internal/rawhttp"
)

func TestReadBody(t *testing.T) {
	br := bufio.NewReader(strings.NewReader("HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabc" +
		"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nX: y\r\n\r\nde"))
	for _, want := range []int{3, 2} {
		n, err := rawhttp.ReadBody(br)
		require.NoError(t, err)
		assert.Equal(t, want, n)
	}
	_, err := rawhttp.ReadBody(bufio.NewReader(strings.NewReader("HTTP/1.1 200 OK\r\n\r\n")))
	assert.Error(t, err, "a response without Content-Length")
	_, err = rawhttp.ReadBody(bufio.NewReader(strings.NewReader("HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nabc")))
	assert.Error(t, err, "a body shorter than its Content-Length")
}
