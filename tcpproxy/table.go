//lint:file-ignore ST1005 a route's errors start with the field they name ("Name is required"); NewTable prefixes "tcpproxy: routes[i]".

package tcpproxy

import (
	"crypto/tls"
	"errors"
	"fmt"
	"strings"

	"github.com/sluiceproxy/sluice"
)

// Route is one routing rule: which connections it takes, and where they go.
type Route struct {
	// Name names the route in errors and logs. Required, unique in a table.
	Name string

	// ServerNames are the TLS server names (SNI) the route takes, each exact
	// ("api.example.com") or a wildcard ("*.example.com") that covers exactly one more label:
	// "a.example.com", not "example.com" nor "a.b.example.com". Names compare
	// case-insensitively. Empty makes the route a default route, taking the connections no
	// named route takes: plain-text ones, TLS ones without a server name, and unknown names.
	ServerNames []string

	// ALPN, when not empty, narrows the route to clients that offer one of these application
	// protocols ("h2", "acme-tls/1"). Among routes for one name, the first in table order
	// whose ALPN the client offers wins, then the first without ALPN.
	ALPN []string

	// Picker chooses the endpoint each connection is forwarded to. Exactly one of Picker and
	// Listener is set.
	Picker sluice.Picker

	// Listener, instead of an upstream, receives the route's connections in this process:
	// its Accept returns them, with the bytes the proxy read to route them replayed first.
	// An ingress controller sends the names it terminates itself to its own HTTPS server
	// this way, on the port it passes other names through.
	Listener *Listener

	// TLS, when not nil, terminates TLS for the route's connections: the proxy completes the
	// handshake with this config (its certificates normally come from a
	// [github.com/sluiceproxy/sluice/tls/certs.Keyring] through GetCertificate) and forwards
	// the plain bytes, or hands the *tls.Conn to Listener. Nil passes the bytes through
	// untouched: the endpoint terminates TLS itself.
	TLS *tls.Config

	// ProxyProtocol, when 1 or 2, sends a PROXY protocol header of that version (see package
	// [github.com/sluiceproxy/sluice/proxyproto]) first on every connection to the route's
	// endpoints, so that they see the client's address rather than the proxy's; a proxy
	// served from a proxyproto.Listener passes on the address its own header gave. Version 2
	// also carries the server name the client asked for (PP2_TYPE_AUTHORITY) and, when the
	// route terminates TLS, the protocol negotiated (PP2_TYPE_ALPN). Zero sends none. An
	// endpoint that does not expect the header will fail every connection. Only routes with
	// a Picker may set it.
	ProxyProtocol int
}

// Table is an immutable, validated set of routes built by NewTable. A Proxy serves through
// its current table; Proxy.Store swaps in another without disturbing connections already
// routed.
type Table struct {
	routes   []Route
	exact    map[string]*group // by lower-case server name
	wildcard map[string]*group // by the suffix after "*."
	def      *group            // the routes without ServerNames
	peek     bool              // some route needs the ClientHello to be chosen
}

// group holds the routes for one name: those with ALPN in table order, then the first one
// without.
type group struct {
	alpn []*Route
	any  *Route
}

// NewTable checks routes and indexes them for lookup. The error names the route and the field
// that is wrong. The table keeps a copy of routes (not of what their fields point to).
func NewTable(routes []Route) (*Table, error) {
	t := &Table{
		routes:   append([]Route(nil), routes...),
		exact:    map[string]*group{},
		wildcard: map[string]*group{},
	}
	names := map[string]bool{}
	for i := range t.routes {
		r := &t.routes[i]
		if err := r.check(); err != nil {
			return nil, fmt.Errorf("tcpproxy: routes[%d] %q: %w", i, r.Name, err)
		}
		if names[r.Name] {
			return nil, fmt.Errorf("tcpproxy: routes[%d] %q: Name is not unique", i, r.Name)
		}
		names[r.Name] = true
		if len(r.ServerNames) > 0 || len(r.ALPN) > 0 {
			t.peek = true
		}
		if len(r.ServerNames) == 0 {
			if t.def == nil {
				t.def = &group{}
			}
			if err := t.def.add(r); err != nil {
				return nil, fmt.Errorf("tcpproxy: routes[%d] %q: %w", i, r.Name, err)
			}
		}
		for j, name := range r.ServerNames {
			name = strings.ToLower(name)
			m := t.exact
			if suf, ok := strings.CutPrefix(name, "*."); ok {
				m, name = t.wildcard, suf
			}
			if err := checkHostName([]byte(name)); err != nil {
				return nil, fmt.Errorf("tcpproxy: routes[%d] %q: ServerNames[%d] %q must be a host name or *.name: %w",
					i, r.Name, j, r.ServerNames[j], err)
			}
			g := m[name]
			if g == nil {
				g = &group{}
				m[name] = g
			}
			if err := g.add(r); err != nil {
				return nil, fmt.Errorf("tcpproxy: routes[%d] %q: ServerNames[%d] %q: %w", i, r.Name, j, r.ServerNames[j], err)
			}
		}
	}
	return t, nil
}

func (r *Route) check() error {
	if r.Name == "" {
		return errors.New("Name is required")
	}
	if (r.Picker == nil) == (r.Listener == nil) {
		return errors.New("exactly one of Picker and Listener must be set")
	}
	switch {
	case r.ProxyProtocol != 0 && r.ProxyProtocol != 1 && r.ProxyProtocol != 2:
		return fmt.Errorf("ProxyProtocol must be 0, 1 or 2, got %d", r.ProxyProtocol)
	case r.ProxyProtocol != 0 && r.Listener != nil:
		return errors.New("ProxyProtocol is for routes with a Picker, not a Listener")
	}
	for i, p := range r.ALPN {
		if p == "" || len(p) > 255 {
			return fmt.Errorf("ALPN[%d] must be 1 to 255 bytes, got %d", i, len(p))
		}
	}
	return nil
}

func (g *group) add(r *Route) error {
	if len(r.ALPN) > 0 {
		g.alpn = append(g.alpn, r)
		return nil
	}
	if g.any != nil {
		return fmt.Errorf("is routed by %q already (without ALPN, as here)", g.any.Name)
	}
	g.any = r
	return nil
}

// Routes returns the table's routes, in table order. The slice must not be modified.
func (t *Table) Routes() []Route { return t.routes }

// Lookup returns the route for a connection whose ClientHello named serverName and offered
// alpn, or nil when no route takes it; a plain-text connection has neither. The exact name's
// routes are searched first, then the wildcard's, then the default routes; within each, the
// first route whose ALPN the client offers wins, then the route without ALPN. Lookup is
// case-insensitive, ignores a trailing dot, and allocates nothing.
func (t *Table) Lookup(serverName string, alpn []string) *Route {
	var buf [maxHostNameLen + 1]byte
	name := serverName
	if len(name) > 0 && name[len(name)-1] == '.' {
		name = name[:len(name)-1]
	}
	if name != "" && len(name) <= maxHostNameLen {
		b := buf[:len(name)]
		copy(b, name)
		for i, c := range b {
			if 'A' <= c && c <= 'Z' {
				b[i] = c + 'a' - 'A'
			}
		}
		if r := t.exact[string(b)].match(alpn); r != nil {
			return r
		}
		if i := strings.IndexByte(name, '.'); i > 0 {
			if r := t.wildcard[string(b[i+1:])].match(alpn); r != nil {
				return r
			}
		}
	}
	return t.def.match(alpn)
}

func (g *group) match(alpn []string) *Route {
	if g == nil {
		return nil
	}
	for _, r := range g.alpn {
		for _, want := range r.ALPN {
			for _, p := range alpn {
				if p == want {
					return r
				}
			}
		}
	}
	return g.any
}
