package healthcheck

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"

	"github.com/sluiceproxy/sluice"
)

// GRPC is a probe that speaks the gRPC health-checking protocol (grpc.health.v1.Health/Check)
// and passes when the server answers SERVING.
//
// It is a minimal gRPC client written on net/http's own HTTP/2 rather than grpc-go: one
// unary call over a fresh HTTP/2 connection — cleartext with prior knowledge (h2c), or TLS
// with ALPN "h2" — closed when the call ends. The request and response messages are two tiny
// protobufs, encoded and decoded here by hand.
type GRPC struct {
	// Service is the service name to ask about. Empty asks about the server as a whole.
	Service string

	// Port, when not zero, is probed instead of the endpoint's own port.
	Port int

	// Authority is the :authority of the call. Empty means the probed address.
	Authority string

	// TLS probes over TLS (h2) instead of cleartext (h2c). Unless TLSConfig says otherwise
	// the certificate is not verified; see HTTP.HTTPS for why.
	TLS bool

	// TLSConfig configures TLS when TLS is set. Its NextProtos is replaced with "h2".
	TLSConfig *tls.Config
}

// gRPC framing and the grpc.health.v1 messages.
const (
	grpcHealthPath   = "/grpc.health.v1.Health/Check"
	grpcFrameHeader  = 5        // compressed flag and a 4-byte big-endian length
	maxGRPCResponse  = 64 << 10 // a HealthCheckResponse is two bytes; anything big is wrong
	servingStatusKey = 1 << 3   // field 1 (status), wire type varint (0)
	serviceKey       = 1<<3 | 2 // field 1 (service), wire type length-delimited
)

// ServingStatus is grpc.health.v1.HealthCheckResponse.ServingStatus.
type servingStatus uint64

const (
	statusUnknown servingStatus = iota
	statusServing
	statusNotServing
	statusServiceUnknown
)

func (s servingStatus) String() string {
	switch s {
	case statusUnknown:
		return "UNKNOWN"
	case statusServing:
		return "SERVING"
	case statusNotServing:
		return "NOT_SERVING"
	case statusServiceUnknown:
		return "SERVICE_UNKNOWN"
	}
	return fmt.Sprintf("status %d", uint64(s))
}

// encodeHealthRequest returns a HealthCheckRequest{service} in its gRPC frame.
func encodeHealthRequest(service string) []byte {
	var msg []byte
	if service != "" {
		msg = append(msg, serviceKey)
		msg = binary.AppendUvarint(msg, uint64(len(service)))
		msg = append(msg, service...)
	}
	frame := make([]byte, grpcFrameHeader, grpcFrameHeader+len(msg))
	binary.BigEndian.PutUint32(frame[1:], uint32(len(msg)))
	return append(frame, msg...)
}

var errGRPCFrame = errors.New("healthcheck: malformed gRPC response message")

// decodeHealthResponse reads the single gRPC message of a response body and returns the
// status field of the HealthCheckResponse in it. Unknown fields are skipped, as protobuf
// requires; a missing status is UNKNOWN.
func decodeHealthResponse(body []byte) (servingStatus, error) {
	if len(body) < grpcFrameHeader {
		return 0, fmt.Errorf("%w: %d bytes, want at least %d", errGRPCFrame, len(body), grpcFrameHeader)
	}
	if body[0] != 0 {
		return 0, fmt.Errorf("%w: compressed flag %d on a call that accepts no compression", errGRPCFrame, body[0])
	}
	n := binary.BigEndian.Uint32(body[1:grpcFrameHeader])
	msg := body[grpcFrameHeader:]
	if uint64(n) != uint64(len(msg)) {
		return 0, fmt.Errorf("%w: length prefix %d, but %d bytes follow", errGRPCFrame, n, len(msg))
	}
	status := statusUnknown
	for len(msg) > 0 {
		key, k := binary.Uvarint(msg)
		if k <= 0 || key>>3 == 0 {
			return 0, fmt.Errorf("%w: bad field key", errGRPCFrame)
		}
		msg = msg[k:]
		switch key & 7 {
		case 0: // varint
			v, k := binary.Uvarint(msg)
			if k <= 0 {
				return 0, fmt.Errorf("%w: bad varint", errGRPCFrame)
			}
			msg = msg[k:]
			if key == servingStatusKey {
				status = servingStatus(v)
			}
		case 1: // 64-bit
			if len(msg) < 8 {
				return 0, fmt.Errorf("%w: truncated fixed64", errGRPCFrame)
			}
			msg = msg[8:]
		case 2: // length-delimited
			l, k := binary.Uvarint(msg)
			if k <= 0 || l > uint64(len(msg)-k) {
				return 0, fmt.Errorf("%w: bad length", errGRPCFrame)
			}
			msg = msg[k+int(l):]
		case 5: // 32-bit
			if len(msg) < 4 {
				return 0, fmt.Errorf("%w: truncated fixed32", errGRPCFrame)
			}
			msg = msg[4:]
		default:
			return 0, fmt.Errorf("%w: unsupported wire type %d", errGRPCFrame, key&7)
		}
	}
	return status, nil
}

// grpcStatusError is a call that ended with a grpc-status other than 0 (OK).
type grpcStatusError struct {
	code, message string
}

func (e *grpcStatusError) Error() string {
	if e.message == "" {
		return "healthcheck: gRPC status " + e.code
	}
	return "healthcheck: gRPC status " + e.code + ": " + e.message
}

func grpcStatus(h http.Header) error {
	code := h.Get("Grpc-Status")
	if code == "0" {
		return nil
	}
	if code == "" {
		return errors.New("healthcheck: gRPC response without grpc-status")
	}
	msg := h.Get("Grpc-Message")
	if m, err := url.PathUnescape(msg); err == nil {
		msg = m
	}
	return &grpcStatusError{code: code, message: msg}
}

// Check makes one grpc.health.v1.Health/Check call to ep over a new connection.
func (p *GRPC) Check(ctx context.Context, ep sluice.Endpoint) error {
	if err := validPort(p.Port); err != nil {
		return err
	}
	addr, err := probeAddr(ep, p.Port)
	if err != nil {
		return err
	}
	var d net.Dialer
	t := &http.Transport{
		Proxy:              nil, // a probe goes to the endpoint itself, never through HTTP_PROXY
		DialContext:        d.DialContext,
		DisableCompression: true,
		Protocols:          new(http.Protocols),
		// As for HTTP probes: a health answer's head is small.
		MaxResponseHeaderBytes: 64 << 10,
	}
	scheme := "http"
	if p.TLS {
		scheme = "https"
		t.Protocols.SetHTTP2(true)
		t.DialTLSContext = func(ctx context.Context, network, addr string) (net.Conn, error) {
			conn, err := d.DialContext(ctx, network, addr)
			if err != nil {
				return nil, err
			}
			return p.handshake(ctx, conn, addr)
		}
	} else {
		t.Protocols.SetUnencryptedHTTP2(true) // h2c with prior knowledge
	}
	cc, err := t.NewClientConn(ctx, scheme, addr)
	if err != nil {
		return err
	}
	defer cc.Close()

	authority := p.Authority
	if authority == "" {
		authority = addr
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, scheme+"://"+authority+grpcHealthPath,
		bytes.NewReader(encodeHealthRequest(p.Service)))
	if err != nil {
		return fmt.Errorf("healthcheck: bad gRPC probe: %w", err)
	}
	req.Header["Content-Type"] = []string{"application/grpc"}
	req.Header["Te"] = []string{"trailers"}
	req.Header["User-Agent"] = []string{"sluice-healthcheck"}
	if t := deadlineHeader(ctx); t != "" {
		req.Header["Grpc-Timeout"] = []string{t}
	}
	res, err := cc.RoundTrip(req)
	if err != nil {
		return err
	}
	defer res.Body.Close()
	if res.StatusCode != http.StatusOK {
		return fmt.Errorf("healthcheck: gRPC call answered with HTTP status %d", res.StatusCode)
	}
	if res.Header.Get("Grpc-Status") != "" { // a trailers-only response: no message
		if err := grpcStatus(res.Header); err != nil {
			return err
		}
		return errors.New("healthcheck: gRPC response without a message")
	}
	if ct := res.Header.Get("Content-Type"); !strings.HasPrefix(ct, "application/grpc") {
		return fmt.Errorf("healthcheck: gRPC response with content-type %q", ct)
	}
	body, err := io.ReadAll(io.LimitReader(res.Body, maxGRPCResponse+1))
	if err != nil {
		return fmt.Errorf("healthcheck: reading gRPC response: %w", err)
	}
	if len(body) > maxGRPCResponse {
		return fmt.Errorf("%w: larger than %d bytes", errGRPCFrame, maxGRPCResponse)
	}
	if err := grpcStatus(res.Trailer); err != nil {
		return err
	}
	status, err := decodeHealthResponse(body)
	if err != nil {
		return err
	}
	if status != statusServing {
		return fmt.Errorf("healthcheck: gRPC health status %v", status)
	}
	return nil
}

func (p *GRPC) handshake(ctx context.Context, conn net.Conn, addr string) (net.Conn, error) {
	var cfg *tls.Config
	if p.TLSConfig != nil {
		cfg = p.TLSConfig.Clone()
	} else {
		cfg = &tls.Config{InsecureSkipVerify: true}
	}
	cfg.NextProtos = []string{"h2"}
	if cfg.ServerName == "" {
		host := addr
		if h, _, err := net.SplitHostPort(addr); err == nil {
			host = h
		}
		cfg.ServerName = host
	}
	tc := tls.Client(conn, cfg)
	if err := tc.HandshakeContext(ctx); err != nil {
		conn.Close()
		return nil, err
	}
	if proto := tc.ConnectionState().NegotiatedProtocol; proto != "h2" {
		tc.Close()
		return nil, fmt.Errorf("healthcheck: gRPC server at %s negotiated %q, want h2", addr, proto)
	}
	return tc, nil
}
