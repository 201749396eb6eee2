// Package rawhttp reads HTTP/1.1 responses off a raw connection with as little work as can be,
// for benchmarks whose client must cost next to nothing beside the server they measure.
package rawhttp

import (
	"bufio"
	"errors"
	"io"
	"strconv"
)

// ReadBody reads one response head, which must carry "Content-Length: N" written exactly so,
// and its N body bytes, which it drops. It returns N.
func ReadBody(br *bufio.Reader) (int, error) {
	const field = "Content-Length: "
	length := -1
	for {
		line, err := br.ReadSlice('\n')
		if err != nil {
			return 0, err
		}
		if len(line) <= 2 {
			break
		}
		if len(line) > len(field) && string(line[:len(field)]) == field {
			if length, err = strconv.Atoi(string(line[len(field) : len(line)-2])); err != nil {
				return 0, err
			}
		}
	}
	if length < 0 {
		return 0, errors.New("rawhttp: no Content-Length in the response")
	}
	n, err := io.CopyN(io.Discard, br, int64(length))
	return int(n), err
}
