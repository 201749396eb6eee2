//go:build !linux

package proxy

// canSplice says whether net.TCPConn's ReadFrom splices from a TCP socket here: elsewhere it
// copies, and a failure could not be told apart as the upstream's or the client's.
const canSplice = false
