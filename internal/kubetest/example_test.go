package kubetest_test

import (
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"

	"github.com/sluiceproxy/sluice/internal/kubetest"
)

// An AddrMap lets a test register an ordinary pod address in an EndpointSlice (the API server
// refuses loopback ones) while the proxy's dialer reaches an httptest server on loopback.
func ExampleAddrMap() {
	backend := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprint(w, "served by the pod at 10.244.0.5")
	}))
	defer backend.Close()

	var pods kubetest.AddrMap
	pods.Set("10.244.0.5:8080", backend.Listener.Addr().String())

	// Keep-alives off, so that every request dials and sees the current mapping.
	client := &http.Client{Transport: &http.Transport{DialContext: pods.DialContext, DisableKeepAlives: true}}
	res, err := client.Get("http://10.244.0.5:8080/")
	if err != nil {
		fmt.Println(err)
		return
	}
	body, _ := io.ReadAll(res.Body)
	res.Body.Close()
	fmt.Println(string(body))

	pods.Delete("10.244.0.5:8080")
	_, err = client.Get("http://10.244.0.5:8080/")
	fmt.Println("after Delete, dialing fails:", err != nil)
	// Output:
	// served by the pod at 10.244.0.5
	// after Delete, dialing fails: true
}
