// Package kubetest starts a real etcd and kube-apiserver on loopback for integration tests.
//
// The binaries come from the environment: SLUICE_KUBE_APISERVER names the kube-apiserver
// binary (built by `make tools` from the helper module in ./apiserver) and SLUICE_ETCD names
// etcd (Debian's etcd-server package). When a variable is unset, Start falls back to the
// cached build in $HOME/.cache/sluice/bin and to etcd on $PATH; when a binary is still
// missing the test fails (it never skips), naming the variable to set. `make test` sets both.
//
// The API server rejects loopback addresses in EndpointSlices, so tests register ordinary
// pod-like addresses (10.244.x.y) and give their dialer an [AddrMap] that sends those
// addresses to httptest servers on loopback: no test traffic leaves the machine.
package kubetest

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"

	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
)

// KubeVersion is the kube-apiserver release the harness is built and tested against.
const KubeVersion = "v1.37.2"

// adminToken is the bearer token of the harness's system:masters user.
const adminToken = "sluice-kubetest-admin"

// Cluster is a running etcd and kube-apiserver pair.
type Cluster struct {
	// Config reaches the API server as a system:masters user (bearer token). Its QPS and
	// Burst are raised so that tests are not throttled by client-side rate limiting.
	Config *rest.Config
	// Client is a clientset built from Config.
	Client kubernetes.Interface

	dir       string
	apiBin    string
	apiArgs   []string
	apiPort   int
	apiLog    *os.File
	mu        sync.Mutex // mu protects apiserver and exited
	apiserver *exec.Cmd
	exited    chan error // receives the running apiserver's Wait result
}

// Start starts etcd and kube-apiserver on free loopback ports, waits until the API server
// reports ready, and registers their shutdown with t.Cleanup. It fails t when a binary is
// missing or the server does not become ready within a minute.
func Start(t testing.TB) *Cluster {
	t.Helper()
	apiBin := binary(t, "SLUICE_KUBE_APISERVER", func() string {
		home, _ := os.UserHomeDir()
		return filepath.Join(home, ".cache", "sluice", "bin", "kube-apiserver-"+KubeVersion)
	})
	etcdBin := binary(t, "SLUICE_ETCD", func() string {
		p, _ := exec.LookPath("etcd")
		return p
	})

	dir := tempDir(t)
	c := &Cluster{dir: dir, apiBin: apiBin}

	ports := freePorts(t, 3)
	etcdClient, etcdPeer := ports[0], ports[1]
	c.apiPort = ports[2]

	etcdLog := createFile(t, filepath.Join(dir, "etcd.log"))
	clientURL := "http://127.0.0.1:" + strconv.Itoa(etcdClient)
	peerURL := "http://127.0.0.1:" + strconv.Itoa(etcdPeer)
	etcd := exec.Command(etcdBin,
		"--name=kubetest",
		"--data-dir="+filepath.Join(dir, "etcd"),
		"--listen-client-urls="+clientURL,
		"--advertise-client-urls="+clientURL,
		"--listen-peer-urls="+peerURL,
		"--initial-advertise-peer-urls="+peerURL,
		"--initial-cluster=kubetest="+peerURL,
		"--log-level=warn", "--logger=zap",
	)
	etcd.Stdout, etcd.Stderr = etcdLog, etcdLog
	setDeathSignal(etcd)
	if err := etcd.Start(); err != nil {
		t.Fatalf("kubetest: start etcd (%s, set SLUICE_ETCD): %v", etcdBin, err)
	}
	t.Cleanup(func() {
		_ = etcd.Process.Kill()
		_ = etcd.Wait()
	})

	saKey := filepath.Join(dir, "sa.key")
	writeServiceAccountKey(t, saKey)
	tokens := filepath.Join(dir, "tokens.csv")
	if err := os.WriteFile(tokens, []byte(adminToken+",admin,admin-uid,system:masters\n"), 0o600); err != nil {
		t.Fatalf("kubetest: %v", err)
	}
	c.apiArgs = []string{
		"--etcd-servers=" + clientURL,
		"--secure-port=" + strconv.Itoa(c.apiPort),
		"--bind-address=127.0.0.1",
		"--cert-dir=" + filepath.Join(dir, "certs"),
		"--token-auth-file=" + tokens,
		"--authorization-mode=RBAC",
		"--service-account-issuer=https://kubernetes.default.svc",
		"--service-account-key-file=" + saKey,
		"--service-account-signing-key-file=" + saKey,
		"--service-cluster-ip-range=10.0.0.0/24",
		"--enable-priority-and-fairness=false",
		"--profiling=false",
	}
	c.apiLog = createFile(t, filepath.Join(dir, "kube-apiserver.log"))
	t.Cleanup(c.stopAPIServer)

	c.Config = &rest.Config{
		Host:            "https://127.0.0.1:" + strconv.Itoa(c.apiPort),
		BearerToken:     adminToken,
		TLSClientConfig: rest.TLSClientConfig{Insecure: true},
		QPS:             1000,
		Burst:           2000,
	}
	client, err := kubernetes.NewForConfig(c.Config)
	if err != nil {
		t.Fatalf("kubetest: clientset: %v", err)
	}
	c.Client = client
	c.startAPIServer(t)
	return c
}

// RestartAPIServer stops kube-apiserver and starts it again on the same port against the
// same etcd, waiting until it is ready. Watches open against the old process end; client-go
// informers re-list and re-watch against the new one.
func (c *Cluster) RestartAPIServer(t testing.TB) {
	t.Helper()
	c.stopAPIServer()
	c.startAPIServer(t)
}

// StopAPIServer stops kube-apiserver and leaves etcd running, so that a test can observe
// what its clients do while the API is away; RestartAPIServer brings it back.
func (c *Cluster) StopAPIServer() { c.stopAPIServer() }

func (c *Cluster) startAPIServer(t testing.TB) {
	t.Helper()
	cmd := exec.Command(c.apiBin, c.apiArgs...)
	cmd.Stdout, cmd.Stderr = c.apiLog, c.apiLog
	setDeathSignal(cmd)
	if err := cmd.Start(); err != nil {
		t.Fatalf("kubetest: start kube-apiserver (%s, set SLUICE_KUBE_APISERVER): %v", c.apiBin, err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	c.mu.Lock()
	c.apiserver, c.exited = cmd, exited
	c.mu.Unlock()

	if err := c.waitReady(exited); err != nil {
		logs, _ := os.ReadFile(c.apiLog.Name())
		if len(logs) > 4000 {
			logs = logs[len(logs)-4000:]
		}
		t.Fatalf("kubetest: kube-apiserver did not become ready: %v\n--- log tail ---\n%s", err, logs)
	}
}

func (c *Cluster) waitReady(exited <-chan error) error {
	hc := &http.Client{
		Timeout:   2 * time.Second,
		Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}},
	}
	defer hc.CloseIdleConnections()
	deadline := time.Now().Add(time.Minute)
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	var last error
	for time.Now().Before(deadline) {
		req, _ := http.NewRequest(http.MethodGet, c.Config.Host+"/readyz", nil)
		req.Header.Set("Authorization", "Bearer "+adminToken)
		resp, err := hc.Do(req)
		if err == nil {
			var body bytes.Buffer
			_, _ = body.ReadFrom(resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
			err = fmt.Errorf("/readyz: %s: %s", resp.Status, body.Bytes())
		}
		last = err
		select {
		case err := <-exited:
			return fmt.Errorf("process exited: %v", err)
		case <-tick.C:
		}
	}
	return fmt.Errorf("timed out after a minute: %v", last)
}

func (c *Cluster) stopAPIServer() {
	c.mu.Lock()
	cmd, exited := c.apiserver, c.exited
	c.apiserver, c.exited = nil, nil
	c.mu.Unlock()
	if cmd == nil {
		return
	}
	_ = cmd.Process.Kill()
	<-exited
}

func binary(t testing.TB, env string, fallback func() string) string {
	t.Helper()
	p := os.Getenv(env)
	if p == "" {
		p = fallback()
	}
	if p == "" {
		t.Fatalf("kubetest: %s is not set and no default binary was found; run `make tools` or set %s", env, env)
	}
	if _, err := os.Stat(p); err != nil {
		t.Fatalf("kubetest: %s: %v; run `make tools` or set %s to the binary", env, err, env)
	}
	return p
}

// tempDir prefers memory-backed storage: etcd fsyncs every write, and on a disk that makes
// write-latency measurements measure the disk.
func tempDir(t testing.TB) string {
	t.Helper()
	if fi, err := os.Stat("/dev/shm"); err == nil && fi.IsDir() {
		if d, err := os.MkdirTemp("/dev/shm", "kubetest-"); err == nil {
			t.Cleanup(func() { _ = os.RemoveAll(d) })
			return d
		}
	}
	return t.TempDir()
}

func createFile(t testing.TB, name string) *os.File {
	t.Helper()
	f, err := os.Create(name)
	if err != nil {
		t.Fatalf("kubetest: %v", err)
	}
	t.Cleanup(func() { _ = f.Close() })
	return f
}

// freePorts returns n distinct loopback ports that were free a moment ago.
func freePorts(t testing.TB, n int) []int {
	t.Helper()
	ports := make([]int, 0, n)
	var ls []net.Listener
	defer func() {
		for _, l := range ls {
			l.Close()
		}
	}()
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatalf("kubetest: find a free port: %v", err)
		}
		ls = append(ls, l)
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports
}

func writeServiceAccountKey(t testing.TB, name string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatalf("kubetest: %v", err)
	}
	der, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatalf("kubetest: %v", err)
	}
	if err := os.WriteFile(name, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: der}), 0o600); err != nil {
		t.Fatalf("kubetest: %v", err)
	}
}

// AddrMap maps pod-like addresses ("10.244.0.5:8080") to real loopback addresses
// ("127.0.0.1:41234"), so that endpoints registered in EndpointSlices can be served by
// httptest servers. Its zero value is an empty map; it is safe for concurrent use.
type AddrMap struct {
	mu sync.RWMutex // mu protects m
	m  map[string]string
}

// Set makes DialContext send connections for from to to.
func (m *AddrMap) Set(from, to string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.m == nil {
		m.m = make(map[string]string)
	}
	m.m[from] = to
}

// Delete removes the mapping for from.
func (m *AddrMap) Delete(from string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	delete(m.m, from)
}

// ErrUnmapped is returned by DialContext for an address with no mapping: tests never dial
// off the machine.
var ErrUnmapped = errors.New("kubetest: address has no mapping")

// DialContext dials the loopback address mapped to addr. It has the signature of
// net.Dialer.DialContext, so it fits http.Transport.DialContext.
func (m *AddrMap) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	m.mu.RLock()
	to, ok := m.m[addr]
	m.mu.RUnlock()
	if !ok {
		return nil, fmt.Errorf("%w: %s", ErrUnmapped, addr)
	}
	var d net.Dialer
	return d.DialContext(ctx, network, to)
}
