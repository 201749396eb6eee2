//go:build !unix

package proxyproto

import (
	"io"
	"syscall"
)

// canPeek says whether sockets can be looked at without consuming what they hold: not here,
// where a Listener reads a peer's first bytes and gives them back through Read.
const canPeek = false

// peekerOf returns nil: there is no peeking here.
func peekerOf(io.Reader) peekFunc { return nil }

// peek is unavailable here.
func peek(syscall.RawConn, []byte, int) (int, error) { return 0, errNoPeek }
