// Package dnstest runs an authoritative DNS server on loopback for tests: records the test
// changes as it goes, answer codes and truncation on demand, and a log of the queries asked.
//
//	srv := dnstest.Start(t)
//	srv.Set(dnstest.Addr("api.test.", "10.0.0.1", 30))
//	src := &discovery.DNS{Name: "api.test.", Port: 8080, Servers: []string{srv.Addr}}
package dnstest

import (
	"encoding/binary"
	"errors"
	"io"
	"net"
	"net/netip"
	"strings"
	"sync"
	"testing"

	"github.com/stretchr/testify/require"
	"golang.org/x/net/dns/dnsmessage"
)

// Server is an authoritative DNS server on loopback, over UDP and TCP on one port, that
// answers from records the test changes as it goes. It runs outside any synctest bubble:
// start it before synctest.Test.
type Server struct {
	Addr string // "127.0.0.1:port", for discovery.DNS.Servers

	mu       sync.Mutex
	records  map[string][]dnsmessage.Resource // by lower-case owner name
	rcode    dnsmessage.RCode                 // when not success, the answer to every query
	truncate bool                             // set TC on every UDP answer, with no records
	queries  []string                         // "network type name" of each query, in order
}

// Start starts a Server with no records, stopped when the test ends.
func Start(t testing.TB) *Server {
	t.Helper()
	s := &Server{records: map[string][]dnsmessage.Resource{}}
	var udp net.PacketConn
	var tcp net.Listener
	for range 10 { // the UDP port the kernel picks may be taken for TCP: try another
		var err error
		udp, err = net.ListenPacket("udp", "127.0.0.1:0")
		require.NoError(t, err, "listening on UDP")
		tcp, err = net.Listen("tcp", udp.LocalAddr().String())
		if err == nil {
			break
		}
		udp.Close()
	}
	require.NotNil(t, tcp, "listening on TCP on the UDP port")
	s.Addr = udp.LocalAddr().String()
	var wg sync.WaitGroup
	t.Cleanup(func() {
		udp.Close()
		tcp.Close()
		wg.Wait()
	})
	wg.Go(func() {
		buf := make([]byte, 65535)
		for {
			n, from, err := udp.ReadFrom(buf)
			if err != nil {
				return
			}
			if out := s.answer(buf[:n], "udp"); out != nil {
				udp.WriteTo(out, from)
			}
		}
	})
	wg.Go(func() {
		for {
			conn, err := tcp.Accept()
			if err != nil {
				return
			}
			wg.Go(func() {
				defer conn.Close()
				for {
					var l [2]byte
					if _, err := io.ReadFull(conn, l[:]); err != nil {
						return
					}
					msg := make([]byte, binary.BigEndian.Uint16(l[:]))
					if _, err := io.ReadFull(conn, msg); err != nil {
						return
					}
					out := s.answer(msg, "tcp")
					if out == nil {
						return
					}
					conn.Write(append(binary.BigEndian.AppendUint16(nil, uint16(len(out))), out...))
				}
			})
		}
	})
	return s
}

// Set replaces all records of the owner names that rrs name.
func (s *Server) Set(rrs ...dnsmessage.Resource) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, rr := range rrs {
		delete(s.records, strings.ToLower(rr.Header.Name.String()))
	}
	for _, rr := range rrs {
		k := strings.ToLower(rr.Header.Name.String())
		s.records[k] = append(s.records[k], rr)
	}
}

// SetRCode makes every answer carry c and no records; RCodeSuccess restores normal answers.
func (s *Server) SetRCode(c dnsmessage.RCode) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.rcode = c
}

// SetTruncate makes every UDP answer truncated and empty, so clients retry over TCP.
func (s *Server) SetTruncate(on bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.truncate = on
}

// Log returns the queries answered so far, each as "network type name".
func (s *Server) Log() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.queries...)
}

// Count returns how many queries of "network type name" were answered.
func (s *Server) Count(query string) int {
	n := 0
	for _, q := range s.Log() {
		if q == query {
			n++
		}
	}
	return n
}

// answer returns the response to msg, or nil to drop it. It answers the records of the
// name and type asked, after the CNAME chain leading to them.
func (s *Server) answer(msg []byte, network string) []byte {
	var req dnsmessage.Message
	if err := req.Unpack(msg); err != nil || len(req.Questions) != 1 {
		return nil
	}
	q := req.Questions[0]
	s.mu.Lock()
	defer s.mu.Unlock()
	s.queries = append(s.queries, network+" "+strings.TrimPrefix(q.Type.String(), "Type")+" "+q.Name.String())
	resp := dnsmessage.Message{
		Header:    dnsmessage.Header{ID: req.ID, Response: true, Authoritative: true, RCode: s.rcode},
		Questions: req.Questions,
	}
	switch {
	case s.rcode != dnsmessage.RCodeSuccess:
	case s.truncate && network == "udp":
		resp.Truncated = true
	default:
		name := strings.ToLower(q.Name.String())
		if _, ok := s.records[name]; !ok {
			resp.RCode = dnsmessage.RCodeNameError
		}
		for range 10 {
			next := ""
			for _, rr := range s.records[name] {
				if rr.Header.Type == q.Type || rr.Header.Type == dnsmessage.TypeCNAME {
					resp.Answers = append(resp.Answers, rr)
				}
				if c, ok := rr.Body.(*dnsmessage.CNAMEResource); ok {
					next = strings.ToLower(c.CNAME.String())
				}
			}
			if next == "" {
				break
			}
			name = next
		}
	}
	out, err := resp.Pack()
	if err != nil {
		panic(errors.Join(errors.New("test DNS server cannot pack its answer"), err))
	}
	return out
}

func header(name string, typ dnsmessage.Type, ttl uint32) dnsmessage.ResourceHeader {
	return dnsmessage.ResourceHeader{Name: dnsmessage.MustNewName(name), Type: typ, Class: dnsmessage.ClassINET, TTL: ttl}
}

// Addr makes an A or AAAA record.
func Addr(name, ip string, ttl uint32) dnsmessage.Resource {
	a := netip.MustParseAddr(ip)
	if a.Is4() {
		return dnsmessage.Resource{Header: header(name, dnsmessage.TypeA, ttl), Body: &dnsmessage.AResource{A: a.As4()}}
	}
	return dnsmessage.Resource{Header: header(name, dnsmessage.TypeAAAA, ttl), Body: &dnsmessage.AAAAResource{AAAA: a.As16()}}
}

// SRV makes an SRV record.
func SRV(name, target string, port, priority, weight uint16, ttl uint32) dnsmessage.Resource {
	return dnsmessage.Resource{Header: header(name, dnsmessage.TypeSRV, ttl), Body: &dnsmessage.SRVResource{
		Target: dnsmessage.MustNewName(target), Port: port, Priority: priority, Weight: weight,
	}}
}

// CNAME makes a CNAME record.
func CNAME(name, target string, ttl uint32) dnsmessage.Resource {
	return dnsmessage.Resource{Header: header(name, dnsmessage.TypeCNAME, ttl), Body: &dnsmessage.CNAMEResource{CNAME: dnsmessage.MustNewName(target)}}
}
