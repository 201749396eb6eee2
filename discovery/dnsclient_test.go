package discovery

import (
	"math"
	"net"
	"net/netip"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/net/dns/dnsmessage"
)

func TestParseResolvConf(t *testing.T) {
	conf := parseResolvConf(strings.NewReader(`# written by the kubelet
nameserver 10.96.0.10
nameserver fe80::1%eth0 ; link-local
nameserver not-an-address
domain ignored.example
search default.svc.cluster.local svc.cluster.local. cluster.local
options ndots:5 timeout:2
`))
	assert.Equal(t, resolvConf{
		servers: []string{"10.96.0.10:53", "[fe80::1%eth0]:53"},
		search:  []string{"default.svc.cluster.local.", "svc.cluster.local.", "cluster.local."},
		ndots:   5,
	}, conf, "nameserver, the last search line and ndots should be read")

	empty := parseResolvConf(strings.NewReader("options ndots:99\n"))
	assert.Equal(t, []string{"127.0.0.1:53", "[::1]:53"}, empty.servers, "no nameserver line means localhost")
	assert.Equal(t, 15, empty.ndots, "ndots is capped at 15")
}

func TestResolvConfNames(t *testing.T) {
	conf := resolvConf{search: []string{"ns.svc.", "svc."}, ndots: 2}
	for _, tc := range []struct{ name, want string }{
		{"api", "api.ns.svc. api.svc. api."},
		{"api.ns", "api.ns.ns.svc. api.ns.svc. api.ns."},
		{"api.ns.svc", "api.ns.svc. api.ns.svc.ns.svc. api.ns.svc.svc."},
		{"api.", "api."},
	} {
		assert.Equal(t, tc.want, strings.Join(conf.names(tc.name), " "), "names(%q) with ndots:2", tc.name)
	}
	assert.Equal(t, []string{"api."}, resolvConf{}.names("api"), "no search list: the name itself")
}

var testQuestion = dnsmessage.Question{Name: dnsmessage.MustNewName("api.test."), Type: dnsmessage.TypeA, Class: dnsmessage.ClassINET}

// pack builds a response to testQuestion with id 7, edited by edit.
func pack(t testing.TB, edit func(*dnsmessage.Message)) []byte {
	m := dnsmessage.Message{
		Header:    dnsmessage.Header{ID: 7, Response: true},
		Questions: []dnsmessage.Question{testQuestion},
	}
	edit(&m)
	b, err := m.Pack()
	require.NoError(t, err, "packing the test message")
	return b
}

func rr(name string, typ dnsmessage.Type, ttl uint32, body dnsmessage.ResourceBody) dnsmessage.Resource {
	return dnsmessage.Resource{Header: dnsmessage.ResourceHeader{Name: dnsmessage.MustNewName(name), Type: typ, Class: dnsmessage.ClassINET, TTL: ttl}, Body: body}
}

func TestParseResponse(t *testing.T) {
	a := func(name string, ttl uint32, ip byte) dnsmessage.Resource {
		return rr(name, dnsmessage.TypeA, ttl, &dnsmessage.AResource{A: [4]byte{10, 0, 0, ip}})
	}
	cn := func(name, target string, ttl uint32) dnsmessage.Resource {
		return rr(name, dnsmessage.TypeCNAME, ttl, &dnsmessage.CNAMEResource{CNAME: dnsmessage.MustNewName(target)})
	}
	for _, tc := range []struct {
		name    string
		edit    func(*dnsmessage.Message)
		addrs   []netip.Addr
		ttl     uint32
		wantErr error // errMismatch, or nil for no error
		badMsg  bool  // an error other than errMismatch
	}{
		{name: "answers", edit: func(m *dnsmessage.Message) {
			m.Answers = []dnsmessage.Resource{a("api.test.", 30, 1), a("API.Test.", 20, 2), a("other.test.", 1, 3)}
		}, addrs: []netip.Addr{netip.MustParseAddr("10.0.0.1"), netip.MustParseAddr("10.0.0.2")}, ttl: 20},
		{name: "CNAME chain", edit: func(m *dnsmessage.Message) {
			m.Answers = []dnsmessage.Resource{cn("api.test.", "b.test.", 5), a("b.test.", 30, 4)}
		}, addrs: []netip.Addr{netip.MustParseAddr("10.0.0.4")}, ttl: 5},
		{name: "CNAME loop", edit: func(m *dnsmessage.Message) {
			for range maxCNAMEs / 2 {
				m.Answers = append(m.Answers, cn("api.test.", "b.test.", 5), cn("b.test.", "api.test.", 5))
			}
			m.Answers = append(m.Answers, cn("api.test.", "b.test.", 5))
		}, badMsg: true},
		{name: "no records", edit: func(m *dnsmessage.Message) {}, ttl: math.MaxUint32},
		{name: "not a response", edit: func(m *dnsmessage.Message) { m.Response = false }, wantErr: errMismatch},
		{name: "other ID", edit: func(m *dnsmessage.Message) { m.ID = 8 }, wantErr: errMismatch},
		{name: "other question", edit: func(m *dnsmessage.Message) { m.Questions[0].Type = dnsmessage.TypeAAAA }, wantErr: errMismatch},
		{name: "no question", edit: func(m *dnsmessage.Message) { m.Questions = nil }, wantErr: errMismatch},
	} {
		t.Run(tc.name, func(t *testing.T) {
			resp, err := parseResponse(pack(t, tc.edit), 7, testQuestion)
			switch {
			case tc.wantErr != nil:
				assert.ErrorIs(t, err, tc.wantErr)
			case tc.badMsg:
				require.Error(t, err, "a broken answer should be an error")
				assert.NotErrorIs(t, err, errMismatch)
				assert.Contains(t, err.Error(), "discovery: DNS", "the error should say where it comes from")
			default:
				require.NoError(t, err)
				assert.Equal(t, tc.addrs, resp.addrs, "the addresses of the name asked")
				assert.Equal(t, tc.ttl, resp.ttl, "the smallest TTL of the records used")
			}
		})
	}

	_, err := parseResponse(pack(t, func(*dnsmessage.Message) {})[:20], 7, testQuestion)
	assert.ErrorContains(t, err, "discovery: DNS response question", "a cut message should name the part that failed")
}

// FuzzParseResponse feeds parseResponse arbitrary messages: a DNS answer comes from the
// network and is untrusted.
func FuzzParseResponse(f *testing.F) {
	a := rr("api.test.", dnsmessage.TypeA, 30, &dnsmessage.AResource{A: [4]byte{10, 0, 0, 1}})
	f.Add(pack(f, func(m *dnsmessage.Message) { m.Answers = []dnsmessage.Resource{a} }), uint8(0))
	f.Add(pack(f, func(m *dnsmessage.Message) {
		m.Answers = []dnsmessage.Resource{rr("api.test.", dnsmessage.TypeCNAME, 5, &dnsmessage.CNAMEResource{CNAME: dnsmessage.MustNewName("b.test.")}),
			rr("b.test.", dnsmessage.TypeA, 1<<31, &dnsmessage.AResource{A: [4]byte{10, 0, 0, 2}})}
	}), uint8(0))
	f.Add(pack(f, func(m *dnsmessage.Message) {
		m.Questions[0].Type = dnsmessage.TypeAAAA
		m.Answers = []dnsmessage.Resource{rr("api.test.", dnsmessage.TypeAAAA, 9, &dnsmessage.AAAAResource{AAAA: netip.MustParseAddr("::ffff:1.2.3.4").As16()})}
	}), uint8(1))
	f.Add(pack(f, func(m *dnsmessage.Message) {
		m.Questions[0].Type = dnsmessage.TypeSRV
		m.Answers = []dnsmessage.Resource{rr("api.test.", dnsmessage.TypeSRV, 60, &dnsmessage.SRVResource{Target: dnsmessage.MustNewName("."), Port: 80})}
	}), uint8(2))
	f.Add(pack(f, func(m *dnsmessage.Message) { m.Truncated = true; m.Answers = []dnsmessage.Resource{a} }), uint8(0))
	f.Add(pack(f, func(m *dnsmessage.Message) { m.RCode = dnsmessage.RCodeServerFailure }), uint8(0))
	f.Add([]byte{0, 7, 0x80, 0, 0, 1, 0, 0, 0, 0, 0, 0}, uint8(0))
	f.Add([]byte{}, uint8(2))
	types := []dnsmessage.Type{dnsmessage.TypeA, dnsmessage.TypeAAAA, dnsmessage.TypeSRV}
	f.Fuzz(func(t *testing.T, msg []byte, qtype uint8) {
		q := testQuestion
		q.Type = types[int(qtype)%len(types)]
		resp, err := parseResponse(msg, 7, q)
		if err != nil {
			if resp != nil {
				t.Fatalf("parseResponse returned %v and an error %v", resp, err)
			}
			return
		}
		if resp.ttl > math.MaxInt32 && resp.ttl != math.MaxUint32 {
			t.Fatalf("TTL %d has the top bit set: RFC 2181 says read it as 0", resp.ttl)
		}
		if (resp.truncated || resp.rcode != dnsmessage.RCodeSuccess) && (len(resp.addrs) > 0 || len(resp.srvs) > 0) {
			t.Fatalf("records kept from a truncated or failed answer: %+v", resp)
		}
		for _, addr := range resp.addrs {
			if q.Type == dnsmessage.TypeA && !addr.Is4() || q.Type == dnsmessage.TypeAAAA && !addr.Is6() || q.Type == dnsmessage.TypeSRV {
				t.Fatalf("address %v in an answer to a %v question", addr, q.Type)
			}
		}
		for _, s := range resp.srvs {
			if q.Type != dnsmessage.TypeSRV || s == nil || !strings.HasSuffix(s.Target, ".") {
				t.Fatalf("SRV record %+v in an answer to a %v question", s, q.Type)
			}
			// What DNS does next with the record must hold too: a usable target makes a
			// dialable host name.
			if usable(s) {
				if _, _, err := net.SplitHostPort(net.JoinHostPort(strings.TrimSuffix(s.Target, "."), "1")); err != nil {
					t.Fatalf("usable SRV target %q does not make a host:port: %v", s.Target, err)
				}
			}
		}
		if len(resp.addrs)+len(resp.srvs) > 0 && resp.ttl == math.MaxUint32 {
			t.Fatalf("records without a TTL: %+v", resp)
		}
	})
}
