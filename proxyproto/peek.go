package proxyproto

import "errors"

// A peekFunc waits until more than have bytes have arrived on a socket and copies up to
// len(p) of them into p without consuming them.
type peekFunc func(p []byte, have int) (int, error)

// errNoPeek says that a connection cannot be peeked at: it is not a socket.
var errNoPeek = errors.New("proxyproto: not a socket")
