package certs_test

import (
	"fmt"
	"log"
	"net/http"

	"github.com/sluiceproxy/sluice/tls/certs"
)

// Serve certificates from PEM files, picked by SNI, with a default for clients that send no
// server name or an unknown one. In a program, run files.Run(ctx) in a goroutine to pick up
// rotations.
func Example() {
	var store certs.Keyring
	files := &certs.Files{
		Keyring: &store,
		KeyPairs: []certs.KeyPair{
			// The first pair is the default; store.SetDefault(key) would choose another.
			{CertFile: "testdata/default.crt", KeyFile: "testdata/default.key", Key: "default"},
			{CertFile: "testdata/example.com.crt", KeyFile: "testdata/example.com.key"},
			{CertFile: "testdata/wildcard.example.com.crt", KeyFile: "testdata/wildcard.example.com.key"},
		},
	}
	if err := files.Load(); err != nil {
		log.Fatal(err)
	}

	cfg, err := certs.ServerConfig(&store, certs.ServerOptions{})
	if err != nil {
		log.Fatal(err)
	}
	srv := &http.Server{Addr: ":8443", TLSConfig: cfg}
	_ = srv // srv.ListenAndServeTLS("", "") serves with the keyring's certificates.

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

// Reporting certificate loads with a hook, and the expiry of what is served with
// Certificates, as an expiry gauge reads it.
func ExampleHooks() {
	store := &certs.Keyring{Hooks: certs.Hooks{
		Load: func(e certs.LoadEvent) {
			if e.Err != nil {
				fmt.Println("failed:", e.Key)
				return
			}
			fmt.Println("loaded:", e.Key, e.Names)
		},
	}}
	files := &certs.Files{Keyring: store, KeyPairs: []certs.KeyPair{
		{CertFile: "testdata/example.com.crt", KeyFile: "testdata/example.com.key", Key: "example"},
		{CertFile: "testdata/missing.crt", KeyFile: "testdata/missing.key", Key: "missing"},
	}}
	_ = files.Load() // the error is reported through the hook too
	for _, c := range store.Certificates() {
		fmt.Println(c.Key, "expires after 2030:", c.NotAfter.Year() > 2030, "default:", c.Default)
	}
	// Output:
	// failed: missing
	// loaded: example [example.com www.example.com]
	// example expires after 2030: true default: true
}
