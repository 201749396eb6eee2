package certs_test

import (
	"crypto/tls"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/sluiceproxy/sluice/internal/testcert"
	"github.com/sluiceproxy/sluice/tls/certs"
)

// handshakes collects HandshakeEvents; the server reports them on its own goroutines.
type handshakes chan certs.HandshakeEvent

func (h handshakes) hook(e certs.HandshakeEvent) { h <- e }

func (h handshakes) next(t *testing.T) certs.HandshakeEvent {
	t.Helper()
	select {
	case e := <-h:
		return e
	case <-time.After(10 * time.Second):
		t.Fatal("no Handshake event")
		return certs.HandshakeEvent{}
	}
}

func TestHooks_Handshake(t *testing.T) {
	ca := testcert.NewCA(t)
	events := make(handshakes, 8)
	store := &certs.Keyring{Hooks: certs.Hooks{Handshake: events.hook}}
	require.NoError(t, store.Set("a", &ca.Server(t, "a.example.com").TLS))
	store.SetDefault("") // an unknown name then fails in GetCertificate
	cfg, err := certs.ServerConfig(store, certs.ServerOptions{})
	require.NoError(t, err)
	url := serve(t, cfg)

	_, _, err = get(t, url, &tls.Config{RootCAs: ca.Pool, ServerName: "a.example.com"})
	require.NoError(t, err)
	e := events.next(t)
	assert.Equal(t, "a.example.com", e.ServerName)
	assert.Equal(t, uint16(tls.VersionTLS13), e.Version, "TLS 1.3 is agreed")
	assert.NotZero(t, e.CipherSuite)
	assert.Equal(t, "h2", e.NegotiatedProtocol)
	assert.False(t, e.Resumed, "a first connection")
	assert.False(t, e.ClientCertificate)
	assert.NoError(t, e.Err)

	_, _, err = get(t, url, &tls.Config{RootCAs: ca.Pool, ServerName: "unknown.test"})
	require.Error(t, err)
	e = events.next(t)
	assert.Equal(t, "unknown.test", e.ServerName)
	assert.ErrorIs(t, e.Err, certs.ErrNoCertificate, "no certificate for the name")
}

func TestHooks_HandshakeClientCertificate(t *testing.T) {
	ca := testcert.NewCA(t)
	events := make(handshakes, 8)
	store := &certs.Keyring{Hooks: certs.Hooks{Handshake: events.hook}}
	require.NoError(t, store.Set("s", &ca.Server(t, "s.test").TLS))
	cfg, err := certs.ServerConfig(store, certs.ServerOptions{ClientCAs: certs.NewCAPool(ca.Pool)})
	require.NoError(t, err)
	url := serve(t, cfg)

	cli := ca.Client(t, "proxy")
	_, _, err = get(t, url, &tls.Config{RootCAs: ca.Pool, ServerName: "s.test", Certificates: []tls.Certificate{cli.TLS}})
	require.NoError(t, err)
	e := events.next(t)
	assert.True(t, e.ClientCertificate, "the client presented one")
	assert.NoError(t, e.Err, "and it verified")

	other := testcert.NewCA(t).Client(t, "stranger")
	_, _, err = get(t, url, &tls.Config{RootCAs: ca.Pool, ServerName: "s.test", Certificates: []tls.Certificate{other.TLS}})
	require.Error(t, err)
	e = events.next(t)
	assert.True(t, e.ClientCertificate)
	assert.Error(t, e.Err, "a certificate from another CA does not verify")
}

func TestHooks_Load(t *testing.T) {
	ca := testcert.NewCA(t)
	var got []certs.LoadEvent
	store := &certs.Keyring{Hooks: certs.Hooks{Load: func(e certs.LoadEvent) { got = append(got, e) }}}
	a := ca.Server(t, "A.example.com")
	require.NoError(t, store.Set("a", &a.TLS))
	require.Equal(t, []certs.LoadEvent{{Key: "a", Names: []string{"a.example.com"}, NotAfter: a.Leaf.NotAfter}}, got)

	require.Error(t, store.Set("bad", &tls.Certificate{}))
	require.Len(t, got, 2)
	assert.Equal(t, "bad", got[1].Key)
	assert.Error(t, got[1].Err, "an unusable certificate")

	store.Delete("a")
	store.Delete("never-stored")
	require.Len(t, got, 3, "deleting what is not there changes nothing")
	assert.Equal(t, certs.LoadEvent{Key: "a", Removed: true}, got[2])

	// Files reports the pairs it cannot read through the same hook.
	dir := t.TempDir()
	crt, key := filepath.Join(dir, "x.crt"), filepath.Join(dir, "x.key")
	require.NoError(t, os.WriteFile(crt, []byte("not PEM"), 0o600))
	require.NoError(t, os.WriteFile(key, []byte("not PEM"), 0o600))
	files := &certs.Files{Keyring: store, KeyPairs: []certs.KeyPair{{CertFile: crt, KeyFile: key}}}
	require.Error(t, files.Load())
	require.Len(t, got, 4)
	assert.Equal(t, crt, got[3].Key)
	assert.Error(t, got[3].Err)
}

func TestKeyringCertificates(t *testing.T) {
	ca := testcert.NewCA(t)
	var store certs.Keyring
	assert.Empty(t, store.Certificates())
	a, b := ca.Server(t, "a.test"), ca.Server(t, "b.test", "*.b.test")
	require.NoError(t, store.Set("a", &a.TLS))
	require.NoError(t, store.Set("b", &b.TLS))
	store.SetDefault("b")
	assert.Equal(t, []certs.CertificateInfo{
		{Key: "a", Names: []string{"a.test"}, NotBefore: a.Leaf.NotBefore, NotAfter: a.Leaf.NotAfter},
		{Key: "b", Names: []string{"b.test", "*.b.test"}, NotBefore: b.Leaf.NotBefore, NotAfter: b.Leaf.NotAfter, Default: true},
	}, store.Certificates())
}

func TestJoinHooks(t *testing.T) {
	var order []string
	h := certs.JoinHooks(
		certs.Hooks{Load: func(certs.LoadEvent) { order = append(order, "a") }},
		certs.Hooks{},
		certs.Hooks{Load: func(certs.LoadEvent) { order = append(order, "b") },
			Handshake: func(certs.HandshakeEvent) { order = append(order, "h") }},
	)
	h.Load(certs.LoadEvent{})
	h.Handshake(certs.HandshakeEvent{})
	assert.Equal(t, []string{"a", "b", "h"}, order, "every func, in order")
	assert.Nil(t, certs.JoinHooks().Load, "nothing to call stays nil")
}

// A Handshake hook adds nothing to a successful certificate selection.
func TestCertificateWithHookDoesNotAllocate(t *testing.T) {
	ca := testcert.NewCA(t)
	store := &certs.Keyring{Hooks: certs.Hooks{Handshake: func(certs.HandshakeEvent) {}}}
	require.NoError(t, store.Set("a", &ca.Server(t, "a.example.com").TLS))
	hello := &tls.ClientHelloInfo{ServerName: "a.example.com"}
	assert.Zero(t, testing.AllocsPerRun(1000, func() { _, _ = store.GetCertificate(hello) }))
}
