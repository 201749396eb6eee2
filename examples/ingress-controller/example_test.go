package main

import "fmt"

// Example shows how the sluiceproxy.io/ annotations of an Ingress are read, and the error an
// operator sees (in the log and as an Event on the Ingress) for a bad one.
func Example() {
	o, err := parseAnnotations(map[string]string{
		"sluiceproxy.io/load-balance":     "peak-ewma",
		"sluiceproxy.io/timeout":          "10s",
		"sluiceproxy.io/retries":          "1",
		"nginx.ingress.kubernetes.io/foo": "ignored: another prefix",
	})
	fmt.Println(o.policyName, o.timeout, o.maxTries, err)

	_, err = parseAnnotations(map[string]string{"sluiceproxy.io/canary-weight": "50"})
	fmt.Println(err)
	// Output:
	// peak-ewma 10s 2 <nil>
	// annotation sluiceproxy.io/canary-weight: needs sluiceproxy.io/canary: "true"
}
