package secrets_test

import (
	"context"
	"fmt"
	"log"
	"os"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"

	"github.com/sluiceproxy/sluice/tls/certs"
	"github.com/sluiceproxy/sluice/tls/secrets"
)

// Serve the certificate of a kubernetes.io/tls Secret, as cert-manager writes it. A real
// program passes a clientset built from rest.InClusterConfig instead of the fake.
func Example() {
	crt, _ := os.ReadFile("../certs/testdata/example.com.crt")
	key, _ := os.ReadFile("../certs/testdata/example.com.key")
	client := fake.NewClientset(&corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Namespace: "web", Name: "example-com-tls"},
		Type:       corev1.SecretTypeTLS,
		Data:       map[string][]byte{corev1.TLSCertKey: crt, corev1.TLSPrivateKeyKey: key},
	})

	var ring certs.Keyring
	w, err := secrets.New(client, &ring, secrets.Options{
		Namespace: "web",
		Names:     []string{"example-com-tls"},
		Default:   "example-com-tls",
	})
	if err != nil {
		log.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go w.Run(ctx)
	<-w.Synced() // serve once the certificates are in

	cfg, err := certs.ServerConfig(&ring, certs.ServerOptions{})
	if err != nil {
		log.Fatal(err)
	}
	_ = cfg // use as http.Server.TLSConfig
	fmt.Println(ring.Keys())
	fmt.Println(ring.Certificate("www.example.com").Leaf.DNSNames)
	// Output:
	// [web/example-com-tls]
	// [example.com www.example.com]
}
