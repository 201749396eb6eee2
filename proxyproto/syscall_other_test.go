//go:build !unix

package proxyproto_test

import (
	"net"
	"testing"
)

// socketReader returns nil: there are no Unix socket pairs here.
func socketReader(*testing.T, []byte) net.Conn { return nil }
