package discovery

// A small stub resolver. DNS needs the TTL of each answer to know when it goes stale, and
// Go's net.Resolver does not report TTLs, so DNS asks the questions itself: one question per
// message over UDP, again over TCP when the answer is truncated, to each name server in turn.

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"net"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"time"

	"golang.org/x/net/dns/dnsmessage"
)

const (
	// dnsTimeout bounds one exchange with one server over one transport.
	dnsTimeout = 3 * time.Second
	// ednsSize is the UDP payload size advertised with EDNS(0): the size the DNS Flag Day
	// 2020 recommends, which fits in one IPv6 packet without fragmentation.
	ednsSize = 1232
	// maxCNAMEs is the longest alias chain followed before an answer counts as broken.
	maxCNAMEs = 8
)

// resolvConf is the part of resolv.conf(5) that the client uses.
type resolvConf struct {
	servers []string // "ip:port"
	search  []string // absolute domains, ending in "."
	ndots   int
}

// readResolvConf reads path, falling back to name servers on localhost as the C library
// does when the file is missing or names none.
func readResolvConf(path string) resolvConf {
	f, err := os.Open(path)
	if err != nil {
		return parseResolvConf(strings.NewReader(""))
	}
	defer f.Close()
	return parseResolvConf(f)
}

// parseResolvConf reads the nameserver, search, domain and "options ndots:N" lines; it
// ignores everything else, as resolv.conf(5) asks of unknown keywords.
func parseResolvConf(r io.Reader) resolvConf {
	conf := resolvConf{ndots: 1}
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		line, _, _ := strings.Cut(sc.Text(), "#")
		line, _, _ = strings.Cut(line, ";")
		f := strings.Fields(line)
		if len(f) < 2 {
			continue
		}
		switch f[0] {
		case "nameserver":
			if ip, err := netip.ParseAddr(f[1]); err == nil {
				conf.servers = append(conf.servers, netip.AddrPortFrom(ip, 53).String())
			}
		case "domain", "search": // the last of them wins
			conf.search = conf.search[:0]
			for _, d := range f[1:] {
				if d = strings.TrimSuffix(d, "."); d != "" {
					conf.search = append(conf.search, d+".")
				}
			}
		case "options":
			for _, o := range f[1:] {
				if v, ok := strings.CutPrefix(o, "ndots:"); ok {
					if n, err := strconv.Atoi(v); err == nil {
						conf.ndots = min(max(n, 0), 15) // the C library's cap
					}
				}
			}
		}
	}
	if len(conf.servers) == 0 {
		conf.servers = []string{"127.0.0.1:53", "[::1]:53"}
	}
	return conf
}

// names returns the absolute names to try for name, in order: a name ending in "." as is;
// otherwise the search domains first when name has fewer than ndots dots, last when not.
func (c resolvConf) names(name string) []string {
	if strings.HasSuffix(name, ".") {
		return []string{name}
	}
	var searched []string
	for _, d := range c.search {
		searched = append(searched, name+"."+d)
	}
	if strings.Count(name, ".") >= c.ndots {
		return append([]string{name + "."}, searched...)
	}
	return append(searched, name+".")
}

// dnsClient asks questions of the servers in conf.
type dnsClient struct {
	conf   resolvConf
	dialer net.Dialer
}

// response is what the client uses of an answer to one question.
type response struct {
	rcode     dnsmessage.RCode
	truncated bool
	// ttl is the smallest TTL of the records below and of the aliases that led to them, in
	// seconds; math.MaxUint32 when there are none.
	ttl   uint32
	addrs []netip.Addr // A or AAAA records of the name asked
	srvs  []*net.SRV   // SRV records of the name asked
}

// exchange asks each server in turn until one answers with success or "no such name", and
// returns that answer. A truncated UDP answer is asked again over TCP.
func (c *dnsClient) exchange(ctx context.Context, name string, qtype dnsmessage.Type) (*response, error) {
	n, err := dnsmessage.NewName(name)
	if err != nil {
		return nil, fmt.Errorf("discovery: DNS name %q: %w", name, err)
	}
	q := dnsmessage.Question{Name: n, Type: qtype, Class: dnsmessage.ClassINET}
	var errs []error
	for _, server := range c.conf.servers {
		resp, err := c.roundTrip(ctx, "udp", server, q)
		if err == nil && resp.truncated {
			resp, err = c.roundTrip(ctx, "tcp", server, q)
		}
		if err == nil && resp.rcode != dnsmessage.RCodeSuccess && resp.rcode != dnsmessage.RCodeNameError {
			err = fmt.Errorf("discovery: DNS server %s answered %s %s with %s", server, typeName(qtype), name, strings.TrimPrefix(resp.rcode.String(), "RCode"))
		}
		if err == nil {
			return resp, nil
		}
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		errs = append(errs, err)
	}
	return nil, errors.Join(errs...)
}

// roundTrip sends q to server over network ("udp" or "tcp") and reads the answer.
func (c *dnsClient) roundTrip(ctx context.Context, network, server string, q dnsmessage.Question) (*response, error) {
	fail := func(err error) (*response, error) {
		return nil, fmt.Errorf("discovery: DNS %s %s to %s over %s: %w", typeName(q.Type), q.Name, server, network, err)
	}
	id := uint16(rand.Uint32())
	query, err := newQuery(id, q)
	if err != nil {
		return fail(err)
	}
	ctx, cancel := context.WithTimeout(ctx, dnsTimeout)
	defer cancel()
	conn, err := c.dialer.DialContext(ctx, network, server)
	if err != nil {
		return fail(err)
	}
	defer conn.Close()
	deadline, _ := ctx.Deadline()
	conn.SetDeadline(deadline)
	// Cancelling ctx unblocks a read or write in progress.
	stop := context.AfterFunc(ctx, func() { conn.SetDeadline(time.Unix(1, 0)) })
	defer stop()

	if network == "tcp" {
		// Over TCP a message is preceded by its length (RFC 1035 §4.2.2).
		framed := binary.BigEndian.AppendUint16(make([]byte, 0, 2+len(query)), uint16(len(query)))
		if _, err := conn.Write(append(framed, query...)); err != nil {
			return fail(err)
		}
		var length [2]byte
		if _, err := io.ReadFull(conn, length[:]); err != nil {
			return fail(err)
		}
		msg := make([]byte, binary.BigEndian.Uint16(length[:]))
		if _, err := io.ReadFull(conn, msg); err != nil {
			return fail(err)
		}
		resp, err := parseResponse(msg, id, q)
		if err != nil {
			return fail(err)
		}
		return resp, nil
	}

	if _, err := conn.Write(query); err != nil {
		return fail(err)
	}
	buf := make([]byte, math.MaxUint16)
	for {
		n, err := conn.Read(buf)
		if err != nil {
			return fail(err)
		}
		resp, err := parseResponse(buf[:n], id, q)
		if errors.Is(err, errMismatch) {
			continue // a late answer to an earlier query, or a forged one: wait for ours
		}
		if err != nil {
			return fail(err)
		}
		return resp, nil
	}
}

// newQuery packs a recursive query for q, advertising EDNS(0) so that most answers fit in
// one UDP message.
func newQuery(id uint16, q dnsmessage.Question) ([]byte, error) {
	var opt dnsmessage.ResourceHeader
	if err := opt.SetEDNS0(ednsSize, dnsmessage.RCodeSuccess, false); err != nil {
		return nil, err
	}
	msg := dnsmessage.Message{
		Header:      dnsmessage.Header{ID: id, RecursionDesired: true},
		Questions:   []dnsmessage.Question{q},
		Additionals: []dnsmessage.Resource{{Header: opt, Body: &dnsmessage.OPTResource{}}},
	}
	return msg.Pack()
}

// errMismatch reports a message that is not the answer to the query: not a response, or a
// different ID or question.
var errMismatch = errors.New("discovery: DNS message does not answer the query")

// parseResponse reads msg as the answer to q sent with id. It keeps the records of q's type
// owned by q's name, following CNAME records from that name in the order the answer lists
// them, and ignores every other record. A truncated or unsuccessful answer is returned
// without records: the caller retries over TCP or reports the code.
func parseResponse(msg []byte, id uint16, q dnsmessage.Question) (*response, error) {
	var p dnsmessage.Parser
	h, err := p.Start(msg)
	if err != nil {
		return nil, fmt.Errorf("discovery: DNS response header: %w", err)
	}
	if !h.Response || h.ID != id {
		return nil, errMismatch
	}
	qs, err := p.AllQuestions()
	if err != nil {
		return nil, fmt.Errorf("discovery: DNS response question: %w", err)
	}
	if len(qs) != 1 || qs[0].Type != q.Type || qs[0].Class != q.Class || !equalName(qs[0].Name, q.Name) {
		return nil, errMismatch
	}
	resp := &response{rcode: h.RCode, truncated: h.Truncated, ttl: math.MaxUint32}
	if h.Truncated || h.RCode != dnsmessage.RCodeSuccess {
		return resp, nil
	}
	owner, aliases := q.Name, 0
	for {
		rh, err := p.AnswerHeader()
		if errors.Is(err, dnsmessage.ErrSectionDone) {
			return resp, nil
		}
		if err != nil {
			return nil, fmt.Errorf("discovery: DNS answer record: %w", err)
		}
		if rh.Class != dnsmessage.ClassINET || !equalName(rh.Name, owner) || (rh.Type != q.Type && rh.Type != dnsmessage.TypeCNAME) {
			if err := p.SkipAnswer(); err != nil {
				return nil, fmt.Errorf("discovery: DNS answer record: %w", err)
			}
			continue
		}
		switch rh.Type {
		case dnsmessage.TypeCNAME:
			r, err := p.CNAMEResource()
			if err != nil {
				return nil, fmt.Errorf("discovery: DNS CNAME record of %s: %w", rh.Name, err)
			}
			if aliases++; aliases > maxCNAMEs {
				return nil, fmt.Errorf("discovery: DNS answer for %s has more than %d CNAMEs", q.Name, maxCNAMEs)
			}
			owner = r.CNAME
		case dnsmessage.TypeA:
			r, err := p.AResource()
			if err != nil {
				return nil, fmt.Errorf("discovery: DNS A record of %s: %w", rh.Name, err)
			}
			resp.addrs = append(resp.addrs, netip.AddrFrom4(r.A))
		case dnsmessage.TypeAAAA:
			r, err := p.AAAAResource()
			if err != nil {
				return nil, fmt.Errorf("discovery: DNS AAAA record of %s: %w", rh.Name, err)
			}
			resp.addrs = append(resp.addrs, netip.AddrFrom16(r.AAAA))
		case dnsmessage.TypeSRV:
			r, err := p.SRVResource()
			if err != nil {
				return nil, fmt.Errorf("discovery: DNS SRV record of %s: %w", rh.Name, err)
			}
			resp.srvs = append(resp.srvs, &net.SRV{Target: r.Target.String(), Port: r.Port, Priority: r.Priority, Weight: r.Weight})
		default:
			// A type the client does not read: only its TTL counts.
			if err := p.SkipAnswer(); err != nil {
				return nil, fmt.Errorf("discovery: DNS answer record: %w", err)
			}
		}
		ttl := rh.TTL
		if ttl > math.MaxInt32 {
			ttl = 0 // RFC 2181 §8: a TTL with the top bit set is read as zero
		}
		resp.ttl = min(resp.ttl, ttl)
	}
}

// typeName returns "A" for dnsmessage.TypeA, and so on.
func typeName(t dnsmessage.Type) string { return strings.TrimPrefix(t.String(), "Type") }

// equalName compares DNS names ignoring ASCII case, as RFC 4343 asks.
func equalName(a, b dnsmessage.Name) bool {
	if a.Length != b.Length {
		return false
	}
	for i := range a.Length {
		x, y := a.Data[i], b.Data[i]
		if 'A' <= x && x <= 'Z' {
			x += 'a' - 'A'
		}
		if 'A' <= y && y <= 'Z' {
			y += 'a' - 'A'
		}
		if x != y {
			return false
		}
	}
	return true
}
