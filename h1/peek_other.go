//go:build !unix

package h1

import "syscall"

// canPeek says whether idle connections wait without a buffer: not here, where they keep it
// and wait in Read.
const canPeek = false

// peeker is unavailable here.

type peeker struct{}

func (p *peeker) init(syscall.RawConn, *conn) {}

func (p *peeker) wait() bool { return false }
