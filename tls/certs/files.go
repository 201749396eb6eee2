package certs

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"time"
)

// DefaultInterval is how often [Files.Run] polls when Files.Interval is zero.
const DefaultInterval = 10 * time.Second

// KeyPair names a certificate file and its key file.
type KeyPair struct {
	// CertFile holds the PEM certificate chain, leaf first.
	CertFile string
	// KeyFile holds the PEM private key.
	KeyFile string
	// Key is the key the pair is stored under in the Keyring. Empty means CertFile.
	Key string
}

func (p KeyPair) storeKey() string {
	if p.Key != "" {
		return p.Key
	}
	return p.CertFile
}

// Files keeps certificates and a CA bundle loaded from PEM files current.
//
// Each poll reads every file and compares its content with what was last seen, not its
// modification time: a Kubernetes Secret volume changes by swapping a "..data" symlink, which
// leaves the visible files' times alone, and editors and `cp` may keep times coarse. Unchanged
// content costs a read and a hash. Changed content is parsed; if it parses, the new certificate
// replaces the old one atomically, so the next handshake uses it. If it does not (a truncated
// write, a key that does not match its certificate), the error is reported once for that
// content and the old certificate keeps serving until a later poll sees a good pair. Writers
// should still replace files atomically (write then rename) so that no poll sees half of a
// rotation.
//
// Files is configured through its exported fields, which must not change after the first call
// to Load or Run.
type Files struct {
	// Keyring receives the key pairs. It is required when KeyPairs is not empty.
	Keyring *Keyring
	// KeyPairs are the certificate and key files to serve. They are stored in this order, so
	// that, unless [Keyring.SetDefault] has chosen another, the first pair that loads is the
	// default certificate, served to clients without SNI.
	KeyPairs []KeyPair

	// CAs receives the pool parsed from CAFile, for client-certificate verification
	// ([ServerOptions.ClientCAs]) or upstream verification ([ClientOptions.RootCAs]).
	// It is required when CAFile is set.
	CAs *CAPool
	// CAFile holds one or more PEM CA certificates.
	CAFile string

	// Interval is the time between polls in Run. Zero means DefaultInterval.
	Interval time.Duration

	// OnError, if not nil, is called by Run with every load error, without any lock held.
	// If nil, errors are logged to Logger.
	OnError func(error)
	// Logger receives load errors and rotations. Nil means slog.Default().
	Logger *slog.Logger

	// mu serializes loads and protects seen.
	mu sync.Mutex
	// seen maps each file set (keyring key, or CAFile) to the hash of the content last handled,
	// good or bad, so that each distinct content is parsed and reported once.
	seen map[string][sha256.Size]byte
}

// Load reads every file once and applies those whose content changed since the last Load. It
// returns the errors of this pass, joined; files that failed keep their previous content in
// effect. Call it before serving to fail fast on a bad initial configuration.
func (f *Files) Load() error {
	if len(f.KeyPairs) > 0 && f.Keyring == nil {
		return errors.New("certs: Files.Keyring is nil but KeyPairs are set")
	}
	if f.CAFile != "" && f.CAs == nil {
		return errors.New("certs: Files.CAs is nil but CAFile is set")
	}

	f.mu.Lock()
	defer f.mu.Unlock()
	if f.seen == nil {
		f.seen = make(map[string][sha256.Size]byte)
	}

	var errs []error
	changes := make(map[string]*tls.Certificate)
	var order []string // KeyPairs order, which decides the Keyring's default
	for _, p := range f.KeyPairs {
		key := p.storeKey()
		certPEM, keyPEM, sum, err := readPair(p)
		if err != nil {
			sum = sha256.Sum256([]byte("error: " + err.Error()))
		}
		if prev, ok := f.seen[key]; ok && prev == sum {
			continue
		}
		f.seen[key] = sum
		if err != nil {
			errs = append(errs, err)
			f.loadFailed(key, err)
			continue
		}
		cert, err := ParseKeyPair(certPEM, keyPEM)
		if err != nil {
			err = fmt.Errorf("%w (files %s, %s)", err, p.CertFile, p.KeyFile)
			errs = append(errs, err)
			f.loadFailed(key, err)
			continue
		}
		changes[key] = cert
		order = append(order, key)
		f.logger().Info("certs: loaded certificate", "key", key, "file", p.CertFile,
			"names", cert.Leaf.DNSNames, "not_after", cert.Leaf.NotAfter)
	}
	if len(changes) > 0 {
		if err := f.Keyring.update(order, changes); err != nil {
			errs = append(errs, err)
		}
	}

	if f.CAFile != "" {
		b, err := os.ReadFile(f.CAFile)
		sum := sha256.Sum256(b)
		if err != nil {
			sum = sha256.Sum256([]byte("error: " + err.Error()))
		}
		if prev, ok := f.seen[f.CAFile]; !ok || prev != sum {
			f.seen[f.CAFile] = sum
			if err != nil {
				errs = append(errs, fmt.Errorf("certs: %w", err))
			} else if pool, err := ParseCertPool(b); err != nil {
				errs = append(errs, fmt.Errorf("%w (file %s)", err, f.CAFile))
			} else {
				f.CAs.Set(pool)
				f.logger().Info("certs: loaded CA bundle", "file", f.CAFile)
			}
		}
	}
	return errors.Join(errs...)
}

// Run loads the files, then polls them every Interval until ctx is done, reporting errors to
// OnError or Logger. It returns ctx.Err().
func (f *Files) Run(ctx context.Context) error {
	interval := f.Interval
	if interval <= 0 {
		interval = DefaultInterval
	}
	f.report(f.Load())
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
			f.report(f.Load())
		}
	}
}

// loadFailed reports a key pair that could not be loaded to the Keyring's Hooks.Load. f.mu is
// held, which is Files' own lock, not the keyring's.
func (f *Files) loadFailed(key string, err error) {
	if f.Keyring.Hooks.Load != nil {
		f.Keyring.Hooks.Load(LoadEvent{Key: key, Err: err})
	}
}

func (f *Files) report(err error) {
	if err == nil {
		return
	}
	if f.OnError != nil {
		f.OnError(err)
		return
	}
	f.logger().Error("certs: keeping previous certificate", "err", err)
}

func (f *Files) logger() *slog.Logger {
	if f.Logger != nil {
		return f.Logger
	}
	return slog.Default()
}

// readPair reads both files of p and hashes them together, length-prefixed so that moving bytes
// from one file to the other changes the hash.
func readPair(p KeyPair) (certPEM, keyPEM []byte, sum [sha256.Size]byte, err error) {
	certPEM, err = os.ReadFile(p.CertFile)
	if err != nil {
		return nil, nil, sum, fmt.Errorf("certs: %w", err)
	}
	keyPEM, err = os.ReadFile(p.KeyFile)
	if err != nil {
		return nil, nil, sum, fmt.Errorf("certs: %w", err)
	}
	h := sha256.New()
	var n [8]byte
	binary.BigEndian.PutUint64(n[:], uint64(len(certPEM)))
	h.Write(n[:])
	h.Write(certPEM)
	h.Write(keyPEM)
	copy(sum[:], h.Sum(nil))
	return certPEM, keyPEM, sum, nil
}
