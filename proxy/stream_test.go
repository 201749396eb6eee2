package proxy_test

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httptrace"
	"net/textproto"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/sluiceproxy/sluice"
	"github.com/sluiceproxy/sluice/proxy"
)

// Server-sent events and other bodies of unknown length reach the client as they are
// written: the client reads the first event while the upstream holds back the second.
func TestStreamingFlush(t *testing.T) {
	for _, ct := range []string{"text/event-stream", "application/octet-stream"} {
		for _, method := range []string{"GET", "POST"} { // the lean client and net/http's Transport
			t.Run(ct+"/"+method, func(t *testing.T) {
				c := newCluster()
				next := make(chan struct{})
				var once sync.Once
				release := func() { once.Do(func() { close(next) }) }
				t.Cleanup(release)
				c.backend(t, "10.0.0.1:80", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
					w.Header().Set("Content-Type", ct)
					io.WriteString(w, "data: one\n\n")
					w.(http.Flusher).Flush()
					<-next
					io.WriteString(w, "data: two\n\n")
				}))
				srv := front(t, &proxy.Proxy{Picker: newPicker("10.0.0.1:80"), DialContext: c.dial})
				req, _ := http.NewRequest(method, srv.URL+"/events", nil)
				res, err := srv.Client().Do(req)
				require.NoError(t, err)
				defer res.Body.Close()
				assert.EqualValues(t, -1, res.ContentLength)
				br := bufio.NewReader(res.Body)
				line, err := readLine(br, 10*time.Second)
				require.NoError(t, err, "the first event must arrive while the upstream holds the second")
				assert.Equal(t, "data: one\n", line)
				release()
				rest, err := io.ReadAll(br)
				require.NoError(t, err)
				assert.Equal(t, "\ndata: two\n\n", string(rest))
			})
		}
	}
}

// uploadSink is an upstream that reads a request body, tells when it has the first MiB, and
// answers with the body's length and hash. With resetAfter > 0 it instead breaks the
// connection after reading that many bytes.
type uploadSink struct {
	firstMiB   chan struct{}
	once       sync.Once
	resetAfter int64
	hits       atomic.Int64
}

func (u *uploadSink) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	u.hits.Add(1)
	h := sha256.New()
	var n int64
	buf := make([]byte, 32<<10)
	for {
		m, err := r.Body.Read(buf)
		h.Write(buf[:m])
		n += int64(m)
		if u.resetAfter > 0 && n >= u.resetAfter {
			conn, _, err := http.NewResponseController(w).Hijack()
			if err == nil {
				conn.Close()
			}
			return
		}
		if n >= 1<<20 && u.firstMiB != nil {
			u.once.Do(func() { close(u.firstMiB) })
		}
		if err == io.EOF {
			break
		}
		if err != nil {
			http.Error(w, err.Error(), 400)
			return
		}
	}
	fmt.Fprintf(w, "%d %x", n, h.Sum(nil))
}

// A 10 MiB upload streams through the proxy: the upstream has read the first MiB before the
// client writes the second, so the proxy cannot be holding the body whole.
func TestLargeUploadStreams(t *testing.T) {
	const size = 10 << 20
	data := make([]byte, size)
	rng := rand.NewChaCha8([32]byte{1})
	rng.Read(data)
	sum := sha256.Sum256(data)

	c := newCluster()
	sink := &uploadSink{firstMiB: make(chan struct{})}
	c.backend(t, "10.0.0.1:80", sink)
	pk := newPicker("10.0.0.1:80")
	srv := front(t, &proxy.Proxy{Picker: pk, DialContext: c.dial})

	pr, pw := io.Pipe()
	wrote := make(chan error, 1)
	go func() {
		if _, err := pw.Write(data[:1<<20]); err != nil {
			wrote <- err
			return
		}
		select {
		case <-sink.firstMiB:
		case <-time.After(10 * time.Second):
			err := fmt.Errorf("the upstream did not get the first MiB before the client sent more")
			pw.CloseWithError(err)
			wrote <- err
			return
		}
		_, err := pw.Write(data[1<<20:])
		pw.Close()
		wrote <- err
	}()
	req, _ := http.NewRequest("PUT", srv.URL+"/blob", pr)
	req.ContentLength = size
	res, err := srv.Client().Do(req)
	require.NoError(t, err)
	body, _ := io.ReadAll(res.Body)
	res.Body.Close()
	require.NoError(t, <-wrote)
	assert.Equal(t, http.StatusOK, res.StatusCode)
	assert.Equal(t, fmt.Sprintf("%d %x", size, sum), string(body), "the upstream got the body whole and intact")
}

// A body larger than the replay limit is not retried when its connection breaks, even for an
// idempotent method; one within the limit is retried on the next endpoint.
func TestLargeBodyNotRetried(t *testing.T) {
	tests := []struct {
		size      int
		wantHits2 int64
	}{
		{10 << 20, 0},
		{32 << 10, 1},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprint(tt.size), func(t *testing.T) {
			c := newCluster()
			breaker := &uploadSink{resetAfter: int64(min(tt.size, 1<<20))}
			good := &uploadSink{}
			c.backend(t, "10.0.0.1:80", breaker)
			c.backend(t, "10.0.0.2:80", good)
			pk := newPicker("10.0.0.1:80", "10.0.0.2:80")
			srv := front(t, &proxy.Proxy{Picker: pk, DialContext: c.dial, Retry: proxy.Retry{Backoff: -1}})

			req, _ := http.NewRequest("PUT", srv.URL+"/blob", bytes.NewReader(make([]byte, tt.size)))
			res, err := srv.Client().Do(req)
			if err == nil {
				io.Copy(io.Discard, res.Body)
				res.Body.Close()
				if tt.wantHits2 == 0 {
					assert.Equal(t, http.StatusBadGateway, res.StatusCode)
				} else {
					assert.Equal(t, http.StatusOK, res.StatusCode)
				}
			} else {
				// The client may see its upload cut rather than the 502: either way it failed.
				assert.Zero(t, tt.wantHits2, "a retried request must succeed: %v", err)
			}
			assert.EqualValues(t, 1, breaker.hits.Load())
			assert.Equal(t, tt.wantHits2, good.hits.Load(), "retried only when the body was replayable")
			d := pk.dones()
			require.NotEmpty(t, d)
			assert.Equal(t, sluice.ConnectionFailure, d[0].Outcome.Failure)
		})
	}
}

// A client that sends "Expect: 100-continue" gets one 100 Continue before it sends its body,
// then the final response, whether the transport waits for the upstream's 100 before sending
// the body (the default) or sends it at once, so that the upstream's 100 comes after the
// client's.
func TestExpectContinue(t *testing.T) {
	c := newCluster()
	c.backend(t, "10.0.0.1:80", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body) // reading is what makes net/http send 100 Continue
		fmt.Fprintf(w, "got %s expect=%q", b, r.Header.Get("Expect"))
	}))
	tests := []struct {
		name      string
		transport http.RoundTripper
	}{
		{"waits for the upstream", nil},
		{"does not wait", &http.Transport{DialContext: c.dial, ExpectContinueTimeout: 0}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := front(t, &proxy.Proxy{Picker: newPicker("10.0.0.1:80"), DialContext: c.dial,
				Transport: tt.transport})
			conn, err := net.Dial("tcp", srv.Listener.Addr().String())
			require.NoError(t, err)
			defer conn.Close()
			conn.SetDeadline(time.Now().Add(10 * time.Second))
			_, err = io.WriteString(conn, "PUT /up HTTP/1.1\r\nHost: app.example\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n")
			require.NoError(t, err)
			tp := textproto.NewReader(bufio.NewReader(conn))
			line, err := tp.ReadLine()
			require.NoError(t, err, "100 Continue must arrive before the body is sent")
			assert.Equal(t, "HTTP/1.1 100 Continue", line)
			_, err = tp.ReadMIMEHeader()
			require.NoError(t, err)
			_, err = io.WriteString(conn, "hello")
			require.NoError(t, err)
			line, err = tp.ReadLine()
			require.NoError(t, err)
			assert.Equal(t, "HTTP/1.1 200 OK", line, "one 100 Continue, then the final response")
			hdr, err := tp.ReadMIMEHeader()
			require.NoError(t, err)
			body := make([]byte, len(`got hello expect="100-continue"`))
			_, err = io.ReadFull(tp.R, body)
			require.NoError(t, err)
			assert.Equal(t, `got hello expect="100-continue"`, string(body), "header %v", hdr)
		})
	}
}

// earlyHints is an upstream that sends 103 Early Hints with a Link field, then "page".
var earlyHints = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
	io.Copy(io.Discard, r.Body)
	w.Header().Set("Link", "</app.css>; rel=preload")
	w.WriteHeader(http.StatusEarlyHints)
	w.Header().Del("Link")
	io.WriteString(w, "page")
})

// 103 Early Hints pass through to the client, over every client and upstream protocol, and
// their fields do not leak into the final response.
func TestEarlyHints(t *testing.T) {
	tests := []struct {
		method   string
		frontTLS bool
		upstream proxy.Protocol
	}{
		{"GET", false, proxy.HTTP1},
		{"POST", false, proxy.HTTP1},
		{"GET", true, proxy.HTTP1},
		{"GET", false, proxy.H2C},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprintf("%s/tls=%t/%s", tt.method, tt.frontTLS, tt.upstream), func(t *testing.T) {
			c := newCluster()
			if tt.upstream == proxy.H2C {
				c.h2cBackend(t, "10.0.0.1:80", earlyHints)
			} else {
				c.backend(t, "10.0.0.1:80", earlyHints)
			}
			p := &proxy.Proxy{Picker: newPicker("10.0.0.1:80"), DialContext: c.dial, Protocol: tt.upstream}
			t.Cleanup(p.CloseIdleConnections)
			var url string
			var client *http.Client
			if tt.frontTLS {
				s, cl := frontend(t, p, true)
				url, client = s.URL, cl
			} else {
				s := front(t, p)
				url, client = s.URL, s.Client()
			}
			var mu sync.Mutex
			var got []string
			trace := &httptrace.ClientTrace{Got1xxResponse: func(code int, h textproto.MIMEHeader) error {
				mu.Lock()
				defer mu.Unlock()
				got = append(got, fmt.Sprintf("%d %s", code, h.Get("Link")))
				return nil
			}}
			req, _ := http.NewRequest(tt.method, url, nil)
			req = req.WithContext(httptrace.WithClientTrace(req.Context(), trace))
			res, body := do(t, client, req)
			assert.Equal(t, "page", body)
			assert.Equal(t, 200, res.StatusCode)
			assert.Empty(t, res.Header.Get("Link"), "the hint's fields belong to the 103 only")
			mu.Lock()
			defer mu.Unlock()
			assert.Equal(t, []string{"103 </app.css>; rel=preload"}, got)
		})
	}
}

// An HTTP/1.0 client is never sent a 1xx response (RFC 9110 §15.2), whichever path forwards
// it: the lean client (GET over HTTP1), net/http's Transport (POST) or HTTP/2 (H2C). An
// HTTP/1.1 client on the same path gets the 103, so the test sees the difference.
func TestNo1xxToHTTP10Clients(t *testing.T) {
	for _, upstream := range []proxy.Protocol{proxy.HTTP1, proxy.H2C} {
		for _, method := range []string{"GET", "POST"} {
			for _, proto := range []string{"HTTP/1.0", "HTTP/1.1"} {
				t.Run(fmt.Sprintf("%s/%s/%s", upstream, method, proto), func(t *testing.T) {
					c := newCluster()
					if upstream == proxy.H2C {
						c.h2cBackend(t, "10.0.0.1:80", earlyHints)
					} else {
						c.backend(t, "10.0.0.1:80", earlyHints)
					}
					srv := front(t, &proxy.Proxy{Picker: newPicker("10.0.0.1:80"), DialContext: c.dial,
						Protocol: upstream})
					conn, err := net.Dial("tcp", srv.Listener.Addr().String())
					require.NoError(t, err)
					defer conn.Close()
					conn.SetDeadline(time.Now().Add(10 * time.Second))
					req := method + " /page " + proto + "\r\nHost: app.example\r\nConnection: close\r\n"
					if method == "POST" {
						req += "Content-Length: 1\r\n\r\nx"
					} else {
						req += "\r\n"
					}
					_, err = io.WriteString(conn, req)
					require.NoError(t, err)

					tp := textproto.NewReader(bufio.NewReader(conn))
					var heads []string
					var hdr textproto.MIMEHeader
					for {
						line, err := tp.ReadLine()
						require.NoError(t, err, "after %q", heads)
						heads = append(heads, line)
						hdr, err = tp.ReadMIMEHeader()
						require.NoError(t, err)
						if !strings.HasPrefix(line, proto+" 1") || len(heads) > 3 {
							break
						}
					}
					body, err := io.ReadAll(tp.R)
					require.NoError(t, err)
					assert.Equal(t, "page", string(body))
					assert.Empty(t, hdr.Get("Link"), "the hint's fields belong to the 103 only")
					if proto == "HTTP/1.0" {
						assert.Equal(t, []string{"HTTP/1.0 200 OK"}, heads, "no 1xx to an HTTP/1.0 client")
					} else {
						assert.Equal(t, []string{"HTTP/1.1 103 Early Hints", "HTTP/1.1 200 OK"}, heads)
					}
				})
			}
		}
	}
}

func do(t testing.TB, c *http.Client, req *http.Request) (*http.Response, string) {
	t.Helper()
	res, err := c.Do(req)
	require.NoError(t, err)
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	require.NoError(t, err)
	return res, string(b)
}

// Trailers of a chunked HTTP/1.1 upstream response reach HTTP/1.1 and HTTP/2 clients, through
// the lean client (GET) and net/http's Transport (POST), announced or not.
func TestTrailersHTTP1Upstream(t *testing.T) {
	c := newCluster()
	c.backend(t, "10.0.0.1:80", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Query().Has("announce") {
			w.Header().Set("Trailer", "X-Checksum")
			io.WriteString(w, "body")
			w.Header().Set("X-Checksum", "abc")
			return
		}
		io.WriteString(w, "body")
		w.(http.Flusher).Flush()
		w.Header().Set(http.TrailerPrefix+"X-Checksum", "abc")
	}))
	p := &proxy.Proxy{Picker: newPicker("10.0.0.1:80"), DialContext: c.dial}
	t.Cleanup(p.CloseIdleConnections)
	h1 := front(t, p)
	h2, h2client := frontend(t, p, true)
	for _, client := range []struct {
		name string
		url  string
		c    *http.Client
	}{{"http1", h1.URL, h1.Client()}, {"h2", h2.URL, h2client}} {
		for _, method := range []string{"GET", "POST"} {
			for _, q := range []string{"", "?announce"} {
				t.Run(client.name+"/"+method+q, func(t *testing.T) {
					req, _ := http.NewRequest(method, client.url+"/"+q, nil)
					res, body := do(t, client.c, req)
					assert.Equal(t, "body", body)
					assert.Equal(t, "abc", res.Trailer.Get("X-Checksum"), "the trailer must reach the client")
					assert.Empty(t, res.Header.Get("X-Checksum"))
				})
			}
		}
	}
}

// A client that leaves in the middle of an endless stream cancels the upstream request; the
// access record says the client went away, and the endpoint is not blamed.
func TestClientGoneMidStream(t *testing.T) {
	for _, method := range []string{"GET", "POST"} {
		t.Run(method, func(t *testing.T) {
			c := newCluster()
			upstreamDone := make(chan struct{})
			c.backend(t, "10.0.0.1:80", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				defer close(upstreamDone)
				io.Copy(io.Discard, r.Body)
				w.Header().Set("Content-Type", "text/event-stream")
				for {
					if _, err := io.WriteString(w, "data: tick\n\n"); err != nil {
						return
					}
					w.(http.Flusher).Flush()
					select {
					case <-r.Context().Done():
						return
					case <-time.After(time.Millisecond):
					}
				}
			}))
			pk := newPicker("10.0.0.1:80")
			var m metrics
			served := make(chan struct{})
			p := &proxy.Proxy{Picker: pk, DialContext: c.dial, Hooks: m.hooks()}
			srv := front(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				defer close(served)
				p.ServeHTTP(w, r)
			}))
			var body io.Reader
			if method == "POST" {
				body = bytes.NewReader([]byte("x"))
			}
			req, _ := http.NewRequest(method, srv.URL, body)
			res, err := srv.Client().Do(req)
			require.NoError(t, err)
			line, err := readLine(bufio.NewReader(res.Body), 10*time.Second)
			require.NoError(t, err)
			assert.Equal(t, "data: tick\n", line)
			res.Body.Close() // the client leaves
			waitClosed(t, upstreamDone, "the upstream stream must be canceled when the client leaves")
			waitClosed(t, served, "the proxy must stop serving")
			m.mu.Lock()
			defer m.mu.Unlock()
			require.Len(t, m.stats, 1)
			assert.Equal(t, sluice.Canceled, m.stats[0].Failure)
			d := pk.dones()
			require.Len(t, d, 1)
			assert.False(t, d[0].Outcome.ServerError(), "the endpoint did nothing wrong: %+v", d[0].Outcome)
		})
	}
}
