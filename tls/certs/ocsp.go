package certs

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"time"

	"golang.org/x/crypto/ocsp"
)

// DefaultStapleInterval is how often [Stapler.Run] checks staples when Interval is zero.
const DefaultStapleInterval = 10 * time.Minute

// maxOCSPResponse bounds what is read from a responder; real responses are a few KB.
const maxOCSPResponse = 1 << 20

// Stapler keeps OCSP responses stapled to the certificates in a Keyring, so that clients learn
// a certificate is not revoked without asking the CA themselves.
//
// On each pass it looks at every certificate that names an OCSP responder and carries its
// issuer as the second certificate of its chain. A staple is fetched when there is none or
// when the current one is past half of its validity (between ThisUpdate and NextUpdate), and is
// stapled only if it says Good: a Revoked or Unknown answer is reported and the certificate
// is served without a staple. Certificates without a responder or issuer are left alone.
// When a source replaces a certificate, the replacement is served unstapled until the next
// pass.
//
// Stapler is configured through its exported fields, which must not change after the first
// call to Refresh or Run.
type Stapler struct {
	// Keyring holds the certificates to staple. Required.
	Keyring *Keyring

	// Client makes the requests to responders. Nil means a client with a 10 s timeout.
	Client *http.Client

	// Interval is the time between passes in Run. Zero means DefaultStapleInterval.
	Interval time.Duration

	// Now returns the current time. Nil means time.Now.
	Now func() time.Time

	// OnError, if not nil, is called by Run with every failure, without any lock held.
	// If nil, errors are logged to Logger.
	OnError func(error)
	// Logger receives errors and new staples. Nil means slog.Default().
	Logger *slog.Logger
}

// errNotGood marks a valid OCSP answer other than Good.
var errNotGood = errors.New("certificate status is not good")

var defaultOCSPClient = &http.Client{Timeout: 10 * time.Second}

// Refresh makes one pass over the keyring and returns the failures of this pass, joined.
func (s *Stapler) Refresh(ctx context.Context) error {
	if s.Keyring == nil {
		return errors.New("certs: Stapler.Keyring is nil")
	}
	now := time.Now
	if s.Now != nil {
		now = s.Now
	}
	var errs []error
	for _, key := range s.Keyring.Keys() {
		cert := s.Keyring.Get(key)
		if cert == nil || !staplable(cert) || fresh(cert.OCSPStaple, now()) {
			continue
		}
		staple, err := s.fetch(ctx, cert)
		if err != nil && !errors.Is(err, errNotGood) {
			errs = append(errs, fmt.Errorf("certs: OCSP for %q: %w", key, err))
			continue
		}
		if err != nil {
			// Revoked or unknown: stop stapling the earlier Good answer too.
			errs = append(errs, fmt.Errorf("certs: OCSP for %q: %w", key, err))
			staple = nil
			if cert.OCSPStaple == nil {
				continue
			}
		}
		stapled := *cert
		stapled.OCSPStaple = staple
		if s.Keyring.replaceIf(key, cert, &stapled) && staple != nil {
			s.logger().Info("certs: stapled OCSP response", "key", key)
		}
	}
	return errors.Join(errs...)
}

// Run refreshes at once, then every Interval until ctx is done, reporting errors to OnError
// or Logger. It returns ctx.Err().
func (s *Stapler) Run(ctx context.Context) error {
	interval := s.Interval
	if interval <= 0 {
		interval = DefaultStapleInterval
	}
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		if err := s.Refresh(ctx); err != nil && ctx.Err() == nil {
			if s.OnError != nil {
				s.OnError(err)
			} else {
				s.logger().Error("certs: OCSP stapling", "err", err)
			}
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
	}
}

func (s *Stapler) fetch(ctx context.Context, cert *tls.Certificate) ([]byte, error) {
	issuer, err := x509.ParseCertificate(cert.Certificate[1])
	if err != nil {
		return nil, fmt.Errorf("issuer: %w", err)
	}
	req, err := ocsp.CreateRequest(cert.Leaf, issuer, nil)
	if err != nil {
		return nil, err
	}
	url := cert.Leaf.OCSPServer[0]
	hreq, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(req))
	if err != nil {
		return nil, err
	}
	hreq.Header.Set("Content-Type", "application/ocsp-request")
	hreq.Header.Set("Accept", "application/ocsp-response")
	client := s.Client
	if client == nil {
		client = defaultOCSPClient
	}
	resp, err := client.Do(hreq)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("responder %s: %s", url, resp.Status)
	}
	raw, err := io.ReadAll(io.LimitReader(resp.Body, maxOCSPResponse))
	if err != nil {
		return nil, err
	}
	parsed, err := ocsp.ParseResponseForCert(raw, cert.Leaf, issuer)
	if err != nil {
		return nil, err
	}
	if parsed.Status != ocsp.Good {
		return nil, fmt.Errorf("%w: responder %s says %s", errNotGood, url, statusName(parsed.Status))
	}
	return raw, nil
}

func (s *Stapler) logger() *slog.Logger {
	if s.Logger != nil {
		return s.Logger
	}
	return slog.Default()
}

func staplable(cert *tls.Certificate) bool {
	return cert.Leaf != nil && len(cert.Leaf.OCSPServer) > 0 && len(cert.Certificate) > 1
}

// fresh reports whether staple is before the midpoint of its validity at now. The signature
// was checked when it was fetched.
func fresh(staple []byte, now time.Time) bool {
	if len(staple) == 0 {
		return false
	}
	r, err := ocsp.ParseResponse(staple, nil)
	if err != nil || r.NextUpdate.IsZero() {
		return false
	}
	mid := r.ThisUpdate.Add(r.NextUpdate.Sub(r.ThisUpdate) / 2)
	return now.Before(mid)
}

func statusName(s int) string {
	switch s {
	case ocsp.Good:
		return "good"
	case ocsp.Revoked:
		return "revoked"
	}
	return "unknown"
}
