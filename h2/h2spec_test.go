package h2_test

import (
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"regexp"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/summerwind/h2spec/config"
	"github.com/summerwind/h2spec/generic"
	"github.com/summerwind/h2spec/hpack"
	h2spechttp2 "github.com/summerwind/h2spec/http2"
	"github.com/summerwind/h2spec/spec"

	"github.com/sluiceproxy/sluice/h2"
	"github.com/sluiceproxy/sluice/internal/testcert"
)

// h2specTimeout is how long h2spec waits for each frame it expects (its -o flag, 2 s by
// default there too). A server that passes answers at once; a case the server fails by
// staying silent waits this long, so the run time grows with the failures, not the cases.
const h2specTimeout = 2 * time.Second

// h2specBody is what the handler answers every request with. h2spec's flow-control cases
// (6.5.3, 6.9.1, 6.9.2) first fetch the path and skip themselves when the response has no
// body; they then need more than 100 bytes of it to watch the server respect a small window.
var h2specBody = strings.Repeat("sluice h2spec body\n", 64)

// maxH2SpecTraces is how many failing cases of a run are run again for a frame trace: a
// failure costs up to h2specTimeout once more, so a server failing most cases is not traced
// for minutes.
const maxH2SpecTraces = 5

// TestH2Spec runs every case of h2spec v2.2.1 (github.com/summerwind/h2spec, the public
// HTTP/2 conformance suite: its generic, http2 (RFC 7540) and hpack (RFC 7541) groups) against
// a Server, over h2c with prior knowledge and over TLS with ALPN. Each case is a subtest named
// as h2spec names it (the -s flag of its command), so that a failure names the RFC section:
//
//	go test -run 'TestH2Spec/h2c/http2/6.5.3/' ./h2
//
// The strict cases (SHOULDs; in v2.2.1 only http2/5.4.1/2, a GOAWAY before the close on a
// connection error) run too. A failure reports h2spec's expected and actual frames, what the
// server logged during the case and, for the first few, h2spec's frame trace of a second run.
//
// net/http's own server (Go 1.26) fails three cases, over both transports, on purpose:
// http2/6.5.3/1 (it refuses a SETTINGS frame that repeats a setting, as a DoS defence) and
// http2/8.1.2.2/1 and /2 (a request with a connection-specific field, or a TE other than
// "trailers", gets a 400 response, which RFC 9113 section 8.1.1 lets a server send before it
// closes the stream, and no RST_STREAM, which h2spec waits for).
func TestH2Spec(t *testing.T) {
	for _, overTLS := range []bool{false, true} {
		name := "h2c"
		if overTLS {
			name = "tls"
		}
		t.Run(name, func(t *testing.T) {
			r := &h2specRun{traces: maxH2SpecTraces}
			r.c = startH2Spec(t, overTLS, &r.serverLog)
			for _, g := range []*spec.TestGroup{generic.Spec(), h2spechttp2.Spec(), hpack.Spec()} {
				r.group(t, g)
			}
		})
	}
}

// startH2Spec serves h2specBody with a Server on a loopback listener (TLS offering only h2 when
// overTLS) until t ends, and returns the h2spec configuration that targets it.
func startH2Spec(t *testing.T, overTLS bool, serverLog io.Writer) *config.Config {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := ln.Addr().(*net.TCPAddr)
	if overTLS {
		cert := testcert.NewCA(t).Server(t, "127.0.0.1")
		ln = tls.NewListener(ln, &tls.Config{Certificates: []tls.Certificate{cert.TLS}, NextProtos: []string{"h2"}})
	}
	srv := h2.New(&http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			// Read the whole request first: cases such as http2/6.9.1/3 leave a stream open
			// and then provoke a stream error on it, which a handler that answered at once
			// would race (the server had closed the stream and ignores what follows).
			io.Copy(io.Discard, r.Body)
			io.WriteString(w, h2specBody)
		}),
		// http2/4.2/3 sends a 17 KB HEADERS frame and wants FRAME_SIZE_ERROR, as if every
		// server kept the initial 16 KiB limit; a server that advertised a larger
		// SETTINGS_MAX_FRAME_SIZE (net/http's default is 1 MiB) rightly takes the frame.
		HTTP2:    &http.HTTP2Config{MaxReadFrameSize: 16 << 10},
		ErrorLog: log.New(serverLog, "server: ", 0),
	})
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	t.Cleanup(func() {
		srv.Close()
		// Bounded, so that a Serve that ignores Close fails the test instead of hanging it.
		select {
		case <-served:
		case <-time.After(5 * time.Second):
			t.Error("Serve did not return within 5 s of Close")
		}
	})

	c := &config.Config{
		Host:         addr.IP.String(),
		Port:         addr.Port,
		Path:         "/",
		Timeout:      h2specTimeout,
		MaxHeaderLen: 4000, // h2spec's default: the size of the large headers it sends
		Strict:       true,
		TLS:          overTLS,
		Insecure:     true,
	}
	if overTLS {
		// h2spec offers h2 and h2-16 but goes on whatever the server picks, so check here that
		// the server negotiates h2; otherwise every case below would test something else.
		cfg, err := c.TLSConfig()
		require.NoError(t, err)
		conn, err := tls.DialWithDialer(&net.Dialer{Timeout: h2specTimeout}, "tcp", c.Addr(), cfg)
		require.NoError(t, err, "TLS handshake with the server")
		conn.Close()
		require.Equal(t, "h2", conn.ConnectionState().NegotiatedProtocol, "the protocol the server chose by ALPN")
	}
	// A server that cannot complete a handshake and answer a GET would fail every case by
	// timing out, one after the other, for minutes: say that once instead.
	n, err := spec.ServerDataLength(c)
	require.NoError(t, err, "h2spec's handshake and GET %s before the cases", c.Path)
	require.Equal(t, len(h2specBody), n, "the length of the response body h2spec read")
	return c
}

// h2specRun runs the cases of one transport, one after the other.
type h2specRun struct {
	c         *config.Config
	traces    int // failures left to trace
	serverLog caseLog
}

// group runs g's cases, then its subgroups', as h2spec's TestGroup.Test does, but with one
// subtest per case and without h2spec's printing to stdout.
func (r *h2specRun) group(t *testing.T, g *spec.TestGroup) {
	if g.Strict && !r.c.Strict {
		return
	}
	// h2spec numbers a group's cases in this order; the number addresses a case in its -s
	// flag and in this test's names.
	for i, tc := range slices.Concat(g.Tests, g.StrictTests) {
		if tc.Strict && !r.c.Strict {
			continue
		}
		t.Run(fmt.Sprintf("%s/%d %s", g.ID(), i+1, tc.Desc), func(t *testing.T) {
			r.serverLog.set(t)
			defer r.serverLog.set(nil)
			r.check(t, tc)
		})
	}
	for _, sub := range g.Groups {
		r.group(t, sub)
	}
}

// check runs tc and reports its result as t's.
func (r *h2specRun) check(t *testing.T, tc *spec.TestCase) {
	err := runH2SpecCase(r.c, tc)
	var te *spec.TestError
	switch {
	case err == nil:
		return
	case errors.Is(err, spec.ErrSkipped):
		t.Skip("h2spec skips the case: it does not apply to this server")
	case errors.As(err, &te) && slices.Contains(te.Expected, spec.ExpectedConnectionClosed) &&
		strings.Contains(te.Actual, syscall.ECONNRESET.Error()):
		// The server closed the connection, with a reset because it left bytes unread.
		// h2spec means to count that as closed but compares the *net.OpError's Err with
		// ECONNRESET, which the net package wraps in an *os.SyscallError.
		t.Logf("passes: the server reset the connection (h2spec: %s)", te.Actual)
		return
	case te != nil:
		t.Errorf("RFC requirement: %s\nexpected: %s\nactual:   %s",
			tc.Requirement, strings.Join(te.Expected, "\n      or: "), te.Actual)
	default:
		t.Errorf("RFC requirement: %s\nerror: %v", tc.Requirement, err)
	}
	if r.traces > 0 {
		r.traces--
		t.Logf("h2spec's frame trace of the case run again:\n%s", traceH2SpecCase(r.c, tc))
	}
}

// runH2SpecCase runs one case on a connection of its own, as h2spec's TestCase.Test does.
func runH2SpecCase(c *config.Config, tc *spec.TestCase) error {
	conn, err := spec.Dial(c)
	if err != nil {
		return fmt.Errorf("dial: %w", err)
	}
	defer conn.Close()
	return tc.Run(c, conn)
}

// ansiEscape matches the colour codes h2spec puts in its output when stdout is a terminal.
var ansiEscape = regexp.MustCompile(`\x1b\[[0-9;]*m`)

// traceH2SpecCase runs tc again in h2spec's verbose mode and returns what it printed: each
// frame sent and received. h2spec prints only to os.Stdout, so os.Stdout is a pipe meanwhile;
// that is safe because the cases do not run in parallel and the testing package writes to
// the stdout it kept when it started.
func traceH2SpecCase(c *config.Config, tc *spec.TestCase) string {
	pr, pw, err := os.Pipe()
	if err != nil {
		return err.Error()
	}
	out := make(chan string)
	go func() {
		b, _ := io.ReadAll(pr)
		pr.Close()
		out <- ansiEscape.ReplaceAllString(string(b), "")
	}()
	stdout := os.Stdout
	os.Stdout = pw
	vc := *c
	vc.Verbose = true
	err = runH2SpecCase(&vc, tc)
	os.Stdout = stdout
	pw.Close()
	result := "passed"
	if err != nil {
		result = strings.ReplaceAll(err.Error(), "\n", "; ")
	}
	return fmt.Sprintf("%s(second run: %s)", <-out, result)
}

// caseLog is the server's ErrorLog: it logs to the running case's subtest, so that what the
// server says about a connection h2spec provoked shows beside that case's result, and drops
// what comes between cases.
type caseLog struct {
	mu sync.Mutex
	t  *testing.T // nil between cases
}

func (l *caseLog) set(t *testing.T) {
	l.mu.Lock()
	l.t = t
	l.mu.Unlock()
}

func (l *caseLog) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.t != nil {
		l.t.Log(strings.TrimSuffix(string(p), "\n"))
	}
	return len(p), nil
}
