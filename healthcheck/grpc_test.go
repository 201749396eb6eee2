package healthcheck_test

import (
	"context"
	"crypto/tls"
	"encoding/binary"
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/sluiceproxy/sluice"
	"github.com/sluiceproxy/sluice/healthcheck"
)

// healthServer is a grpc.health.v1 Health server written on net/http: it speaks the gRPC
// framing (length-prefixed messages, status in trailers) without grpc-go.
type healthServer struct {
	mu       sync.Mutex
	statuses map[string]uint64 // service → ServingStatus; a missing service is NOT_FOUND
	hang     bool
	calls    []grpcCall
}

type grpcCall struct {
	service, timeout, te string
	proto                int
}

func (s *healthServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost || r.URL.Path != "/grpc.health.v1.Health/Check" ||
		r.Header.Get("Content-Type") != "application/grpc" {
		http.Error(w, "not a health check call", http.StatusBadRequest)
		return
	}
	body, err := io.ReadAll(r.Body)
	if err != nil || len(body) < 5 || body[0] != 0 || int(binary.BigEndian.Uint32(body[1:5])) != len(body)-5 {
		http.Error(w, "bad gRPC frame", http.StatusBadRequest)
		return
	}
	// HealthCheckRequest: field 1, string service.
	msg, service := body[5:], ""
	if len(msg) > 0 {
		n, k := binary.Uvarint(msg[1:])
		if msg[0] != 0x0a || k <= 0 || int(n) != len(msg)-1-k {
			http.Error(w, "bad HealthCheckRequest", http.StatusBadRequest)
			return
		}
		service = string(msg[1+k:])
	}
	s.mu.Lock()
	s.calls = append(s.calls, grpcCall{service, r.Header.Get("Grpc-Timeout"), r.Header.Get("Te"), r.ProtoMajor})
	status, known := s.statuses[service]
	hang := s.hang
	s.mu.Unlock()
	if hang {
		<-r.Context().Done()
		return
	}
	w.Header().Set("Content-Type", "application/grpc")
	if !known { // a trailers-only response
		w.Header().Set("Grpc-Status", "5")
		w.Header().Set("Grpc-Message", "unknown%20service%20"+service)
		w.WriteHeader(http.StatusOK)
		return
	}
	w.Header().Set("Trailer", "Grpc-Status, Grpc-Message")
	w.WriteHeader(http.StatusOK)
	var resp []byte
	if status != 0 { // proto3 leaves default values out
		resp = binary.AppendUvarint([]byte{0x08}, status)
	}
	frame := binary.BigEndian.AppendUint32([]byte{0}, uint32(len(resp)))
	w.Write(append(frame, resp...))
	w.Header().Set("Grpc-Status", "0")
}

func (s *healthServer) lastCall() grpcCall {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.calls) == 0 {
		return grpcCall{}
	}
	return s.calls[len(s.calls)-1]
}

// newH2CServer serves h over cleartext HTTP/2 with prior knowledge, as gRPC servers do.
func newH2CServer(h http.Handler) *httptest.Server {
	srv := httptest.NewUnstartedServer(h)
	srv.Config.Protocols = new(http.Protocols)
	srv.Config.Protocols.SetUnencryptedHTTP2(true)
	srv.Start()
	return srv
}

func TestGRPCProbe(t *testing.T) {
	hs := &healthServer{statuses: map[string]uint64{"": 1, "shop.Cart": 1, "shop.Pay": 2, "shop.Odd": 3, "shop.Zero": 0}}
	h2c := newH2CServer(hs)
	defer h2c.Close()
	h2 := httptest.NewUnstartedServer(hs)
	h2.EnableHTTP2 = true
	h2.StartTLS()
	defer h2.Close()
	h1 := httptest.NewServer(hs) // HTTP/1 only: not a gRPC server
	defer h1.Close()

	addr := func(s *httptest.Server) sluice.Endpoint { return sluice.Endpoint{Addr: s.Listener.Addr().String()} }
	pool := h2.Client().Transport.(*http.Transport).TLSClientConfig.RootCAs
	for _, tc := range []struct {
		name    string
		probe   *healthcheck.GRPC
		srv     *httptest.Server
		wantErr string
	}{
		{"server as a whole, h2c", &healthcheck.GRPC{}, h2c, ""},
		{"a serving service", &healthcheck.GRPC{Service: "shop.Cart"}, h2c, ""},
		{"NOT_SERVING", &healthcheck.GRPC{Service: "shop.Pay"}, h2c, "gRPC health status NOT_SERVING"},
		{"SERVICE_UNKNOWN", &healthcheck.GRPC{Service: "shop.Odd"}, h2c, "SERVICE_UNKNOWN"},
		{"a response without status is UNKNOWN", &healthcheck.GRPC{Service: "shop.Zero"}, h2c, "gRPC health status UNKNOWN"},
		{"trailers-only NOT_FOUND", &healthcheck.GRPC{Service: "shop.Gone"}, h2c, "gRPC status 5: unknown service shop.Gone"},
		{"h2 over TLS, unverified", &healthcheck.GRPC{TLS: true, Service: "shop.Cart"}, h2, ""},
		{"h2 over TLS, verified", &healthcheck.GRPC{TLS: true, TLSConfig: &tls.Config{RootCAs: pool, ServerName: "example.com"}}, h2, ""},
		{"TLS verification failure", &healthcheck.GRPC{TLS: true, TLSConfig: &tls.Config{ServerName: "example.com"}}, h2, "certificate"},
		{"cleartext to a TLS server", &healthcheck.GRPC{}, h2, ""},
		{"not an HTTP/2 server", &healthcheck.GRPC{}, h1, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			err := tc.probe.Check(ctx, addr(tc.srv))
			switch {
			case tc.srv != h2c && tc.srv != h2 || tc.name == "cleartext to a TLS server":
				assert.Error(t, err, "a probe of a server that does not speak gRPC fails")
			case tc.wantErr != "":
				assert.ErrorContains(t, err, tc.wantErr)
			default:
				require.NoError(t, err)
				call := hs.lastCall()
				assert.Equal(t, tc.probe.Service, call.service, "the request names the service")
				assert.Equal(t, "trailers", call.te)
				assert.Equal(t, 2, call.proto)
				assert.Regexp(t, `^[0-9]{1,8}m$`, call.timeout, "the deadline travels as grpc-timeout")
			}
		})
	}
}

func TestGRPCProbeTimeout(t *testing.T) {
	hs := &healthServer{hang: true}
	srv := newH2CServer(hs)
	defer srv.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	err := (&healthcheck.GRPC{}).Check(ctx, sluice.Endpoint{Addr: srv.Listener.Addr().String()})
	assert.ErrorIs(t, err, context.DeadlineExceeded)
}

// The checker drives a gRPC probe end to end: a service that stops serving is marked
// unhealthy.
func TestGRPCProbeInChecker(t *testing.T) {
	hs := &healthServer{statuses: map[string]uint64{"shop.Cart": 1}}
	srv := newH2CServer(hs)
	defer srv.Close()
	rec := newRecorder()
	hc, err := healthcheck.New(healthcheck.Options{
		Probe:              &healthcheck.GRPC{Service: "shop.Cart"},
		Interval:           20 * time.Millisecond,
		UnhealthyThreshold: 1,
		InitialState:       sluice.Unhealthy,
		Hooks:              healthcheck.Hooks{Change: rec.event},
	})
	require.NoError(t, err)
	stop := run(t, hc, rec)
	defer stop()
	addr := srv.Listener.Addr().String()
	hc.Update(endpoints(addr))
	rec.waitFor(t, 5*time.Second, "serving", func() bool { return rec.state(addr) == sluice.Ready })
	hs.mu.Lock()
	hs.statuses["shop.Cart"] = 2
	hs.mu.Unlock()
	rec.waitFor(t, 5*time.Second, "not serving", func() bool { return rec.state(addr) == sluice.Unhealthy })
	ev := rec.eventsFor(addr)
	assert.ErrorContains(t, ev[len(ev)-1].Err, "NOT_SERVING")
}
