//go:build !unix

package proxy

// peeker is empty where there is no recv(MSG_PEEK|MSG_DONTWAIT): idleClean reads with a
// deadline already past instead.
type peeker struct{}

func (cc *h1Conn) initPeek() {}

func (cc *h1Conn) peek() (ok, done bool) { return false, false }
