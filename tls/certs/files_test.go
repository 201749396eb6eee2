package certs_test

import (
	"context"
	"crypto/x509"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/sluiceproxy/sluice/internal/testcert"
	"github.com/sluiceproxy/sluice/tls/certs"
)

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

func writePair(t *testing.T, dir string, c *testcert.Cert) {
	t.Helper()
	// Deliberately not atomic (truncate, then write; cert, then key): the loader must cope
	// with seeing half of a rotation.
	require.NoError(t, os.WriteFile(filepath.Join(dir, "tls.crt"), c.CertPEM, 0o600))
	require.NoError(t, os.WriteFile(filepath.Join(dir, "tls.key"), c.KeyPEM, 0o600))
}

func pairIn(dir string) certs.KeyPair {
	return certs.KeyPair{CertFile: filepath.Join(dir, "tls.crt"), KeyFile: filepath.Join(dir, "tls.key"), Key: "site"}
}

// TestRotationUnderTraffic rewrites the certificate files while clients handshake without
// pause and a poller reloads without pause: no handshake may fail, and after each rotation
// the new certificate must be served.
func TestRotationUnderTraffic(t *testing.T) {
	ca := testcert.NewCA(t)
	dir := t.TempDir()
	writePair(t, dir, ca.Server(t, "rot.test"))

	var store certs.Keyring
	files := &certs.Files{Keyring: &store, KeyPairs: []certs.KeyPair{pairIn(dir)}, Logger: quiet}
	require.NoError(t, files.Load())
	cfg, err := certs.ServerConfig(&store, certs.ServerOptions{})
	require.NoError(t, err)
	addr := serve(t, cfg)[len("https://"):]

	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	var handshakes, failures atomic.Int64
	var firstErr atomic.Value
	for range 4 {
		wg.Go(func() {
			for ctx.Err() == nil {
				_, err := handshake(ctx, addr, "rot.test", ca.Pool)
				if err != nil && ctx.Err() == nil {
					failures.Add(1)
					firstErr.CompareAndSwap(nil, err)
				}
				handshakes.Add(1)
			}
		})
	}
	var reloadErrs atomic.Int64
	wg.Go(func() { // a poller with no interval, to catch files mid-write
		for ctx.Err() == nil {
			if files.Load() != nil {
				reloadErrs.Add(1)
			}
		}
	})

	for i := range 20 {
		next := ca.Server(t, "rot.test")
		writePair(t, dir, next)
		require.NoError(t, files.Load(), "rotation %d: complete files should load", i)
		leaf, err := handshake(ctx, addr, "rot.test", ca.Pool)
		require.NoError(t, err)
		require.Equal(t, next.Leaf.SerialNumber, leaf.SerialNumber, "rotation %d: the next handshake should see the new certificate", i)
	}
	cancel()
	wg.Wait()
	assert.Zero(t, failures.Load(), "no handshake may fail during rotation; first error: %v", firstErr.Load())
	assert.Greater(t, handshakes.Load(), int64(20), "the handshake loop should have run")
	t.Logf("%d handshakes, %d torn reads reported and ignored", handshakes.Load(), reloadErrs.Load())
}

func TestCorruptFileKeepsServingOldCertificate(t *testing.T) {
	ca := testcert.NewCA(t)
	dir := t.TempDir()
	good := ca.Server(t, "keep.test")
	writePair(t, dir, good)
	var store certs.Keyring
	files := &certs.Files{Keyring: &store, KeyPairs: []certs.KeyPair{pairIn(dir)}, Logger: quiet}
	require.NoError(t, files.Load())
	cfg, err := certs.ServerConfig(&store, certs.ServerOptions{})
	require.NoError(t, err)
	addr := serve(t, cfg)[len("https://"):]

	other := ca.Server(t, "keep.test")
	half := good.CertPEM[:len(good.CertPEM)/2]
	tests := []struct {
		name      string
		cert, key []byte
	}{
		{"garbage certificate", []byte("not a certificate"), good.KeyPEM},
		{"truncated certificate", half, good.KeyPEM},
		{"empty key", good.CertPEM, nil},
		{"key of another certificate", other.CertPEM, good.KeyPEM},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			require.NoError(t, os.WriteFile(filepath.Join(dir, "tls.crt"), tt.cert, 0o600))
			require.NoError(t, os.WriteFile(filepath.Join(dir, "tls.key"), tt.key, 0o600))
			err := files.Load()
			require.Error(t, err, "a broken pair must be reported")
			assert.Contains(t, err.Error(), filepath.Join(dir, "tls.crt"), "the error should name the file")
			assert.NoError(t, files.Load(), "the same broken content is reported once")
			leaf, err := handshake(context.Background(), addr, "keep.test", ca.Pool)
			require.NoError(t, err, "handshakes must keep working")
			assert.Equal(t, good.Leaf.SerialNumber, leaf.SerialNumber, "the old certificate should keep serving")
		})
	}

	require.NoError(t, os.Remove(filepath.Join(dir, "tls.key")))
	assert.ErrorIs(t, files.Load(), os.ErrNotExist, "a missing file is an error")
	leaf, err := handshake(context.Background(), addr, "keep.test", ca.Pool)
	require.NoError(t, err)
	assert.Equal(t, good.Leaf.SerialNumber, leaf.SerialNumber)

	writePair(t, dir, other)
	require.NoError(t, files.Load(), "a good pair loads again")
	leaf, err = handshake(context.Background(), addr, "keep.test", ca.Pool)
	require.NoError(t, err)
	assert.Equal(t, other.Leaf.SerialNumber, leaf.SerialNumber, "the repaired files should serve")
}

// TestSymlinkSwap mimics a Kubernetes Secret volume: the visible files are symlinks through
// "..data", which is swapped to a new directory; modification times of the links do not move.
func TestSymlinkSwap(t *testing.T) {
	ca := testcert.NewCA(t)
	dir := t.TempDir()
	first, second := ca.Server(t, "swap.test"), ca.Server(t, "swap.test")
	v1, v2 := filepath.Join(dir, "..v1"), filepath.Join(dir, "..v2")
	require.NoError(t, os.Mkdir(v1, 0o700))
	require.NoError(t, os.Mkdir(v2, 0o700))
	writePair(t, v1, first)
	writePair(t, v2, second)
	require.NoError(t, os.Symlink("..v1", filepath.Join(dir, "..data")))
	for _, f := range []string{"tls.crt", "tls.key"} {
		require.NoError(t, os.Symlink(filepath.Join("..data", f), filepath.Join(dir, f)))
	}
	var store certs.Keyring
	files := &certs.Files{Keyring: &store, KeyPairs: []certs.KeyPair{pairIn(dir)}, Logger: quiet}
	require.NoError(t, files.Load())
	assert.Equal(t, first.Leaf.SerialNumber, store.Get("site").Leaf.SerialNumber)

	// Swap atomically, as the kubelet does: a new link renamed over ..data.
	require.NoError(t, os.Symlink("..v2", filepath.Join(dir, "..data_tmp")))
	require.NoError(t, os.Rename(filepath.Join(dir, "..data_tmp"), filepath.Join(dir, "..data")))
	require.NoError(t, files.Load())
	assert.Equal(t, second.Leaf.SerialNumber, store.Get("site").Leaf.SerialNumber, "the swapped content should load")
}

// TestRunPolls drives Run on a fake clock: changes are picked up one interval later, errors go
// to OnError once per content, and Run returns ctx.Err().
func TestRunPolls(t *testing.T) {
	ca := testcert.NewCA(t)
	first, second := ca.Server(t, "poll.test"), ca.Server(t, "poll.test")
	dir := t.TempDir()
	writePair(t, dir, first)

	synctest.Test(t, func(t *testing.T) {
		var store certs.Keyring
		var mu sync.Mutex
		var errs []error
		files := &certs.Files{
			Keyring: &store, KeyPairs: []certs.KeyPair{pairIn(dir)}, Interval: time.Minute, Logger: quiet,
			OnError: func(err error) { mu.Lock(); errs = append(errs, err); mu.Unlock() },
		}
		ctx, cancel := context.WithCancel(t.Context())
		done := make(chan error, 1)
		go func() { done <- files.Run(ctx) }()
		synctest.Wait()
		require.NotNil(t, store.Get("site"), "Run should load at once")
		assert.Equal(t, first.Leaf.SerialNumber, store.Get("site").Leaf.SerialNumber)

		writePair(t, dir, second)
		time.Sleep(time.Minute - time.Second)
		synctest.Wait()
		assert.Equal(t, first.Leaf.SerialNumber, store.Get("site").Leaf.SerialNumber, "not before the interval")
		time.Sleep(time.Second)
		synctest.Wait()
		assert.Equal(t, second.Leaf.SerialNumber, store.Get("site").Leaf.SerialNumber, "picked up after one interval")

		require.NoError(t, os.WriteFile(filepath.Join(dir, "tls.crt"), []byte("garbage"), 0o600))
		time.Sleep(3 * time.Minute)
		synctest.Wait()
		mu.Lock()
		assert.Len(t, errs, 1, "a broken file is reported once, not every poll")
		mu.Unlock()
		assert.Equal(t, second.Leaf.SerialNumber, store.Get("site").Leaf.SerialNumber, "the old certificate stays")

		cancel()
		assert.ErrorIs(t, <-done, context.Canceled)
	})
}

func TestFilesCAReload(t *testing.T) {
	ca1, ca2 := testcert.NewCA(t), testcert.NewCA(t)
	dir := t.TempDir()
	caFile := filepath.Join(dir, "ca.crt")
	require.NoError(t, os.WriteFile(caFile, append(append([]byte{}, ca1.CertPEM...), ca2.CertPEM...), 0o600))
	var pool certs.CAPool
	files := &certs.Files{CAs: &pool, CAFile: caFile, Logger: quiet}
	require.NoError(t, files.Load())
	require.NotNil(t, pool.Pool())
	assert.True(t, pool.Pool().Equal(mustPool(t, ca1, ca2)), "both CAs of the bundle should load")

	require.NoError(t, os.WriteFile(caFile, ca2.CertPEM[:40], 0o600))
	assert.Error(t, files.Load(), "a truncated bundle is an error")
	assert.True(t, pool.Pool().Equal(mustPool(t, ca1, ca2)), "the previous pool stays")

	assert.ErrorContains(t, (&certs.Files{CAFile: caFile}).Load(), "CAs is nil")
	assert.ErrorContains(t, (&certs.Files{KeyPairs: []certs.KeyPair{{}}}).Load(), "Keyring is nil")
}

func mustPool(t *testing.T, cas ...*testcert.CA) *x509.CertPool {
	t.Helper()
	p := x509.NewCertPool()
	for _, ca := range cas {
		p.AddCert(ca.Cert)
	}
	return p
}

// Files stores its pairs in KeyPairs order, so the first pair that loads is the default,
// whatever its key: here "z" sorts last, and the keys come from the file paths.
func TestFilesFirstPairIsDefault(t *testing.T) {
	ca := testcert.NewCA(t)
	root := t.TempDir()
	dirZ, dirA := filepath.Join(root, "z"), filepath.Join(root, "a") // a's path sorts first
	require.NoError(t, os.Mkdir(dirZ, 0o700))
	require.NoError(t, os.Mkdir(dirA, 0o700))
	z, a := ca.Server(t, "z.test"), ca.Server(t, "a.test")
	writePair(t, dirZ, z)
	writePair(t, dirA, a)
	pair := func(dir string) certs.KeyPair {
		return certs.KeyPair{CertFile: filepath.Join(dir, "tls.crt"), KeyFile: filepath.Join(dir, "tls.key")}
	}

	var store certs.Keyring
	files := &certs.Files{Keyring: &store, KeyPairs: []certs.KeyPair{pair(dirZ), pair(dirA)}, Logger: quiet}
	require.NoError(t, files.Load())
	assert.Equal(t, []string{pair(dirZ).CertFile, pair(dirA).CertFile}, store.Keys(), "keyed by file path, in KeyPairs order")
	require.NotNil(t, store.Certificate(""))
	assert.Equal(t, z.Leaf.SerialNumber, store.Certificate("").Leaf.SerialNumber, "the first KeyPair is the default")

	// A rotation of the first pair keeps it the default.
	z2 := ca.Server(t, "z.test")
	writePair(t, dirZ, z2)
	require.NoError(t, files.Load())
	assert.Equal(t, z2.Leaf.SerialNumber, store.Certificate("").Leaf.SerialNumber, "the rotated first pair stays the default")
}
