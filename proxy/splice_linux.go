package proxy

// canSplice says whether net.TCPConn's ReadFrom splices from a TCP socket here.
const canSplice = true
