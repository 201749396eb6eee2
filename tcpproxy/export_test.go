package tcpproxy

// SetCopy chooses how p forwards bytes, for tests and benchmarks that compare the ways:
// "splice" (the default on Linux: splice(2) through pooled pipes), "copy" (the portable loop)
// or "io.Copy" (the standard library's, which splices too but holds its pipes).
func SetCopy(p *Proxy, mode string) {
	p.spliceOff = mode == "copy"
	p.stdCopy = mode == "io.Copy"
}
