package kubernetes_test

import (
	"context"
	"fmt"
	"log"
	"os"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"

	sluicetls "github.com/sluiceproxy/sluice/tls"
	"github.com/sluiceproxy/sluice/tls/kubernetes"
)

// Serve the certificate of a kubernetes.io/tls Secret, as cert-manager writes it. A real
// program passes a clientset built from rest.InClusterConfig instead of the fake.
func Example() {
	crt, _ := os.ReadFile("../testdata/example.com.crt")
	key, _ := os.ReadFile("../testdata/example.com.key")
	client := fake.NewClientset(&corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Namespace: "web", Name: "example-com-tls"},
		Type:       corev1.SecretTypeTLS,
		Data:       map[string][]byte{corev1.TLSCertKey: crt, corev1.TLSPrivateKeyKey: key},
	})

	var store sluicetls.Store
	secrets, err := kubernetes.New(client, &store, kubernetes.Options{
		Namespace: "web",
		Names:     []string{"example-com-tls"},
		Default:   "example-com-tls",
	})
	if err != nil {
		log.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go secrets.Run(ctx)
	<-secrets.Synced() // serve once the certificates are in

	cfg, err := sluicetls.ServerConfig(&store, sluicetls.ServerOptions{})
	if err != nil {
		log.Fatal(err)
	}
	_ = cfg // use as http.Server.TLSConfig
	fmt.Println(store.Keys())
	fmt.Println(store.Certificate("www.example.com").Leaf.DNSNames)
	// Output:
	// [web/example-com-tls]
	// [example.com www.example.com]
}
