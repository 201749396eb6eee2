//go:build !unix

package proxy

// peeker is empty where there is no recv(MSG_PEEK|MSG_DONTWAIT): idle connections are
// watched by a reading goroutine instead.
type peeker struct{}

func (cc *h1Conn) initPeek() {}

func (cc *h1Conn) canPeek() bool { return false }

func (cc *h1Conn) peek() (ok, done bool) { return false, false }

func (cc *h1Conn) ended() bool { return false }
