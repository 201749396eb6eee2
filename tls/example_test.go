package tls_test

import (
	"fmt"
	"log"
	"net/http"

	sluicetls "github.com/sluiceproxy/sluice/tls"
)

// Serve certificates from PEM files, picked by SNI, with a default for clients that send no
// server name. In a program, run files.Run(ctx) in a goroutine to pick up rotations.
func Example() {
	var store sluicetls.Store
	files := &sluicetls.Files{
		Store: &store,
		KeyPairs: []sluicetls.KeyPair{
			{CertFile: "testdata/example.com.crt", KeyFile: "testdata/example.com.key"},
			{CertFile: "testdata/wildcard.example.com.crt", KeyFile: "testdata/wildcard.example.com.key"},
			{CertFile: "testdata/default.crt", KeyFile: "testdata/default.key", Key: "default"},
		},
	}
	if err := files.Load(); err != nil {
		log.Fatal(err)
	}
	store.SetDefault("default")

	cfg, err := sluicetls.ServerConfig(&store, sluicetls.ServerOptions{})
	if err != nil {
		log.Fatal(err)
	}
	srv := &http.Server{Addr: ":8443", TLSConfig: cfg}
	_ = srv // srv.ListenAndServeTLS("", "") serves with the store's certificates.

	for _, sni := range []string{"www.example.com", "API.Example.com.", "a.b.example.com", ""} {
		fmt.Printf("%q -> %s\n", sni, store.Certificate(sni).Leaf.DNSNames)
	}
	fmt.Println(cfg.NextProtos)
	// Output:
	// "www.example.com" -> [example.com www.example.com]
	// "API.Example.com." -> [*.example.com]
	// "a.b.example.com" -> [default.invalid]
	// "" -> [default.invalid]
	// [h2 http/1.1]
}
