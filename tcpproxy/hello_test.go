package tcpproxy_test

import (
	"bytes"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/sluiceproxy/sluice/tcpproxy"
)

// clientHello returns the bytes crypto/tls sends as its ClientHello with cfg.
func clientHello(t testing.TB, cfg *tls.Config) []byte {
	t.Helper()
	cli, srv := net.Pipe()
	defer srv.Close()
	go func() {
		tls.Client(cli, cfg).Handshake()
		cli.Close()
	}()
	var out []byte
	hdr := make([]byte, 5)
	_, err := io.ReadFull(srv, hdr)
	require.NoError(t, err, "reading the ClientHello's record header")
	body := make([]byte, binary.BigEndian.Uint16(hdr[3:]))
	_, err = io.ReadFull(srv, body)
	require.NoError(t, err, "reading the ClientHello's record")
	out = append(append(out, hdr...), body...)
	return out
}

// helloConfigs are the clients whose hellos the tests and the seed corpus use.
func helloConfigs() map[string]*tls.Config {
	return map[string]*tls.Config{
		"sni-alpn":   {ServerName: "api.example.com", NextProtos: []string{"h2", "http/1.1"}},
		"sni-upper":  {ServerName: "API.Example.COM"},
		"no-sni":     {InsecureSkipVerify: true},
		"tls12":      {ServerName: "old.example.com", MaxVersion: tls.VersionTLS12},
		"pq-mlkem":   {ServerName: "pq.example.com", CurvePreferences: []tls.CurveID{tls.X25519MLKEM768, tls.X25519}},
		"pq-mlkem-2": {ServerName: "pq2.example.com", CurvePreferences: []tls.CurveID{tls.X25519MLKEM768, tls.SecP256r1MLKEM768, tls.SecP384r1MLKEM1024, tls.X25519}},
		"acme":       {ServerName: "a.example.com", NextProtos: []string{"acme-tls/1"}},
	}
}

// splitRecords re-frames a one-record hello into records of at most size payload bytes, as a
// client with a small record size (or a middlebox) may send it.
func splitRecords(hello []byte, size int) []byte {
	var out []byte
	body := hello[5:]
	for len(body) > 0 {
		n := min(size, len(body))
		out = append(out, 22, hello[1], hello[2], byte(n>>8), byte(n))
		out = append(out, body[:n]...)
		body = body[n:]
	}
	return out
}

// chunkReader returns at most size bytes per Read, as TCP segments would.
type chunkReader struct {
	data []byte
	size int
}

func (r *chunkReader) Read(b []byte) (int, error) {
	if len(r.data) == 0 {
		return 0, io.EOF
	}
	n := min(len(b), r.size, len(r.data))
	copy(b, r.data[:n])
	r.data = r.data[n:]
	return n, nil
}

func TestReadClientHello(t *testing.T) {
	for name, cfg := range helloConfigs() {
		t.Run(name, func(t *testing.T) {
			raw := clientHello(t, cfg)
			wantName := strings.ToLower(cfg.ServerName)
			for _, records := range []int{0, 512, 100, 7} {
				data := raw
				if records > 0 {
					data = splitRecords(raw, records)
				}
				for _, seg := range []int{1, 3, 64, 1 << 20} {
					in := append(append([]byte{}, data...), "early data"...)
					buf := make([]byte, 16<<10)
					hello, n, err := tcpproxy.ReadClientHello(&chunkReader{data: in, size: seg}, buf)
					require.NoError(t, err, "records of %d, segments of %d", records, seg)
					assert.Equal(t, wantName, hello.ServerName, "server name")
					assert.Equal(t, cfg.NextProtos, hello.ALPN, "ALPN")
					assert.GreaterOrEqual(t, n, len(data), "the hello must be read whole")
					assert.Equal(t, in[:n], buf[:n], "buf[:n] must hold the bytes read, as read, to replay")
				}
			}
			if name == "pq-mlkem-2" {
				assert.Greater(t, len(raw), 1184, "an ML-KEM-768 key share alone is 1,184 bytes")
			}
		})
	}
}

func TestReadClientHelloRefuses(t *testing.T) {
	raw := clientHello(t, &tls.Config{ServerName: "x.example.com", NextProtos: []string{"h2"}})
	with := func(f func(b []byte) []byte) []byte { return f(append([]byte{}, raw...)) }
	for _, tc := range []struct {
		name string
		data []byte
		max  int
		want string // in the error; "" means ErrNotTLS
	}{
		{"http", []byte("GET / HTTP/1.1\r\n\r\n"), 0, ""},
		{"ssh", []byte("SSH-2.0-OpenSSH_9.6\r\n"), 0, ""},
		{"sslv2", []byte{0x80, 0x2e, 0x01, 0x03, 0x01}, 0, ""},
		{"truncated record", raw[:len(raw)-10], 0, "unexpected EOF"},
		{"truncated header", raw[:3], 0, "unexpected EOF"},
		{"too big for buf", raw, 512, "larger than"},
		{"second record not handshake", with(func(b []byte) []byte {
			s := splitRecords(b, 100)
			s[105] = 21
			return s
		}), 0, "not handshake"},
		{"zero-length record", []byte{22, 3, 1, 0, 0}, 0, "handshake record of 0 bytes"},
		{"oversized record", []byte{22, 3, 1, 0x40, 0x01}, 0, "handshake record of 16385 bytes"},
		{"not TLS version", with(func(b []byte) []byte { b[1] = 2; return b }), 0, "not TLS"},
		{"server hello", with(func(b []byte) []byte { b[5] = 2; return b }), 0, "not ClientHello"},
		{"lying handshake length", with(func(b []byte) []byte { b[7]++; return b }), 0, "unexpected EOF"},
		{"short handshake length", with(func(b []byte) []byte { b[8]--; return b }), 0, "record boundary"},
		{"huge handshake length", with(func(b []byte) []byte { b[6] = 0xff; return b }), 0, "larger than"},
		{"bad session id length", with(func(b []byte) []byte { b[5+4+34] = 200; return b }), 0, "session id"},
		{"no cipher suites", helloWith(t, func(h *helloParts) { h.suites = nil }), 0, "cipher suite"},
		{"odd cipher suites", helloWith(t, func(h *helloParts) { h.suites = []byte{0x13} }), 0, "cipher suite"},
		{"no compression", helloWith(t, func(h *helloParts) { h.comp = nil }), 0, "compression"},
		{"duplicate extension", helloWith(t, func(h *helloParts) {
			h.exts = append(h.exts, ext(0x0017, nil), ext(0x0017, nil))
		}), 0, "repeats extension"},
		{"two host names", helloWith(t, func(h *helloParts) {
			h.exts = append(h.exts, ext(0, sniList(nameEntry("a.test"), nameEntry("b.test"))))
		}), 0, "two host names"},
		{"bad host name", helloWith(t, func(h *helloParts) {
			h.exts = append(h.exts, ext(0, sniList(nameEntry("a b.test"))))
		}), 0, "not a host name"},
		{"trailing dot", helloWith(t, func(h *helloParts) {
			h.exts = append(h.exts, ext(0, sniList(nameEntry("a.test."))))
		}), 0, "ends with a dot"},
		{"empty label", helloWith(t, func(h *helloParts) {
			h.exts = append(h.exts, ext(0, sniList(nameEntry("a..test"))))
		}), 0, "empty label"},
		{"lying sni list length", helloWith(t, func(h *helloParts) {
			h.exts = append(h.exts, ext(0, []byte{0, 9, 0, 0, 1, 'a'}))
		}), 0, "server_name"},
		{"empty alpn name", helloWith(t, func(h *helloParts) {
			h.exts = append(h.exts, ext(16, []byte{0, 4, 2, 'h', '2', 0}))
		}), 0, "ALPN"},
		{"extension overruns", helloWith(t, func(h *helloParts) {
			h.exts = append(h.exts, []byte{0, 99, 0, 50, 1})
		}), 0, "truncated extension"},
		{"trailing bytes after extensions", helloWith(t, func(h *helloParts) { h.trailing = []byte{0} }), 0, "do not fill"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			max := tc.max
			if max == 0 {
				max = 16 << 10
			}
			buf := make([]byte, max)
			_, n, err := tcpproxy.ReadClientHello(bytes.NewReader(tc.data), buf)
			require.Error(t, err, "a broken hello must be refused")
			if tc.want == "" {
				assert.ErrorIs(t, err, tcpproxy.ErrNotTLS)
				assert.GreaterOrEqual(t, n, 1, "the bytes read must be returned for replay")
			} else {
				assert.Contains(t, err.Error(), tc.want)
			}
			assert.LessOrEqual(t, n, len(tc.data))
		})
	}
}

// helloParts builds ClientHellos field by field, for the cases a real client never sends.
type helloParts struct {
	suites, comp []byte
	exts         [][]byte
	trailing     []byte
}

func helloWith(t *testing.T, f func(*helloParts)) []byte {
	h := &helloParts{suites: []byte{0x13, 0x01}, comp: []byte{0}}
	f(h)
	var body []byte
	body = append(body, 3, 3)
	body = append(body, make([]byte, 32)...)
	body = append(body, 0) // session id
	body = binary.BigEndian.AppendUint16(body, uint16(len(h.suites)))
	body = append(body, h.suites...)
	body = append(body, byte(len(h.comp)))
	body = append(body, h.comp...)
	var exts []byte
	for _, e := range h.exts {
		exts = append(exts, e...)
	}
	if h.exts != nil || h.trailing != nil {
		body = binary.BigEndian.AppendUint16(body, uint16(len(exts)))
		body = append(body, exts...)
	}
	body = append(body, h.trailing...)
	msg := append([]byte{1, byte(len(body) >> 16), byte(len(body) >> 8), byte(len(body))}, body...)
	return append([]byte{22, 3, 1, byte(len(msg) >> 8), byte(len(msg))}, msg...)
}

func ext(typ uint16, data []byte) []byte {
	b := binary.BigEndian.AppendUint16(nil, typ)
	b = binary.BigEndian.AppendUint16(b, uint16(len(data)))
	return append(b, data...)
}

func nameEntry(name string) []byte {
	return append([]byte{0, byte(len(name) >> 8), byte(len(name))}, name...)
}

func sniList(entries ...[]byte) []byte {
	var list []byte
	for _, e := range entries {
		list = append(list, e...)
	}
	return append(binary.BigEndian.AppendUint16(nil, uint16(len(list))), list...)
}

func TestReadClientHelloBuiltIsAccepted(t *testing.T) {
	// The builder itself must make hellos the reader accepts, or the refusals above prove
	// nothing.
	data := helloWith(t, func(h *helloParts) {
		h.exts = append(h.exts, ext(0, sniList(nameEntry("Built.Test"))), ext(16, []byte{0, 3, 2, 'h', '2'}))
	})
	hello, n, err := tcpproxy.ReadClientHello(bytes.NewReader(data), make([]byte, 1024))
	require.NoError(t, err)
	assert.Equal(t, len(data), n)
	assert.Equal(t, "built.test", hello.ServerName)
	assert.Equal(t, []string{"h2"}, hello.ALPN)

	noExt := helloWith(t, func(*helloParts) {})
	_, _, err = tcpproxy.ReadClientHello(bytes.NewReader(noExt), make([]byte, 1024))
	assert.NoError(t, err, "a hello without extensions is valid TLS 1.2")
}

func TestReadClientHelloEOF(t *testing.T) {
	_, n, err := tcpproxy.ReadClientHello(bytes.NewReader(nil), make([]byte, 1024))
	assert.Equal(t, 0, n)
	assert.ErrorIs(t, err, io.EOF, "a client that sent nothing and left")
}

// FuzzReadClientHello feeds the reader arbitrary bytes in arbitrary segments. It must never
// panic or read past its buffer, must return the bytes it read as they were (they are
// replayed), and must reach the same verdict however the bytes are segmented.
func FuzzReadClientHello(f *testing.F) {
	for _, cfg := range helloConfigs() {
		raw := clientHello(f, cfg)
		f.Add(raw, uint8(0))
		f.Add(splitRecords(raw, 200), uint8(5))
		f.Add(raw[:len(raw)/2], uint8(1))
	}
	f.Add([]byte("GET / HTTP/1.1\r\n"), uint8(0))
	f.Add([]byte{22, 3, 1, 0, 0}, uint8(0))
	f.Add([]byte{22, 3, 1, 0xff, 0xff}, uint8(0))
	f.Fuzz(func(t *testing.T, data []byte, seg uint8) {
		const max = 4096
		whole := make([]byte, max)
		h1, n1, err1 := tcpproxy.ReadClientHello(bytes.NewReader(data), whole)
		if n1 > len(data) || n1 > max {
			t.Fatalf("read %d bytes of %d (buffer %d)", n1, len(data), max)
		}
		if !bytes.Equal(whole[:n1], data[:n1]) {
			t.Fatal("buf[:n] differs from the bytes read")
		}
		pieces := make([]byte, max)
		h2, n2, err2 := tcpproxy.ReadClientHello(&chunkReader{data: data, size: int(seg%32) + 1}, pieces)
		if (err1 == nil) != (err2 == nil) || errors.Is(err1, tcpproxy.ErrNotTLS) != errors.Is(err2, tcpproxy.ErrNotTLS) {
			t.Fatalf("verdict depends on segmentation: whole %v, in pieces of %d: %v", err1, seg%32+1, err2)
		}
		if err1 == nil {
			if h1.ServerName != h2.ServerName || fmt.Sprint(h1.ALPN) != fmt.Sprint(h2.ALPN) {
				t.Fatalf("hello depends on segmentation: %+v vs %+v", h1, h2)
			}
			if h1.ServerName != strings.ToLower(h1.ServerName) {
				t.Fatalf("server name %q is not lower case", h1.ServerName)
			}
			if n2 > n1 {
				t.Fatalf("read %d bytes in pieces, %d whole", n2, n1)
			}
		}
	})
}

// TestWriteSeedCorpus writes the seed corpus of FuzzReadClientHello from real crypto/tls hellos
// when TCPPROXY_WRITE_CORPUS is set; the files are committed.
func TestWriteSeedCorpus(t *testing.T) {
	if os.Getenv("TCPPROXY_WRITE_CORPUS") == "" {
		t.Skip("set TCPPROXY_WRITE_CORPUS=1 to rewrite testdata/fuzz/FuzzReadClientHello")
	}
	dir := filepath.Join("testdata", "fuzz", "FuzzReadClientHello")
	require.NoError(t, os.MkdirAll(dir, 0o755))
	write := func(name string, data []byte, seg uint8) {
		body := fmt.Sprintf("go test fuzz v1\n[]byte(%q)\nbyte(%q)\n", data, seg)
		require.NoError(t, os.WriteFile(filepath.Join(dir, name), []byte(body), 0o644))
	}
	for name, cfg := range helloConfigs() {
		raw := clientHello(t, cfg)
		write(name, raw, 0)
		write(name+"-records", splitRecords(raw, 300), 7)
		write(name+"-cut", raw[:len(raw)*2/3], 3)
		lying := append([]byte{}, raw...)
		lying[8] ^= 0x40
		write(name+"-lying", lying, 0)
	}
	write("http", []byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n"), 0)
	write("empty-record", []byte{22, 3, 1, 0, 0}, 0)
	write("oversized-record", []byte{22, 3, 1, 0xff, 0xff}, 0)
	write("dup-ext", helloWith(t, func(h *helloParts) { h.exts = append(h.exts, ext(0, nil), ext(0, nil)) }), 0)
}
